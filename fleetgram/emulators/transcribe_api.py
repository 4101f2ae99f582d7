"""A local emulator of OpenAI's "Create transcription" endpoint
(``POST /v1/audio/transcriptions``, https://platform.openai.com/docs/api-reference/audio/createTranscription).

    emulator = TranscribeEmulator()
    await emulator.start()          # emulator.url: set TRANSCRIBE_URL to it
    emulator.script("hello there")  # the next transcript (else a default naming the file)

Strict like the real one:

* ``Authorization: Bearer <key>``: missing or wrong -> 401 ``invalid_request_error`` (code
  ``invalid_api_key``).
* ``multipart/form-data`` with ``file`` and ``model``: a missing one -> 400 "1 validation
  error for Request\\nbody -> file\\n  field required (type=value_error.missing)" (the API's
  pydantic wording).
* The request body may be 25 MB ("File uploads are currently limited to 25 MB",
  https://platform.openai.com/docs/guides/speech-to-text): more -> 413 "Maximum content size
  limit (26214400) exceeded (N bytes read)".
* The format is told by the file name's extension: flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg,
  wav, webm; another -> 400 "Invalid file format. Supported formats: [...]" (the message
  reported in B4PT0R/streamlit-mic-recorder#10, EpicenterHQ/epicenter#474).
* Models: whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe; another -> 400.
* ``response_format``: json (default) -> ``{"text": ...}``, text -> the text alone.
* Faults: :meth:`inject` (429 with Retry-After, 5xx) and :meth:`hang_next` (no answer: the
  client's timeout), first come first served, before authentication.

``requests`` records each request: file name, content type, size, model, headers (lower-case
names).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

MAX_BYTES = 25 * 1024 * 1024
FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")


@dataclass
class _Fault:
    status: int  # 0: hang
    retry_after: float | None = None


@dataclass
class TranscriptionRequest:
    filename: str | None
    content_type: str | None
    size: int
    model: str | None
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, kind: str = "invalid_request_error",
           code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


class TranscribeEmulator:
    def __init__(self, *, api_key: str = "sk-test-transcribe") -> None:
        self.api_key = api_key
        self.url = ""
        self.requests: list[TranscriptionRequest] = []
        self._scripts: deque[str] = deque()
        self._faults: deque[_Fault] = deque()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        # Room above the 25 MB limit, so an oversized upload is read and answered with 413.
        app = web.Application(client_max_size=MAX_BYTES + 8 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TranscribeEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def script(self, *transcripts: str) -> None:
        """The transcripts of the next requests, in order (then the default)."""
        self._scripts.extend(transcripts)

    def inject(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        """The next `count` requests fail with `status` (429: with Retry-After when given)."""
        self._faults.extend(_Fault(status, retry_after) for _ in range(count))

    def hang_next(self, count: int = 1) -> None:
        """The next `count` requests are never answered (until the client gives up)."""
        self._faults.extend(_Fault(0) for _ in range(count))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._faults:
            fault = self._faults.popleft()
            self.requests.append(TranscriptionRequest(None, None, 0, None))
            return await self._play(fault)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            read = request.content_length or MAX_BYTES + 1
            return _error(413, f"Maximum content size limit ({MAX_BYTES}) exceeded "
                               f"({read} bytes read)", "server_error")
        refused = self._authenticate(request)
        if refused is not None:
            self.requests.append(TranscriptionRequest(None, None, len(raw), None))
            return refused
        if len(raw) > MAX_BYTES:
            self.requests.append(TranscriptionRequest(None, None, len(raw), None))
            return _error(413, f"Maximum content size limit ({MAX_BYTES}) exceeded "
                               f"({len(raw)} bytes read)", "server_error")
        parsed = await self._form(request, raw)
        if isinstance(parsed, web.Response):
            return parsed
        entry = parsed
        self.requests.append(entry)
        return self._answer(entry)

    async def _play(self, fault: _Fault) -> web.StreamResponse:
        if fault.status == 0:
            await asyncio.Event().wait()  # cancelled when the client disconnects
        headers = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after else None
        if fault.status == 429:
            return _error(429, "Rate limit reached for whisper-1 in organization org-emu on "
                               "requests per min (RPM): Limit 50, Used 50, Requested 1.",
                          "requests", "rate_limit_exceeded", headers)
        if fault.status == 503:
            return _error(503, "The engine is currently overloaded, please try again later",
                          "server_error", headers=headers)
        return _error(fault.status, "The server had an error while processing your request. "
                                    "Sorry about that!", "server_error", headers=headers)

    def _authenticate(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        if not header:
            return _error(401, "You didn't provide an API key. You need to provide your API key "
                               "in an Authorization header using Bearer auth (i.e. "
                               "Authorization: Bearer YOUR_KEY).")
        key = header.removeprefix("Bearer ").strip()
        if key != self.api_key:
            shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
            return _error(401, f"Incorrect API key provided: {shown}. You can find your API "
                               "key at https://platform.openai.com/account/api-keys.",
                          code="invalid_api_key")
        return None

    async def _form(self, request: web.Request, raw: bytes
                    ) -> TranscriptionRequest | web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        fields: dict[str, str] = {}
        filename = content_type = None
        size = -1
        if request.content_type == "application/x-www-form-urlencoded":  # fields, no file
            fields = dict(parse_qsl(raw.decode("utf-8", "replace")))
        elif not request.content_type.startswith("multipart/form-data"):
            return _error(400, "Invalid Content-Type header (" + request.content_type + "), "
                               "expected multipart/form-data.")
        else:
            reader = await _multipart_of(request, raw)
            async for part in reader:
                name = part.name or ""
                if name == "file":
                    filename, content_type = part.filename, part.headers.get("Content-Type")
                    size = len(await part.read())
                else:
                    fields[name] = (await part.read()).decode("utf-8", "replace")
        entry = TranscriptionRequest(filename, content_type, max(size, 0), fields.get("model"),
                                     fields, headers)
        for required, present in (("file", size >= 0), ("model", "model" in fields)):
            if not present:
                self.requests.append(entry)
                return _error(400, f"1 validation error for Request\nbody -> {required}\n  "
                                   "field required (type=value_error.missing)")
        ext = (filename or "").rsplit(".", 1)[-1].lower() if "." in (filename or "") else ""
        if ext not in FORMATS:
            self.requests.append(entry)
            return _error(400, f"Invalid file format. Supported formats: {list(FORMATS)}")
        if entry.model not in MODELS:
            self.requests.append(entry)
            return _error(400, f"Invalid model {entry.model}. The model argument should be "
                               f"one of {list(MODELS)}.", code="model_not_found")
        return entry

    def _answer(self, entry: TranscriptionRequest) -> web.Response:
        text = self._scripts.popleft() if self._scripts else (
            f"Transcript of {entry.filename} ({entry.size} bytes).")
        if entry.fields.get("response_format", "json") == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        return web.Response(text=json.dumps({"text": text}), content_type="application/json")


async def _multipart_of(request: web.Request, raw: bytes) -> Any:
    """A multipart reader over the body already read."""
    from aiohttp import MultipartReader, StreamReader

    protocol = request.protocol
    stream = StreamReader(protocol, limit=2 ** 16, loop=asyncio.get_running_loop())
    stream.feed_data(raw)
    stream.feed_eof()
    return MultipartReader(request.headers, stream)
