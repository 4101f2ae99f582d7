"""The Claude emulator's stream faults and context window, checked through the real SDK.

Each test names what the caller of ``anthropic.AsyncAnthropic`` sees (text so far, then which
exception, or nothing at all) and what the emulator did with the stream (completed,
cancelled or errored), since a worker must tell "the model is slow" from "the stream is dead".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anthropic
import httpx2  # the SDK's HTTP client: its errors surface unwrapped once a stream is open
import pytest
from anthropic.types import MessageParam

from fleetgram.emulators.claude_api import ClaudeEmulator

MODEL = "claude-sonnet-5-5"
ANSWER = "one two six ten"  # four tokens: "one", " two", " six", " ten"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


@pytest.fixture
async def emulator() -> AsyncIterator[ClaudeEmulator]:
    emulator = ClaudeEmulator(tokens_per_second=2000.0)
    await emulator.start()
    emulator.script(ANSWER)
    yield emulator
    await emulator.stop()


@pytest.fixture
async def client(emulator: ClaudeEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=emulator.url, max_retries=2)
    yield client
    await client.close()


def user(text: str) -> list[MessageParam]:
    return [{"role": "user", "content": text}]


async def read_text(
    client: anthropic.AsyncAnthropic, into: list[str], arrived: asyncio.Event | None = None
) -> None:
    """Stream an answer, appending each text delta to ``into`` (and setting ``arrived``)."""
    async with client.messages.stream(model=MODEL, max_tokens=100, messages=user("Hi")) as s:
        async for text in s.text_stream:
            into.append(text)
            if arrived is not None:
                arrived.set()


# --------------------------------------------------------------------------- trickle_next
async def test_a_trickling_stream_outlives_the_read_timeout_without_progress(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.trickle_next(ping_every=0.2, text_tokens=2)
    impatient = client.with_options(timeout=1.0, max_retries=0)
    got: list[str] = []

    reader = asyncio.create_task(read_text(impatient, got))
    done, _ = await asyncio.wait({reader}, timeout=2.5)  # over two read timeouts

    assert not done  # pings kept it alive: no timeout, no error, no answer
    assert "".join(got) == "one two"
    assert emulator.active_streams == 1
    reader.cancel()  # the caller's own watchdog gives up
    with pytest.raises(asyncio.CancelledError):
        await reader
    await emulator.wait_cancelled(1, timeout=5)
    assert (emulator.completed_streams, emulator.active_streams) == (0, 0)


async def test_a_trickling_stream_sends_pings_on_the_wire(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.trickle_next(ping_every=0.1)
    events: list[str] = []

    async def read_events() -> None:
        async with client.messages.with_streaming_response.create(
            model=MODEL, max_tokens=100, messages=user("Hi"), stream=True
        ) as response:
            async for line in response.iter_lines():
                if line.startswith("event: "):
                    events.append(line.removeprefix("event: "))

    reader = asyncio.create_task(read_events())
    await asyncio.sleep(1.0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader

    assert events[:3] == ["message_start", "content_block_start", "ping"]
    assert set(events[3:]) == {"ping"} and len(events) >= 5  # no delta, ever
    await emulator.wait_cancelled(1, timeout=5)


# --------------------------------------------------------------------------- stall_next
async def test_a_stalled_stream_trips_the_read_timeout_after_partial_text(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.stall_next(after_tokens=2)
    impatient = client.with_options(timeout=1.0, max_retries=0)
    got: list[str] = []

    # Once the stream is open the SDK does not wrap transport errors into APITimeoutError.
    with pytest.raises(httpx2.ReadTimeout):
        await read_text(impatient, got)

    assert "".join(got) == "one two"
    await emulator.wait_cancelled(1, timeout=5)
    assert (emulator.completed_streams, emulator.active_streams) == (0, 0)


async def test_a_stall_is_spent_on_one_stream_and_the_next_completes(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.stall_next(after_tokens=0)
    with pytest.raises(httpx2.ReadTimeout):
        await read_text(client.with_options(timeout=0.5, max_retries=0), [])

    got: list[str] = []
    await read_text(client, got)

    assert "".join(got) == ANSWER
    await emulator.wait_cancelled(1, timeout=5)
    assert (emulator.completed_streams, emulator.cancelled_streams) == (1, 1)


@pytest.mark.parametrize("fault", ["trickle", "stall"])
async def test_a_stuck_stream_ends_when_the_emulator_stops(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic, fault: str
) -> None:
    if fault == "trickle":
        emulator.trickle_next(ping_every=0.1, text_tokens=1)
    else:
        emulator.stall_next(after_tokens=1)
    got: list[str] = []
    arrived = asyncio.Event()
    reader = asyncio.create_task(read_text(client.with_options(timeout=None), got, arrived))
    await emulator.wait_streaming(1)
    await asyncio.wait_for(arrived.wait(), 5)

    await asyncio.wait_for(emulator.stop(), 5)

    with pytest.raises(httpx2.RemoteProtocolError):  # the connection closed mid-body
        await asyncio.wait_for(reader, 5)
    assert "".join(got) == "one"
    assert (emulator.cancelled_streams, emulator.active_streams) == (1, 0)


# --------------------------------------------------------------------------- error_midstream_next
async def test_an_error_midstream_raises_api_status_error_after_partial_text(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.error_midstream_next(after_tokens=2)
    got: list[str] = []

    with pytest.raises(anthropic.APIStatusError) as caught:
        await read_text(client, got)

    # _streaming.py: an `event: error` becomes a status error of the 200 response.
    assert type(caught.value) is anthropic.APIStatusError
    assert caught.value.status_code == 200
    assert caught.value.body == OVERLOADED
    assert caught.value.message == str(OVERLOADED)
    assert "".join(got) == "one two"
    assert len(emulator.requests) == 1  # not retried, though the client allows 2 retries
    assert (emulator.errored_streams, emulator.completed_streams) == (1, 0)
    assert (emulator.cancelled_streams, emulator.active_streams) == (0, 0)


async def test_an_error_midstream_carries_the_given_error_type(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.error_midstream_next(after_tokens=0, error_type="api_error")

    with pytest.raises(anthropic.APIStatusError) as caught:
        await read_text(client, [])

    assert caught.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal server error"},
    }


async def test_an_error_midstream_on_a_non_streaming_request_is_its_status(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.error_midstream_next()

    with pytest.raises(anthropic.OverloadedError) as caught:
        await client.with_options(max_retries=0).messages.create(
            model=MODEL, max_tokens=100, messages=user("Hi")
        )

    assert caught.value.status_code == 529
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"] == OVERLOADED["error"]


# --------------------------------------------------------------------------- context_window
async def test_a_prompt_over_the_context_window_is_refused_as_too_long(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.context_window = 100

    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(
            model=MODEL,
            max_tokens=100,
            system="s" * 200,  # 50 tokens
            messages=user("u" * 204),  # 51 tokens
        )

    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"] == {
        "type": "invalid_request_error",
        "message": "prompt is too long: 101 tokens > 100 maximum",
    }
    assert len(emulator.requests) == 1  # a 400 is not retried


async def test_a_prompt_exactly_at_the_context_window_is_answered(
    emulator: ClaudeEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emulator.context_window = 100

    message = await client.messages.create(
        model=MODEL, max_tokens=100, system="s" * 200, messages=user("u" * 200)
    )

    assert message.usage.input_tokens == 100
    assert message.stop_reason == "end_turn"


async def test_the_default_context_window_is_200k_tokens(emulator: ClaudeEmulator) -> None:
    assert emulator.context_window == 200_000
