"""Pure decisions: worker state, queue order, assignment and scaling.

Functions of a snapshot (tasks, slots, settings, now) returning decisions. Both orchestrators
(the single-host loop and the kopf operator) call them, and tests drive them with plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from fleetgram.domain import Task, TaskState, WorkerSlot, WorkerState, slot_index


def worker_state(slot: WorkerSlot, now: datetime, lease_seconds: float) -> WorkerState:
    if slot.error:
        return WorkerState.ERROR
    if not slot.enabled:
        return WorkerState.STOPPED
    if slot.ready_at is None or (slot.started_at is not None and slot.ready_at < slot.started_at):
        return WorkerState.STARTING
    if slot.heartbeat_at is None or (now - slot.heartbeat_at).total_seconds() > lease_seconds:
        return WorkerState.OFFLINE
    return WorkerState.BUSY if slot.current_task else WorkerState.IDLE


def queue_key(task: Task) -> tuple[int, datetime, str]:
    """Queue order: priority (1 first), then age, then id as a stable tie-break."""
    return (task.priority, task.created_at, task.id)


def queue_order(tasks: Iterable[Task]) -> list[Task]:
    return sorted(tasks, key=queue_key)


def plan_assignments(pending: Iterable[Task], idle_workers: Sequence[str]) -> list[tuple[str, str]]:
    """(task id, worker) pairs: tasks in queue order, each to the first free idle worker it may
    run on. A pinned task goes to its own worker only, and waits while that one is busy. An
    unpinned task prefers an idle worker no waiting task is pinned to, so it does not take the
    one worker a pinned task can use while another idle worker stays free."""
    free = sorted(idle_workers, key=slot_index)
    eligible = queue_order(
        t for t in pending if t.state == TaskState.PENDING and not t.cancel_requested
    )
    wanted = {t.pinned_worker for t in eligible if t.pinned_worker is not None}
    plan: list[tuple[str, str]] = []
    for task in eligible:
        if not free:
            break
        if task.pinned_worker is not None:
            if task.pinned_worker in free:
                free.remove(task.pinned_worker)
                plan.append((task.id, task.pinned_worker))
            continue
        worker = next((w for w in free if w not in wanted), free[0])
        free.remove(worker)
        plan.append((task.id, worker))
    return plan


class ScaleAction(StrEnum):
    NONE = "none"
    START = "start"
    STOP = "stop"


@dataclass(frozen=True)
class ScaleDecision:
    action: ScaleAction
    slot: str | None
    reason: str


@dataclass(frozen=True)
class ScalingSettings:
    min_workers: int = 1
    max_workers: int = 5
    scale_up_threshold: int = 3
    scale_down_delay: float = 60.0


@dataclass(frozen=True)
class FleetView:
    """What scaling looks at: each slot's derived state and the pending work, counted rather
    than listed where a count is enough (the queue may hold thousands of tasks)."""

    states: dict[str, WorkerState]  # every slot of the token pool, in pool order
    open_pending: int  # pending tasks any worker may take (not pinned to one)
    pinned_pending: Sequence[Task]  # pending tasks pinned to one worker, in queue order
    quiet_since: datetime | None  # since when nothing has been pending; None while busy
    now: datetime
    # Stopped slots someone wrote to (their messages wait at Telegram): started like the
    # worker of a pinned task.
    wanted: frozenset[str] = frozenset()
    # Stopped slots just added with /addworker: started when the fleet has room (never by
    # stopping another worker, nobody is waiting for them yet).
    fresh: frozenset[str] = frozenset()

    @property
    def any_pending(self) -> bool:
        return self.open_pending > 0 or bool(self.pinned_pending)


def split_pending(pending: Iterable[Task]) -> tuple[int, list[Task]]:
    """(how many are open to any worker, the pinned ones in queue order), for a caller that
    already holds the pending tasks (the operator reads every BotTask anyway)."""
    tasks = list(pending)
    pinned = queue_order(t for t in tasks if t.pinned_worker is not None)
    return len(tasks) - len(pinned), pinned


_ACTIVE = (WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY, WorkerState.OFFLINE)


def quiet_since(previous: datetime | None, pending_count: int, now: datetime) -> datetime | None:
    """Track how long the queue has been empty: reset by any pending task."""
    if pending_count > 0:
        return None
    return previous or now


def decide_scaling(view: FleetView, settings: ScalingSettings) -> ScaleDecision:
    """One decision per tick; the orchestrator applies it and asks again next tick."""
    states = view.states
    active = [s for s, st in states.items() if st in _ACTIVE]
    idle = [s for s, st in states.items() if st == WorkerState.IDLE]
    stopped = [s for s, st in states.items() if st == WorkerState.STOPPED]
    usable = sum(1 for st in states.values() if st != WorkerState.ERROR)
    ceiling = min(settings.max_workers, usable)
    pinned = queue_order(view.pinned_pending)

    # A pinned task's worker must run, whatever the queue length says; so must a stopped
    # worker someone wrote to (its chat is a way in, like @workerN).
    needed = [(t.pinned_worker, f"task {t.id} is pinned to {t.pinned_worker}") for t in pinned]
    needed += [(s, f"a message is waiting in {s}'s chat") for s in sorted(view.wanted,
                                                                           key=slot_index)]
    waited_for = {t.pinned_worker for t in pinned} | set(view.wanted)
    for slot, why in needed:
        if slot is None or states.get(slot) != WorkerState.STOPPED:
            continue
        if len(active) < settings.max_workers:
            return ScaleDecision(ScaleAction.START, slot, why)
        # At the ceiling: make room by stopping an idle worker nobody is waiting for.
        spare = [s for s in idle if s not in waited_for]
        if spare:
            victim = max(spare, key=slot_index)
            return ScaleDecision(
                ScaleAction.STOP, victim, f"making room for {slot} ({why})"
            )

    for slot in sorted(view.fresh, key=slot_index):
        if states.get(slot) == WorkerState.STOPPED and len(active) < settings.max_workers:
            return ScaleDecision(ScaleAction.START, slot, f"{slot} was just added (/addworker)")

    if len(active) < min(settings.min_workers, usable) and stopped:
        return ScaleDecision(
            ScaleAction.START, stopped[0], f"{len(active)} running, below MIN_WORKERS"
        )

    # Only tasks a new worker could take count: a task pinned to a busy worker waits for it.
    open_tasks = view.open_pending
    starting = any(st == WorkerState.STARTING for st in states.values())
    if (
        open_tasks > settings.scale_up_threshold
        and not idle
        and not starting  # one at a time: a starting worker is about to be idle
        and len(active) < ceiling
        and stopped
    ):
        return ScaleDecision(
            ScaleAction.START,
            stopped[0],
            f"{open_tasks} pending > threshold {settings.scale_up_threshold} "
            "and no idle worker",
        )

    if len(active) > settings.max_workers:
        victims = idle or []
        if victims:
            return ScaleDecision(
                ScaleAction.STOP, max(victims, key=slot_index), "above MAX_WORKERS"
            )

    if (
        len(idle) > 2
        and not view.any_pending
        and view.quiet_since is not None
        and (view.now - view.quiet_since).total_seconds() >= settings.scale_down_delay
        and len(active) > settings.min_workers
    ):
        return ScaleDecision(
            ScaleAction.STOP,
            max(idle, key=slot_index),
            f"{len(idle)} idle and nothing pending for {settings.scale_down_delay:g}s",
        )
    return ScaleDecision(ScaleAction.NONE, None, "steady")


def dead_workers(
    slots: Iterable[WorkerSlot], active_tasks: Iterable[Task], now: datetime, lease_seconds: float
) -> list[str]:
    """Workers holding assigned/running tasks whose heartbeat is older than the lease."""
    holders = {t.worker for t in active_tasks if t.state.active and t.worker}
    dead = []
    for slot in slots:
        if slot.name not in holders:
            continue
        beat = slot.heartbeat_at
        if beat is None or (now - beat).total_seconds() > lease_seconds:
            dead.append(slot.name)
    return dead


OrphanKey = tuple[str, str, int]  # (task id, worker, attempt): one run of a task


@dataclass(frozen=True)
class Orphans:
    tasks: list[Task]  # to requeue now
    first_seen: dict[OrphanKey, datetime]  # every mismatch seen, for the next call


def orphan_key(task: Task) -> OrphanKey:
    return (task.id, task.worker or "", task.attempts)


def orphaned_tasks(
    slots: Iterable[WorkerSlot],
    active_tasks: Iterable[Task],
    first_seen: Mapping[OrphanKey, datetime],
    now: datetime,
    grace: float,
) -> Orphans:
    """The safety net that does not rely on heartbeats (a worker stuck on one task keeps
    heartbeating): an assigned/running task whose worker's slot has not said, for `grace`
    seconds, that it is running that very task is orphaned and goes back to the queue.

    A worker says so (slot.current_task) right after it claims a task, so an `assigned` task
    not yet on its slot is normal for a moment; `first_seen` (returned updated, kept by the
    caller between calls) times each mismatch. The key holds the attempt, so a task requeued
    and claimed again starts a fresh clock."""
    on_slot = {s.name: s.current_task for s in slots}
    seen: dict[OrphanKey, datetime] = {}
    orphans: list[Task] = []
    for task in active_tasks:
        if not task.state.active or task.worker is None:
            continue
        if on_slot.get(task.worker) == task.id:
            continue
        key = orphan_key(task)
        since = min(first_seen.get(key, now), now)
        seen[key] = since
        if (now - since).total_seconds() >= grace:
            orphans.append(task)
    return Orphans(orphans, seen)
