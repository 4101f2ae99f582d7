"""Voice notes: transcribed by the TRANSCRIBE_URL endpoint (emulated), the transcript shown,
then run as the prompt; without an endpoint, or when it fails, one line and no task."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fleetgram.domain import TaskState
from fleetgram.emulators.transcribe_api import TranscribeEmulator
from fleetgram.transcribe import NOT_CONFIGURED
from tests.e2e.harness import ADA, MASTER, World, task_id_in, wait_task, wait_until, worker_bot

pytestmark = pytest.mark.e2e

W1 = worker_bot(1)
KEY = "sk-test-transcribe-0001"


@pytest.fixture
async def transcriber() -> AsyncIterator[TranscribeEmulator]:
    async with TranscribeEmulator(api_key=KEY) as emulator:
        yield emulator


def voice_settings(emulator: TranscribeEmulator) -> dict[str, str]:
    return {"TRANSCRIBE_URL": emulator.url, "TRANSCRIBE_API_KEY": KEY}


async def test_a_voice_note_shows_the_transcript_then_runs_it_as_the_prompt(
    world: World, transcriber: TranscribeEmulator,
) -> None:
    transcriber.script("list three uses of copper")
    async with world.fleet(MAX_WORKERS=1, **voice_settings(transcriber)) as fleet:
        await world.open_chats(world.ada, 1)
        await world.ada.send_voice(MASTER, duration=4)
        receipt = await world.ada.wait_for_text(MASTER, "🆕")
        await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, 20)
    texts = world.ada.bot_texts(MASTER)
    shown = texts.index("🎙 list three uses of copper")
    assert shown < texts.index(receipt.text)  # the transcript comes before the receipt
    assert world.claude.user_blocks()[-1]["text"] == "list three uses of copper"
    [sent] = transcriber.requests
    assert sent.model == "whisper-1"
    assert sent.filename is not None and sent.filename.endswith(".ogg")
    assert sent.headers["authorization"] == f"Bearer {KEY}"


async def test_a_voice_note_in_a_worker_chat_is_answered_there(
    world: World, transcriber: TranscribeEmulator,
) -> None:
    transcriber.script("what is a prime number")
    async with world.fleet(MAX_WORKERS=1, **voice_settings(transcriber)) as fleet:
        await world.open_chats(world.ada, 1)
        sent = await world.ada.send_voice(W1)
        await world.ada.wait_for_text(W1, "🎙 what is a prime number")
        task = await wait_until(lambda: fleet.store.find_task_by_message(ADA, sent), 10,
                                "the voice note's task")
        done = await wait_task(fleet, task.id, TaskState.COMPLETED, 20)
    assert done.prompt == "what is a prime number" and done.worker == "worker1"


async def test_without_transcribe_url_a_voice_note_gets_the_not_configured_answer(
    world: World,
) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        await world.ada.send_voice(MASTER)
        await world.ada.send_voice(W1)
        answer = await world.ada.wait_for_text(MASTER, "Voice notes are not configured")
        await world.ada.wait_for_text(W1, "Voice notes are not configured")
        assert answer.text == NOT_CONFIGURED and "TRANSCRIBE_URL" in answer.text
        assert await fleet.store.count_tasks(list(TaskState)) == 0


async def test_a_transcription_500_gets_one_line_and_no_task(
    world: World, transcriber: TranscribeEmulator,
) -> None:
    transcriber.inject(500, count=3)  # the first try and both retries
    async with world.fleet(MAX_WORKERS=1, **voice_settings(transcriber)) as fleet:
        await world.ada.start(MASTER)
        await world.ada.send_voice(MASTER)
        answer = await world.ada.wait_for_text(MASTER, "transcription service failed")
        assert answer.text == ("🎙 The transcription service failed (HTTP 500); try again "
                               "later.")
        assert await fleet.store.count_tasks(list(TaskState)) == 0
    assert len(transcriber.requests) == 3
    assert world.claude.requests == []


async def test_a_rate_limited_transcription_is_retried_and_the_note_still_runs(
    world: World, transcriber: TranscribeEmulator,
) -> None:
    transcriber.inject(429, retry_after=0.1)
    transcriber.script("summarise the meeting")
    async with world.fleet(MAX_WORKERS=1, **voice_settings(transcriber)) as fleet:
        await world.open_chats(world.ada, 1)
        await world.ada.send_voice(MASTER)
        await world.ada.wait_for_text(MASTER, "🎙 summarise the meeting")
        receipt = await world.ada.wait_for_text(MASTER, "🆕")
        await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, 20)
    assert len(transcriber.requests) == 2


async def test_a_refused_key_is_one_line_naming_the_setting(
    world: World, transcriber: TranscribeEmulator,
) -> None:
    async with world.fleet(MAX_WORKERS=1, TRANSCRIBE_URL=transcriber.url,
                           TRANSCRIBE_API_KEY="sk-wrong-key-000000") as fleet:
        await world.ada.start(MASTER)
        await world.ada.send_voice(MASTER)
        answer = await world.ada.wait_for_text(MASTER, "TRANSCRIBE_API_KEY")
        assert answer.text.startswith("🎙 The transcription service refused our key")
        assert await fleet.store.count_tasks(list(TaskState)) == 0
    assert len(transcriber.requests) == 1  # a 401 is not retried
