"""Signals a team can page on: Claude calls by outcome and status with their latency, Telegram
API errors by method and code (429s apart), and the build. Driven by real calls against the
Claude and Telegram emulators; read from the process's Prometheus registry."""

from __future__ import annotations

import platform
from collections.abc import AsyncIterator
from pathlib import Path

import anthropic
import pytest
from prometheus_client import REGISTRY
from telegram.error import NetworkError

from fleetgram.claude.runner import ClaudeRunner, UsageMeter, make_client
from fleetgram.domain import TaskState
from fleetgram.telegram.app import build_application
from tests.e2e.agent_world import agent_overrides
from tests.e2e.harness import (
    ADA,
    API_KEY,
    MASTER,
    MASTER_TOKEN,
    World,
    emulated_world,
    wait_task,
)
from tests.tools import requiring


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def claude_calls(outcome: str, status: str) -> float:
    return sample("fleetgram_claude_requests_total", outcome=outcome, status=status)


def claude_latency_count() -> float:
    return sample("fleetgram_claude_request_seconds_count")


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with emulated_world(f"sqlite:///{tmp_path / 'fleet.sqlite3'}") as world:
        yield world


def runner(world: World) -> ClaudeRunner:
    client = make_client(API_KEY, world.claude.url, timeout=10, max_retries=0)
    return ClaudeRunner(client, model="claude-sonnet-5-5", max_tokens=256, system_prompt="hi")


async def test_a_chat_call_that_succeeds_counts_as_ok_200_with_its_latency(world: World) -> None:
    ok, seen = claude_calls("ok", "200"), claude_latency_count()
    world.claude.script("Hello there.")
    await runner(world).run([], "hello", on_text=lambda _t: None, meter=UsageMeter(None, "w"))
    assert claude_calls("ok", "200") == ok + 1
    assert claude_latency_count() == seen + 1


async def test_a_chat_call_refused_as_overloaded_counts_as_error_529(world: World) -> None:
    failed, seen = claude_calls("error", "529"), claude_latency_count()
    world.claude.inject(529)
    with pytest.raises(anthropic.APIStatusError):
        await runner(world).run([], "hello", on_text=lambda _t: None,
                                meter=UsageMeter(None, "w"))
    assert claude_calls("error", "529") == failed + 1
    assert claude_latency_count() == seen + 1


async def test_a_chat_call_rate_limited_counts_as_error_429(world: World) -> None:
    limited = claude_calls("error", "429")
    world.claude.inject(429, should_retry=False)
    with pytest.raises(anthropic.RateLimitError):
        await runner(world).run([], "hello", on_text=lambda _t: None,
                                meter=UsageMeter(None, "w"))
    assert claude_calls("error", "429") == limited + 1


needs_cli = requiring("git")


@pytest.mark.e2e
@needs_cli
async def test_each_agent_result_counts_once_by_outcome_and_status(
        world: World, tmp_path: Path) -> None:
    ok, failed = claude_calls("ok", "200"), claude_calls("error", "529")
    world.claude.script("Done, nothing to change.")
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        first = await world.prompt("say done")
        await wait_task(fleet, first, TaskState.COMPLETED, timeout=60)
        assert claude_calls("ok", "200") == ok + 1
        world.claude.inject(529, count=20)
        second = await world.prompt("say done again")
        await wait_task(fleet, second, TaskState.FAILED, timeout=60)
    assert claude_calls("error", "529") == failed + 1
    assert claude_calls("ok", "200") == ok + 1


async def bot_of(world: World):  # type: ignore[no-untyped-def]
    app = build_application(MASTER_TOKEN, world.settings(1))
    await app.bot.initialize()
    return app


async def test_a_telegram_error_is_counted_by_method_and_code(world: World) -> None:
    app = await bot_of(world)
    try:
        before = sample("fleetgram_telegram_errors_total", method="sendMessage", code="502")
        world.telegram.fail_for(MASTER, 5, methods=["sendMessage"], code=502, json_body=True)
        with pytest.raises(NetworkError):
            await app.bot.send_message(ADA, "hi")
        assert sample("fleetgram_telegram_errors_total", method="sendMessage",
                      code="502") == before + 1
    finally:
        await app.bot.shutdown()


async def test_a_telegram_429_is_counted_apart_not_as_an_error(world: World) -> None:
    app = await bot_of(world)
    try:
        limited = sample("fleetgram_telegram_rate_limited_total", method="sendMessage")
        errors = sample("fleetgram_telegram_errors_total", method="sendMessage", code="429")
        await world.ada.start(MASTER)
        world.telegram.flood(MASTER, 1, methods=["sendMessage"])
        await app.bot.send_message(ADA, "hi")  # PTB's rate limiter waits the 429 out
        assert sample("fleetgram_telegram_rate_limited_total",
                      method="sendMessage") >= limited + 1
        assert sample("fleetgram_telegram_errors_total", method="sendMessage",
                      code="429") == errors == 0
    finally:
        await app.bot.shutdown()


async def test_an_unreachable_telegram_counts_as_a_network_error(world: World) -> None:
    app = await bot_of(world)
    try:
        before = sample("fleetgram_telegram_errors_total", method="sendMessage", code="network")
        await world.telegram.stop()
        with pytest.raises(NetworkError):
            await app.bot.send_message(ADA, "hi")
        assert sample("fleetgram_telegram_errors_total", method="sendMessage",
                      code="network") == before + 1
    finally:
        await app.bot.shutdown()


def test_build_info_is_1_with_the_version_and_python() -> None:
    from importlib import metadata

    assert sample("fleetgram_build_info", version=metadata.version("fleetgram"),
                  python=platform.python_version()) == 1
