"""Plain-data builders for the unit specifications: a fixed clock, tasks, slots, fleets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fleetgram.domain import Task, WorkerSlot, WorkerState, slot_name

T0 = datetime(2026, 1, 25, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """T0 plus `seconds` (negative: before T0)."""
    return T0 + timedelta(seconds=seconds)


def task(task_id: str = "t-aaaaa", **fields: Any) -> Task:
    defaults: dict[str, Any] = {
        "user_id": 42,
        "chat_id": 42,
        "prompt": f"prompt of {task_id}",
        "title": f"title of {task_id}",
        "created_at": T0,
    }
    defaults.update(fields)
    return Task(id=task_id, **defaults)


def pending_tasks(count: int) -> list[Task]:
    return [task(f"t-p{i:04d}", created_at=at(i)) for i in range(count)]


def fleet(*states: WorkerState) -> dict[str, WorkerState]:
    """Slot states in pool order: fleet(BUSY, STOPPED) is worker1 busy, worker2 stopped."""
    return {slot_name(i): state for i, state in enumerate(states)}


def running_slot(name: str, **fields: Any) -> WorkerSlot:
    """A slot that was started, answered getMe and heartbeats right now (T0)."""
    defaults: dict[str, Any] = {
        "enabled": True,
        "started_at": at(-120),
        "ready_at": at(-110),
        "heartbeat_at": T0,
    }
    defaults.update(fields)
    return WorkerSlot(name=name, **defaults)
