"""The single-host orchestrator: a loop that requeues dead workers' tasks and scales the fleet.

It only applies the pure decisions of fleetgram.policy; on Kubernetes the kopf operator does
the same with the same functions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from fleetgram import metrics
from fleetgram.aio import being_cancelled
from fleetgram.config import Settings
from fleetgram.domain import TaskState, utcnow
from fleetgram.policy import (
    FleetView,
    ScaleAction,
    ScaleDecision,
    ScalingSettings,
    dead_workers,
    decide_scaling,
    quiet_since,
    worker_state,
)
from fleetgram.runtime import WorkerRuntime
from fleetgram.store.base import Store

log = logging.getLogger(__name__)


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

    async def tick(self) -> ScaleDecision:
        now = self.clock()
        lease = self.settings.worker_lease_seconds
        slots = await self.store.get_slots()
        tasks = await self.store.list_tasks(
            [TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING], limit=10_000
        )
        for name in dead_workers(slots, tasks, now, lease):
            requeued = await self.store.requeue_worker_tasks(
                name, now, max_attempts=self.settings.max_attempts,
                reason=f"{name} stopped responding",
            )
            log.warning("worker lease expired", extra={"worker": name, "tasks": len(requeued)})
            await self.runtime.restart(name)
        pending = [t for t in tasks if t.state == TaskState.PENDING]
        self._quiet_since = quiet_since(self._quiet_since, len(pending), now)
        states = {s.name: worker_state(s, now, lease) for s in slots}
        metrics.observe_fleet(states, len(pending))
        decision = decide_scaling(FleetView(states, pending, self._quiet_since, now), self.scaling)
        if decision.action != ScaleAction.NONE and decision.slot is not None:
            log.info(
                "scaling", extra={"action": decision.action.value, "worker": decision.slot,
                                  "reason": decision.reason},
            )
            metrics.SCALE_EVENTS.labels(decision.action.value).inc()
            if decision.action == ScaleAction.START:
                await self.store.update_slot(
                    decision.slot, enabled=True, started_at=now, error=None, state_since=now
                )
                await self.runtime.start(decision.slot)
            else:
                await self.runtime.stop(decision.slot)
                await self.store.update_slot(
                    decision.slot, enabled=False, current_task=None, state_since=now
                )
                # Each stop needs a quiet period of its own: shrink one worker at a time.
                self._quiet_since = now
        if pending:
            self.runtime.wake_all()
        self.last_decision = decision
        return decision
