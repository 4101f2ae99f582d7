from __future__ import annotations

from fleetgram.domain import TaskState
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task


async def test_a_dead_workers_tasks_go_back_to_pending_with_an_event(store: SqlStore) -> None:
    assigned = await store.create_task(make_task(chat_id=11))
    running = await store.create_task(make_task(chat_id=12))
    await store.claim_next("worker1", at(100))
    await store.claim_next("worker1", at(101))
    await store.mark_running(running.id, "worker1", at(102))

    requeued = await store.requeue_worker_tasks(
        "worker1", at(200), max_attempts=3, reason="worker1 went offline"
    )

    assert [(t.id, t.state, t.worker, t.attempts) for t in requeued] == [
        (assigned.id, TaskState.PENDING, None, 1),
        (running.id, TaskState.PENDING, None, 1),
    ]
    assert [t.id for t in await store.list_tasks([TaskState.PENDING])] == [assigned.id, running.id]
    events = await store.pending_events()
    assert [(e.kind, e.task_id, e.chat_id) for e in events] == [
        ("requeued", assigned.id, 11),
        ("requeued", running.id, 12),
    ]
    assert events[0].payload == {
        "attempts": 1,
        "reason": "worker1 went offline",
        "worker": "worker1",
    }


async def test_a_requeued_task_is_claimed_again_with_one_more_attempt(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    await store.requeue_worker_tasks("worker1", at(200), max_attempts=3, reason="offline")
    again = await store.claim_next("worker2", at(300))
    assert again is not None
    assert (again.id, again.worker, again.attempts, again.started_at) == (
        task.id,
        "worker2",
        2,
        None,
    )


async def test_a_task_that_used_its_attempts_fails_with_an_event(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    for n in range(1, 3):
        await store.claim_next(f"worker{n}", at(100 * n))
        await store.requeue_worker_tasks(f"worker{n}", at(100 * n + 50), max_attempts=3, reason="x")
    await store.claim_next("worker3", at(300))

    [failed] = await store.requeue_worker_tasks(
        "worker3", at(400), max_attempts=3, reason="worker3 went offline"
    )

    assert (failed.id, failed.state, failed.attempts, failed.completed_at) == (
        task.id,
        TaskState.FAILED,
        3,
        at(400),
    )
    assert failed.error == "worker3 went offline; gave up after 3 attempts"
    assert await store.claim_next("worker4", at(500)) is None
    events = await store.pending_events()
    assert [e.kind for e in events] == ["requeued", "requeued", "failed"]
    assert events[-1].payload["error"] == failed.error


async def test_requeue_leaves_other_workers_tasks_alone(store: SqlStore) -> None:
    await store.create_task(make_task())
    await store.claim_next("worker2", at(100))
    assert await store.requeue_worker_tasks("worker1", at(200), max_attempts=3, reason="x") == []
    [still] = await store.list_tasks()
    assert (still.state, still.worker) == (TaskState.ASSIGNED, "worker2")


async def test_requeue_cancels_a_task_whose_cancel_was_requested(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    await store.request_cancel(task.id, task.user_id, at(150))

    [cancelled] = await store.requeue_worker_tasks("worker1", at(200), max_attempts=3, reason="x")

    assert (cancelled.state, cancelled.completed_at) == (TaskState.CANCELLED, at(200))
    [event] = await store.pending_events()
    assert event.kind == "cancelled"
