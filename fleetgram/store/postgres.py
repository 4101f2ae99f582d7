"""The shared store: PostgreSQL through psycopg 3 and an async connection pool.

Each writing operation is one transaction on one pooled connection. The claim takes its row with
`FOR UPDATE SKIP LOCKED`, so concurrent claimers (any number of processes or hosts) each get a
different task without waiting on one another.

Change signals: a write that creates or requeues a task, or writes an outbox event, sends
`pg_notify` in its own transaction (delivered at commit, see fleetgram.store.signals), and a
dedicated LISTEN connection, opened once something subscribes, wakes this process's listeners.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from fleetgram.store.dialect import POSTGRES
from fleetgram.store.signals import Channel, PostgresListener, Signals
from fleetgram.store.sql import Row, SqlStore, to_utc


def _query(sql: str, params: Sequence[Any]) -> tuple[str, tuple[Any, ...] | None]:
    """The statement and its parameters as psycopg takes them. Without parameters psycopg sends
    the text as it is (no % escaping), so it is rendered without placeholders too."""
    if not params:
        return POSTGRES.sql(sql, placeholders=False), None
    return POSTGRES.sql(sql), tuple(to_utc(p) if isinstance(p, datetime) else p for p in params)


class _PostgresTx:
    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self._conn = conn
        self.signalled: set[Channel] = set()

    async def notify(self, channel: Channel) -> None:
        if channel not in self.signalled:
            self.signalled.add(channel)
            await self.execute("SELECT pg_notify(?, '')", channel.value)

    async def execute(self, sql: str, *params: Any) -> int:
        async with self._conn.cursor() as cursor:
            await cursor.execute(*_query(sql, params))
            return cursor.rowcount

    async def fetchall(self, sql: str, *params: Any) -> list[Row]:
        async with self._conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(*_query(sql, params))
            return await cursor.fetchall() if cursor.description is not None else []

    async def fetchone(self, sql: str, *params: Any) -> Row | None:
        rows = await self.fetchall(sql, *params)
        return rows[0] if rows else None


class PostgresStore(SqlStore):
    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout_s = connect_timeout_s
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self.signals = Signals(on_subscribe=self._listen)
        self.listener = PostgresListener(url, self.signals,
                                         connect_timeout_s=connect_timeout_s)

    def _listen(self) -> None:
        """Someone subscribed: hear the other processes' writes too (once the store is
        open; open() starts it for subscriptions made before)."""
        if self._pool is not None:
            self.listener.start()

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
            self.url,
            open=False,
            min_size=self.min_size,
            max_size=self.max_size,
            timeout=self.connect_timeout_s,
            kwargs={"autocommit": True},
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout_s)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise
        if self.signals.has_listeners:
            self.listener.start()

    async def close(self) -> None:
        await self.listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _pool_or_fail(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        if self._pool is None:
            raise RuntimeError("the store is not open: await store.open() first")
        return self._pool

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[_PostgresTx]:
        async with self._pool_or_fail().connection() as conn:
            async with conn.transaction():
                tx = _PostgresTx(conn)
                yield tx
            # Committed: this process's listeners need not wait for the LISTEN round trip.
            for channel in tx.signalled:
                self.signals.fire(channel)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[_PostgresTx]:
        async with self._pool_or_fail().connection() as conn:
            yield _PostgresTx(conn)
