"""The embedded store: one SQLite file (or memory), through aiosqlite.

One connection per store. Every use of it is serialized by an asyncio.Lock, so a transaction
spanning several awaits never sees another coroutine's statements. Writes run in
`BEGIN IMMEDIATE` transactions, which take SQLite's write lock up front: several processes (or
store instances) sharing the file queue up on it (busy_timeout) and never double-claim.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite

from fleetgram.store.dialect import SQLITE
from fleetgram.store.signals import Channel, Signals
from fleetgram.store.sql import Row, SqlStore, to_utc

MEMORY = ":memory:"


def _param(value: Any) -> Any:
    if isinstance(value, datetime):
        # Fixed width, UTC, microseconds: text order is time order.
        return to_utc(value).isoformat(sep=" ", timespec="microseconds")
    return value


class _SQLiteTx:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self.signalled: set[Channel] = set()

    async def notify(self, channel: Channel) -> None:
        # SQLite has no NOTIFY: fired in this process after COMMIT (see _write); other
        # processes sharing the file find the change at their next poll.
        self.signalled.add(channel)

    async def execute(self, sql: str, *params: Any) -> int:
        cursor = await self._db.execute(SQLITE.sql(sql), _params(params))
        try:
            return cursor.rowcount
        finally:
            await cursor.close()

    async def fetchall(self, sql: str, *params: Any) -> list[Row]:
        rows = await self._db.execute_fetchall(SQLITE.sql(sql), _params(params))
        return [dict(row) for row in rows]

    async def fetchone(self, sql: str, *params: Any) -> Row | None:
        rows = await self.fetchall(sql, *params)
        return rows[0] if rows else None


def _params(params: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(_param(p) for p in params)


class SQLiteStore(SqlStore):
    dialect = SQLITE

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self.signals = Signals()

    async def open(self) -> None:
        if self._db is not None:
            return
        if self.path != MEMORY:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            await self._use_wal(db)
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            await db.close()
            raise
        self._db = db
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _use_wal(self, db: aiosqlite.Connection) -> None:
        """Switch the file to WAL (it stays so). Switching takes an exclusive lock without
        honouring busy_timeout, so processes opening a new file at once retry here."""
        if self.path == MEMORY:
            return
        deadline = asyncio.get_running_loop().time() + self.busy_timeout_s
        while True:
            try:
                await db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as error:
                locked = "locked" in str(error) or "busy" in str(error)
                if not locked or asyncio.get_running_loop().time() > deadline:
                    raise
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            async with self._lock:
                await db.close()

    def _connection(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open: await store.open() first")
        return self._db

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[_SQLiteTx]:
        db = self._connection()
        async with self._lock:
            await db.execute("BEGIN IMMEDIATE")
            tx = _SQLiteTx(db)
            try:
                yield tx
            except BaseException:
                if db.in_transaction:  # some errors (SQLITE_FULL, ...) end it themselves
                    await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
        for channel in tx.signalled:
            self.signals.fire(channel)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[_SQLiteTx]:
        db = self._connection()
        async with self._lock:
            yield _SQLiteTx(db)
