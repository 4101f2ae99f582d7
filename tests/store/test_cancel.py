from __future__ import annotations

import pytest

from fleetgram.domain import TaskState
from fleetgram.store import CancelOutcome
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task


async def test_cancelling_a_pending_task_cancels_it_with_an_event(store: SqlStore) -> None:
    task = await store.create_task(make_task(user_id=7, chat_id=70))
    result = await store.request_cancel(task.id, 7, at(200))
    assert result.outcome is CancelOutcome.CANCELLED
    assert result.task is not None
    assert (result.task.state, result.task.completed_at) == (TaskState.CANCELLED, at(200))
    assert await store.get_task(task.id) == result.task
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id, event.payload) == (
        "cancelled",
        task.id,
        70,
        {"by": "user", "title": task.title},
    )


async def test_a_cancelled_pending_task_is_never_claimed(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.request_cancel(task.id, task.user_id, at(200))
    assert await store.claim_next("worker1", at(201)) is None


@pytest.mark.parametrize("running", [False, True], ids=["assigned", "running"])
async def test_cancelling_a_claimed_task_asks_its_worker_to_stop(
    store: SqlStore, running: bool
) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    if running:
        await store.mark_running(task.id, "worker1", at(101))
    result = await store.request_cancel(task.id, task.user_id, at(200))
    assert result.outcome is CancelOutcome.REQUESTED
    assert result.task is not None
    expected_state = TaskState.RUNNING if running else TaskState.ASSIGNED
    assert (result.task.state, result.task.cancel_requested) == (expected_state, True)
    assert await store.get_task(task.id) == result.task
    assert await store.pending_events() == []


async def test_cancelling_a_finished_task_reports_it_already_finished(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    done = await store.finish_task(task.id, "worker1", TaskState.COMPLETED, at(110), result="ok")
    result = await store.request_cancel(task.id, task.user_id, at(200))
    assert (result.outcome, result.task) == (CancelOutcome.ALREADY_FINISHED, done)


async def test_cancelling_an_unknown_task_reports_not_found(store: SqlStore) -> None:
    result = await store.request_cancel("t-nope2", 7, at(200))
    assert (result.outcome, result.task) == (CancelOutcome.NOT_FOUND, None)


async def test_cancelling_another_users_task_is_refused_and_changes_nothing(
    store: SqlStore,
) -> None:
    task = await store.create_task(make_task(user_id=7))
    result = await store.request_cancel(task.id, 8, at(200))
    assert (result.outcome, result.task) == (CancelOutcome.NOT_YOURS, None)
    assert await store.get_task(task.id) == task
    assert await store.pending_events() == []


async def test_an_operator_may_cancel_anyones_task(store: SqlStore) -> None:
    task = await store.create_task(make_task(user_id=7))
    result = await store.request_cancel(task.id, None, at(200))
    assert result.outcome is CancelOutcome.CANCELLED
    [event] = await store.pending_events()
    assert event.payload == {"by": "operator", "title": task.title}
