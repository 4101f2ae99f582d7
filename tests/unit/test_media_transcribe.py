"""Voice transcription: the pure decisions, and the client against the emulated endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleetgram.config import ConfigErrors, load_settings
from fleetgram.emulators.transcribe_api import TranscribeEmulator
from fleetgram.transcribe import (
    TranscribeConfig,
    Transcriber,
    TranscriptionFailed,
    audio_format,
    endpoint,
    failure_line,
    retry_wait,
    upload_name,
)

KEY = "sk-test-transcribe"


@pytest.mark.parametrize(("name", "mime", "fmt"), [
    ("voice_7.ogg", "audio/ogg", "ogg"),
    (None, "audio/ogg", "ogg"),
    ("song.MP3", None, "mp3"),
    ("memo.opus", None, "ogg"),
    ("memo", "audio/x-m4a", "m4a"),
    ("clip.amr", "audio/amr", None),
])
def test_the_format_comes_from_the_extension_else_the_mime_type(
    name: str | None, mime: str | None, fmt: str | None,
) -> None:
    assert audio_format(name, mime) == fmt


def test_the_upload_is_named_with_its_formats_extension() -> None:
    assert upload_name("memo.opus", "ogg") == "memo.ogg"
    assert upload_name(None, "ogg") == "voice.ogg"


def test_the_endpoint_is_under_v1_whether_or_not_the_url_names_it() -> None:
    assert endpoint("https://api.openai.com") == "https://api.openai.com/v1/audio/transcriptions"
    assert endpoint("http://whisper:8000/v1/") == "http://whisper:8000/v1/audio/transcriptions"


def test_failures_are_one_line_and_never_multi_line() -> None:
    assert "TRANSCRIBE_API_KEY" in failure_line(401, "Incorrect API key provided: sk-***")
    assert failure_line(500, None) == ("🎙 The transcription service failed (HTTP 500); try "
                                       "again later.")
    refused = failure_line(400, "Invalid file format.\nSupported formats: [...]")
    assert "\n" not in refused and refused.endswith("Invalid file format. Supported formats: [...]")


def test_retries_stop_after_two_and_a_long_retry_after_is_not_waited() -> None:
    assert retry_wait(0, None) == 0.5 and retry_wait(1, None) == 1.0
    assert retry_wait(2, None) is None
    assert retry_wait(0, "3") == 3.0
    assert retry_wait(0, "120") is None


def test_config_reports_a_bad_url_and_a_key_without_url_at_once() -> None:
    base = {"MASTER_BOT_TOKEN": "1000:master-token-abcdef", "WORKER_TOKEN_POOL":
            "2001:worker1-token-abcdef", "ALLOWED_USER_IDS": "1", "ANTHROPIC_API_KEY": "sk-ant-x"}
    with pytest.raises(ConfigErrors) as errors:
        load_settings({**base, "TRANSCRIBE_URL": "whisper:8000", "TRANSCRIBE_TIMEOUT": "0"},
                      dotenv=None)
    assert errors.value.settings == ["TRANSCRIBE_URL", "TRANSCRIBE_TIMEOUT"]
    with pytest.raises(ConfigErrors) as errors:
        load_settings({**base, "TRANSCRIBE_API_KEY": "sk-x"}, dotenv=None)
    assert errors.value.settings == ["TRANSCRIBE_API_KEY"]
    settings = load_settings({**base, "TRANSCRIBE_URL": "http://w:8000"}, dotenv=None)
    assert (settings.transcribe_url, settings.transcribe_model) == ("http://w:8000", "whisper-1")


# ----------------------------------------------------------------------------- the client
@pytest.fixture
async def emulator() -> AsyncIterator[TranscribeEmulator]:
    async with TranscribeEmulator(api_key=KEY) as emu:
        yield emu


def client(emulator: TranscribeEmulator, *, timeout: float = 10.0,
           key: str = KEY) -> Transcriber:
    return Transcriber(TranscribeConfig(emulator.url, key, "whisper-1", timeout))


async def test_a_transcript_comes_back_stripped(emulator: TranscribeEmulator) -> None:
    emulator.script("  hello there \n")
    assert await client(emulator).transcribe("v.ogg", "audio/ogg", b"OggS") == "hello there"


async def test_a_503_then_success_is_retried(emulator: TranscribeEmulator) -> None:
    emulator.inject(503)
    emulator.script("second time lucky")
    assert await client(emulator).transcribe("v.ogg", "audio/ogg", b"OggS") == "second time lucky"
    assert len(emulator.requests) == 2


async def test_a_timeout_on_every_try_is_one_line(emulator: TranscribeEmulator) -> None:
    emulator.hang_next(3)
    with pytest.raises(TranscriptionFailed) as failed:
        await client(emulator, timeout=1.0).transcribe("v.ogg", "audio/ogg", b"OggS")
    assert str(failed.value) == ("🎙 The transcription service did not answer (timed out); "
                                 "try again later.")


async def test_an_unsupported_format_is_refused_without_a_request(
    emulator: TranscribeEmulator,
) -> None:
    with pytest.raises(TranscriptionFailed, match="I can transcribe flac, m4a, mp3"):
        await client(emulator).transcribe("clip.amr", "audio/amr", b"#!AMR")
    assert emulator.requests == []
