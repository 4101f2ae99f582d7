"""Change signals: the store tells its listeners "tasks changed" or "outbox changed".

A signal is a hint to look now rather than at the next poll; it carries nothing, and the
polls stay (at their own intervals) as the safety net, so a signal lost or missed never loses
work: the next poll finds what it would have pointed to.

- TASKS: a task was created or went back to pending: a worker should try to claim.
- OUTBOX: an event was written: the master should deliver.
- WORKERS: a worker bot's token was stored (/addworker): on Kubernetes the operator writes
  its Secret and starts it.

Within one process a store fires its signals itself, just after the writing transaction
commits (SQLite: `fleetgram up` runs the master and its workers on one store). Across
processes on Postgres, the write also sends `pg_notify(channel, '')` inside its transaction
and every process LISTENs on a dedicated connection (`PostgresListener`). PostgreSQL's NOTIFY
documentation (https://www.postgresql.org/docs/current/sql-notify.html) is what makes this
safe and cheap:
- "if a NOTIFY is executed inside a transaction, the notify events are not delivered until
  and unless the transaction is committed": a listener never hears of a row it cannot read
  yet, and a rolled-back write wakes nobody;
- "If the same channel name is signaled multiple times with identical payload strings within
  the same transaction, only one instance of the notification event is delivered": a batch
  of requeues wakes each listener once;
- "if a listening session receives a notification signal while it is within a transaction,
  the notification event will not be delivered to its connected client until just after the
  transaction is completed": the LISTEN connection does nothing else (autocommit, idle);
- notifications are not kept for a session that is not listening: after a reconnect every
  channel is fired once, since something may have happened while nobody listened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class Channel(StrEnum):
    TASKS = "fleetgram_tasks"
    OUTBOX = "fleetgram_outbox"
    WORKERS = "fleetgram_workers"


Listener = Callable[[], None]

LISTEN_RETRY_FIRST = 0.1  # seconds before the LISTEN connection is made again, doubled
LISTEN_RETRY_MAX = 5.0
LISTEN_HEALTH_CHECK = 10.0  # seconds between probes of the LISTEN connection


class Signals:
    """In-process fan-out of change signals to callbacks (each must return at once: they set
    an asyncio.Event). `on_subscribe` lets a store start listening across processes only once
    someone cares (a CLI command or the operator's outbox never opens a LISTEN connection)."""

    def __init__(self, on_subscribe: Callable[[], None] | None = None) -> None:
        self._listeners: dict[Channel, list[Listener]] = {c: [] for c in Channel}
        self._on_subscribe = on_subscribe
        self.fired: dict[Channel, int] = dict.fromkeys(Channel, 0)

    def subscribe(self, channel: Channel | str, listener: Listener) -> Callable[[], None]:
        """Call `listener` on each signal of `channel`; returns the unsubscribe function."""
        listeners = self._listeners[Channel(channel)]
        listeners.append(listener)
        if self._on_subscribe is not None:
            self._on_subscribe()

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                listeners.remove(listener)

        return unsubscribe

    def fire(self, channel: Channel | str) -> None:
        try:
            known = Channel(channel)
        except ValueError:
            return  # someone else's channel
        self.fired[known] += 1
        for listener in list(self._listeners[known]):
            try:
                listener()
            except Exception:  # one listener's bug must not stop the others waking
                log.exception("a change-signal listener failed", extra={"channel": known.value})

    def fire_all(self) -> None:
        for channel in Channel:
            self.fire(channel)

    @property
    def has_listeners(self) -> bool:
        return any(self._listeners.values())


def signals_of(store: object) -> Signals | None:
    """The store's signals, if it has any (test doubles and older stores may not)."""
    signals = getattr(store, "signals", None)
    return signals if isinstance(signals, Signals) else None


class PostgresListener:
    """One dedicated autocommit connection that LISTENs on every channel and fires each
    notification into `signals`. A failed or dropped connection is made again with backoff;
    each (re)connection fires every channel once (see the module's notes)."""

    def __init__(self, url: str, signals: Signals, *, connect_timeout_s: float = 10.0) -> None:
        self.url = url
        self.signals = signals
        self.connect_timeout_s = connect_timeout_s
        self.connections = 0  # made so far (tests and logs: a reconnect shows here)
        self.backend_pid: int | None = None
        self.listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="store-listener")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        delay = LISTEN_RETRY_FIRST
        while True:
            try:
                await self._listen_once()
                delay = LISTEN_RETRY_FIRST
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.listening.clear()
                # The error's type only: a connection error may quote the URL.
                log.warning("store change listener lost its connection; reconnecting",
                            extra={"error": type(exc).__name__, "retry_in": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX)

    async def _listen_once(self) -> None:
        from psycopg import AsyncConnection

        conn: AsyncConnection[Any] = await AsyncConnection.connect(
            self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)))
        try:
            for channel in Channel:
                await conn.execute(f'LISTEN "{channel.value}"')
            self.connections += 1
            self.backend_pid = conn.info.backend_pid
            self.listening.set()
            # Whatever was signalled while nobody listened is looked at now.
            self.signals.fire_all()
            while True:
                async for note in conn.notifies(timeout=LISTEN_HEALTH_CHECK):
                    self.signals.fire(note.channel)
                # A silent network failure would otherwise leave us deaf for good (psycopg
                # keeps notifications that arrive between two notifies() calls).
                await conn.execute("SELECT 1")
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                await conn.close()
