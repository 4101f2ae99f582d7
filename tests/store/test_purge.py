from __future__ import annotations

from datetime import timedelta

from fleetgram.domain import TaskState, Usage, utcnow
from fleetgram.store import ApiCall
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task


async def _finished(store: SqlStore, state: TaskState, when: float) -> str:
    task = await store.create_task(make_task(state=state, worker="worker1", completed_at=at(when)))
    return task.id


async def test_purge_deletes_tasks_finished_before_the_cutoff(store: SqlStore) -> None:
    old = [
        await _finished(store, state, 10)
        for state in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)
    ]
    recent = await _finished(store, TaskState.COMPLETED, 1000)
    assert await store.purge_finished(at(500)) == len(old)
    assert [t.id for t in await store.list_tasks()] == [recent]


async def test_purge_keeps_unfinished_tasks(store: SqlStore) -> None:
    pending = await store.create_task(make_task())
    claimed = await store.create_task(make_task())
    await store.claim_next("worker1", at(1))
    assert await store.purge_finished(at(10_000)) == 0
    assert {t.id for t in await store.list_tasks()} == {pending.id, claimed.id}


async def test_purge_deletes_delivered_events_and_keeps_undelivered_ones(store: SqlStore) -> None:
    delivered = await store.add_event("a", {})
    undelivered = await store.add_event("b", {})
    await store.mark_event_delivered(delivered)
    await store.purge_finished(utcnow() + timedelta(days=1))
    async with store._read() as tx:
        left = await tx.fetchall("SELECT id FROM events ORDER BY id")
    assert [row["id"] for row in left] == [undelivered]


async def test_purge_deletes_ledger_rows_older_than_the_cutoff_and_keeps_newer_ones(
    store: SqlStore,
) -> None:
    task = await store.create_task(make_task())
    await store.record_api_call(ApiCall(task.id, "worker1", "claude-x", Usage(1, 1)))
    await store.record_api_call(ApiCall(task.id, "worker1", "claude-x", Usage(2, 2)))
    async with store._write() as tx:  # the first call was made long ago
        await tx.execute("UPDATE api_calls SET created_at = ? WHERE input_tokens = 1", at(0))

    await store.purge_finished(at(500))

    assert [c.usage for c in await store.api_calls(task.id)] == [Usage(2, 2)]
    kept = await store.get_task(task.id)
    assert kept is not None and kept.usage == Usage(3, 3)  # the task's totals are its own


async def test_purge_deletes_worker_replies_left_over_since_before_the_cutoff(
    store: SqlStore,
) -> None:
    await store.remember_reply("worker5", "t-stale", 1000, 1)
    await store.remember_reply("worker5", "t-fresh", 1000, 2)
    async with store._write() as tx:  # worker5 died long ago and never came back
        await tx.execute("UPDATE worker_replies SET created_at = ? WHERE task_id = 't-stale'",
                         at(0))
    await store.purge_finished(at(500))
    assert await store.leftover_replies("worker5") == [("t-fresh", 1000, 2)]
