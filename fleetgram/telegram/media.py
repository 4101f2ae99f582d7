"""Media messages in the master's and the workers' chats: photos, image and PDF documents, text
files, albums, voice notes, and one-line answers for what is not taken (stickers, videos ...).

The decisions are fleetgram.media's (kinds, limits, albums) and fleetgram.transcribe's; this
module does the Telegram side: download (getFile), collect an album's parts, transcribe a voice
note and show the transcript, and hand the prompt with its files to the bot that registered it
(``submit``): the master queues a task, a worker takes one pinned to itself. The files are
stored with the task as attachments, in both modes; what differs is where they go
(``FileMode``): chat mode checks them against Claude's limits and the chat engine sends them as
content blocks, agent mode takes any file (within Telegram's 20 MB) and the agent engine saves
it into the worker's workspace. An album is one task in both modes. Voice notes and the answers
to stickers and videos are the same in both modes.

``submit`` gets the album's first part (or the one message): a bot reads its
``reply_to_message`` to make the task a follow-up (master/followups.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any

from telegram import Message, Update
from telegram.ext import ContextTypes

from fleetgram.config import Settings
from fleetgram.domain import Attachment
from fleetgram.media import (
    SUPPORTED,
    Albums,
    Kind,
    MediaFile,
    Refused,
    check_before_download,
    check_files,
    first_caption,
    image_mime,
    image_size,
    kind_of,
    pdf_pages,
    text_of,
)
from fleetgram.telegram.files import AttachmentRefused, Incoming, download, incoming_of
from fleetgram.transcribe import (
    NOT_CONFIGURED,
    TranscribeConfig,
    Transcriber,
    TranscriptionFailed,
)

log = logging.getLogger(__name__)

ALBUM_WINDOW = 1.0  # seconds after an album's last part before it becomes one task
TRANSCRIPT_SHOWN = 3500  # characters of a transcript echoed to the chat
STICKER = "Stickers carry no prompt: send text, a photo, a PDF or a voice note."
VIDEO = ("I can't watch videos (Claude reads images, not video): send a screenshot or "
         "describe what matters.")
OTHER = ("I take text, photos, images, PDFs, text files and voice notes; that kind of message "
         "is not something I can use.")
SILENT = "🎙 I heard no words in that recording; nothing was queued."
UNREADABLE = "I could not read a file in that message; send it again, or as text."

Submit = Callable[[Message, int, str, Sequence[Attachment]], Awaitable[object]]
Reply = Callable[[Message, str], Awaitable[object]]


class FileMode(StrEnum):
    """Where the photos and documents of a prompt go."""

    CLAUDE = "claude"  # chat mode: to the Messages API as content blocks, within its limits
    WORKSPACE = "workspace"  # agent mode: any file, saved into the worker's workspace


def transcriber_of(settings: Settings) -> Transcriber | None:
    if not settings.transcribe_url:
        return None
    return Transcriber(TranscribeConfig(
        url=settings.transcribe_url, api_key=settings.transcribe_api_key or "",
        model=settings.transcribe_model, timeout=settings.transcribe_timeout))


class ChatMedia:
    """One per bot: ``handle`` is its MessageHandler callback for non-text messages."""

    def __init__(self, settings: Settings, *, submit: Submit, reply: Reply, files: FileMode,
                 window: float = ALBUM_WINDOW, transcriber: Transcriber | None = None) -> None:
        self.submit = submit
        self.reply = reply
        self.files = files
        self.transcriber = transcriber or transcriber_of(settings)
        self._albums = Albums(window)
        self._timers: dict[Any, asyncio.Task[None]] = {}

    async def close(self) -> None:
        """Stop the album timers; albums still collecting are taken as they stand."""
        timers = list(self._timers.values())
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        self._timers.clear()
        for _, parts in self._albums.take_all():
            await self._guarded(self._take_files(sorted(parts, key=lambda m: m.message_id)))

    async def handle(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.from_user is None:
            return
        document = message.document
        if self._is_recording(message):
            await self._take_voice(message)
        elif message.sticker:
            await self.reply(message, STICKER)
        elif message.video or message.video_note or message.animation:
            await self.reply(message, VIDEO)
        elif message.photo or document is not None:
            if message.media_group_id:
                self._collect(message)
            else:
                await self._take_files([message])
        else:
            await self.reply(message, OTHER)

    def _is_recording(self, message: Message) -> bool:
        """A voice note or an audio file: transcribed. Agent mode keeps an audio file sent as
        a document a file to work on (it goes into the workspace, as any document)."""
        if message.voice or message.audio:
            return True
        document = message.document
        return (self.files == FileMode.CLAUDE and document is not None
                and (document.mime_type or "").startswith("audio/"))

    # --- albums --------------------------------------------------------------------------
    def _collect(self, message: Message) -> None:
        key = (message.chat_id, message.media_group_id)
        now = asyncio.get_running_loop().time()
        if self._albums.add(key, message, now):
            self._timers[key] = asyncio.create_task(self._when_due(key), name="album")

    async def _when_due(self, key: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = self._albums.due_at(key)
            if due is None:
                return
            await asyncio.sleep(max(0.0, due - loop.time()))
            parts = self._albums.take_if_due(key, loop.time())
            if parts is not None:
                break
        self._timers.pop(key, None)
        await self._guarded(self._take_files(sorted(parts, key=lambda m: m.message_id)))

    async def _guarded(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception:  # a background album must not die silently in the event loop
            log.exception("an album could not be taken")

    # --- photos and documents ----------------------------------------------------------------
    async def _take_files(self, messages: Sequence[Message]) -> None:
        anchor = messages[0]
        assert anchor.from_user is not None
        try:
            attachments = await self._attachments(messages)
        except (Refused, AttachmentRefused) as refused:
            await self.reply(anchor, str(refused))
            return
        caption = first_caption([m.caption for m in messages])
        prompt = caption or ("Look at the attached file" + ("s." if len(attachments) > 1
                                                            else "."))
        await self.submit(anchor, anchor.from_user.id, prompt, attachments)

    async def _attachments(self, messages: Sequence[Message]) -> list[Attachment]:
        if self.files == FileMode.WORKSPACE:
            return await _workspace_files(messages)
        return [Attachment(f.name, f.mime, f.data) for f in await self._prepare(messages)]

    async def _prepare(self, messages: Sequence[Message]) -> list[MediaFile]:
        """Check what Telegram announces, download, check what arrived (raises Refused)."""
        wanted: list[tuple[Incoming, Kind, tuple[int, int] | None]] = []
        for message in messages:
            if message.animation is not None:
                raise Refused(VIDEO)
            for item in incoming_of(message):
                kind = kind_of(item.name, item.mime)
                check_before_download(item.name, kind, item.size)
                assert kind is not None
                wanted.append((item, kind, _photo_size(message)))
        if not wanted:
            raise Refused(f"{SUPPORTED}; that message has no file I can use.")
        got = await download(messages[0].get_bot(), [item for item, _, _ in wanted])
        files = [_media_file(name, mime, data, kind, size)
                 for (_, kind, size), (name, mime, data) in zip(wanted, got, strict=True)]
        check_files(files)
        return files

    # --- voice -------------------------------------------------------------------------------
    async def _take_voice(self, message: Message) -> None:
        assert message.from_user is not None
        if self.transcriber is None:
            await self.reply(message, NOT_CONFIGURED)
            return
        item = _audio_of(message)
        try:
            (name, mime, data), = await download(message.get_bot(), [item])
            text = await self.transcriber.transcribe(name, mime, data)
        except (AttachmentRefused, TranscriptionFailed) as failed:
            await self.reply(message, str(failed))
            return
        if not text:
            await self.reply(message, SILENT)
            return
        shown = text if len(text) <= TRANSCRIPT_SHOWN else text[:TRANSCRIPT_SHOWN] + "…"
        await self.reply(message, f"🎙 {shown}")
        caption = (message.caption or "").strip()
        prompt = f"{caption}\n\n{text}" if caption else text
        await self.submit(message, message.from_user.id, prompt, [])


async def _workspace_files(messages: Sequence[Message]) -> list[Attachment]:
    """Agent mode: every file of the messages as sent (Claude Code reads what it can), within
    Telegram's 20 MB download limit (raises AttachmentRefused)."""
    wanted = [item for message in messages for item in incoming_of(message)]
    if not wanted:
        raise AttachmentRefused(UNREADABLE)
    got = await download(messages[0].get_bot(), wanted)
    return [Attachment(name, mime, data) for name, mime, data in got]


def _photo_size(message: Message) -> tuple[int, int] | None:
    """A photo's largest size, as Telegram reports it (a document's is read from its bytes)."""
    if not message.photo:
        return None
    largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
    return largest.width, largest.height


def _media_file(name: str, mime: str | None, data: bytes, kind: Kind,
                size: tuple[int, int] | None) -> MediaFile:
    if kind == Kind.IMAGE:
        width, height = size or image_size(data) or (None, None)
        return MediaFile(name, image_mime(name, mime, data), data, kind, width, height)
    if kind == Kind.PDF:
        return MediaFile(name, "application/pdf", data, kind, pages=pdf_pages(data))
    if text_of(data) is None:
        raise Refused(f"{name} is not text I can read (not UTF-8). {SUPPORTED}.")
    return MediaFile(name, mime or "text/plain", data, kind)


def _audio_of(message: Message) -> Incoming:
    if message.voice is not None:
        voice = message.voice
        return Incoming(voice.file_id, f"voice_{message.message_id}.ogg",
                        voice.mime_type or "audio/ogg", voice.file_size, "voice")
    audio = message.audio or message.document
    assert audio is not None
    name = getattr(audio, "file_name", None) or f"audio_{message.message_id}"
    return Incoming(audio.file_id, name, audio.mime_type, audio.file_size, "audio")
