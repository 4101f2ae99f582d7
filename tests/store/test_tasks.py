from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from fleetgram.domain import TaskSource, TaskState, utcnow
from fleetgram.store import DuplicateTaskError
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task


async def test_a_created_task_reads_back_equal(store: SqlStore) -> None:
    task = make_task(priority=2, source=TaskSource.DIRECT, pinned_worker="worker2")
    created = await store.create_task(task)
    assert created == task
    assert await store.get_task(task.id) == task


async def test_creating_a_task_with_its_event_puts_the_event_in_the_outbox(
    store: SqlStore,
) -> None:
    task = await store.create_task(make_task(chat_id=555), ("queued", {"position": 1}))
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id, event.payload) == (
        "queued",
        task.id,
        555,
        {"position": 1},
    )


async def test_creating_a_task_with_a_taken_id_is_refused(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    with pytest.raises(DuplicateTaskError):
        await store.create_task(make_task(id=task.id))
    assert await store.get_task(task.id) == task


async def test_an_unknown_task_is_none(store: SqlStore) -> None:
    assert await store.get_task("t-nope2") is None


async def test_times_are_stored_as_utc_and_come_back_timezone_aware(store: SqlStore) -> None:
    plus_two = timezone(timedelta(hours=2))
    task = await store.create_task(
        make_task(created_at=datetime(2026, 3, 1, 14, 0, tzinfo=plus_two))
    )
    again = await store.get_task(task.id)
    assert again is not None
    assert again.created_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert again.created_at.utcoffset() == timedelta(0)


async def test_tasks_are_listed_by_priority_then_age_then_id(store: SqlStore) -> None:
    late_urgent = await store.create_task(make_task(priority=1, created_at=at(50)))
    early_normal = await store.create_task(make_task(priority=5, created_at=at(10)))
    late_normal = await store.create_task(make_task(priority=5, created_at=at(20)))
    early_urgent = await store.create_task(make_task(priority=1, created_at=at(40)))
    twin_b = await store.create_task(make_task(id="t-bbbbb", priority=9, created_at=at(5)))
    twin_a = await store.create_task(make_task(id="t-aaaaa", priority=9, created_at=at(5)))
    assert [t.id for t in await store.list_tasks()] == [
        early_urgent.id,
        late_urgent.id,
        early_normal.id,
        late_normal.id,
        twin_a.id,
        twin_b.id,
    ]


async def test_tasks_are_listed_by_state(store: SqlStore) -> None:
    pending = await store.create_task(make_task())
    claimed = await store.create_task(make_task())
    await store.claim_next("worker1", utcnow())  # takes the first: `pending`
    assert [t.id for t in await store.list_tasks([TaskState.PENDING])] == [claimed.id]
    assert [t.id for t in await store.list_tasks([TaskState.ASSIGNED])] == [pending.id]
    assert await store.list_tasks([]) == []


async def test_tasks_are_listed_by_user(store: SqlStore) -> None:
    mine = await store.create_task(make_task(user_id=1))
    await store.create_task(make_task(user_id=2))
    assert [t.id for t in await store.list_tasks(user_id=1)] == [mine.id]


async def test_tasks_are_listed_by_worker(store: SqlStore) -> None:
    first = await store.create_task(make_task())
    await store.create_task(make_task())
    await store.claim_next("worker1", utcnow())
    assert [t.id for t in await store.list_tasks(worker="worker1")] == [first.id]


async def test_list_tasks_returns_at_most_limit_tasks(store: SqlStore) -> None:
    tasks = [await store.create_task(make_task()) for _ in range(5)]
    assert [t.id for t in await store.list_tasks(limit=3)] == [t.id for t in tasks[:3]]


async def test_queue_position_counts_from_one_in_queue_order(store: SqlStore) -> None:
    normal = await store.create_task(make_task(priority=5, created_at=at(1)))
    urgent = await store.create_task(make_task(priority=1, created_at=at(2)))
    later = await store.create_task(make_task(priority=5, created_at=at(3)))
    assert [await store.queue_position(t.id) for t in (urgent, normal, later)] == [1, 2, 3]


async def test_a_task_not_pending_has_no_queue_position(store: SqlStore) -> None:
    claimed = await store.create_task(make_task())
    waiting = await store.create_task(make_task())
    await store.claim_next("worker1", utcnow())
    assert await store.queue_position(claimed.id) is None
    assert await store.queue_position(waiting.id) == 1
    assert await store.queue_position("t-nope2") is None
