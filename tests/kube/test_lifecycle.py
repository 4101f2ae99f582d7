"""Cancel, finish, requeue, usage and purge on BotTasks, with the SQL record and outbox."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleetgram.domain import Task, TaskState, Usage, utcnow
from fleetgram.kube.objects import BOTTASKS, LABEL_PHASE, LABEL_WORKER, SUMMARY_MAX, iso
from fleetgram.kube.queue import ClusterStore
from fleetgram.store import ApiCall, CancelOutcome
from fleetgram.store.sql import SqlStore
from tests.emulators.kube_api import KubeEmulator
from tests.kube.support import NS, assign, bottask, labels
from tests.store.support import at, make_task

pytestmark = pytest.mark.k8s


async def _running(store: ClusterStore, emu: KubeEmulator, worker: str = "worker1",
                   **fields: object) -> Task:
    task = await store.create_task(make_task(**fields))
    assign(emu, task.id, worker, at(100))
    running = await store.mark_running(task.id, worker, at(101))
    assert running is not None
    return running


# --- cancel ----------------------------------------------------------------------------------

async def test_cancelling_a_pending_task_cancels_it_with_an_event(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(user_id=7, chat_id=70))
    result = await store.request_cancel(task.id, 7, at(200))

    assert result.outcome is CancelOutcome.CANCELLED and result.task is not None
    assert (result.task.state, result.task.completed_at) == (TaskState.CANCELLED, at(200))
    assert await store.get_task(task.id) == result.task
    assert await store.inner.get_task(task.id) == result.task
    assert bottask(emu, task.id)["status"]["phase"] == "Cancelled"
    assert labels(emu, task.id) == {LABEL_PHASE: "cancelled"}
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id, event.payload) == (
        "cancelled", task.id, 70, {"by": "user", "title": task.title},
    )
    # The operator cannot assign it any more: its conditional write would not find it pending,
    # and a worker has nothing to claim.
    assert await store.claim_next("worker1", at(201)) is None


async def test_a_pending_cancel_racing_the_operator_becomes_a_request(
    store: ClusterStore, emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await store.create_task(make_task())
    real = store.kube.get_object
    reads = 0

    async def get_object(plural: str, name: str) -> dict[str, object]:
        nonlocal reads
        obj = await real(plural, name)
        reads += 1
        if reads == 1:  # the operator assigns it just after the store looked
            assign(emu, task.id, "worker1", at(150))
        return obj

    monkeypatch.setattr(store.kube, "get_object", get_object)
    emu.clear_history()

    result = await store.request_cancel(task.id, task.user_id, at(200))

    assert result.outcome is CancelOutcome.REQUESTED and result.task is not None
    assert (result.task.state, result.task.cancel_requested) == (TaskState.ASSIGNED, True)
    assert [r.status for r in emu.requests("patch", BOTTASKS, task.id, "status")] == [409]
    obj = bottask(emu, task.id)
    assert (obj["status"]["phase"], obj["spec"]["cancel"]) == ("Assigned", True)
    assert await store.pending_events() == []


@pytest.mark.parametrize("running", [False, True], ids=["assigned", "running"])
async def test_cancelling_a_claimed_task_asks_its_worker_to_stop(
    store: ClusterStore, emu: KubeEmulator, running: bool
) -> None:
    task = await store.create_task(make_task())
    assign(emu, task.id, "worker1", at(100))
    if running:
        await store.mark_running(task.id, "worker1", at(101))

    result = await store.request_cancel(task.id, task.user_id, at(200))

    assert result.outcome is CancelOutcome.REQUESTED and result.task is not None
    expected = TaskState.RUNNING if running else TaskState.ASSIGNED
    assert (result.task.state, result.task.cancel_requested) == (expected, True)
    assert await store.get_task(task.id) == result.task
    assert bottask(emu, task.id)["spec"]["cancel"] is True
    archived = await store.inner.get_task(task.id)
    assert archived is not None and archived.cancel_requested
    assert await store.pending_events() == []
    if not running:
        assert await store.mark_running(task.id, "worker1", at(201)) is None


async def test_cancelling_someone_elses_unknown_or_finished_tasks(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    theirs = await store.create_task(make_task(user_id=7))
    result = await store.request_cancel(theirs.id, 8, at(200))
    assert (result.outcome, result.task) == (CancelOutcome.NOT_YOURS, None)
    assert await store.get_task(theirs.id) == theirs

    result = await store.request_cancel("t-nope2", 7, at(200))
    assert (result.outcome, result.task) == (CancelOutcome.NOT_FOUND, None)

    done = await _running(store, emu)
    finished = await store.finish_task(done.id, "worker1", TaskState.COMPLETED, at(300),
                                       result="ok")
    result = await store.request_cancel(done.id, done.user_id, at(400))
    assert (result.outcome, result.task) == (CancelOutcome.ALREADY_FINISHED, finished)
    assert await store.pending_events() == []


async def test_an_operator_may_cancel_anyones_task(store: ClusterStore) -> None:
    task = await store.create_task(make_task(user_id=7))
    result = await store.request_cancel(task.id, None, at(200))
    assert result.outcome is CancelOutcome.CANCELLED
    [event] = await store.pending_events()
    assert event.payload == {"by": "operator", "title": task.title}


# --- finish ----------------------------------------------------------------------------------

async def test_finishing_writes_a_summary_to_the_bottask_and_the_result_to_sql(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu, chat_id=55)
    await store.record_api_call(ApiCall(task.id, "worker1", "claude", Usage(100, 20, 5, 1, 0.25)))
    await store.record_api_call(ApiCall(task.id, "worker1", "claude", Usage(10, 2, 0, 0, 0.05)))
    result = "An answer. " * 500

    done = await store.finish_task(task.id, "worker1", TaskState.COMPLETED, at(300),
                                   result=result, event=("completed", {"seconds": 2.5}))

    assert done is not None
    assert (done.state, done.result, done.completed_at) == (TaskState.COMPLETED, result, at(300))
    assert done.usage == Usage(110, 22, 5, 1, 0.3)
    status = bottask(emu, task.id)["status"]
    assert (status["phase"], status["completedAt"]) == ("Completed", iso(at(300)))
    assert len(status["summary"]) == SUMMARY_MAX and status["summary"].endswith("…")
    assert status["usage"] == {"inputTokens": 110, "outputTokens": 22, "cacheReadTokens": 5,
                               "cacheWriteTokens": 1, "costUsd": 0.3}
    assert labels(emu, task.id) == {LABEL_PHASE: "completed", LABEL_WORKER: "worker1"}
    assert await store.inner.get_task(task.id) == done  # the whole result, in SQL
    assert await store.get_task(task.id) == done  # read back whole, too
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id, event.payload) == (
        "completed", task.id, 55, {"seconds": 2.5},
    )
    assert isinstance(store.inner, SqlStore)
    assert [c.usage.input_tokens for c in await store.inner.api_calls(task.id)] == [100, 10]


async def test_finishing_a_failure_keeps_the_error(store: ClusterStore, emu: KubeEmulator
                                                   ) -> None:
    task = await _running(store, emu)
    done = await store.finish_task(task.id, "worker1", TaskState.FAILED, at(300),
                                   error="Claude said no")
    assert done is not None and (done.state, done.error) == (TaskState.FAILED, "Claude said no")
    status = bottask(emu, task.id)["status"]
    assert (status["phase"], status["error"], "summary" in status) == (
        "Failed", "Claude said no", False,
    )


async def test_only_the_tasks_worker_may_finish_it(store: ClusterStore, emu: KubeEmulator
                                                   ) -> None:
    task = await _running(store, emu)
    assert await store.finish_task(task.id, "worker2", TaskState.COMPLETED, at(300),
                                   result="x", event=("completed", {})) is None
    assert await store.finish_task("t-nope2", "worker1", TaskState.COMPLETED, at(300)) is None
    with pytest.raises(ValueError):
        await store.finish_task(task.id, "worker1", TaskState.RUNNING, at(300))
    assert bottask(emu, task.id)["status"]["phase"] == "Running"
    assert await store.pending_events() == []
    done = await store.finish_task(task.id, "worker1", TaskState.COMPLETED, at(300), result="x")
    assert done is not None
    assert await store.finish_task(task.id, "worker1", TaskState.FAILED, at(301)) is None


# --- requeue ---------------------------------------------------------------------------------

async def test_a_restarting_worker_puts_back_its_own_tasks(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    assigned = await store.create_task(make_task(chat_id=11))
    running = await _running(store, emu, chat_id=12)
    assign(emu, assigned.id, "worker1", at(102))
    others = await store.create_task(make_task())
    assign(emu, others.id, "worker2", at(103))

    requeued = await store.requeue_worker_tasks(
        "worker1", at(200), max_attempts=3, reason="worker restarted"
    )

    assert [(t.id, t.state, t.worker, t.attempts, t.started_at) for t in requeued] == [
        (assigned.id, TaskState.PENDING, None, 1, None),
        (running.id, TaskState.PENDING, None, 1, None),
    ]
    for task in requeued:
        status = bottask(emu, task.id)["status"]
        assert (status["phase"], status["attempts"]) == ("Pending", 1)
        assert "worker" not in status and "assignedAt" not in status
        assert labels(emu, task.id) == {LABEL_PHASE: "pending"}
        assert await store.inner.get_task(task.id) == task
    events = await store.pending_events()
    assert [(e.kind, e.task_id, e.chat_id) for e in events] == [
        ("requeued", assigned.id, 11), ("requeued", running.id, 12),
    ]
    assert events[0].payload == {"attempts": 1, "reason": "worker restarted", "worker": "worker1",
                                 "title": assigned.title}
    still = await store.get_task(others.id)
    assert still is not None and (still.state, still.worker) == (TaskState.ASSIGNED, "worker2")


async def test_a_task_that_used_its_attempts_fails_with_an_event(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task())
    for n in (1, 2):  # the operator counts each assignment
        assign(emu, task.id, f"worker{n}", at(100 * n))
        await store.requeue_worker_tasks(f"worker{n}", at(100 * n + 50), max_attempts=3,
                                         reason="x")
    assign(emu, task.id, "worker3", at(300))

    [failed] = await store.requeue_worker_tasks(
        "worker3", at(400), max_attempts=3, reason="worker3 restarted"
    )

    assert (failed.state, failed.attempts, failed.completed_at) == (
        TaskState.FAILED, 3, at(400),
    )
    assert failed.error == "worker3 restarted; gave up after 3 attempts"
    status = bottask(emu, task.id)["status"]
    assert (status["phase"], status["error"]) == ("Failed", failed.error)
    assert labels(emu, task.id) == {LABEL_PHASE: "failed", LABEL_WORKER: "worker3"}
    events = await store.pending_events()
    assert [e.kind for e in events] == ["requeued", "requeued", "failed"]
    assert events[-1].payload["error"] == failed.error


async def test_requeue_cancels_a_task_whose_cancel_was_requested(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.request_cancel(task.id, task.user_id, at(150))
    [cancelled] = await store.requeue_worker_tasks("worker1", at(200), max_attempts=3,
                                                   reason="x")
    assert (cancelled.state, cancelled.completed_at) == (TaskState.CANCELLED, at(200))
    [event] = await store.pending_events()
    assert event.kind == "cancelled"


# --- usage and purge -------------------------------------------------------------------------

async def test_api_calls_go_to_the_ledger_and_show_on_the_bottask(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.record_api_call(ApiCall(task.id, "worker1", "claude", Usage(7, 3, 0, 0, 0.01)))
    await store.record_api_call(ApiCall(None, "worker1", "claude", Usage(1, 1, 0, 0, 0.0)))
    assert bottask(emu, task.id)["status"]["usage"]["inputTokens"] == 7
    current = await store.get_task(task.id)
    assert current is not None and current.usage == Usage(7, 3, 0, 0, 0.01)
    assert current.state is TaskState.RUNNING  # the usage write changed nothing else


async def test_purge_deletes_old_finished_bottasks_and_their_records(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    old = [
        (await store.create_task(make_task(state=state, worker="worker1",
                                           completed_at=at(10)))).id
        for state in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)
    ]
    recent = await store.create_task(make_task(state=TaskState.COMPLETED, worker="worker1",
                                               completed_at=at(1000)))
    pending = await store.create_task(make_task())
    running = await _running(store, emu)

    assert await store.purge_finished(at(500)) == 3

    assert {o["metadata"]["name"] for o in emu.objects("bottasks", NS)} == {
        recent.id, pending.id, running.id,
    }
    assert [t.id for t in await store.list_tasks()] == [recent.id, pending.id, running.id]
    for task_id in old:
        assert await store.get_task(task_id) is None
        assert await store.inner.get_task(task_id) is None  # the retention covers the record
    assert await store.inner.get_task(recent.id) is not None
    assert await store.purge_finished(at(500)) == 0


async def test_purge_removes_the_records_of_tasks_whose_bottask_expired_earlier(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(state=TaskState.COMPLETED, worker="worker1",
                                             completed_at=at(10)))
    emu.delete("bottasks", task.id, NS)  # the operator's TTL was quicker

    assert await store.purge_finished(at(500)) == 1

    assert await store.inner.get_task(task.id) is None


async def test_purge_deletes_old_ledger_rows_and_delivered_events(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.record_api_call(ApiCall(task.id, "worker1", "claude", Usage(7, 3, 0, 0, 0.01)))
    delivered = await store.add_event("a", {})
    await store.mark_event_delivered(delivered)
    inner = store.inner
    assert isinstance(inner, SqlStore)

    await store.purge_finished(utcnow() + timedelta(days=1))

    assert await inner.api_calls(task.id) == []
    async with inner._read() as tx:
        assert await tx.fetchall("SELECT id FROM events") == []
    still = await store.get_task(task.id)
    assert still is not None and still.state is TaskState.RUNNING
