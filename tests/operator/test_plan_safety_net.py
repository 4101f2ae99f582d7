"""The operator's side of two safety nets, as plain data: a task its worker's Lease no longer
names goes back to the queue (heartbeats alone never catch a worker stuck around one task),
and a stopped slot someone wrote to is started."""

from __future__ import annotations

from fleetgram.operator.reconcile import Memory
from fleetgram.policy import ScaleAction
from tests.operator.builders import ago, pool, ready_worker, task
from tests.operator.test_plan import created, deleted, run


def test_a_running_task_its_live_worker_does_not_name_is_first_only_noted() -> None:
    stuck = task("t-stuck", "Running", worker="worker1", attempts=1)
    p = run(pool(3), [stuck], [ready_worker("worker1", current=None, renewed_ago=1)])
    assert p.requeues == []
    assert list(p.orphans_seen) == [("t-stuck", "worker1", 1)]


def test_after_a_lease_of_mismatch_the_task_is_requeued_and_the_worker_kept() -> None:
    stuck = task("t-stuck", "Running", worker="worker1", attempts=1, rv="410")
    memory = Memory(orphans_seen={("t-stuck", "worker1", 1): ago(31)})
    p = run(pool(3), [stuck], [ready_worker("worker1", current=None, renewed_ago=1,
                                            username="w1_bot")], memory=memory)
    (q,) = p.requeues
    assert (q.task, q.phase) == ("t-stuck", "Pending")
    assert q.status_patch()["metadata"] == {"resourceVersion": "410"}
    assert q.event.kind == "requeued"
    assert q.event.payload["reason"] == "worker1 stopped working on it"
    assert q.event.payload["title"] == "title t-stuck"
    assert q.event.payload["username"] == "w1_bot"
    # The worker heartbeats: it is not restarted, and the requeued task is not reassigned in
    # the same round (its resourceVersion changes with the requeue).
    assert deleted(p) == [] and created(p) == []
    assert p.assignments == []


def test_the_mismatch_of_a_task_at_max_attempts_fails_it() -> None:
    stuck = task("t-stuck", "Running", worker="worker1", attempts=3)
    memory = Memory(orphans_seen={("t-stuck", "worker1", 3): ago(60)})
    p = run(pool(3, maxAttempts=3), [stuck], [ready_worker("worker1", current=None)],
            memory=memory)
    (q,) = p.requeues
    assert q.phase == "Failed" and q.event.kind == "failed"
    assert "gave up after 3 attempts" in q.event.payload["error"]


def test_a_task_its_worker_names_on_its_lease_is_never_requeued() -> None:
    running = task("t-run", "Running", worker="worker1", attempts=1)
    memory = Memory(orphans_seen={("t-run", "worker1", 1): ago(600)})
    p = run(pool(3), [running], [ready_worker("worker1", current="t-run")], memory=memory)
    assert p.requeues == [] and p.orphans_seen == {}


def test_a_freshly_assigned_task_not_yet_on_the_lease_waits_for_the_grace() -> None:
    assigned = task("t-new", "Assigned", worker="worker1", attempts=1)
    memory = Memory(orphans_seen={("t-new", "worker1", 1): ago(29)})
    p = run(pool(3), [assigned], [ready_worker("worker1", current=None)], memory=memory)
    assert p.requeues == []


def test_a_dead_workers_tasks_are_requeued_once_not_twice() -> None:
    stuck = task("t-stuck", "Running", worker="worker1", attempts=1)
    memory = Memory(orphans_seen={("t-stuck", "worker1", 1): ago(600)})
    p = run(pool(3), [stuck], [ready_worker("worker1", current=None, renewed_ago=45)],
            memory=memory)
    assert [(q.task, q.event.payload["reason"]) for q in p.requeues] == [
        ("t-stuck", "worker died")]


def test_a_stopped_slot_someone_wrote_to_is_started() -> None:
    workers = [ready_worker(f"worker{i}") for i in range(1, 4)]
    p = run(pool(5, minWorkers=3), [], workers, memory=Memory(wanted={"worker5"}))
    assert created(p) == ["worker5"]
    assert p.decision.action == ScaleAction.START
    assert "worker5's chat" in p.decision.reason


def test_without_a_waiting_message_the_stopped_slot_stays_stopped() -> None:
    workers = [ready_worker(f"worker{i}") for i in range(1, 4)]
    p = run(pool(5, minWorkers=3), [], workers, memory=Memory())
    assert created(p) == []

