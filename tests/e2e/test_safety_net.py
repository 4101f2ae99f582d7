"""The safety net that does not rely on heartbeats, end to end.

A worker that gave up on a task without recording an outcome (a Telegram or store call around
the Claude call failed) leaves it `running` in the store while its slot says idle and its
heartbeat stays fresh, so the lease never expires. The orchestrator notices that the slot does
not name the task, requeues it within WORKER_LEASE_SECONDS, the user is told, and the task runs
again and completes: once, with nothing lost or doubled.
"""

from __future__ import annotations

import time

import pytest

from fleetgram.domain import Task, TaskState, WorkerState, new_task_id, utcnow
from fleetgram.policy import worker_state
from tests.e2e.harness import ADA, MASTER, World, wait_task, wait_until, worker_bot

pytestmark = pytest.mark.e2e

LEASE = 3.0  # the harness's WORKER_LEASE_SECONDS


async def test_a_task_left_running_on_an_idle_worker_is_requeued_within_the_lease_and_completes(
    world: World,
) -> None:
    world.claude.script("The stuck report, summarised.", when="stuck report")
    async with world.fleet(workers=2) as fleet:
        await world.open_chats(world.ada, workers=2)

        async def worker1_idle() -> bool:
            slots = {s.name: s for s in await fleet.store.get_slots()}
            return worker_state(slots["worker1"], utcnow(), LEASE) == WorkerState.IDLE

        await wait_until(worker1_idle, 15, "worker1 idle")

        # What a worker whose task path gave up midway leaves behind: the task running on
        # worker1 (its first attempt), worker1's slot idle and heartbeating.
        now = utcnow()
        stuck = Task(
            id=new_task_id(), user_id=ADA, chat_id=ADA, prompt="summarise the stuck report",
            title="summarise the stuck report", state=TaskState.RUNNING, worker="worker1",
            attempts=1, created_at=now, assigned_at=now, started_at=now,
        )
        await fleet.store.archive_task(stuck)
        left_at = time.monotonic()

        offline_seen: list[str] = []

        async def requeue_notice_arrived() -> bool:
            slots = {s.name: s for s in await fleet.store.get_slots()}
            state = worker_state(slots["worker1"], utcnow(), LEASE)
            if state == WorkerState.OFFLINE:
                offline_seen.append(state.value)
            return any("🔁" in t and stuck.id in t for t in world.ada.bot_texts(MASTER))

        await wait_until(requeue_notice_arrived, 20, "the requeue notice")
        took = time.monotonic() - left_at
        # Within the lease (the grace) plus a tick, with a wide margin for a loaded machine.
        assert took < LEASE + 6, f"requeued after {took:.1f}s"
        # The heartbeat never went stale: the lease-based check could not have caught this.
        assert offline_seen == []

        notices = [t for t in world.ada.bot_texts(MASTER) if "🔁" in t and stuck.id in t]
        assert len(notices) == 1
        assert "worker1 stopped working on it" in notices[0]
        assert "summarise the stuck report" in notices[0]  # the user knows which task

        done = await wait_task(fleet, stuck.id, TaskState.COMPLETED, timeout=20)
        assert done.attempts == 2  # the lost attempt is counted
        assert done.result == "The stuck report, summarised."
        await world.ada.wait_for(
            MASTER, lambda m: m.from_bot and "✅" in m.text and stuck.id in m.text, 10)
        worker = done.worker
        assert worker is not None
        await world.ada.wait_for_text(worker_bot(int(worker.removeprefix("worker"))),
                                      "The stuck report, summarised.", timeout=10)

        # Nothing doubled: Claude was asked once (the stuck attempt never reached it), and
        # the completion was announced once.
        asked = [r for r in world.claude.requests if "stuck report" in str(r["messages"])]
        assert len(asked) == 1
        completions = [t for t in world.ada.bot_texts(MASTER)
                       if stuck.id in t and "🔁" not in t and "✅" in t]
        assert len(completions) == 1
        assert await fleet.store.list_tasks([TaskState.PENDING, TaskState.ASSIGNED,
                                             TaskState.RUNNING]) == []
