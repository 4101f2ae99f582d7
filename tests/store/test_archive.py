from __future__ import annotations

from fleetgram.domain import TaskSource, TaskState, Usage
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task


async def test_archiving_a_new_task_records_every_field(store: SqlStore) -> None:
    task = make_task(
        state=TaskState.COMPLETED, source=TaskSource.DIRECT, pinned_worker="worker2",
        worker="worker2", attempts=2, result="the whole answer " * 200, error=None,
        usage=Usage(10, 20, 30, 40, 0.123456), cancel_requested=True, priority=3,
        assigned_at=at(100), started_at=at(101), completed_at=at(102),
    )
    await store.archive_task(task)
    assert await store.get_task(task.id) == task
    assert await store.pending_events() == []


async def test_archiving_a_recorded_task_overwrites_it(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    done = task.with_(
        state=TaskState.FAILED, worker="worker3", attempts=3, error="gave up",
        completed_at=at(200), usage=Usage(1, 2, 3, 4, 0.5),
    )
    await store.archive_task(done)
    assert await store.get_task(task.id) == done
    # And back again: each field is the given one, including the ones set to None.
    await store.archive_task(task)
    assert await store.get_task(task.id) == task
    assert [t.id for t in await store.list_tasks([TaskState.PENDING])] == [task.id]


async def test_archiving_leaves_other_tasks_and_the_outbox_alone(store: SqlStore) -> None:
    other = await store.create_task(make_task(), ("queued", {}))
    task = make_task()
    await store.archive_task(task)
    await store.archive_task(task.with_(title="renamed"))
    assert await store.get_task(other.id) == other
    assert [t.title for t in await store.list_tasks()] == [other.title, "renamed"]
    assert [e.kind for e in await store.pending_events()] == ["queued"]
