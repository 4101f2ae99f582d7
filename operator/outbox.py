"""Where the operator's announcements go: the store's outbox, which the master delivers.

A requeue or a failure on lease expiry is written to the BotTask first and announced after
("every change of state is written before it is announced"). The outbox is optional: without
a database the operator still reconciles, the BotTask's status says what happened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Outbox(Protocol):
    """The one store call the operator needs; a fleetgram Store satisfies it as it is."""

    async def add_event(
        self, kind: str, payload: dict[str, Any], *, task_id: str | None = None,
        chat_id: int | None = None,
    ) -> Any: ...


class NullOutbox:
    async def add_event(
        self, kind: str, payload: dict[str, Any], *, task_id: str | None = None,
        chat_id: int | None = None,
    ) -> None:
        log.debug("no outbox: %s for %s not announced", kind, task_id)

    async def signal_tasks(self) -> None:
        """Without a database the workers find their tasks on their poll."""


class StoreOutbox:
    """A fleetgram store (`open_store(DATABASE_URL)`), opened on first use and kept open."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._store: Any = None
        self._lock = asyncio.Lock()

    async def _opened(self) -> Any:
        async with self._lock:
            if self._store is None:
                from fleetgram.store import open_store

                store = open_store(self._url)
                await store.open()
                self._store = store
            return self._store

    async def add_event(
        self, kind: str, payload: dict[str, Any], *, task_id: str | None = None,
        chat_id: int | None = None,
    ) -> Any:
        store = await self._opened()
        return await store.add_event(kind, payload, task_id=task_id, chat_id=chat_id)

    async def signal_tasks(self) -> None:
        """Wake the workers (Postgres NOTIFY on the shared database): a task was assigned
        through the Kubernetes API, which the workers' store does not see being written."""
        from psycopg import OperationalError
        from psycopg_pool import PoolTimeout

        from fleetgram.store.signals import Channel

        store = await self._opened()
        try:
            await store.signal(Channel.TASKS)
        except PoolTimeout:
            raise  # no connection to be had: trying again would only wait as long again
        except OperationalError:
            # A pooled connection the server closed (a restart, pg_terminate_backend) shows
            # only once used, and the pool then drops it: once more, on a fresh connection.
            await store.signal(Channel.TASKS)

    async def managed_tokens(self) -> list[Any]:
        """The worker tokens the master stored for /addworker (encrypted)."""
        store = await self._opened()
        return list(await store.managed_tokens())

    async def watch_added_workers(self, callback: Callable[[], None]) -> None:
        """Call `callback` when the master stores a token (Postgres LISTEN; each reconnect of
        the listener calls it too, as something may have been stored meanwhile)."""
        from fleetgram.store.signals import Channel, signals_of

        signals = signals_of(await self._opened())
        if signals is not None:
            signals.subscribe(Channel.WORKERS, callback)

    async def close(self) -> None:
        async with self._lock:
            if self._store is not None:
                await self._store.close()
                self._store = None
