"""The pure media decisions: kinds, headers, limits, content blocks, albums.

`png`, `gif`, `webp`, `jpeg` and `pdf` build small real files; the e2e and emulator tests
import them."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from fleetgram.media import (
    IMAGE_RAW_MAX,
    TEXT_INLINE_MAX,
    Albums,
    Kind,
    MediaFile,
    Refused,
    check_before_download,
    check_files,
    first_caption,
    history_blocks,
    image_mime,
    image_size,
    kind_of,
    pdf_pages,
    request_blocks,
    text_of,
)


# ----------------------------------------------------------------------------- sample files
def png(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (one IDAT row: enough for header readers)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b""))


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\0\0\0;"


def webp(width: int, height: int) -> bytes:
    body = b"VP8X" + struct.pack("<I", 10) + b"\0" * 4 + (width - 1).to_bytes(3, "little") \
        + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\0"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def pdf(pages: int) -> bytes:
    kids = " ".join(f"{3 + n} 0 R" for n in range(pages))
    objects = [b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj",
               f"2 0 obj << /Type /Pages /Kids [{kids}] /Count {pages} >> endobj".encode()]
    objects += [f"{3 + n} 0 obj << /Type /Page /Parent 2 0 R >> endobj".encode()
                for n in range(pages)]
    return b"%PDF-1.4\n" + b"\n".join(objects) + b"\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def image(name: str, width: int, height: int, data: bytes = b"\xff\xd8") -> MediaFile:
    return MediaFile(name, "image/jpeg", data, Kind.IMAGE, width, height)


# ----------------------------------------------------------------------------- kinds
@pytest.mark.parametrize(("name", "mime", "kind"), [
    ("photo_1.jpg", "image/jpeg", Kind.IMAGE),
    ("scan.PNG", None, Kind.IMAGE),
    ("anim.gif", "image/gif", Kind.IMAGE),
    ("report.pdf", "application/pdf", Kind.PDF),
    ("blob", "application/pdf", Kind.PDF),
    ("notes.txt", "text/plain", Kind.TEXT),
    ("main.py", "application/octet-stream", Kind.TEXT),
    ("config.yaml", None, Kind.TEXT),
    ("data", "application/json", Kind.TEXT),
    ("Dockerfile", None, Kind.TEXT),
    ("letter.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     None),
    ("archive.zip", "application/zip", None),
    ("photo.heic", "image/heic", None),
])
def test_a_file_is_an_image_a_pdf_text_or_unsupported(name: str, mime: str | None,
                                                      kind: Kind | None) -> None:
    assert kind_of(name, mime) == kind


@pytest.mark.parametrize(("data", "size"), [
    (png(640, 480), (640, 480)),
    (gif(31, 7), (31, 7)),
    (webp(1200, 900), (1200, 900)),
    (jpeg(4032, 3024), (4032, 3024)),
    (b"not an image", None),
    (b"\xff\xd8" + bytes(100), None),
])
def test_image_size_reads_the_header(data: bytes, size: tuple[int, int] | None) -> None:
    assert image_size(data) == size


def test_the_media_type_sent_is_what_the_bytes_say_not_what_the_name_claims() -> None:
    assert image_mime("fake.jpg", "image/jpeg", png(1, 1)) == "image/png"
    assert image_mime("photo_3.jpg", None, b"unknown") == "image/jpeg"
    assert image_mime("x.webp", "image/webp", b"unknown") == "image/webp"


def test_pdf_pages_come_from_the_page_tree() -> None:
    assert pdf_pages(pdf(3)) == 3
    assert pdf_pages(pdf(120)) == 120
    assert pdf_pages(b"%PDF-1.7 compressed streams only") is None


def test_text_of_takes_utf8_and_utf16_and_refuses_binary() -> None:
    assert text_of("héllo".encode()) == "héllo"
    assert text_of(b"\xef\xbb\xbfbom") == "bom"
    assert text_of("wide".encode("utf-16")) == "wide"
    assert text_of(b"\x00\x01\x02") is None


# ----------------------------------------------------------------------------- limits
def test_an_unsupported_file_is_refused_naming_what_is_supported() -> None:
    with pytest.raises(Refused) as refused:
        check_before_download("letter.docx", None, 1000)
    assert str(refused.value).startswith("letter.docx: I read photos and images (JPEG, PNG")
    assert "PDFs and text files" in str(refused.value)


def test_files_over_telegrams_20_mb_are_refused_before_download() -> None:
    with pytest.raises(Refused, match="Telegram lets bots download files up to 20 MB"):
        check_before_download("big.pdf", Kind.PDF, 21 * 1024 * 1024)


def test_an_image_over_claudes_size_is_refused_before_download() -> None:
    check_before_download("ok.png", Kind.IMAGE, IMAGE_RAW_MAX)
    with pytest.raises(Refused, match=r"Claude takes images up to 3\.75 MB"):
        check_before_download("huge.png", Kind.IMAGE, IMAGE_RAW_MAX + 1)


def test_a_text_file_over_the_inline_cap_is_refused() -> None:
    with pytest.raises(Refused, match="I inline text files up to 200 KB"):
        check_before_download("dump.log", Kind.TEXT, TEXT_INLINE_MAX + 1)


def test_an_image_over_8000_pixels_a_side_is_refused() -> None:
    check_files([image("ok.jpg", 8000, 8000)])
    with pytest.raises(Refused) as refused:
        check_files([image("wide.png", 9000, 100)])
    assert str(refused.value) == "wide.png is 9000×100 pixels; Claude takes images up to 8000×8000."


def test_more_than_20_images_may_be_2000_pixels_a_side() -> None:
    check_files([image(f"{n}.jpg", 2000, 2000) for n in range(21)])
    with pytest.raises(Refused, match="up to 2000×2000 when more than 20 come together"):
        check_files([image(f"{n}.jpg", 2001, 100) for n in range(21)])


def test_more_than_100_images_and_pdfs_are_refused() -> None:
    with pytest.raises(Refused, match="That is 101 files; Claude takes up to 100"):
        check_files([image(f"{n}.jpg", 10, 10) for n in range(101)])


def test_more_than_100_pdf_pages_are_refused() -> None:
    two = [MediaFile(f"{n}.pdf", "application/pdf", b"%PDF", Kind.PDF, pages=51)
           for n in range(2)]
    with pytest.raises(Refused, match="That is 102 PDF pages; Claude reads up to 100 pages"):
        check_files(two)


def test_an_encrypted_pdf_is_refused() -> None:
    locked = b"%PDF-1.4\n...\ntrailer << /Root 1 0 R /Encrypt 9 0 R >>\n%%EOF"
    with pytest.raises(Refused, match="encrypted or has a password"):
        check_files([MediaFile("locked.pdf", "application/pdf", locked, Kind.PDF, pages=1)])


# ----------------------------------------------------------------------------- blocks
def test_request_blocks_put_images_then_pdfs_then_text_files_then_the_prompt() -> None:
    files = [("notes.md", "text/markdown", b"# Notes\nship it"),
             ("report.pdf", "application/pdf", pdf(2)),
             ("photo_5.jpg", "image/jpeg", b"\xff\xd8jpeg")]
    blocks = request_blocks("compare these", files)
    assert [b["type"] for b in blocks] == ["image", "document", "text", "text"]
    assert blocks[0]["source"] == {"type": "base64", "media_type": "image/jpeg",
                                   "data": base64.b64encode(b"\xff\xd8jpeg").decode()}
    assert blocks[1]["source"]["media_type"] == "application/pdf"
    assert blocks[1]["title"] == "report.pdf"
    assert blocks[2]["text"] == '<file name="notes.md">\n# Notes\nship it\n</file>'
    assert blocks[3] == {"type": "text", "text": "compare these"}


def test_history_keeps_placeholders_instead_of_images_and_pdfs() -> None:
    files = [("photo_5.jpg", "image/jpeg", b"\xff\xd8"),
             ("report.pdf", "application/pdf", pdf(3)),
             ("a.txt", "text/plain", b"kept")]
    blocks = history_blocks("what do you see?", files)
    assert [b["type"] for b in blocks] == ["text", "text"]
    assert blocks[0]["text"] == '<file name="a.txt">\nkept\n</file>'
    assert blocks[1]["text"] == ("[image: photo_5.jpg] [PDF: report.pdf, 3 pages]\n\n"
                                 "what do you see?")


def test_a_file_without_caption_asks_to_look_at_it() -> None:
    blocks = request_blocks("", [("photo_1.jpg", "image/jpeg", b"\xff\xd8")])
    assert blocks[-1]["text"] == "Look at the attached file."


# ----------------------------------------------------------------------------- albums
def test_album_parts_are_one_group_until_a_second_passes_after_the_last() -> None:
    albums = Albums(window=1.0)
    assert albums.add("g1", "part1", now=10.0) is True
    assert albums.add("g1", "part2", now=10.6) is False
    assert albums.take_if_due("g1", now=11.2) is None  # 0.6 s after the last part
    assert albums.add("g1", "part3", now=11.3) is False
    assert albums.due_at("g1") == 12.3
    assert albums.take_if_due("g1", now=12.3) == ["part1", "part2", "part3"]
    assert albums.due_at("g1") is None


def test_two_albums_are_kept_apart() -> None:
    albums = Albums(window=1.0)
    albums.add("a", 1, now=0.0)
    albums.add("b", 2, now=0.5)
    assert albums.take_if_due("a", now=1.0) == [1]
    assert albums.take_if_due("b", now=1.0) is None
    assert albums.take_all() == [("b", [2])]


def test_an_albums_caption_may_be_on_any_part() -> None:
    assert first_caption([None, "", "  compare these  ", "later"]) == "compare these"
    assert first_caption([None, None]) == ""
