"""Specifications of files between Telegram and a worker's workspace (fleetgram.telegram.files),
against the Telegram emulator with the real PTB Bot, plus the pure parts."""

from __future__ import annotations

import datetime as dtm
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from telegram import Bot, Chat, Document, Message, Update

from fleetgram.emulators.telegram_api import SimUser, TelegramEmulator
from fleetgram.telegram.files import (
    EMPTY_PROMPT,
    AttachmentRefused,
    Incoming,
    check_incoming,
    deliver_file,
    download,
    incoming_of,
    prompt_with_files,
    safe_name,
    save_files,
)
from tests.emulators.test_telegram_files import png

pytestmark = pytest.mark.filterwarnings("ignore:Deprecated since version v22.2")

TOKEN = "123456:TEST-token"
BOT = "test_bot"
USER_ID = 4242
MB = 1024 * 1024


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    await emulator.start()
    emulator.add_bot(TOKEN, BOT, "Worker")
    emulator.add_user(USER_ID, "Ada").opened_earlier(BOT)
    yield emulator
    await emulator.stop()


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{emu.url}/bot", base_file_url=f"{emu.url}/file/bot") as b:
        yield b


@pytest.fixture
def user(emu: TelegramEmulator) -> SimUser:
    return emu.add_user(USER_ID, "Ada")


async def received(bot: Bot) -> Message:
    """The message the bot gets next (one update waiting)."""
    (update,) = await bot.get_updates(timeout=0)
    assert isinstance(update, Update) and update.message is not None
    return update.message


def plain_message(**content: object) -> Message:
    return Message(
        message_id=7,
        date=dtm.datetime.now(dtm.UTC),
        chat=Chat(USER_ID, Chat.PRIVATE),
        **content,  # type: ignore[arg-type]
    )


# ----------------------------------------------------------------------------- incoming_of
async def test_a_photo_with_a_caption_yields_its_largest_size_named_after_the_message(
    bot: Bot, user: SimUser
) -> None:
    message_id = await user.send_photo(BOT, caption="what is this?")
    message = await received(bot)
    (item,) = incoming_of(message)
    largest = message.photo[-1]
    assert (largest.width, largest.height) == (1280, 960)
    assert item == Incoming(
        largest.file_id, f"photo_{message_id}.jpg", "image/jpeg", largest.file_size, "photo"
    )


async def test_a_document_keeps_its_name(bot: Bot, user: SimUser) -> None:
    await user.send_document(BOT, "report.pdf", b"%PDF-1.4", mime_type="application/pdf")
    (item,) = incoming_of(await received(bot))
    assert (item.name, item.mime, item.size, item.kind) == (
        "report.pdf",
        "application/pdf",
        8,
        "document",
    )


def test_a_document_without_a_name_is_named_from_its_mime_type() -> None:
    message = plain_message(document=Document("f1", "u1", mime_type="application/pdf"))
    (item,) = incoming_of(message)
    assert item.name == "document_7.pdf"


async def test_voice_notes_and_stickers_are_no_attachments(bot: Bot, user: SimUser) -> None:
    await user.send_voice(BOT)
    await user.send_sticker(BOT)
    updates = await bot.get_updates(timeout=0)
    assert [incoming_of(u.message) for u in updates if u.message] == [[], []]


def test_a_text_message_has_no_attachments() -> None:
    assert incoming_of(plain_message(text="hello")) == []


# ----------------------------------------------------------------------------- limits, download
def test_a_21_mb_document_is_refused_with_one_line() -> None:
    files = [Incoming("f1", "report.pdf", "application/pdf", 21 * MB + 300 * 1024, "document")]
    with pytest.raises(AttachmentRefused) as refused:
        check_incoming(files)
    assert str(refused.value) == (
        "report.pdf is 21.3 MB; Telegram lets bots download files up to 20 MB."
    )


def test_a_20_mb_document_is_accepted() -> None:
    check_incoming([Incoming("f1", "a.bin", None, 20 * MB, "document")])


async def test_a_21_mb_upload_is_refused_before_any_download(
    emu: TelegramEmulator, bot: Bot, user: SimUser
) -> None:
    await user.send_document(BOT, "big.pdf", bytes(21 * MB), caption="summarise")
    files = incoming_of(await received(bot))
    with pytest.raises(AttachmentRefused, match=r"^big\.pdf is 21\.0 MB; Telegram lets bots"):
        await download(bot, files)
    assert emu.calls_to(BOT, "getFile") == []


async def test_a_get_file_refusal_becomes_a_readable_line(
    emu: TelegramEmulator, bot: Bot, user: SimUser
) -> None:
    await user.send_document(BOT, "big.zip", bytes(21 * MB))
    (item,) = incoming_of(await received(bot))
    unknown_size = Incoming(item.file_id, item.name, item.mime, None, item.kind)
    with pytest.raises(AttachmentRefused) as refused:
        await download(bot, [unknown_size])
    assert str(refused.value) == (
        "big.zip is too big; Telegram lets bots download files up to 20 MB."
    )
    assert [c.status for c in emu.calls_to(BOT, "getFile")] == [400]


async def test_download_returns_each_files_name_type_and_bytes(bot: Bot, user: SimUser) -> None:
    await user.send_document(BOT, "notes.md", b"# plan", mime_type="text/markdown")
    files = incoming_of(await received(bot))
    assert await download(bot, files) == [("notes.md", "text/markdown", b"# plan")]


# ----------------------------------------------------------------------------- safe_name
def test_safe_name_keeps_only_the_last_path_component() -> None:
    assert safe_name("../../etc/passwd", set()) == "passwd"
    assert safe_name("..\\..\\boot.ini", set()) == "boot.ini"


def test_safe_name_hides_no_file_behind_a_leading_dot() -> None:
    assert safe_name(".bashrc", set()) == "bashrc"
    assert safe_name("..", set()) == "file"


def test_safe_name_drops_control_characters() -> None:
    assert safe_name("re\x00port\n.txt\x7f", set()) == "report.txt"


def test_safe_name_numbers_duplicates() -> None:
    assert safe_name("a.png", {"a.png"}) == "a-2.png"
    assert safe_name("a.png", {"a.png", "a-2.png"}) == "a-3.png"
    assert safe_name("README", {"README"}) == "README-2"


def test_safe_name_shortens_long_names_keeping_the_extension() -> None:
    name = safe_name("x" * 300 + ".pdf", set())
    assert len(name) == 100 and name.endswith("x.pdf")
    again = safe_name("x" * 300 + ".pdf", {name})
    assert len(again) == 100 and again.endswith("-2.pdf")


def test_safe_name_keeps_unicode() -> None:
    assert safe_name("отчёт за май 📊.xlsx", set()) == "отчёт за май 📊.xlsx"


# ----------------------------------------------------------------------------- save_files
async def test_save_files_writes_the_bytes(tmp_path: Path) -> None:
    folder = tmp_path / "uploads" / "t1"
    paths = await save_files(folder, [("a.png", "image/png", b"\x89PNG"), ("b.txt", None, b"hi")])
    assert paths == [folder / "a.png", folder / "b.txt"]
    assert [p.read_bytes() for p in paths] == [b"\x89PNG", b"hi"]


async def test_save_files_never_overwrites_a_file(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"old")
    paths = await save_files(tmp_path, [("a.png", None, b"new"), ("../a.png", None, b"newer")])
    assert [p.name for p in paths] == ["a-2.png", "a-3.png"]
    assert (tmp_path / "a.png").read_bytes() == b"old"


# ----------------------------------------------------------------------------- prompt_with_files
def test_prompt_with_files_names_the_file_after_the_caption() -> None:
    paths = [".fleetgram/uploads/t1/photo_3.jpg"]
    assert prompt_with_files("what is on this whiteboard?", paths) == (
        "what is on this whiteboard?\n\n"
        "The user attached a file, saved in the working directory; read it with the Read tool:\n"
        "- .fleetgram/uploads/t1/photo_3.jpg"
    )


def test_a_photo_without_caption_asks_to_look_at_it() -> None:
    text = prompt_with_files("  ", [".fleetgram/uploads/t1/photo_3.jpg"])
    assert EMPTY_PROMPT == "Look at the attached file(s)."
    assert text.startswith(EMPTY_PROMPT + "\n\n")


def test_prompt_with_files_lists_several_files() -> None:
    text = prompt_with_files("compare", ["u/a.pdf", "u/b.pdf"])
    assert "attached 2 files" in text and text.endswith("- u/a.pdf\n- u/b.pdf")


# ----------------------------------------------------------------------------- deliver_file
async def test_deliver_file_sends_a_png_as_a_photo(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    image = png(640, 480)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "chart.png").write_bytes(image)
    answer = await deliver_file(bot, USER_ID, tmp_path, "out/chart.png", "the chart")
    assert answer == "sent out/chart.png to the chat as a photo."
    (shown,) = emu.history(BOT, USER_ID)
    assert shown.photo is not None and shown.text == "the chart"
    assert emu.file_bytes(shown.photo[-1]["file_id"]) == image


async def test_deliver_file_sends_a_text_file_as_a_document(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_bytes(b"done\n")
    answer = await deliver_file(bot, USER_ID, tmp_path, str(tmp_path / "notes.txt"), "")
    assert answer == f"sent {tmp_path / 'notes.txt'} to the chat as a document."
    (shown,) = emu.history(BOT, USER_ID)
    assert shown.document is not None and shown.document["file_name"] == "notes.txt"
    assert emu.file_bytes(shown.document["file_id"]) == b"done\n"


@pytest.mark.parametrize("path", ["../secret.txt", "sub/../../secret.txt"])
async def test_deliver_file_refuses_paths_leaving_the_workspace(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path, path: str
) -> None:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("key")
    answer = await deliver_file(bot, USER_ID, root, path, "")
    assert answer.startswith(f"refused: {path} is outside the workspace")
    assert emu.history(BOT, USER_ID) == []


async def test_deliver_file_refuses_an_absolute_path_elsewhere(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "secret.txt").write_text("key")
    answer = await deliver_file(bot, USER_ID, tmp_path / "repo", str(tmp_path / "secret.txt"), "")
    assert answer.startswith("refused:") and "outside the workspace" in answer
    assert emu.history(BOT, USER_ID) == []


async def test_deliver_file_refuses_a_symlink_escaping_the_workspace(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "secret.txt").write_text("key")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    answer = await deliver_file(bot, USER_ID, root, "link.txt", "")
    assert answer.startswith("refused: link.txt is outside the workspace")
    assert emu.history(BOT, USER_ID) == []


async def test_deliver_file_refuses_a_missing_file(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    assert await deliver_file(bot, USER_ID, tmp_path, "nope.txt", "") == (
        "refused: nope.txt does not exist."
    )
    assert emu.history(BOT, USER_ID) == []


async def test_deliver_file_refuses_a_directory(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    (tmp_path / "build").mkdir()
    answer = await deliver_file(bot, USER_ID, tmp_path, "build", "")
    assert answer.startswith("refused: build is a directory")
    assert emu.history(BOT, USER_ID) == []


async def test_a_51_mb_file_is_reported_too_big_in_the_chat_and_to_the_model(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as handle:  # sparse: no 51 MB written
        handle.truncate(51 * MB)
    answer = await deliver_file(bot, USER_ID, tmp_path, "big.bin", "")
    assert answer.startswith("not sent: big.bin is 51.0 MB and Telegram bots can send files up")
    assert [m.text for m in emu.history(BOT, USER_ID)] == [
        "📎 big.bin is 51.0 MB: too big to send here (bots send files up to 50 MB)."
    ]
    assert emu.calls_to(BOT, "sendDocument") == []


async def test_an_image_over_10_mb_goes_as_a_document(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    image = png(100, 100)
    (tmp_path / "huge.png").write_bytes(image + bytes(11 * MB))
    answer = await deliver_file(bot, USER_ID, tmp_path, "huge.png", "")
    assert answer.endswith("as a document.")
    assert emu.calls_to(BOT, "sendPhoto") == []


async def test_deliver_file_cuts_the_caption_to_1024_characters(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("a")
    await deliver_file(bot, USER_ID, tmp_path, "a.txt", "word " * 400)
    (shown,) = emu.history(BOT, USER_ID)
    assert len(shown.text) <= 1024 and shown.text.endswith("…")
    assert shown.text.startswith("word word")


async def test_a_photo_telegram_refuses_is_sent_again_as_a_document(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    (tmp_path / "strip.png").write_bytes(png(4000, 100))  # ratio 40 > 20
    answer = await deliver_file(bot, USER_ID, tmp_path, "strip.png", "a long strip")
    assert answer == "sent strip.png to the chat as a document."
    assert [c.status for c in emu.calls_to(BOT, "sendPhoto")] == [400]
    (shown,) = emu.history(BOT, USER_ID)
    assert shown.document is not None and shown.document["file_name"] == "strip.png"
    assert shown.text == "a long strip"


async def test_a_flood_wait_is_waited_out_once(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("a")
    emu.fail_next(BOT, "sendDocument", 429, "Too Many Requests: retry after 1", retry_after=1)
    answer = await deliver_file(bot, USER_ID, tmp_path, "a.txt", "")
    assert answer == "sent a.txt to the chat as a document."
    assert [c.status for c in emu.calls_to(BOT, "sendDocument")] == [429, 200]


async def test_a_long_flood_wait_is_not_waited(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("a")
    emu.fail_next(BOT, "sendDocument", 429, "Too Many Requests: retry after 30", retry_after=30)
    answer = await deliver_file(bot, USER_ID, tmp_path, "a.txt", "")
    assert answer.startswith("could not send: ") and "30" in answer
    assert len(emu.calls_to(BOT, "sendDocument")) == 1


async def test_a_telegram_error_is_reported_to_the_model(
    emu: TelegramEmulator, bot: Bot, tmp_path: Path
) -> None:
    (tmp_path / "a.txt").write_text("a")
    emu._users[USER_ID].block(BOT)
    answer = await deliver_file(bot, USER_ID, tmp_path, "a.txt", "")
    assert answer == "could not send: Forbidden: bot was blocked by the user"
