"""Specifications of the emulator's files: sendPhoto, the Bot API's size limits and reading what
a bot sent (https://core.telegram.org/bots/api#sending-files), through the real PTB Bot."""

from __future__ import annotations

import struct
import zlib
from collections.abc import AsyncIterator

import pytest
from telegram import Bot, InputFile
from telegram.error import BadRequest, NetworkError

from fleetgram.emulators.telegram_api import TelegramEmulator

TOKEN = "123456:TEST-token"
BOT = "test_bot"
USER_ID = 4242
MB = 1024 * 1024


def png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of the given size (all black)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = (b"\x00" + bytes((width + 7) // 8)) * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    await emulator.start()
    emulator.add_bot(TOKEN, BOT, "Test Bot")
    emulator.add_user(USER_ID).opened_earlier(BOT)
    yield emulator
    await emulator.stop()


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{emu.url}/bot", base_file_url=f"{emu.url}/file/bot") as b:
        yield b


# ----------------------------------------------------------------------------- sendPhoto
async def test_send_photo_shows_a_photo_with_its_sizes_and_caption(
    emu: TelegramEmulator, bot: Bot
) -> None:
    image = png(1600, 1200)
    message = await bot.send_photo(USER_ID, InputFile(image, filename="chart.png"), caption="Q3")
    assert [(p.width, p.height) for p in message.photo] == [
        (90, 68),
        (320, 240),
        (800, 600),
        (1280, 960),
        (1600, 1200),
    ]
    assert message.caption == "Q3"
    (shown,) = emu.history(BOT, USER_ID)
    assert shown.from_bot and shown.text == "Q3" and shown.document is None
    assert shown.photo is not None and shown.photo[-1]["width"] == 1600
    assert emu.file_bytes(shown.photo[-1]["file_id"]) == image


async def test_a_sent_photo_downloads_through_get_file(emu: TelegramEmulator, bot: Bot) -> None:
    image = png(40, 30)
    message = await bot.send_photo(USER_ID, InputFile(image, filename="tiny.png"))
    assert [(p.width, p.height) for p in message.photo] == [(40, 30)]
    remote = await bot.get_file(message.photo[-1].file_id)
    assert bytes(await remote.download_as_bytearray()) == image


async def test_a_photo_file_id_can_be_sent_again(emu: TelegramEmulator, bot: Bot) -> None:
    first = await bot.send_photo(USER_ID, InputFile(png(800, 600), filename="a.png"))
    again = await bot.send_photo(USER_ID, first.photo[-1].file_id, caption="again")
    assert [p.file_id for p in again.photo] == [p.file_id for p in first.photo]
    assert [m.text for m in emu.history(BOT, USER_ID)] == ["", "again"]


async def test_a_document_file_id_is_not_a_photo(emu: TelegramEmulator, bot: Bot) -> None:
    doc = await bot.send_document(USER_ID, InputFile(b"x", filename="x.txt"))
    assert doc.document is not None
    with pytest.raises(BadRequest, match=r"(?i)can.t use file of type Document as Photo"):
        await bot.send_photo(USER_ID, doc.document.file_id)


async def test_a_photo_over_10_mb_is_refused(emu: TelegramEmulator, bot: Bot) -> None:
    image = png(100, 100)
    big = image + bytes(10 * MB + 1 - len(image))
    with pytest.raises(BadRequest, match=r"(?i)of size 10485761 bytes is too big for a photo"):
        await bot.send_photo(USER_ID, InputFile(big, filename="big.png"))
    assert emu.history(BOT, USER_ID) == []


@pytest.mark.parametrize("size", [(9000, 1001), (2100, 100), (100, 2100)])
async def test_photo_dimensions_beyond_the_limits_are_refused(
    emu: TelegramEmulator, bot: Bot, size: tuple[int, int]
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)PHOTO_INVALID_DIMENSIONS"):
        await bot.send_photo(USER_ID, InputFile(png(*size), filename="wide.png"))
    assert emu.history(BOT, USER_ID) == []


async def test_photo_dimensions_at_the_limits_are_accepted(bot: Bot) -> None:
    message = await bot.send_photo(USER_ID, InputFile(png(9000, 1000), filename="pano.png"))
    assert (message.photo[-1].width, message.photo[-1].height) == (2560, 284)


async def test_a_photo_that_is_no_image_is_refused(bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)IMAGE_PROCESS_FAILED"):
        await bot.send_photo(USER_ID, InputFile(b"not an image", filename="x.jpg"))


async def test_a_photo_caption_over_1024_characters_is_refused(bot: Bot) -> None:
    upload = InputFile(png(10, 10), filename="a.png")
    with pytest.raises(BadRequest, match=r"(?i)message caption is too long"):
        await bot.send_photo(USER_ID, upload, caption="x" * 1025)
    message = await bot.send_photo(
        USER_ID, InputFile(png(10, 10), filename="a.png"), caption="x" * 1024
    )
    assert message.caption == "x" * 1024


# ----------------------------------------------------------------------------- size limits
async def test_an_upload_over_50_mb_gets_the_front_ends_413(
    emu: TelegramEmulator, bot: Bot
) -> None:
    with pytest.raises(NetworkError, match=r"Request Entity Too Large \(413\)"):
        await bot.send_document(USER_ID, InputFile(bytes(50 * MB + 1), filename="big.bin"))
    assert [c.status for c in emu.calls_to(BOT, "sendDocument")] == [413]
    assert emu.history(BOT, USER_ID) == []


async def test_a_user_sends_21_mb_and_get_file_refuses_it(emu: TelegramEmulator, bot: Bot) -> None:
    await emu._users[USER_ID].send_document(BOT, "big.pdf", bytes(21 * MB), caption="read")
    (update,) = await bot.get_updates(timeout=0)
    assert update.message is not None and update.message.document is not None
    assert update.message.document.file_size == 21 * MB
    with pytest.raises(BadRequest, match=r"(?i)file is too big"):
        await bot.get_file(update.message.document.file_id)
    assert emu.calls_to(BOT, "getFile")[0].response == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: file is too big",
    }


async def test_get_file_serves_a_file_of_exactly_20_mb(emu: TelegramEmulator, bot: Bot) -> None:
    await emu._users[USER_ID].send_document(BOT, "edge.bin", bytes(20 * MB))
    (update,) = await bot.get_updates(timeout=0)
    assert update.message is not None and update.message.document is not None
    remote = await bot.get_file(update.message.document.file_id)
    assert remote.file_size == 20 * MB


# ----------------------------------------------------------------------------- reading files
async def test_file_bytes_reads_what_a_bot_sent_as_a_document(
    emu: TelegramEmulator, bot: Bot
) -> None:
    await bot.send_document(USER_ID, InputFile(b"a,b\n1,2\n", filename="t.csv"))
    (shown,) = emu.history(BOT, USER_ID)
    assert shown.document is not None and shown.photo is None
    assert emu.file_bytes(shown.document["file_id"]) == b"a,b\n1,2\n"
    with pytest.raises(KeyError):
        emu.file_bytes("no-such-file")


def jpeg(width: int, height: int) -> bytes:
    """The head of a baseline JPEG: SOI, a JFIF APP0 segment, then the frame header (SOF0)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + bytes(9)
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


async def test_a_jpeg_photo_is_measured_from_its_frame_header(bot: Bot) -> None:
    message = await bot.send_photo(USER_ID, InputFile(jpeg(1000, 750), filename="cam.jpg"))
    assert (message.photo[-1].width, message.photo[-1].height) == (1000, 750)
