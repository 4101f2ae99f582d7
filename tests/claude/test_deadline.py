"""CLAUDE_TIMEOUT and CLAUDE_STALL_TIMEOUT on one call: against a fake event stream (the
pure watchdog) and against the Claude API emulator with the real SDK (the runner)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import anthropic
import pytest

from fleetgram.claude.deadline import CallLimits, ClaudeDeadline, ClaudeStalled, within_limits
from fleetgram.claude.runner import ClaudeRunner, UsageMeter, describe_error, is_prompt_too_long
from fleetgram.emulators.claude_api import ClaudeEmulator

KEY = "sk-ant-test-key-0001"


async def events(script: list[tuple[float, str]]) -> AsyncIterator[str]:
    """Yield each event after its delay (a "ping" stands for a keep-alive the SDK swallows:
    here it is yielded so the watchdog's treatment of non-content can be checked)."""
    for delay, event in script:
        await asyncio.sleep(delay)
        yield event


async def drain(script: list[tuple[float, str]], limits: CallLimits) -> list[str]:
    seen = []
    async for event in within_limits(
        events(script), limits, started=time.monotonic(), is_content=lambda e: e != "ping",
        clock=time.monotonic,
    ):
        seen.append(event)
    return seen


async def test_a_stream_within_its_limits_passes_through_untouched():
    script = [(0.01, "text"), (0.01, "text"), (0.01, "stop")]
    assert await drain(script, CallLimits(wall=5, stall=5)) == ["text", "text", "stop"]


async def test_pings_do_not_count_as_content_for_the_stall_limit():
    script = [(0.01, "text")] + [(0.1, "ping")] * 30
    with pytest.raises(ClaudeStalled) as caught:
        await drain(script, CallLimits(stall=1.0))
    assert str(caught.value) == "Claude stopped sending for 1 s"


async def test_text_that_trickles_forever_meets_the_wall_limit():
    script = [(0.2, "text")] * 100
    started = time.monotonic()
    with pytest.raises(ClaudeDeadline) as caught:
        await drain(script, CallLimits(wall=1.0, stall=5.0))
    assert str(caught.value) == "Claude took longer than CLAUDE_TIMEOUT (1 s)"
    assert time.monotonic() - started < 3


def make_runner(emulator: ClaudeEmulator, limits: CallLimits) -> ClaudeRunner:
    client = anthropic.AsyncAnthropic(
        api_key=KEY, base_url=emulator.url, timeout=30, max_retries=0
    )
    return ClaudeRunner(client, model="claude-sonnet-5-5", max_tokens=512,
                        system_prompt="You help.", limits=limits)


@pytest.fixture
async def claude() -> AsyncIterator[ClaudeEmulator]:
    emulator = ClaudeEmulator(api_key=KEY, tokens_per_second=200)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


async def test_a_stream_that_only_pings_fails_at_the_wall_deadline(claude: ClaudeEmulator):
    claude.trickle_next(ping_every=0.3, text_tokens=2)
    runner = make_runner(claude, CallLimits(wall=2, stall=60))
    meter = UsageMeter("t-22222", "worker1")
    shown: list[str] = []
    started = time.monotonic()
    with pytest.raises(ClaudeDeadline) as caught:
        await runner.run([], "hello", on_text=shown.append, meter=meter)
    assert time.monotonic() - started < 6
    assert describe_error(caught.value) == "Claude took longer than CLAUDE_TIMEOUT (2 s)"
    assert "".join(shown)  # the tokens before the pings were shown
    await claude.wait_cancelled(1)  # the stream was closed, not left running
    assert len(meter.calls) == 1  # billed what the API reported


async def test_a_silent_stream_fails_at_the_stall_limit(claude: ClaudeEmulator):
    claude.stall_next(after_tokens=3)
    runner = make_runner(claude, CallLimits(wall=60, stall=1.5))
    with pytest.raises(ClaudeStalled) as caught:
        await runner.run([], "hello", on_text=lambda _d: None,
                         meter=UsageMeter(None, "worker1"))
    assert describe_error(caught.value) == "Claude stopped sending for 1.5 s"
    await claude.wait_cancelled(1)


async def test_a_hung_request_fails_at_the_wall_deadline(claude: ClaudeEmulator):
    claude.hang_next()
    runner = make_runner(claude, CallLimits(wall=1.5, stall=60))
    with pytest.raises(ClaudeDeadline):
        await runner.run([], "hello", on_text=lambda _d: None,
                         meter=UsageMeter(None, "worker1"))


async def test_an_error_event_mid_stream_reads_as_the_api_error(claude: ClaudeEmulator):
    claude.error_midstream_next(after_tokens=3)
    runner = make_runner(claude, CallLimits(wall=30, stall=30))
    with pytest.raises(anthropic.APIStatusError) as caught:
        await runner.run([], "hello", on_text=lambda _d: None,
                         meter=UsageMeter(None, "worker1"))
    assert describe_error(caught.value) == "Claude's stream broke off: Claude is overloaded"


async def test_a_prompt_over_the_context_window_is_recognised(claude: ClaudeEmulator):
    claude.context_window = 50
    runner = make_runner(claude, CallLimits(wall=30, stall=30))
    with pytest.raises(anthropic.BadRequestError) as caught:
        await runner.run([], "word " * 400, on_text=lambda _d: None,
                         meter=UsageMeter(None, "worker1"))
    assert is_prompt_too_long(caught.value)
    assert describe_error(caught.value) == "the conversation is too long for the model"


async def test_summarise_answers_about_the_turns_without_streaming_to_a_chat(
    claude: ClaudeEmulator,
):
    claude.script("They talked about ships.", when="Summarise")
    runner = make_runner(claude, CallLimits(wall=30, stall=30))
    meter = UsageMeter("t-22222", "worker1")
    turns = [{"role": "user", "content": [{"type": "text", "text": "ships?"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "ships."}]}]
    assert await runner.summarise(turns, "Summarise this.", meter=meter) == (
        "They talked about ships."
    )
    assert len(meter.calls) == 1
    assert [m["role"] for m in claude.requests[-1]["messages"]] == ["user", "assistant", "user"]
