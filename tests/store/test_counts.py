"""count_tasks counts with a query, not a cut list; list_tasks and count_tasks filter on
pinning."""

from __future__ import annotations

from fleetgram.domain import TaskState
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task


async def test_count_covers_more_tasks_than_a_list_would_return(store: SqlStore) -> None:
    for _ in range(120):
        await store.create_task(make_task())
    assert len(await store.list_tasks([TaskState.PENDING])) == 100  # the default limit
    assert await store.count_tasks([TaskState.PENDING]) == 120


async def test_count_counts_only_the_given_states(store: SqlStore) -> None:
    for _ in range(3):
        await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    await store.create_task(make_task(state=TaskState.COMPLETED, completed_at=at(5)))
    assert await store.count_tasks([TaskState.PENDING]) == 2
    assert await store.count_tasks([TaskState.ASSIGNED, TaskState.RUNNING]) == 1
    assert await store.count_tasks([TaskState.PENDING, TaskState.COMPLETED]) == 3
    assert await store.count_tasks([]) == 0


async def test_count_counts_one_users_tasks(store: SqlStore) -> None:
    await store.create_task(make_task(user_id=7))
    await store.create_task(make_task(user_id=7))
    await store.create_task(make_task(user_id=8))
    assert await store.count_tasks([TaskState.PENDING], user_id=7) == 2
    assert await store.count_tasks([TaskState.PENDING], user_id=9) == 0


async def test_count_and_list_filter_on_pinning(store: SqlStore) -> None:
    free = await store.create_task(make_task())
    pinned = await store.create_task(make_task(pinned_worker="worker2"))
    pending = [TaskState.PENDING]
    assert await store.count_tasks(pending, pinned=True) == 1
    assert await store.count_tasks(pending, pinned=False) == 1
    assert await store.count_tasks(pending, pinned=None) == 2
    assert [t.id for t in await store.list_tasks(pending, pinned=True)] == [pinned.id]
    assert [t.id for t in await store.list_tasks(pending, pinned=False)] == [free.id]
    assert [t.id for t in await store.list_tasks(pending)] == [free.id, pinned.id]
