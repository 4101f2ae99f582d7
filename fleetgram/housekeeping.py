"""Retention: finished tasks, delivered outbox events and usage-ledger rows go after
RETENTION_DAYS.

The Housekeeper runs in the master process in both modes: single host (the SQL store is the
whole record) and Kubernetes. There the operator garbage-collects finished BotTasks after
finishedTaskTTLSeconds, but each task's full record was archived in SQL first
(`Store.archive_task`), so the purge below is the one place a finished task's record, its
delivered notices and its ledger rows finally go away.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from fleetgram import metrics
from fleetgram.aio import being_cancelled, wait_ended
from fleetgram.config import Settings
from fleetgram.domain import TaskState, utcnow
from fleetgram.store.base import Store

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 3600.0
BACKLOG_EVERY_SECONDS = 15.0  # fleetgram_oldest_pending_task_age_seconds is set this often
BACKLOG_SCAN = 500  # pending tasks looked at (queue order) for the oldest


def purge_cutoff(now: datetime, retention_days: float) -> datetime:
    """Everything finished (or delivered, or billed) before this instant is purged."""
    return now - timedelta(days=retention_days)


class Housekeeper:
    """Purges at start and then every `every` seconds; a failed purge is logged and retried
    at the next round (nothing is lost by waiting)."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
        every: float = PURGE_EVERY_SECONDS,
        backlog_every: float | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.every = every
        self.backlog_every = BACKLOG_EVERY_SECONDS if backlog_every is None else backlog_every

    async def observe_backlog(self) -> float:
        """Set fleetgram_oldest_pending_task_age_seconds (the PrometheusRule's backlog alert)
        from the oldest of the first BACKLOG_SCAN pending tasks; returns it (0: none)."""
        pending = await self.store.list_tasks([TaskState.PENDING], limit=BACKLOG_SCAN)
        oldest = min((t.created_at for t in pending), default=None)
        age = max(0.0, (self.clock() - oldest).total_seconds()) if oldest is not None else 0.0
        metrics.OLDEST_PENDING.set(age)
        return age

    async def _backlog_loop(self) -> None:
        while True:
            try:
                await self.observe_backlog()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not measure the backlog; trying again", exc_info=True)
            await asyncio.sleep(self.backlog_every)

    async def purge_once(self) -> int:
        """One purge; returns the number of finished tasks deleted."""
        before = purge_cutoff(self.clock(), self.settings.retention_days)
        purged = await self.store.purge_finished(before)
        if purged:
            log.info("purged finished tasks", extra={"tasks": purged,
                                                     "before": before.isoformat()})
        return purged

    async def run(self) -> None:
        backlog = asyncio.create_task(self._backlog_loop(), name="backlog-gauge")
        try:
            await self._purge_loop()
        finally:
            backlog.cancel()
            await wait_ended([backlog])

    async def _purge_loop(self) -> None:
        while True:
            try:
                await self.purge_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("purge failed; retrying at the next round")
            if being_cancelled():
                raise asyncio.CancelledError
            await asyncio.sleep(self.every)
