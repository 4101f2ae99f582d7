"""Voice notes to text through an OpenAI-compatible transcription endpoint (TRANSCRIBE_URL).

The request is OpenAI's "Create transcription"
(https://platform.openai.com/docs/api-reference/audio/createTranscription):
``POST {TRANSCRIBE_URL}/v1/audio/transcriptions``, ``multipart/form-data`` with ``file`` (the
audio, named with its format's extension: the server tells the format by it) and ``model``
(TRANSCRIBE_MODEL, default ``whisper-1``), ``Authorization: Bearer TRANSCRIBE_API_KEY``; the
answer is JSON ``{"text": "..."}``. Documented limits: file uploads up to 25 MB
(https://platform.openai.com/docs/guides/speech-to-text, and the Audio API FAQ
https://help.openai.com/en/articles/7031512-whisper-api-faq: "the maximum request size is 25
MiB"), formats flac, mp3, mp4, mpeg, mpga, m4a, ogg, wav, webm (the API also takes ``oga``: its
400 says "Invalid file format. Supported formats: ['flac', 'm4a', 'mp3', 'mp4', 'mpeg', 'mpga',
'oga', 'ogg', 'wav', 'webm']"). Telegram voice notes are Opus in Ogg (``audio/ogg``).

Failures become one line for the user (TranscriptionFailed); 429, 5xx and timeouts are tried
again (RETRIES more times, waiting Retry-After when it is short), other 4xx are not.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
from dataclasses import dataclass
from pathlib import PurePosixPath

import aiohttp

log = logging.getLogger(__name__)

MAX_BYTES = 25 * 1024 * 1024
FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
_MIME_FORMATS = {
    "audio/ogg": "ogg", "audio/opus": "ogg", "audio/x-opus+ogg": "ogg", "audio/mpeg": "mp3",
    "audio/mp3": "mp3", "audio/mp4": "m4a", "audio/x-m4a": "m4a", "audio/m4a": "m4a",
    "audio/aac": "m4a", "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav",
    "audio/flac": "flac", "audio/x-flac": "flac", "audio/webm": "webm", "video/mp4": "mp4",
    "video/webm": "webm", "audio/mpga": "mpga",
}
RETRIES = 2  # more attempts after a 429, a 5xx or a timeout
RETRY_AFTER_MAX = 10.0  # seconds: a longer Retry-After is not waited out
NOT_CONFIGURED = (
    "Voice notes are not configured here: the operator sets TRANSCRIBE_URL (an "
    "OpenAI-compatible /v1/audio/transcriptions endpoint) and TRANSCRIBE_API_KEY. "
    "Type your prompt meanwhile."
)


class TranscriptionFailed(Exception):
    """``str(e)`` is the one line the user is told."""


@dataclass(frozen=True)
class TranscribeConfig:
    url: str  # the base: {url}/v1/audio/transcriptions
    api_key: str
    model: str = "whisper-1"
    timeout: float = 60.0


# ----------------------------------------------------------------------------- pure parts
def audio_format(name: str | None, mime: str | None) -> str | None:
    """The endpoint's format for a file (by extension, else MIME type); None: unsupported."""
    suffix = PurePosixPath((name or "").lower()).suffix.lstrip(".")
    if suffix in FORMATS:
        return suffix
    if suffix == "opus":  # Telegram's Opus files are Ogg
        return "ogg"
    return _MIME_FORMATS.get((mime or "").split(";")[0].strip().lower())


def upload_name(name: str | None, fmt: str) -> str:
    """The file name sent: the user's stem with the format's extension."""
    stem = PurePosixPath(name or "voice").stem or "voice"
    return f"{stem}.{fmt}"


def endpoint(url: str) -> str:
    """``{TRANSCRIBE_URL}/v1/audio/transcriptions``; a URL already ending in /v1 is kept."""
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return f"{base}/v1/audio/transcriptions"


def failure_line(status: int, message: str | None) -> str:
    """One line for a refused transcription (no key, no body details beyond the reason)."""
    reason = " ".join((message or "").split())[:160]
    match status:
        case 401 | 403:
            return "🎙 The transcription service refused our key (TRANSCRIBE_API_KEY); tell " \
                   "the operator. Type your prompt meanwhile."
        case 413:
            return "🎙 That recording is too big for the transcription service (25 MB at most)."
        case 429:
            return "🎙 The transcription service is busy (rate limited); try again in a minute."
        case _ if status >= 500:
            return f"🎙 The transcription service failed (HTTP {status}); try again later."
        case _:
            detail = f": {reason}" if reason else ""
            return f"🎙 The transcription service refused that recording (HTTP {status}){detail}"


def retry_wait(attempt: int, retry_after: str | None) -> float | None:
    """Seconds before attempt `attempt + 1`, or None: give up."""
    if attempt >= RETRIES:
        return None
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            seconds = 1.0
        return seconds if seconds <= RETRY_AFTER_MAX else None
    return 0.5 * 2 ** attempt


# ----------------------------------------------------------------------------- I/O
class Transcriber:
    def __init__(self, config: TranscribeConfig) -> None:
        self.config = config

    async def transcribe(self, name: str | None, mime: str | None, data: bytes) -> str:
        """The transcript of an audio file; raises TranscriptionFailed with a line to show."""
        fmt = audio_format(name, mime)
        if fmt is None:
            raise TranscriptionFailed(
                f"🎙 I can transcribe {', '.join(FORMATS)} audio; that file is "
                f"{mime or 'of an unknown type'}.")
        if len(data) > MAX_BYTES:
            raise TranscriptionFailed(
                f"🎙 That recording is {len(data) / (1024 * 1024):.1f} MB; the transcription "
                "service takes up to 25 MB.")
        filename = upload_name(name, fmt)
        content_type = mimetypes.types_map.get(f".{fmt}") or mime or "application/octet-stream"
        attempt = 0
        while True:
            status, message, retry_after, text = await self._post(filename, content_type, data)
            if status == 200 and text is not None:
                return text.strip()
            retryable = status in (408, 409, 429) or status >= 500 or status == 0
            wait = retry_wait(attempt, retry_after) if retryable else None
            log.info("transcription failed", extra={"status": status, "attempt": attempt + 1})
            if wait is None:
                if status == 0:
                    raise TranscriptionFailed(
                        f"🎙 The transcription service did not answer ({message}); try again "
                        "later.")
                raise TranscriptionFailed(failure_line(status, message))
            await asyncio.sleep(wait)
            attempt += 1

    async def _post(self, filename: str, content_type: str, data: bytes
                    ) -> tuple[int, str | None, str | None, str | None]:
        """One request: (status, error message, Retry-After, transcript); status 0: no
        answer (timeout, refused connection)."""
        form = aiohttp.FormData()
        form.add_field("file", data, filename=filename, content_type=content_type)
        form.add_field("model", self.config.model)
        form.add_field("response_format", "json")
        # A local server may need no key; OpenAI's takes it as a Bearer token.
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key \
            else {}
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                endpoint(self.config.url), data=form, headers=headers
            ) as response:
                body = _json_or_none(await response.text())
                if response.status == 200:
                    text = body.get("text") if isinstance(body, dict) else None
                    if not isinstance(text, str):
                        return 502, "the answer has no text", None, None
                    return 200, None, None, text
                return (response.status, _error_message(body),
                        response.headers.get("retry-after"), None)
        except TimeoutError:
            return 0, "timed out", None, None
        except (aiohttp.ClientError, ValueError) as error:
            return 0, type(error).__name__, None, None


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text) if text else None
    except ValueError:  # an HTML error page from a proxy
        return None


def _error_message(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return None
