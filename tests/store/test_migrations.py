from __future__ import annotations

import asyncio

import pytest

from fleetgram.domain import TaskState, Usage
from fleetgram.store import sql
from fleetgram.store.migrate import load_migrations
from fleetgram.store.sql import SqlStore
from tests.store.support import OpenStore, at, make_task


async def test_opening_a_new_database_applies_and_records_every_migration(
    store: SqlStore,
) -> None:
    applied = await store.applied_migrations()
    assert [version for version, _ in applied] == [m.version for m in load_migrations()]
    assert all(when.tzinfo is not None for _, when in applied)


async def test_reopening_applies_no_migration_again(
    store: SqlStore, open_stores: OpenStore
) -> None:
    before = await store.applied_migrations()
    await store.close()
    again = await open_stores()
    assert await again._migrate() == []
    assert await again.applied_migrations() == before


async def test_reopening_keeps_the_data(store: SqlStore, open_stores: OpenStore) -> None:
    task = await store.create_task(make_task())
    await store.close()
    again = await open_stores()
    assert await again.get_task(task.id) == task


async def test_stores_opened_at_once_on_a_new_database_apply_each_migration_once(
    open_stores: OpenStore,
) -> None:
    stores = await asyncio.gather(*(open_stores() for _ in range(4)))
    applied = await stores[0].applied_migrations()
    assert [version for version, _ in applied] == [m.version for m in load_migrations()]
    task = await stores[1].create_task(make_task())
    assert await stores[2].list_tasks([TaskState.PENDING]) == [task]


async def test_a_version_1_database_is_upgraded_keeping_its_rows(
    open_stores: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database made by the release that shipped only migration 1, with rows in it (written
    # as that release wrote them: the code of today knows columns it did not have).
    everything = load_migrations()
    monkeypatch.setattr(sql, "load_migrations", lambda: everything[:1])
    old = await open_stores()
    task = make_task()
    async with old._write() as tx:
        await tx.execute(
            "INSERT INTO tasks (task_id, user_id, chat_id, title, prompt, status, "
            "assigned_worker_id, attempts, created_at, assigned_at, input_tokens, output_tokens) "
            "VALUES (?, ?, ?, ?, ?, 'assigned', 'worker1', 1, ?, ?, 5, 1)",
            task.id, task.user_id, task.chat_id, task.title, task.prompt, task.created_at,
            at(100),
        )
        await tx.execute(
            "INSERT INTO events (kind, task_id, chat_id, payload, created_at) "
            "VALUES ('queued', ?, ?, '{\"position\": 1}', ?)",
            task.id, task.chat_id, at(1),
        )
    await old.close()
    monkeypatch.setattr(sql, "load_migrations", lambda: everything)

    new = await open_stores()

    assert [v for v, _ in await new.applied_migrations()] == [m.version for m in everything]
    upgraded = await new.get_task(task.id)
    assert upgraded is not None and upgraded.message_id is None
    assert (upgraded.state, upgraded.worker, upgraded.usage) == (
        TaskState.ASSIGNED, "worker1", Usage(5, 1),
    )
    [event] = await new.pending_events()
    assert (event.kind, event.payload, event.ambiguous_sends) == ("queued", {"position": 1}, 0)
    # and the new columns and tables work on the upgraded database
    assert await new.record_ambiguous_send(event.id) == 1
    await new.remember_reply("worker1", task.id, 1000, 5)
    assert await new.leftover_replies("worker1") == [(task.id, 1000, 5)]
    made = await new.create_task(make_task(message_id=77))
    assert await new.find_task_by_message(made.chat_id, 77) == made
