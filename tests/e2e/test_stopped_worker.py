"""A stopped worker's chat is not dead: a message there starts that worker and runs there.

Telegram keeps a bot's updates until a getUpdates call confirms them, so what Ada writes to a
stopped worker waits at Telegram; the orchestrator peeks at it (without confirming) every
STOPPED_WORKER_POLL seconds and starts that worker, which then receives it as usual.
"""

from __future__ import annotations

import asyncio

import pytest
from telegram import Bot

from fleetgram.domain import TaskState, WorkerState, utcnow
from fleetgram.fleet import Fleet
from fleetgram.policy import worker_state
from tests.e2e.harness import MASTER, World, wait_task, wait_until, worker_bot, worker_token

pytestmark = pytest.mark.e2e

LEASE = 3.0  # the harness's WORKER_LEASE_SECONDS


async def _states(fleet: Fleet) -> dict[str, WorkerState]:
    now = utcnow()
    return {s.name: worker_state(s, now, LEASE) for s in await fleet.store.get_slots()}


async def _three_idle_and_two_stopped(fleet: Fleet) -> bool:
    states = await _states(fleet)
    return [states[f"worker{n}"] for n in range(1, 6)] == [WorkerState.IDLE] * 3 + [
        WorkerState.STOPPED] * 2


async def _confirm_updates(world: World, n: int) -> None:
    """What a worker that ran before did: take its chat's updates and confirm them (offset)."""
    bot = Bot(worker_token(n), base_url=f"{world.telegram.url}/bot")
    try:
        updates = await bot.get_updates(timeout=0)
        if updates:
            await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    finally:
        await bot.shutdown()


async def test_a_message_to_a_stopped_worker_starts_it_and_runs_there(world: World) -> None:
    world.claude.script("Release notes, drafted.", when="release notes")
    # Ada opened every bot earlier; worker4 and worker5 (running then) took her /start.
    await world.open_chats(world.ada)
    await _confirm_updates(world, 4)
    await _confirm_updates(world, 5)
    async with world.fleet(MIN_WORKERS="3", STOPPED_WORKER_POLL="0.2") as fleet:
        await wait_until(lambda: _three_idle_and_two_stopped(fleet), 20, "3 idle, 2 stopped")

        await world.ada.send(worker_bot(5), "draft the release notes")

        await world.ada.wait_for_text(worker_bot(5), "Release notes, drafted.", timeout=20)
        # The answer streams into the chat before the task is recorded as completed.
        (task,) = await wait_until(
            lambda: fleet.store.list_tasks([TaskState.COMPLETED]), 10, "the task to complete")
        assert (task.worker, task.pinned_worker, task.prompt) == (
            "worker5", "worker5", "draft the release notes")
        await wait_task(fleet, task.id, TaskState.COMPLETED)
        assert fleet.orchestrator is not None
        # Only worker5 was woken: worker4 (nobody wrote to it) stays stopped.
        assert (await _states(fleet))["worker4"] == WorkerState.STOPPED
        asked = [r for r in world.claude.requests if "release notes" in str(r["messages"])]
        assert len(asked) == 1  # run once, not lost nor doubled
        # The message was answered where it was written, and nowhere else.
        assert not any("release notes" in t.lower() for t in world.ada.bot_texts(worker_bot(4)))


async def test_start_in_a_stopped_workers_chat_is_answered(world: World) -> None:
    await world.ada.start(MASTER)
    async with world.fleet(MIN_WORKERS="3", STOPPED_WORKER_POLL="0.2") as fleet:
        await wait_until(lambda: _three_idle_and_two_stopped(fleet), 20, "3 idle, 2 stopped")

        await world.ada.start(worker_bot(5))  # the README's step 4: press Start there

        answer = await world.ada.wait_for_text(worker_bot(5), "I am worker5", timeout=20)
        assert "/new" in answer.text
        assert (await _states(fleet))["worker5"] in (WorkerState.IDLE, WorkerState.STARTING)
        assert await fleet.store.list_tasks() == []  # /start is answered, not queued


async def test_a_strangers_message_does_not_start_a_stopped_worker(world: World) -> None:
    async with world.fleet(MIN_WORKERS="3", STOPPED_WORKER_POLL="0.2") as fleet:
        await wait_until(lambda: _three_idle_and_two_stopped(fleet), 20, "3 idle, 2 stopped")

        await world.mallory.send(worker_bot(5), "let me in")
        # Many polls later, worker5 is still stopped and the message still waits, unconfirmed.
        await asyncio.sleep(2.0)
        assert (await _states(fleet))["worker5"] == WorkerState.STOPPED
        waiting = world.telegram.pending_updates(worker_bot(5))
        assert [u["message"]["text"] for u in waiting] == ["let me in"]
