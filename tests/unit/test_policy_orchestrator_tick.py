"""The single-host orchestrator applies the policies with what it reads: counts and the few rows
it needs (active tasks, pinned pending ones), never the whole queue; orphaned tasks requeued
after the lease; a stopped slot someone wrote to started. A recording store, plain data."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fleetgram.config import load_settings
from fleetgram.domain import Task, TaskState, WorkerSlot
from fleetgram.orchestrator import Orchestrator
from fleetgram.policy import ScaleAction

from .factories import T0, at, running_slot, task


class RecordingStore:
    def __init__(self, slots: list[WorkerSlot], tasks: list[Task], open_pending: int = 0) -> None:
        self.slots = {s.name: s for s in slots}
        self.tasks = {t.id: t for t in tasks}
        self.open_pending = open_pending
        self.reads: list[tuple[tuple[TaskState, ...], bool | None, int]] = []
        self.requeued: list[tuple[str, str, str]] = []
        self.slot_writes: list[tuple[str, dict[str, Any]]] = []

    async def get_slots(self) -> list[WorkerSlot]:
        return list(self.slots.values())

    async def list_tasks(self, states: Any = None, *, user_id: int | None = None,
                         worker: str | None = None, limit: int = 100,
                         pinned: bool | None = None) -> list[Task]:
        wanted = tuple(states or ())
        self.reads.append((wanted, pinned, limit))
        found = [t for t in self.tasks.values() if t.state in wanted
                 and (pinned is None or (t.pinned_worker is not None) == pinned)]
        return found[:limit]

    async def count_tasks(self, states: Any, *, user_id: int | None = None,
                          pinned: bool | None = None) -> int:
        assert pinned is False and list(states) == [TaskState.PENDING]
        return self.open_pending

    async def requeue_worker_tasks(self, worker: str, now: datetime, *, max_attempts: int,
                                   reason: str) -> list[Task]:
        return []

    async def requeue_task(self, task_id: str, worker: str, now: datetime, *,
                           max_attempts: int, reason: str) -> Task | None:
        self.requeued.append((task_id, worker, reason))
        task = self.tasks[task_id].with_(state=TaskState.PENDING, worker=None)
        self.tasks[task_id] = task
        return task

    async def update_slot(self, name: str, **fields: Any) -> None:
        self.slot_writes.append((name, fields))


class RecordingRuntime:
    def __init__(self) -> None:
        self.started: list[str] = []

    async def start(self, slot: str) -> None:
        self.started.append(slot)

    async def stop(self, slot: str) -> None: ...

    async def restart(self, slot: str) -> None: ...

    def wake_all(self) -> None: ...

    async def close(self) -> None: ...


def orchestrator(store: RecordingStore, runtime: RecordingRuntime, clock: list[datetime],
                 **env: str) -> Orchestrator:
    settings = load_settings({
        "MASTER_BOT_TOKEN": "1000:master-token-abcdef",
        "WORKER_TOKEN_POOL": ",".join(f"200{n}:worker{n}-token-abcdef" for n in range(1, 4)),
        "ALLOWED_USER_IDS": "1111", "ANTHROPIC_API_KEY": "sk-ant-test",
        "WORKER_LEASE_SECONDS": "30", **env,
    }, dotenv=None)
    return Orchestrator(settings, store, runtime, clock=lambda: clock[0])  # type: ignore[arg-type]


async def test_a_tick_counts_the_open_queue_and_reads_only_active_and_pinned_rows():
    store = RecordingStore(
        [running_slot("worker1", current_task="t-run01"), WorkerSlot("worker2"),
         WorkerSlot("worker3")],
        [task("t-run01", state=TaskState.RUNNING, worker="worker1", attempts=1)],
        open_pending=10_000,
    )
    runtime = RecordingRuntime()
    decision = await orchestrator(store, runtime, [T0]).tick()
    assert [(states, pinned) for states, pinned, _ in store.reads] == [
        ((TaskState.ASSIGNED, TaskState.RUNNING), None),
        ((TaskState.PENDING,), True),
    ]
    assert all(limit <= 1_000 for _, _, limit in store.reads)
    # 10,000 pending and no idle worker: one more worker, as the seed's rule says.
    assert (decision.action, decision.slot) == (ScaleAction.START, "worker2")
    assert runtime.started == ["worker2"]


async def test_a_task_its_heartbeating_worker_no_longer_names_is_requeued_after_the_lease():
    stuck = task("t-stuck", state=TaskState.RUNNING, worker="worker1", attempts=1)
    idle_but_beating = running_slot("worker1", current_task=None, heartbeat_at=T0)
    store = RecordingStore([idle_but_beating, WorkerSlot("worker2"), WorkerSlot("worker3")],
                           [stuck])
    clock = [T0]
    orch = orchestrator(store, RecordingRuntime(), clock)
    await orch.tick()
    assert store.requeued == []  # first seen: maybe just claimed
    clock[0] = at(29)
    store.slots["worker1"] = running_slot("worker1", current_task=None, heartbeat_at=at(29))
    await orch.tick()
    assert store.requeued == []
    clock[0] = at(30)
    store.slots["worker1"] = running_slot("worker1", current_task=None, heartbeat_at=at(30))
    await orch.tick()
    assert store.requeued == [("t-stuck", "worker1", "worker1 stopped working on it")]


async def test_a_stopped_slot_someone_wrote_to_is_started():
    store = RecordingStore([running_slot("worker1"), WorkerSlot("worker2"),
                            WorkerSlot("worker3")], [])
    runtime = RecordingRuntime()
    orch = orchestrator(store, runtime, [T0 + timedelta(seconds=1)])
    orch.wanted = {"worker3"}
    decision = await orch.tick()
    assert (decision.action, decision.slot) == (ScaleAction.START, "worker3")
    assert runtime.started == ["worker3"]
    assert ("worker3", {"enabled": True, "started_at": T0 + timedelta(seconds=1),
                        "error": None, "state_since": T0 + timedelta(seconds=1)}
            ) in store.slot_writes
    assert orch.wanted == set()
