"""The operator's announcements (a task requeued, or failed when its worker's Lease expired) on
their way to the store's outbox, which the master delivers.

The change itself is written to the BotTask first; the announcement follows. A database that
is down or does not answer must not hold up the rounds (assignments, scaling) behind it, nor
lose what is to be said: announcements wait in memory, in order, and are written one by one
in the background, each write bounded by `write_timeout` and tried again with backoff. A round
waits `wait` seconds at most for its own ones (so with a healthy database they are written
before the round ends, as before). Held in memory only: an operator that dies with some
unwritten leaves them unsaid; the BotTask's status still tells the truth.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from fleetgram.aio import wait_event
from fleetgram.operator.outbox import Outbox

log = logging.getLogger(__name__)

WAIT = 1.0  # seconds a round waits for its announcements to be written
WRITE_TIMEOUT = 10.0
RETRY_FIRST = 0.5
RETRY_MAX = 30.0
LIMIT = 1000  # announcements held at most; past it the oldest is dropped (and logged)


class Announcement(Protocol):
    kind: str
    payload: dict[str, Any]
    task_id: str | None
    chat_id: int | None


@dataclass(frozen=True)
class Note:
    """An announcement that is about no task (a worker added with /addworker)."""

    kind: str
    payload: dict[str, Any]
    chat_id: int | None
    task_id: str | None = None


class Announcer:
    def __init__(self, outbox: Outbox, *, wait: float = WAIT,
                 write_timeout: float = WRITE_TIMEOUT, retry_first: float = RETRY_FIRST,
                 retry_max: float = RETRY_MAX, limit: int = LIMIT) -> None:
        self.outbox = outbox
        self.wait, self.write_timeout = wait, write_timeout
        self.retry_first, self.retry_max, self.limit = retry_first, retry_max, limit
        self._queue: collections.deque[Announcement] = collections.deque()
        self._drained = asyncio.Event()
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def waiting(self) -> int:
        """Announcements not written yet."""
        return len(self._queue)

    async def announce(self, event: Announcement) -> None:
        """Queue `event` and wait up to `wait` seconds for the queue to be written."""
        if len(self._queue) >= self.limit:
            dropped = self._queue.popleft()
            log.error("too many announcements waiting for the database; the oldest is dropped",
                      extra={"kind": dropped.kind, "task": dropped.task_id})
        self._queue.append(event)
        self._drained.clear()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="operator-announcements")
        await wait_event(self._drained, self.wait)

    async def _drain(self) -> None:
        delay = self.retry_first
        while self._queue:
            event = self._queue[0]
            try:
                async with asyncio.timeout(self.write_timeout):
                    await self.outbox.add_event(event.kind, event.payload,
                                                task_id=event.task_id, chat_id=event.chat_id)
            except Exception as exc:  # the database: down, slow, refusing
                if not self._failing:
                    self._failing = True
                    log.warning("announcements wait for the database",
                                extra={"error": type(exc).__name__, "waiting": len(self._queue)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            self._queue.popleft()
            delay = self.retry_first
            if self._failing:
                self._failing = False
                log.info("announcements are written again", extra={"waiting": len(self._queue)})
        self._drained.set()

    async def close(self, budget: float = 2.0) -> None:
        """Write what waits, for `budget` seconds at most; say what could not be."""
        if self._task is None:
            return
        await wait_event(self._drained, budget)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        if self._queue:
            log.warning("announcements not written at shutdown",
                        extra={"count": len(self._queue),
                               "tasks": [e.task_id for e in list(self._queue)[:20]]})
