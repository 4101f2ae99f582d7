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
        "title": assigned.title,
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


# --- one task: the safety net for a task running on a worker that is not running it ---------


async def test_one_task_goes_back_to_pending_with_its_attempts_and_title(
    store: SqlStore,
) -> None:
    task = await store.create_task(make_task(chat_id=11))
    await store.claim_next("worker1", at(100))
    await store.mark_running(task.id, "worker1", at(101))

    requeued = await store.requeue_task(
        task.id, "worker1", at(200), max_attempts=3, reason="worker1 was not running it"
    )

    assert requeued is not None
    assert (requeued.state, requeued.worker, requeued.attempts, requeued.started_at) == (
        TaskState.PENDING, None, 1, None,
    )
    assert await store.get_task(task.id) == requeued
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id, event.payload) == (
        "requeued", task.id, 11,
        {"attempts": 1, "reason": "worker1 was not running it", "worker": "worker1",
         "title": task.title},
    )


async def test_requeueing_one_task_leaves_the_workers_other_tasks_alone(
    store: SqlStore,
) -> None:
    first = await store.create_task(make_task())
    second = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    await store.claim_next("worker1", at(101))

    await store.requeue_task(first.id, "worker1", at(200), max_attempts=3, reason="x")

    still = await store.get_task(second.id)
    assert still is not None and (still.state, still.worker) == (TaskState.ASSIGNED, "worker1")


async def test_one_task_that_used_its_attempts_fails_with_its_title(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))

    failed = await store.requeue_task(task.id, "worker1", at(200), max_attempts=1,
                                      reason="stuck")

    assert failed is not None
    assert (failed.state, failed.error, failed.completed_at) == (
        TaskState.FAILED, "stuck; gave up after 1 attempts", at(200),
    )
    [event] = await store.pending_events()
    assert (event.kind, event.payload["title"], event.payload["error"]) == (
        "failed", task.title, failed.error,
    )


async def test_one_task_whose_cancel_was_requested_is_cancelled(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    await store.request_cancel(task.id, task.user_id, at(150))

    cancelled = await store.requeue_task(task.id, "worker1", at(200), max_attempts=3,
                                         reason="x")

    assert cancelled is not None and cancelled.state is TaskState.CANCELLED
    [event] = await store.pending_events()
    assert (event.kind, event.payload["title"]) == ("cancelled", task.title)


async def test_a_task_no_longer_on_that_worker_is_not_requeued(store: SqlStore) -> None:
    elsewhere = await store.create_task(make_task())
    await store.claim_next("worker2", at(100))
    finished = await store.create_task(make_task())
    await store.claim_next("worker1", at(101))
    done = await store.finish_task(finished.id, "worker1", TaskState.COMPLETED, at(102),
                                   result="ok")
    waiting = await store.create_task(make_task())

    for task_id in (elsewhere.id, finished.id, waiting.id, "t-nope2"):
        assert await store.requeue_task(task_id, "worker1", at(200), max_attempts=3,
                                        reason="x") is None
    assert await store.get_task(finished.id) == done
    assert (await store.get_task(elsewhere.id)).worker == "worker2"  # type: ignore[union-attr]
    assert await store.pending_events() == []
