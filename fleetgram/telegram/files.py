"""Files both ways between Telegram and a worker's workspace (agent mode).

In: a photo or document sent with a prompt is downloaded, saved under the task's upload folder
(``<ws>/repo/.fleetgram/uploads/<task-id>/``) and named in the prompt, so Claude Code can Read
it (images and PDFs included). Out: the agent's ``send_file(path, caption)`` tool delivers a
workspace file to the worker chat as a photo or a document.

The limits are the hosted Bot API's (https://core.telegram.org/bots/api#sending-files and the
methods' pages):

- getFile: "For the moment, bots can download files of up to 20MB in size"; above that the
  answer is 400 "Bad Request: file is too big" (tdlib/telegram-bot-api#51).
- uploads (multipart/form-data): "10 MB max size for photos, 50 MB for other files"; a larger
  body gets the front end's "413 Request Entity Too Large" (telegraf/telegraf#222).
- sendPhoto: "The photo's width and height must not exceed 10000 in total. Width and height
  ratio must be at most 20" (else "PHOTO_INVALID_DIMENSIONS", nickoala/telepot#135), a photo
  over 10 MB gets "file of size <n> bytes is too big for a photo".
- captions: "0-1024 characters after entities parsing".

Pure parts (``incoming_of``, ``check_incoming``, ``safe_name``, ``prompt_with_files``, the
size wording) are separate from the I/O (``download``, ``save_files``, ``deliver_file``).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import telegram
from telegram import InputFile
from telegram.error import BadRequest, RetryAfter, TelegramError

from fleetgram.telegram.delivery import retry_after_seconds
from fleetgram.telegram.retrying import read_retrying

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024  # getFile (https://core.telegram.org/bots/api#getfile)
MAX_PHOTO_UPLOAD_BYTES = 10 * 1024 * 1024  # sendPhoto upload
MAX_DOCUMENT_UPLOAD_BYTES = 50 * 1024 * 1024  # sendDocument upload
MAX_CAPTION = 1024  # "0-1024 characters after entities parsing" (UTF-16 code units)
MAX_NAME = 100  # characters of a saved file's name
_MAX_NAME_BYTES = 200  # and UTF-8 bytes (ext4 and most file systems stop at 255)
RETRY_AFTER_MAX = 10.0  # seconds: a longer flood wait is reported instead of waited out

PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
EMPTY_PROMPT = "Look at the attached file(s)."


@dataclass(frozen=True)
class Incoming:
    """An attachment as received, before download."""

    file_id: str
    name: str
    mime: str | None
    size: int | None
    kind: str  # "photo" | "document"


class AttachmentRefused(Exception):
    """An attachment that cannot be taken; ``str(e)`` is the one line the user is told."""


# ----------------------------------------------------------------------------- pure parts
def megabytes(size: int) -> str:
    """``22020096`` -> ``"21.0 MB"`` (MiB, as Telegram's limits are counted)."""
    return f"{size / (1024 * 1024):.1f} MB"


def incoming_of(message: telegram.Message) -> list[Incoming]:
    """The attachments of a message worth handing to Claude Code: a photo (its largest size,
    named ``photo_<message_id>.jpg``: Telegram re-encodes photos as JPEG) or a document (its
    own file name, else ``document_<message_id>`` with an extension guessed from the MIME
    type). Videos, animations, audio, voice notes and stickers give nothing."""
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        return [
            Incoming(
                largest.file_id,
                f"photo_{message.message_id}.jpg",
                "image/jpeg",
                largest.file_size,
                "photo",
            )
        ]
    # An animation message also carries its clip as ``document`` (for old clients); a clip is
    # nothing Claude Code can read.
    document = message.document
    if document is None or message.animation is not None:
        return []
    name = document.file_name
    if not name:
        ext = mimetypes.guess_extension(document.mime_type or "") or ".bin"
        name = f"document_{message.message_id}{ext}"
    return [Incoming(document.file_id, name, document.mime_type, document.file_size, "document")]


def check_incoming(files: Sequence[Incoming]) -> None:
    """Raise AttachmentRefused when a file is over getFile's 20 MB, before any download."""
    big = [f for f in files if f.size is not None and f.size > MAX_DOWNLOAD_BYTES]
    if big:
        listed = ", ".join(f"{f.name} is {megabytes(f.size or 0)}" for f in big)
        raise AttachmentRefused(f"{listed}; Telegram lets bots download files up to 20 MB.")


def safe_name(name: str, taken: set[str]) -> str:
    """A file name safe to create in the upload folder, not in ``taken``: the last path
    component only, no control characters, no leading dots or spaces (no hidden files, no
    ``..``), at most 100 characters keeping the extension, ``a-2.png`` when ``a.png`` is
    taken. Pure: ``taken`` is not changed."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C")
    base = base.strip().lstrip(". ").rstrip()
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem or len(ext) > 16 or " " in ext:
        stem, ext = base, ""
    ext = f".{ext}" if ext else ""
    stem = _shortened(stem or "file", ext)
    candidate, number = stem + ext, 1
    while candidate in taken:
        number += 1
        suffix = f"-{number}"
        candidate = _shortened(stem, suffix + ext) + suffix + ext
    return candidate


def _shortened(stem: str, tail: str) -> str:
    """``stem`` cut so that ``stem + tail`` fits MAX_NAME characters and _MAX_NAME_BYTES."""
    stem = stem[: max(1, MAX_NAME - len(tail))]
    while len((stem + tail).encode()) > _MAX_NAME_BYTES and len(stem) > 1:
        stem = stem[:-1]
    return stem.rstrip() or "file"


def prompt_with_files(prompt: str, paths: Sequence[str]) -> str:
    """The prompt plus a short paragraph naming each attached file (paths relative to the
    working directory), so Claude Code Reads them; a photo without caption asks to look."""
    text = prompt.strip() or EMPTY_PROMPT
    if not paths:
        return text
    if len(paths) == 1:
        head = "The user attached a file, saved in the working directory; read it with the "
        head += "Read tool:"
    else:
        head = (
            f"The user attached {len(paths)} files, saved in the working directory; read "
            "them with the Read tool:"
        )
    return text + "\n\n" + head + "\n" + "\n".join(f"- {p}" for p in paths)


def cut_caption(caption: str) -> str:
    """A caption Telegram accepts: at most 1024 UTF-16 code units (what it counts), ended
    with "…" when cut."""
    caption = caption.strip()
    if _u16(caption) <= MAX_CAPTION:
        return caption
    kept, used = [], 0
    for c in caption:
        used += _u16(c)
        if used > MAX_CAPTION - 1:
            break
        kept.append(c)
    return "".join(kept).rstrip() + "…"


def _u16(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# ----------------------------------------------------------------------------- incoming I/O
async def download(
    bot: telegram.Bot, files: Sequence[Incoming]
) -> list[tuple[str, str | None, bytes]]:
    """Download the attachments: ``(name, mime, data)`` each. Files over 20 MB are refused
    before any call; a Telegram refusal (getFile's "file is too big", an expired file id, an
    error of the network) becomes AttachmentRefused with a line for the user."""
    check_incoming(files)
    out: list[tuple[str, str | None, bytes]] = []
    for item in files:
        try:
            data = await read_retrying(lambda file_id=item.file_id: _fetch(bot, file_id))
        except BadRequest as error:
            if "too big" in error.message.lower():
                raise AttachmentRefused(
                    f"{item.name} is too big; Telegram lets bots download files up to 20 MB."
                ) from error
            raise AttachmentRefused(
                f"Telegram refused to hand over {item.name} ({error.message})."
            ) from error
        except TelegramError as error:
            raise AttachmentRefused(
                f"Could not download {item.name} from Telegram ({error.message})."
            ) from error
        out.append((item.name, item.mime, data))
    return out


async def _fetch(bot: telegram.Bot, file_id: str) -> bytes:
    remote = await bot.get_file(file_id)
    return bytes(await remote.download_as_bytearray())


async def save_files(folder: Path, files: Sequence[tuple[str, str | None, bytes]]) -> list[Path]:
    """Write the files into ``folder`` (created if missing) under safe, distinct names (never
    overwriting what is there); returns the paths written. File I/O runs in a thread."""

    def write() -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        taken = {p.name for p in folder.iterdir()}
        written = []
        for name, _mime, data in files:
            target = folder / safe_name(name, taken)
            taken.add(target.name)
            with open(target, "xb") as handle:
                handle.write(data)
            written.append(target)
        return written

    return await asyncio.to_thread(write)


# ----------------------------------------------------------------------------- outgoing
def _resolve_inside(root: Path, path: str) -> Path | None:
    """``path`` (relative to ``root`` or absolute) resolved, symlinks followed; None if it
    lands outside ``root``."""
    base = root.resolve()
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    resolved = candidate.resolve()
    return resolved if resolved.is_relative_to(base) else None


async def deliver_file(bot: telegram.Bot, chat_id: int, root: Path, path: str, caption: str) -> str:
    """The ``send_file`` tool: send a workspace file to the chat; returns a line for the model.

    ``path`` is relative to ``root`` or absolute inside it. Refused without sending anything:
    paths outside ``root`` (``..``, elsewhere, a symlink escaping), missing files,
    directories. Images (.jpg .jpeg .png .webp up to 10 MB) go as photos, anything else as a
    document up to 50 MB; a bigger file is not uploaded, the chat is told in one line. The
    caption is cut to 1024 characters. A photo Telegram refuses (dimensions, format) is sent
    again as a document; a flood wait (RetryAfter) up to 10 s is waited out once; any other
    Telegram error gives "could not send: <reason>".
    """
    target = await asyncio.to_thread(_resolve_inside, root, path)
    if target is None:
        return f"refused: {path} is outside the workspace; only files under {root} can be sent."
    stat = await asyncio.to_thread(_stat, target)
    if stat is None:
        return f"refused: {path} does not exist."
    is_dir, size = stat
    if is_dir:
        return f"refused: {path} is a directory; send a file (zip the folder first)."
    name = target.name
    if size > MAX_DOCUMENT_UPLOAD_BYTES:
        notice = (
            f"📎 {name} is {megabytes(size)}: too big to send here (bots send files up to 50 MB)."
        )
        try:
            await bot.send_message(chat_id, notice)
        except TelegramError as error:
            log.warning("could not tell chat %s that %s is too big: %s", chat_id, name, error)
        return (
            f"not sent: {path} is {megabytes(size)} and Telegram bots can send files up to "
            "50 MB; the user was told. Compress or split it, or say where it is."
        )
    data = await asyncio.to_thread(target.read_bytes)
    text = cut_caption(caption)
    as_photo = target.suffix.lower() in PHOTO_SUFFIXES and size <= MAX_PHOTO_UPLOAD_BYTES
    if as_photo:
        try:
            await _send(bot, chat_id, "photo", name, data, text)
            return f"sent {path} to the chat as a photo."
        except BadRequest as error:
            # Photos have rules documents do not (dimensions, decodable formats): the file
            # still reaches the user, as a document.
            log.info("photo %s refused (%s); sending it as a document", name, error.message)
        except TelegramError as error:
            return f"could not send: {error.message}"
    try:
        await _send(bot, chat_id, "document", name, data, text)
    except TelegramError as error:
        return f"could not send: {error.message}"
    return f"sent {path} to the chat as a document."


def _stat(target: Path) -> tuple[bool, int] | None:
    try:
        info = target.stat()
    except OSError:
        return None
    return target.is_dir(), info.st_size


async def _send(
    bot: telegram.Bot, chat_id: int, kind: str, name: str, data: bytes, caption: str
) -> None:
    """One sendPhoto / sendDocument; a RetryAfter up to RETRY_AFTER_MAX is waited out once."""
    for attempt in range(2):
        upload = InputFile(data, filename=name)
        try:
            if kind == "photo":
                await bot.send_photo(chat_id, upload, caption=caption or None)
            else:
                await bot.send_document(chat_id, upload, caption=caption or None)
            return
        except RetryAfter as error:
            wait = retry_after_seconds(error)
            if attempt or wait > RETRY_AFTER_MAX:
                raise
            await asyncio.sleep(wait)
