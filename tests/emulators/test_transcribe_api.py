"""The transcription emulator answers like OpenAI's POST /v1/audio/transcriptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from fleetgram.emulators.transcribe_api import MAX_BYTES, TranscribeEmulator

KEY = "sk-test-transcribe"


@pytest.fixture
async def emulator() -> AsyncIterator[TranscribeEmulator]:
    async with TranscribeEmulator(api_key=KEY) as emu:
        yield emu


async def post(emu: TranscribeEmulator, *, key: str | None = KEY, file: bytes | None = b"OggS",
               filename: str = "voice.ogg", model: str | None = "whisper-1",
               response_format: str | None = None) -> tuple[int, Any, dict[str, str]]:
    form = aiohttp.FormData()
    if file is not None:
        form.add_field("file", file, filename=filename, content_type="audio/ogg")
    if model is not None:
        form.add_field("model", model)
    if response_format is not None:
        form.add_field("response_format", response_format)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as session, session.post(
        f"{emu.url}/v1/audio/transcriptions", data=form, headers=headers
    ) as response:
        text = await response.text()
        try:
            body: Any = await response.json(content_type=None)
        except ValueError:
            body = text
        return response.status, body, {k.lower(): v for k, v in response.headers.items()}


async def test_a_voice_note_is_transcribed_as_json_text(emulator: TranscribeEmulator) -> None:
    emulator.script("book a table for two")
    status, body, _ = await post(emulator)
    assert (status, body) == (200, {"text": "book a table for two"})
    seen = emulator.requests[-1]
    assert (seen.filename, seen.model, seen.size) == ("voice.ogg", "whisper-1", 4)


async def test_response_format_text_answers_plain_text(emulator: TranscribeEmulator) -> None:
    emulator.script("plain words")
    status, body, _ = await post(emulator, response_format="text")
    assert (status, body) == (200, "plain words\n")


async def test_a_missing_key_and_a_wrong_key_are_401(emulator: TranscribeEmulator) -> None:
    status, body, _ = await post(emulator, key=None)
    assert status == 401 and "didn't provide an API key" in body["error"]["message"]
    status, body, _ = await post(emulator, key="sk-wrong-key-123456")
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key-123456" not in body["error"]["message"]  # the key is masked


async def test_a_request_without_file_or_model_is_400_naming_the_field(
    emulator: TranscribeEmulator,
) -> None:
    status, body, _ = await post(emulator, file=None)
    assert status == 400 and "body -> file" in body["error"]["message"]
    status, body, _ = await post(emulator, model=None)
    assert status == 400 and "body -> model" in body["error"]["message"]


async def test_an_unsupported_format_is_400_listing_the_formats(
    emulator: TranscribeEmulator,
) -> None:
    status, body, _ = await post(emulator, filename="voice.amr")
    assert status == 400
    assert body["error"]["message"].startswith("Invalid file format. Supported formats: [")
    assert "'oga', 'ogg'" in body["error"]["message"]


async def test_an_unknown_model_is_400(emulator: TranscribeEmulator) -> None:
    status, body, _ = await post(emulator, model="whisper-9")
    assert status == 400 and body["error"]["code"] == "model_not_found"


async def test_a_body_over_25_mb_is_413(emulator: TranscribeEmulator) -> None:
    status, body, _ = await post(emulator, file=b"\0" * (MAX_BYTES + 1))
    assert status == 413
    assert body["error"]["message"].startswith("Maximum content size limit (26214400) exceeded")


async def test_injected_429_carries_retry_after_then_service_resumes(
    emulator: TranscribeEmulator,
) -> None:
    emulator.inject(429, retry_after=2)
    emulator.inject(500)
    status, body, headers = await post(emulator)
    assert status == 429 and headers.get("retry-after") == "2"
    assert body["error"]["code"] == "rate_limit_exceeded"
    status, body, _ = await post(emulator)
    assert status == 500 and body["error"]["type"] == "server_error"
    status, _, _ = await post(emulator)
    assert status == 200
