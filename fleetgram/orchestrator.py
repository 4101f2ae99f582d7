"""The single-host orchestrator: a loop that requeues dead workers' and orphaned tasks and
scales the fleet, and a second loop that wakes stopped workers someone wrote to.

It only applies the pure decisions of fleetgram.policy; on Kubernetes the kopf operator does
the same with the same functions. Each tick reads counts and the few rows it needs (active
tasks, pending tasks pinned to a worker), never the whole queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from fleetgram import metrics
from fleetgram.aio import being_cancelled, wait_ended
from fleetgram.config import Settings
from fleetgram.domain import Task, TaskState, WorkerSlot, utcnow
from fleetgram.policy import (
    FleetView,
    OrphanKey,
    ScaleAction,
    ScaleDecision,
    ScalingSettings,
    dead_workers,
    decide_scaling,
    orphaned_tasks,
    quiet_since,
    worker_state,
)
from fleetgram.runtime import WorkerRuntime
from fleetgram.store.base import Store
from fleetgram.wakeup import StoppedChatWatcher, peekable

log = logging.getLogger(__name__)

# Rows a tick may read. Active tasks are bounded by the workers (one each, and a dead one's
# until requeued); pinned pending tasks by the per-user limit times the users. The caps only
# guard against the unforeseen.
ACTIVE_LIMIT = 1_000
PINNED_LIMIT = 1_000


class Orchestrator:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        runtime: WorkerRuntime,
        *,
        clock: Callable[[], datetime] = utcnow,
        tick_seconds: float | None = None,
        owns_workers: bool = True,
        watcher: StoppedChatWatcher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.clock = clock
        self.tick_seconds = tick_seconds or min(1.0, settings.poll_interval)
        self.scaling = ScalingSettings(
            settings.min_workers, settings.max_workers, settings.scale_up_threshold,
            settings.scale_down_delay,
        )
        self.owns_workers = owns_workers
        self._quiet_since: datetime | None = None
        self.last_decision: ScaleDecision | None = None
        # Since when each assigned/running task has been missing from its worker's slot.
        self._orphans_seen: dict[OrphanKey, datetime] = {}
        # Stopped slots with an allowed user's message waiting at Telegram (the watcher's).
        self.wanted: set[str] = set()
        self.watcher = watcher or StoppedChatWatcher(settings)
        # A slot is never peeked at while it is being started, nor started during a peek.
        self._slot_lock = asyncio.Lock()
        self._started_this_round: set[str] = set()

    async def boot(self) -> None:
        """A fresh start: every slot stopped, errors forgotten (the token may be fixed)."""
        names = self.settings.slot_names
        await self.store.ensure_slots(names)
        now = self.clock()
        for name in names:
            if self.owns_workers:
                # Every worker lived in this process: what they ran died with it.
                await self.store.requeue_worker_tasks(
                    name, now, max_attempts=self.settings.max_attempts,
                    reason="fleetgram restarted",
                )
                await self.store.update_slot(
                    name, enabled=False, error=None, current_task=None, state_since=now
                )

    async def run(self) -> None:
        wakeups = asyncio.create_task(self.run_wakeups(), name="orchestrator-wakeups")
        try:
            while True:
                try:
                    await self.tick()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("orchestrator tick failed")
                if being_cancelled():  # a cancellation swallowed below must still stop the loop
                    raise asyncio.CancelledError
                await asyncio.sleep(self.tick_seconds)
        finally:
            wakeups.cancel()
            await wait_ended([wakeups])
            try:
                await self.watcher.close()
            except Exception:
                log.debug("closing the wake-up watcher failed", exc_info=True)

    async def run_wakeups(self) -> None:
        """Every STOPPED_WORKER_POLL seconds: which stopped slots someone wrote to."""
        while True:
            try:
                await self.check_stopped_chats()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("checking stopped workers' chats failed")
            if being_cancelled():
                raise asyncio.CancelledError
            await asyncio.sleep(self.settings.stopped_worker_poll)

    async def check_stopped_chats(self) -> set[str]:
        now = self.clock()
        slots = await self.store.get_slots()
        states = {s.name: worker_state(s, now, self.settings.worker_lease_seconds)
                  for s in slots}
        wanted: set[str] = set()
        self._started_this_round = set()
        for name in peekable(slots, states):
            # Under the lock and from a fresh read: a slot the tick has just started (its
            # worker about to poll) is not peeked at, and is not started mid-peek.
            async with self._slot_lock:
                fresh = next((s for s in await self.store.get_slots() if s.name == name), None)
                if fresh is None or fresh.enabled or fresh.error:
                    continue
                if await self.watcher.someone_waits(name):
                    wanted.add(name)
        # A slot peeked early in the round may have been started since: it is no longer waiting.
        self.wanted = wanted - self._started_this_round
        return self.wanted

    async def tick(self) -> ScaleDecision:
        now = self.clock()
        lease = self.settings.worker_lease_seconds
        slots = await self.store.get_slots()
        active = await self.store.list_tasks(
            [TaskState.ASSIGNED, TaskState.RUNNING], limit=ACTIVE_LIMIT
        )
        dead = dead_workers(slots, active, now, lease)
        for name in dead:
            requeued = await self.store.requeue_worker_tasks(
                name, now, max_attempts=self.settings.max_attempts,
                reason=f"{name} stopped responding",
            )
            log.warning("worker lease expired", extra={"worker": name, "tasks": len(requeued)})
            await self.runtime.restart(name)
        await self._requeue_orphans(slots, [t for t in active if t.worker not in dead], now)

        open_pending = await self.store.count_tasks([TaskState.PENDING], pinned=False)
        pinned = await self.store.list_tasks([TaskState.PENDING], pinned=True,
                                             limit=PINNED_LIMIT)
        pending_count = open_pending + (
            len(pinned) if len(pinned) < PINNED_LIMIT
            else await self.store.count_tasks([TaskState.PENDING], pinned=True)
        )
        self._quiet_since = quiet_since(self._quiet_since, pending_count, now)
        states = {s.name: worker_state(s, now, lease) for s in slots}
        metrics.observe_fleet(states, pending_count)
        view = FleetView(states, open_pending, pinned, self._quiet_since, now,
                         frozenset(self.wanted))
        decision = decide_scaling(view, self.scaling)
        if decision.action != ScaleAction.NONE and decision.slot is not None:
            log.info(
                "scaling", extra={"action": decision.action.value, "worker": decision.slot,
                                  "reason": decision.reason},
            )
            metrics.SCALE_EVENTS.labels(decision.action.value).inc()
            if decision.action == ScaleAction.START:
                async with self._slot_lock:
                    await self.store.update_slot(
                        decision.slot, enabled=True, started_at=now, error=None,
                        state_since=now,
                    )
                    self.wanted.discard(decision.slot)
                    self._started_this_round.add(decision.slot)
                    await self.runtime.start(decision.slot)
            else:
                await self.runtime.stop(decision.slot)
                await self.store.update_slot(
                    decision.slot, enabled=False, current_task=None, state_since=now
                )
                # Each stop needs a quiet period of its own: shrink one worker at a time.
                self._quiet_since = now
        if pending_count:
            self.runtime.wake_all()
        self.last_decision = decision
        return decision

    async def _requeue_orphans(
        self, slots: list[WorkerSlot], active: list[Task], now: datetime
    ) -> None:
        """The safety net that does not rely on heartbeats (see `policy.orphaned_tasks`):
        a task its worker's slot has not named for a lease goes back to the queue, and the
        store's 'requeued' (or 'failed') event tells the user."""
        found = orphaned_tasks(slots, active, self._orphans_seen, now,
                               self.settings.worker_lease_seconds)
        self._orphans_seen = found.first_seen
        for task in found.tasks:
            assert task.worker is not None
            requeued = await self.store.requeue_task(
                task.id, task.worker, now, max_attempts=self.settings.max_attempts,
                reason=f"{task.worker} stopped working on it",
            )
            log.warning("orphaned task requeued", extra={
                "task": task.id, "worker": task.worker, "state": task.state.value,
                "requeued": requeued is not None})
