"""tests/faults.py's FaultyStore: writes refused as a full disk refuses them, reads served,
and the error it raises is the engine's own (shown for SQLite with a really full database)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import psycopg.errors
import pytest

from fleetgram.domain import TaskState
from fleetgram.store.base import Store
from fleetgram.store.sql import SqlStore
from fleetgram.store.sqlite import SQLiteStore
from tests.faults import WRITE_METHODS, FaultyStore, disk_full_error
from tests.store.support import at, make_task


def test_every_write_method_of_the_store_protocol_is_guarded() -> None:
    protocol = {name for name in vars(Store) if not name.startswith("_")}
    assert WRITE_METHODS <= protocol
    reads = {"open", "close", "get_task", "list_tasks", "count_tasks", "find_task_by_message",
             "queue_position", "get_slots", "pending_events", "leftover_replies", "load_turns",
             "session_of", "load_attachments", "usage_since",
             "task_of_message", "messages_of_task", "follow_up_of", "conversation_of_task",
             "managed_tokens"}
    assert protocol - WRITE_METHODS == reads  # a new method must be sorted into one or other


async def test_refused_writes_raise_the_engines_disk_full_error_and_store_nothing(
    store: SqlStore,
) -> None:
    faulty = FaultyStore(store)
    faulty.refuse_writes()
    expected = (sqlite3.OperationalError if isinstance(store, SQLiteStore)
                else psycopg.errors.DiskFull)
    with pytest.raises(expected):
        await faulty.create_task(make_task())
    with pytest.raises(expected):
        await faulty.add_event("a", {})
    assert await store.list_tasks() == []
    assert await store.pending_events() == []
    assert faulty.refused == ["create_task", "add_event"]


async def test_reads_pass_while_writes_are_refused(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    faulty = FaultyStore(store)
    faulty.refuse_writes()
    assert await faulty.get_task(task.id) == task
    assert await faulty.count_tasks([TaskState.PENDING]) == 1
    assert await faulty.pending_events() == []


async def test_writes_work_again_after_heal(store: SqlStore) -> None:
    faulty = FaultyStore(store)
    faulty.refuse_writes()
    with pytest.raises(Exception):  # noqa: B017 (the engine's error, whichever it is)
        await faulty.create_task(make_task())
    faulty.heal()
    task = await faulty.create_task(make_task())
    assert await store.get_task(task.id) == task


async def test_a_timed_refusal_heals_by_itself(store: SqlStore) -> None:
    faulty = FaultyStore(store)
    faulty.refuse_writes(0.3)
    with pytest.raises(Exception):  # noqa: B017
        await faulty.claim_next("worker1", at(1))
    await asyncio.sleep(0.6)
    assert await faulty.claim_next("worker1", at(2)) is None  # went through: nothing pending
    assert not faulty.refusing


async def test_a_refusal_may_be_narrowed_to_some_methods_and_a_given_error(
    store: SqlStore,
) -> None:
    faulty = FaultyStore(store)
    boom = RuntimeError("boom")
    faulty.refuse_writes(error=boom, methods={"finish_task"})
    task = await faulty.create_task(make_task())
    await faulty.claim_next("worker1", at(1))
    with pytest.raises(RuntimeError, match="boom"):
        await faulty.finish_task(task.id, "worker1", TaskState.COMPLETED, at(2), result="ok")
    current = await faulty.get_task(task.id)
    assert current is not None and current.state is TaskState.ASSIGNED


async def test_a_really_full_sqlite_database_raises_the_error_the_wrapper_raises(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(str(tmp_path / "full.db"))
    await store.open()
    try:
        db = store._connection()
        [(pages,)] = await db.execute_fetchall("PRAGMA page_count")
        await db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on

        with pytest.raises(sqlite3.OperationalError) as real:
            await store.create_task(make_task(prompt="x" * 200_000))

        imitation = disk_full_error(store)
        assert type(real.value) is type(imitation)
        assert str(real.value) == str(imitation) == "database or disk is full"
        assert await store.list_tasks() == []  # nothing half-written; the store still reads
        await db.execute("PRAGMA max_page_count = 1073741823")  # space again
        task = await store.create_task(make_task(prompt="x" * 200_000))
        assert await store.get_task(task.id) == task
    finally:
        await store.close()


def test_a_wrapped_store_fails_as_its_sql_store_does(store: SqlStore) -> None:
    cluster_like = SimpleNamespace(inner=store)  # a ClusterStore keeps its SQL store in .inner
    error = disk_full_error(FaultyStore(cluster_like))
    assert type(error) is type(disk_full_error(store))
    assert isinstance(error, sqlite3.OperationalError | psycopg.errors.DiskFull)
