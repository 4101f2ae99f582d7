"""Media in chat mode: which files Claude takes, within which limits, as which content blocks.

Pure decisions only (no I/O): the Telegram side is fleetgram.telegram.media, the request side
fleetgram.engines.chat. A photo, an image document or a PDF goes to the Messages API as an
``image`` / ``document`` content block (base64); a text-like document is inlined as text; any
other file is refused in one line naming what is supported.

The limits, as documented (each refusal is one line, sent before any task exists):

- Telegram: getFile downloads files up to 20 MB (https://core.telegram.org/bots/api#getfile;
  fleetgram.telegram.files.MAX_DOWNLOAD_BYTES).
- Images (https://docs.claude.com/en/docs/build-with-claude/vision, "Before you upload"):
  JPEG, PNG, GIF or WebP; at most 8000x8000 px, and 2000x2000 px when a request carries more
  than 20 images; at most 100 images per request (200k-context models). Each image's base64
  data may be 5 MB: the API answers 400 "image exceeds 5 MB maximum: N bytes > 5242880 bytes"
  (reported in gptme/gptme#185, anthropics/claude-code#14201), counted on the base64 string,
  so 3.75 MB of raw image (anthropics/claude-code constants/apiLimits.ts,
  API_IMAGE_MAX_BASE64_SIZE).
- PDFs (https://docs.claude.com/en/docs/build-with-claude/pdf-support, "Check PDF
  requirements"): a request of at most 32 MB and at most 100 pages, a standard PDF without
  password or encryption; more pages get 400 "A maximum of 100 PDF pages may be provided."
  (anthropics/claude-code#5707).
- The whole request: 32 MB (https://docs.claude.com/en/api/overview#request-size-limits); a
  base64 file is 4/3 of its size, so the files of one task may total 20 MB raw.

History: images and PDFs are sent only with the turn they came with. The stored conversation
keeps a placeholder instead (``[image: photo_12.jpg]``, ``[PDF: report.pdf, 3 pages]``): a
follow-up does not resend megabytes of base64 on every turn (nor pay for them), and Claude's
own answer about the file stays in the history. Inlined text files stay as text: they are
ordinary prompt text, which compaction shortens like any other.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

MB = 1024 * 1024
TELEGRAM_DOWNLOAD_MAX = 20 * MB  # getFile
IMAGE_BASE64_MAX = 5 * MB  # per image, on the base64 string
IMAGE_RAW_MAX = IMAGE_BASE64_MAX * 3 // 4  # 3.75 MB of image before base64
IMAGE_SIDE_MAX = 8000  # px, either side
MANY_IMAGES = 20  # above this many images in one request ...
MANY_IMAGES_SIDE_MAX = 2000  # ... each side may be 2000 px
IMAGES_PER_REQUEST = 100
PDF_PAGES_MAX = 100  # per request
REQUEST_MAX = 32 * MB
FILES_RAW_MAX = 20 * MB  # base64 of the files of one task must leave room in 32 MB
TEXT_INLINE_MAX = 200 * 1024  # bytes of a text file inlined in the prompt (~50k tokens)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
PDF_TYPE = "application/pdf"
_IMAGE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
                   ".gif": "image/gif", ".webp": "image/webp"}
_TEXT_TYPES = frozenset({
    "application/json", "application/ld+json", "application/x-yaml", "application/yaml",
    "application/xml", "application/javascript", "application/x-javascript",
    "application/toml", "application/x-sh", "application/x-python", "application/sql",
    "application/x-ndjson", "application/csv",
})
TEXT_SUFFIXES = frozenset({
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".yaml",
    ".yml", ".toml", ".ini", ".cfg", ".conf", ".env", ".xml", ".html", ".htm", ".css", ".scss",
    ".log", ".sql", ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".go", ".rs",
    ".java", ".kt", ".kts", ".scala", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php",
    ".swift", ".m", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".lua", ".pl", ".r", ".jl",
    ".hs", ".ex", ".exs", ".erl", ".clj", ".dart", ".vue", ".svelte", ".tf", ".proto",
    ".graphql", ".gql", ".tex", ".bib", ".diff", ".patch", ".dockerfile", ".gradle", ".mk",
})
_TEXT_NAMES = frozenset({"dockerfile", "makefile", "readme", "license", "procfile", "gemfile"})

SUPPORTED = ("I read photos and images (JPEG, PNG, GIF, WebP), PDFs and text files "
             "(plain text, Markdown, CSV, JSON, YAML, source code)")


class Kind(StrEnum):
    IMAGE = "image"
    PDF = "pdf"
    TEXT = "text"


@dataclass(frozen=True)
class MediaFile:
    """A downloaded file Claude will see, with what was learnt of it."""

    name: str
    mime: str
    data: bytes = field(repr=False)
    kind: Kind
    width: int | None = None  # images: from Telegram's PhotoSize or the file's header
    height: int | None = None
    pages: int | None = None  # PDFs, when the file says


class Refused(Exception):
    """A file or a set of files Claude cannot take; ``str(e)`` is the one line the user sees."""


# ----------------------------------------------------------------------------- kinds
def kind_of(name: str, mime: str | None) -> Kind | None:
    """What a file is to Claude, from its MIME type and its extension; None: unsupported."""
    mime = (mime or "").split(";")[0].strip().lower()
    path = PurePosixPath(name.lower())
    suffix = path.suffix
    if mime in IMAGE_TYPES or suffix in _IMAGE_SUFFIXES:
        return Kind.IMAGE
    if mime == PDF_TYPE or suffix == ".pdf":
        return Kind.PDF
    if (mime.startswith("text/") or mime in _TEXT_TYPES or suffix in TEXT_SUFFIXES
            or (path.stem in _TEXT_NAMES and not suffix)):
        return Kind.TEXT
    return None


def sniff_image(data: bytes) -> str | None:
    """The image type the bytes say (the API refuses a media_type the data contradicts)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_mime(name: str, mime: str | None, data: bytes) -> str:
    """The media_type to send: what the bytes say, else the declared type, else the
    extension's (Telegram photos are JPEG)."""
    declared = (mime or "").split(";")[0].strip().lower()
    if sniffed := sniff_image(data):
        return sniffed
    if declared in IMAGE_TYPES:
        return declared
    return _IMAGE_SUFFIXES.get(PurePosixPath(name.lower()).suffix, "image/jpeg")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header (PNG, GIF, JPEG, WebP); None if unreadable."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])  # type: ignore[return-value]
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])  # type: ignore[return-value]
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except (struct.error, IndexError):
        return None
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the JPEG segments to the first start-of-frame marker."""
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            at += 2
            continue
        length = int.from_bytes(data[at + 2:at + 4], "big")
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + length
    return None


_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_COUNT = re.compile(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)|/Count\s+(\d+)[^>]*?/Type\s*/Pages\b")


def pdf_pages(data: bytes) -> int | None:
    """Pages of a PDF, from its page tree's /Count (the largest: the root counts them all), else
    by counting its /Type /Page objects; None when neither is readable (compressed object
    streams hide both: the API is then the judge)."""
    counts = [int(a or b) for a, b in _COUNT.findall(data)]
    if counts:
        return max(counts)
    pages = len(_PAGE.findall(data))
    return pages or None


def pdf_encrypted(data: bytes) -> bool:
    """A PDF with an /Encrypt dictionary in its trailer (password or encryption)."""
    return b"/Encrypt" in data[-4096:] or b"/Encrypt" in data[:4096]


def text_of(data: bytes) -> str | None:
    """The file as text (UTF-8, a BOM dropped, or UTF-16 with a BOM); None if it is binary."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            return None
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


# ----------------------------------------------------------------------------- limits
def megabytes(size: int) -> str:
    return f"{size / MB:.1f} MB"


def check_before_download(name: str, kind: Kind | None, size: int | None) -> None:
    """Refuse what can be refused from Telegram's announced size, before downloading it."""
    if kind is None:
        raise Refused(f"{name}: {SUPPORTED}; send it as one of those, or paste its text.")
    if size is None:
        return
    if size > TELEGRAM_DOWNLOAD_MAX:
        raise Refused(f"{name} is {megabytes(size)}; Telegram lets bots download files up to "
                      "20 MB.")
    if kind == Kind.IMAGE and size > IMAGE_RAW_MAX:
        raise Refused(_image_too_big(name, size))
    if kind == Kind.TEXT and size > TEXT_INLINE_MAX:
        raise Refused(_text_too_big(name, size))


def _image_too_big(name: str, size: int) -> str:
    return (f"{name} is {megabytes(size)}; Claude takes images up to 3.75 MB (5 MB once "
            "encoded). Send it as a photo (Telegram makes it smaller) or a smaller file.")


def _text_too_big(name: str, size: int) -> str:
    return (f"{name} is {size // 1024} KB of text; I inline text files up to "
            f"{TEXT_INLINE_MAX // 1024} KB. Send the part that matters.")


def check_files(files: Sequence[MediaFile]) -> None:
    """Raise Refused (one line) when the files of one task exceed a documented limit."""
    images = [f for f in files if f.kind == Kind.IMAGE]
    pdfs = [f for f in files if f.kind == Kind.PDF]
    for f in files:
        if f.kind == Kind.IMAGE and len(f.data) > IMAGE_RAW_MAX:
            raise Refused(_image_too_big(f.name, len(f.data)))
        if f.kind == Kind.TEXT and len(f.data) > TEXT_INLINE_MAX:
            raise Refused(_text_too_big(f.name, len(f.data)))
        if f.kind == Kind.PDF and pdf_encrypted(f.data):
            raise Refused(f"{f.name} is encrypted or has a password; Claude reads standard "
                          "PDFs only. Send an unprotected copy.")
    side = MANY_IMAGES_SIDE_MAX if len(images) > MANY_IMAGES else IMAGE_SIDE_MAX
    for f in images:
        if f.width is not None and f.height is not None and max(f.width, f.height) > side:
            many = f" when more than {MANY_IMAGES} come together" if side < IMAGE_SIDE_MAX else ""
            raise Refused(f"{f.name} is {f.width}×{f.height} pixels; Claude takes images up to "
                          f"{side}×{side}{many}.")
    if len(images) + len(pdfs) > IMAGES_PER_REQUEST:
        raise Refused(f"That is {len(images) + len(pdfs)} files; Claude takes up to "
                      f"{IMAGES_PER_REQUEST} images and PDFs at once.")
    pages = sum(f.pages or 0 for f in pdfs)
    if pages > PDF_PAGES_MAX:
        raise Refused(f"That is {pages} PDF pages; Claude reads up to {PDF_PAGES_MAX} pages "
                      "at once. Send the pages that matter.")
    raw = sum(len(f.data) for f in files if f.kind != Kind.TEXT)
    if raw > FILES_RAW_MAX:
        raise Refused(f"Those files make {megabytes(raw)}; one request to Claude carries up to "
                      "32 MB, about 20 MB of files. Send fewer or smaller files.")


# ----------------------------------------------------------------------------- content blocks
Files = Sequence[tuple[str, str | None, bytes]]  # (name, MIME type, content) each


def request_blocks(prompt: str, files: Files) -> list[dict[str, Any]]:
    """The user turn's content for the Messages API: images, then PDFs, then text files, then
    the prompt (the vision guide: "Claude works best when images come before text")."""
    return _blocks(prompt, files, for_history=False)


def history_blocks(prompt: str, files: Files) -> list[dict[str, Any]]:
    """The same turn as the conversation keeps it: placeholders instead of images and PDFs."""
    return _blocks(prompt, files, for_history=True)


def _blocks(prompt: str, files: Files, *, for_history: bool) -> list[dict[str, Any]]:
    media: list[dict[str, Any]] = []
    texts: list[dict[str, Any]] = []
    notes: list[str] = []
    for name, mime, data in files:
        kind = kind_of(name, mime)
        if kind == Kind.IMAGE:
            if for_history:
                notes.append(f"[image: {name}]")
            else:
                media.append(image_block(name, mime, data))
        elif kind == Kind.PDF:
            if for_history:
                pages = pdf_pages(data)
                notes.append(f"[PDF: {name}" + (f", {pages} pages]" if pages else "]"))
            else:
                media.append(pdf_block(name, data))
        elif kind == Kind.TEXT:
            texts.append({"type": "text", "text": inlined_text(name, data)})
    text = prompt.strip() or "Look at the attached file" + ("s." if len(files) > 1 else ".")
    if notes:
        text = " ".join(notes) + "\n\n" + text
    media.sort(key=lambda block: block["type"] != "image")  # images, then PDFs (stable)
    return [*media, *texts, {"type": "text", "text": text}]


def image_block(name: str, mime: str | None, data: bytes) -> dict[str, Any]:
    media_type = image_mime(name, mime, data)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type,
                                        "data": base64.b64encode(data).decode("ascii")}}


def pdf_block(name: str, data: bytes) -> dict[str, Any]:
    # `title` names the document to Claude (the document block's optional field).
    return {"type": "document", "title": name[:500],
            "source": {"type": "base64", "media_type": PDF_TYPE,
                       "data": base64.b64encode(data).decode("ascii")}}


def inlined_text(name: str, data: bytes) -> str:
    """A text file as a part of the prompt, fenced by its name."""
    text = text_of(data)
    body = text if text is not None else data.decode("utf-8", "replace")
    return f'<file name="{name}">\n{body.rstrip()}\n</file>'


# ----------------------------------------------------------------------------- albums
@dataclass
class Albums:
    """The parts of media groups (albums) arriving, collected until `window` seconds pass
    after a group's last part: then the group is one task. Pure: the clock is passed in."""

    window: float = 1.0
    _parts: dict[Any, list[Any]] = field(default_factory=dict)
    _last: dict[Any, float] = field(default_factory=dict)

    def add(self, key: Any, part: Any, now: float) -> bool:
        """Add a part; True when it opens a new group (the caller starts one timer)."""
        new = key not in self._parts
        self._parts.setdefault(key, []).append(part)
        self._last[key] = now
        return new

    def due_at(self, key: Any) -> float | None:
        last = self._last.get(key)
        return None if last is None else last + self.window

    def take_if_due(self, key: Any, now: float) -> list[Any] | None:
        """The group's parts when its window has passed (the group is then forgotten)."""
        due = self.due_at(key)
        if due is None or now < due:
            return None
        self._last.pop(key)
        return self._parts.pop(key)

    def take_all(self) -> list[tuple[Any, list[Any]]]:
        """Every group still open (shutdown: they are queued as they stand)."""
        groups = list(self._parts.items())
        self._parts.clear()
        self._last.clear()
        return groups


def first_caption(captions: Sequence[str | None]) -> str:
    """An album's prompt: Telegram apps put the caption on one part, any of them."""
    return next((c.strip() for c in captions if c and c.strip()), "")
