"""The operator's decisions as a plain function of plain dicts: no API server, no kopf."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleetgram.kube.objects import (
    ANNOTATION_RESERVED_AT,
    ANNOTATION_RESERVED_TASK,
    ANNOTATION_STARTED_AT,
    ANNOTATION_TEMPLATE_HASH,
    LABEL_PHASE,
    LABEL_POOL,
    LABEL_WORKER,
)
from fleetgram.operator.reconcile import Memory, OperatorConfig, Plan, plan
from fleetgram.policy import ScaleAction
from tests.operator.builders import (
    NOW,
    ago,
    deployment,
    lease,
    pool,
    ready_worker,
    task,
)

Obj = dict[str, Any]


def run(the_pool: Obj, tasks: Sequence[Obj] = (), workers: Sequence[tuple[Obj, Obj]] = (),
        *, deployments: Sequence[Obj] = (), leases: Sequence[Obj] = (),
        memory: Memory | None = None, config: OperatorConfig | None = None,
        claim_unlabelled: bool = True) -> Plan:
    deps = [d for d, _ in workers] + list(deployments)
    les = [x for _, x in workers] + list(leases)
    return plan(the_pool, list(tasks), deps, les, NOW, memory, config,
                claim_unlabelled=claim_unlabelled)


def created(p: Plan) -> list[str]:
    return [c.slot for c in p.creates]


def deleted(p: Plan) -> list[str]:
    return [d.slot for d in p.deletes]


def slot_states(p: Plan) -> dict[str, str]:
    return {s["name"]: s["state"] for s in p.status["slots"]}


# ---------------------------------------------------------------------------- scaling


def test_an_empty_pool_starts_its_minimum() -> None:
    p = run(pool(3, minWorkers=1))
    assert created(p) == ["worker1"]
    assert p.decision.action == ScaleAction.START
    assert slot_states(p) == {"worker1": "starting", "worker2": "stopped", "worker3": "stopped"}
    assert p.status["lastScale"]["action"] == "start"


def test_scale_up_only_past_the_threshold_and_with_no_idle_worker() -> None:
    busy = ready_worker("worker1", current="t-run")
    running = task("t-run", "Running", worker="worker1", attempts=1)
    three = [task(f"t-{i}") for i in range(3)]
    p = run(pool(3), [running, *three], [busy])
    assert created(p) == [] and p.decision.action == ScaleAction.NONE  # 3 is not > 3

    p = run(pool(3), [running, *three, task("t-4")], [busy])
    assert created(p) == ["worker2"]
    assert "4 pending > threshold 3" in p.decision.reason

    idle = ready_worker("worker2")
    p = run(pool(3), [running, *three, task("t-4")], [busy, idle])
    assert created(p) == []  # an idle worker takes one instead
    assert [a.worker for a in p.assignments] == ["worker2"]


def test_one_start_at_a_time_while_a_worker_is_starting() -> None:
    busy = ready_worker("worker1")
    running = task("t-run", "Running", worker="worker1", attempts=1)
    starting = deployment("worker2", started_ago=5)
    p = run(pool(3), [running, *(task(f"t-{i}") for i in range(6))], [busy],
            deployments=[starting])
    assert created(p) == []
    assert slot_states(p)["worker2"] == "starting"


def test_scale_down_after_the_delay_with_more_than_two_idle() -> None:
    workers = [ready_worker(f"worker{i}") for i in range(1, 5)]
    the_pool = pool(4, scaleDownDelaySeconds=60)
    # The queue just went quiet: the delay starts now.
    p = run(the_pool, [], workers, memory=Memory())
    assert deleted(p) == [] and p.quiet_since == NOW
    p = run(the_pool, [], workers, memory=Memory(quiet_since=ago(30)))
    assert deleted(p) == []
    p = run(the_pool, [], workers, memory=Memory(quiet_since=ago(61)))
    assert deleted(p) == ["worker4"]  # the highest idle slot
    assert p.deletes[0].resource_version == "50"  # guarded: never a worker just assigned
    assert p.quiet_since == NOW  # the next stop needs a quiet period of its own
    assert slot_states(p)["worker4"] == "stopped"
    assert p.status["lastScale"]["action"] == "stop"
    # Two idle are not "more than two".
    p = run(pool(4), [], workers[:2], memory=Memory(quiet_since=ago(600)))
    assert deleted(p) == []
    # Anything pending resets the quiet period.
    p = run(the_pool, [task("t-1", pinned="worker9")], workers,
            memory=Memory(quiet_since=ago(600)))
    assert deleted(p) == [] and p.quiet_since is None


def test_a_stop_recorded_in_the_status_needs_its_own_quiet_period() -> None:
    """Another replica (or this operator before a restart) stopped a worker 10 s ago."""
    workers = [ready_worker(f"worker{i}") for i in range(1, 5)]
    recent = {"lastScale": {"action": "stop", "reason": "x", "at": "2025-03-01T11:59:50Z"}}
    p = run(pool(4, status=recent), [], workers, memory=Memory(quiet_since=ago(600)))
    assert deleted(p) == []
    old = {"lastScale": {"action": "stop", "reason": "x", "at": "2025-03-01T11:58:00Z"}}
    p = run(pool(4, status=old), [], workers, memory=Memory(quiet_since=ago(600)))
    assert deleted(p) == ["worker4"]


def test_a_task_pinned_to_a_stopped_slot_starts_it() -> None:
    p = run(pool(3), [task("t-pin", pinned="worker3")], [ready_worker("worker1")])
    assert created(p) == ["worker3"]
    assert "pinned to worker3" in p.decision.reason
    assert p.assignments == []  # the idle worker1 may not take a task pinned elsewhere


def test_never_above_max_workers_nor_the_token_count() -> None:
    pending = [task(f"t-{i}") for i in range(10)]
    running = [task("t-a", "Running", worker="worker1", attempts=1),
               task("t-b", "Running", worker="worker2", attempts=1)]
    busy = [ready_worker("worker1"), ready_worker("worker2")]
    # Two tokens: two workers at most, whatever maxWorkers says.
    p = run(pool(2, maxWorkers=5), pending + running, busy)
    assert created(p) == []
    # Three tokens but maxWorkers 2.
    p = run(pool(3, maxWorkers=2), pending + running, busy)
    assert created(p) == []
    p = run(pool(3, maxWorkers=3), pending + running, busy)
    assert created(p) == ["worker3"]


def test_min_workers_never_exceeds_the_usable_tokens() -> None:
    memory = Memory(secret_errors={"worker2": ("token Secret token-2 not found", ago(1))})
    p = run(pool(2, minWorkers=2), [], [ready_worker("worker1")], memory=memory)
    assert created(p) == []
    assert slot_states(p)["worker2"] == "error"
    degraded = {c["type"]: c for c in p.status["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and "token-2 not found" in degraded["message"]


def test_error_slots_are_skipped_when_scaling_up() -> None:
    memory = Memory(secret_errors={"worker2": ("token Secret token-2 not found", ago(1))})
    running = task("t-a", "Running", worker="worker1", attempts=1)
    p = run(pool(3), [running, *(task(f"t-{i}") for i in range(5))], [ready_worker("worker1")],
            memory=memory)
    assert created(p) == ["worker3"]
    # The Secret is checked again after secret_retry.
    memory = Memory(secret_errors={"worker2": ("token Secret token-2 not found", ago(31))})
    p = run(pool(3), [running, *(task(f"t-{i}") for i in range(5))], [ready_worker("worker1")],
            memory=memory)
    assert created(p) == ["worker2"]


def test_an_error_reported_on_the_lease_by_this_deployment_counts() -> None:
    dep = deployment("worker2", started_ago=50)
    reported = lease("worker2", renewed_ago=40, ready_ago=None, error="Unauthorized: bad token")
    p = run(pool(3), [], [ready_worker("worker1")], deployments=[dep], leases=[reported])
    assert slot_states(p)["worker2"] == "error"
    # An error from before this Deployment was started is forgotten.
    old = lease("worker2", renewed_ago=60, ready_ago=None, error="Unauthorized: bad token")
    p = run(pool(3), [], [ready_worker("worker1")], deployments=[dep], leases=[old])
    assert slot_states(p)["worker2"] == "starting"


def test_a_worker_never_ready_is_in_error_after_the_start_timeout() -> None:
    dep = deployment("worker1", started_ago=400)
    p = run(pool(3), [], deployments=[dep], config=OperatorConfig(start_timeout=300))
    assert slot_states(p)["worker1"] == "error"
    assert created(p) == ["worker2"]  # the minimum comes from another token


# ---------------------------------------------------------------------------- assignment


def test_assignment_by_priority_then_age() -> None:
    tasks = [task("t-old5", priority=5, age=300), task("t-new1", priority=1, age=10),
             task("t-older5", priority=5, age=600), task("t-low", priority=9, age=900)]
    workers = [ready_worker("worker1"), ready_worker("worker2"), ready_worker("worker3")]
    p = run(pool(3), tasks, workers)
    assert [(a.task, a.worker) for a in p.assignments] == [
        ("t-new1", "worker1"), ("t-older5", "worker2"), ("t-old5", "worker3")]
    assert p.status["pending"] == 1 and p.status["busy"] == 3 and p.status["idle"] == 0


def test_a_pinned_task_goes_to_its_own_worker_only() -> None:
    tasks = [task("t-pin", pinned="worker2", priority=1), task("t-free", priority=5)]
    running = task("t-run", "Running", worker="worker2", attempts=1)
    workers = [ready_worker("worker1"), ready_worker("worker2")]
    p = run(pool(3), [*tasks, running], workers)
    assert [(a.task, a.worker) for a in p.assignments] == [("t-free", "worker1")]
    p = run(pool(3), tasks, workers)
    assert sorted((a.task, a.worker) for a in p.assignments) == [
        ("t-free", "worker1"), ("t-pin", "worker2")]


def test_an_assignment_is_guarded_by_both_resource_versions() -> None:
    t = task("t-1", attempts=1, rv="777")
    p = run(pool(3), [t], [ready_worker("worker1")])
    (a,) = p.assignments
    assert a.status_patch() == {
        "metadata": {"resourceVersion": "777"},
        "status": {"phase": "Assigned", "worker": "worker1",
                   "assignedAt": "2025-03-01T12:00:00Z", "attempts": 2,
                   "startedAt": None, "completedAt": None},
    }
    assert a.reservation_patch() == {"metadata": {
        "resourceVersion": "50",
        "annotations": {ANNOTATION_RESERVED_TASK: "t-1",
                        ANNOTATION_RESERVED_AT: "2025-03-01T12:00:00Z"}}}
    assert a.deployment == "fleetgram-worker1"


def test_busy_starting_offline_and_cancelled_are_not_assigned() -> None:
    running = task("t-run", "Running", worker="worker1", attempts=1)
    cancelled = task("t-cancel", cancel=True, priority=1)
    workers = [ready_worker("worker1")]  # busy with t-run
    p = run(pool(3), [running, cancelled, task("t-2")], workers,
            deployments=[deployment("worker2", started_ago=3)])  # starting
    assert p.assignments == []
    assert p.status["pending"] == 1  # the cancelled one is not waiting for anybody
    # The Lease alone may say the worker is busy (a direct task not yet visible as Running).
    p = run(pool(3), [task("t-2")], [ready_worker("worker1", current="t-direct")])
    assert p.assignments == []


def test_a_young_reservation_keeps_the_worker_busy() -> None:
    # Another operator replica reserved worker1 for t-1 a moment ago and is about to assign
    # it; our (older) task list still shows t-1 and t-2 pending.
    dep = deployment("worker1", reserved="t-1", reserved_ago=1)
    workers = [(dep, lease("worker1"))]
    p = run(pool(3), [task("t-1"), task("t-2")], workers)
    assert p.assignments == []
    assert {s["name"]: s.get("task") for s in p.status["slots"]}["worker1"] == "t-1"
    # A reservation older than the TTL, or for a task no longer pending, is ignored.
    dep = deployment("worker1", reserved="t-1", reserved_ago=11)
    p = run(pool(3), [task("t-1"), task("t-2")], [(dep, lease("worker1"))])
    assert [a.task for a in p.assignments] == ["t-1"]
    dep = deployment("worker1", reserved="t-1", reserved_ago=1)
    p = run(pool(3), [task("t-1", "Completed", worker="worker1", completed_ago=1),
                      task("t-2")], [(dep, lease("worker1"))])
    assert [a.task for a in p.assignments] == ["t-2"]


def test_tasks_of_other_pools_are_ignored() -> None:
    other = task("t-other", pool_label="another-pool")
    unlabelled = task("t-plain")
    p = run(pool(3), [other, unlabelled], [ready_worker("worker1"), ready_worker("worker2")])
    assert [a.task for a in p.assignments] == ["t-plain"]
    p = run(pool(3), [other, unlabelled], [ready_worker("worker1")], claim_unlabelled=False)
    assert p.assignments == []


# ---------------------------------------------------------------------------- lease expiry


def test_lease_expiry_requeues_and_restarts_the_worker() -> None:
    dead = (deployment("worker2"), lease("worker2", renewed_ago=31, username="w2_bot"))
    held = task("t-held", "Running", worker="worker2", attempts=1, rv="300")
    p = run(pool(3), [held], [ready_worker("worker1", current=None), dead])
    (q,) = p.requeues
    assert q.phase == "Pending"
    assert q.status_patch() == {
        "metadata": {"resourceVersion": "300"},
        "status": {"phase": "Pending", "worker": None, "assignedAt": None, "startedAt": None}}
    assert q.labels == {LABEL_PHASE: "pending", LABEL_WORKER: None}
    assert q.event.kind == "requeued" and q.event.task_id == "t-held" and q.event.chat_id == 7
    assert q.event.payload["worker"] == "worker2"
    assert q.event.payload["username"] == "w2_bot"
    assert q.event.payload["attempts"] == 1
    assert q.event.payload["reason"] == "worker died"
    assert q.event.payload["title"] == "title t-held"
    assert q.event.payload["usage"]["cost_usd"] == 0.0
    # The Deployment is replaced: the delete names this very object, the create a fresh one.
    assert [(d.slot, d.uid, d.resource_version) for d in p.deletes] == [
        ("worker2", "uid-dep-worker2", None)]
    assert created(p) == ["worker2"]
    assert p.creates[0].manifest["metadata"]["annotations"][ANNOTATION_STARTED_AT] == (
        "2025-03-01T12:00:00Z")
    assert slot_states(p)["worker2"] == "starting"
    assert p.status["lastScale"]["action"] == "restart"
    # The requeued task is not assigned in the same round (its resourceVersion changes).
    assert p.assignments == []


def test_lease_expiry_fails_the_task_at_max_attempts() -> None:
    dead = (deployment("worker1"), lease("worker1", renewed_ago=45))
    held = task("t-held", "Assigned", worker="worker1", attempts=3)
    p = run(pool(3, maxAttempts=3), [held], [dead])
    (q,) = p.requeues
    assert q.phase == "Failed"
    assert q.status["error"] == "worker died; gave up after 3 attempts"
    assert q.status["completedAt"] == "2025-03-01T12:00:00Z"
    assert q.labels == {LABEL_PHASE: "failed", LABEL_WORKER: "worker1"}  # who ran it last
    assert q.event.kind == "failed"
    assert q.event.payload["error"] == "worker died; gave up after 3 attempts"


def test_lease_expiry_of_a_task_asked_to_cancel_cancels_it() -> None:
    dead = (deployment("worker1"), lease("worker1", renewed_ago=45))
    held = task("t-held", "Running", worker="worker1", attempts=1, cancel=True)
    (q,) = run(pool(3), [held], [dead]).requeues
    assert q.phase == "Cancelled" and q.event.kind == "cancelled"


def test_a_live_lease_keeps_its_tasks() -> None:
    held = task("t-held", "Running", worker="worker1", attempts=1)
    p = run(pool(3), [held], [ready_worker("worker1", renewed_ago=29)])
    assert p.requeues == [] and p.deletes == []


def test_tasks_of_a_worker_outside_the_pool_are_requeued_once_it_is_silent() -> None:
    held = task("t-held", "Assigned", worker="worker7", attempts=1)
    p = run(pool(3), [held], [ready_worker("worker1")], leases=[lease("worker7")])
    assert p.requeues == []  # the pool shrank, but worker7 still runs its task
    p = run(pool(3), [held], [ready_worker("worker1")])
    assert [(q.task, q.phase) for q in p.requeues] == [("t-held", "Pending")]


def test_an_offline_worker_without_tasks_is_restarted() -> None:
    p = run(pool(3), [], [ready_worker("worker1"), ready_worker("worker2", renewed_ago=90)])
    assert deleted(p) == ["worker2"] and created(p) == ["worker2"]
    assert p.requeues == []


def test_a_deployment_being_deleted_is_not_created_again_yet() -> None:
    going = deployment("worker1", terminating=True)
    p = run(pool(3), [], deployments=[going])
    assert p.decision.action == ScaleAction.START and p.decision.slot == "worker1"
    assert created(p) == []


# ---------------------------------------------------------------------------- upkeep


def test_finished_tasks_are_collected_after_their_ttl() -> None:
    tasks = [
        task("t-done-old", "Completed", worker="worker1", completed_ago=3601),
        task("t-done-new", "Completed", worker="worker1", completed_ago=600),
        task("t-failed-old", "Failed", completed_ago=7200),
        task("t-cancelled-old", "Cancelled", completed_ago=4000),
        task("t-running-old", "Running", worker="worker1", age=90000, attempts=1),
        task("t-pending-old", age=90000),
    ]
    p = run(pool(3, finishedTaskTTLSeconds=3600), tasks, [ready_worker("worker1")])
    assert sorted(c.task for c in p.gc) == ["t-cancelled-old", "t-done-old", "t-failed-old"]
    assert {c.uid for c in p.gc} == {"uid-t-cancelled-old", "uid-t-done-old", "uid-t-failed-old"}


def test_lost_labels_are_repaired() -> None:
    unlabelled = task("t-a", "Assigned", worker="worker1", attempts=1,
                      labels={LABEL_WORKER: "", LABEL_PHASE: "pending"})
    stale = task("t-b", labels={LABEL_WORKER: "worker2"})
    no_pool = task("t-c", "Running", worker="worker2", attempts=1)
    del no_pool["metadata"]["labels"][LABEL_POOL]
    done = task("t-d", "Completed", worker="worker2", completed_ago=5,
                labels={LABEL_PHASE: "running"})
    fine = task("t-e", "Running", worker="worker3", attempts=1)
    workers = [ready_worker("worker1"), ready_worker("worker2"), ready_worker("worker3")]
    p = run(pool(3), [unlabelled, stale, no_pool, done, fine], workers)
    assert p.requeues == []
    fixes = {r.task: r.labels for r in p.relabels}
    assert fixes == {
        "t-a": {LABEL_WORKER: "worker1", LABEL_PHASE: "assigned"},
        "t-b": {LABEL_WORKER: None, LABEL_PHASE: "pending"},
        "t-c": {LABEL_POOL: "fleetgram"},
        "t-d": {LABEL_WORKER: "worker2", LABEL_PHASE: "completed"},
    }
    assert {r.task: r.resource_version for r in p.relabels}["t-a"] == (
        unlabelled["metadata"]["resourceVersion"])


def test_a_changed_template_replaces_idle_workers_only() -> None:
    new = pool(3, template={"image": "ghcr.io/fleetgram/worker:2"})
    running = task("t-run", "Running", worker="worker2", attempts=1)
    workers = [ready_worker("worker1"), ready_worker("worker2")]
    p = run(new, [running], workers)
    assert [r.slot for r in p.replaces] == ["worker1"]
    body = p.replaces[0].body
    assert body["metadata"]["resourceVersion"] == "50"
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/fleetgram/worker:2")
    assert body["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH] != (
        workers[0][0]["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH])
    assert slot_states(p)["worker1"] == "starting"
    # Unchanged template: nothing to do.
    assert run(pool(3), [running], workers).replaces == []


def test_deployments_of_removed_slots_go_once_free() -> None:
    small = pool(2)
    orphan = deployment("worker3")
    running = task("t-run", "Running", worker="worker3", attempts=1)
    workers = [ready_worker("worker1"), ready_worker("worker2")]
    p = run(small, [running], workers, deployments=[orphan], leases=[lease("worker3")])
    assert deleted(p) == []
    p = run(small, [], workers, deployments=[orphan], leases=[lease("worker3")])
    assert deleted(p) == ["worker3"]


# ---------------------------------------------------------------------------- status


def test_status_counts_slots_and_conditions() -> None:
    previous = {
        "slots": [{"name": "worker1", "state": "idle", "since": "2025-03-01T11:00:00Z"},
                  {"name": "worker2", "state": "idle", "since": "2025-03-01T11:30:00Z"}],
        "lastScale": {"action": "start", "reason": "earlier", "at": "2025-03-01T10:00:00Z"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "WorkersReady",
                        "message": "x", "lastTransitionTime": "2025-03-01T10:00:01Z"}],
    }
    the_pool = pool(3, status=previous)
    running = task("t-run", "Running", worker="worker2", attempts=1)
    p = run(the_pool, [running, task("t-p", pinned="worker2")],
            [ready_worker("worker1"), ready_worker("worker2", username="second_bot")])
    s = p.status
    assert (s["ready"], s["idle"], s["busy"], s["pending"]) == (2, 1, 1, 1)
    assert s["observedGeneration"] == 2
    slots = {x["name"]: x for x in s["slots"]}
    assert slots["worker1"] == {"name": "worker1", "state": "idle",
                                "since": "2025-03-01T11:00:00Z", "username": "worker1_bot",
                                "deployment": "fleetgram-worker1"}
    assert slots["worker2"]["state"] == "busy" and slots["worker2"]["task"] == "t-run"
    assert slots["worker2"]["since"] == "2025-03-01T12:00:00Z"  # a new state: since now
    assert slots["worker2"]["username"] == "second_bot"
    assert slots["worker3"] == {"name": "worker3", "state": "stopped",
                                "since": "2025-03-01T12:00:00Z"}
    assert s["lastScale"] == previous["lastScale"]  # kept while nothing is scaled
    conditions = {c["type"]: c for c in s["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Ready"]["lastTransitionTime"] == "2025-03-01T10:00:01Z"
    assert conditions["Degraded"]["status"] == "False"
