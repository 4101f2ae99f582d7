from __future__ import annotations

import asyncio

from fleetgram.domain import TaskState
from fleetgram.store.migrate import load_migrations
from fleetgram.store.sql import SqlStore
from tests.store.support import OpenStore, make_task


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
