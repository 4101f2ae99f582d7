"""Worker state is derived from facts: stopped, starting, idle, busy, offline, error."""

from __future__ import annotations

from fleetgram.domain import TaskState, WorkerSlot, WorkerState
from fleetgram.policy import dead_workers, worker_state

from .factories import T0, at, running_slot, task

LEASE = 30.0


def state_of(slot: WorkerSlot) -> WorkerState:
    return worker_state(slot, T0, LEASE)


# --- worker_state -----------------------------------------------------------------------------


def test_a_slot_not_enabled_is_stopped():
    assert state_of(WorkerSlot("worker1")) == WorkerState.STOPPED


def test_a_disabled_slot_is_stopped_whatever_its_old_heartbeat_says():
    slot = running_slot("worker1", enabled=False, heartbeat_at=at(-3600), current_task="t-aaaaa")
    assert state_of(slot) == WorkerState.STOPPED


def test_an_enabled_slot_that_has_not_answered_getme_is_starting():
    slot = WorkerSlot("worker1", enabled=True, started_at=at(-2))
    assert state_of(slot) == WorkerState.STARTING


def test_a_slot_ready_before_its_latest_start_is_starting_again():
    slot = running_slot("worker1", started_at=at(-5), ready_at=at(-600), heartbeat_at=T0)
    assert state_of(slot) == WorkerState.STARTING


def test_a_ready_slot_with_a_fresh_heartbeat_and_no_task_is_idle():
    assert state_of(running_slot("worker1")) == WorkerState.IDLE


def test_a_ready_slot_with_a_current_task_is_busy():
    assert state_of(running_slot("worker1", current_task="t-7k2qf")) == WorkerState.BUSY


def test_a_ready_slot_whose_heartbeat_is_older_than_the_lease_is_offline():
    slot = running_slot("worker1", heartbeat_at=at(-31), current_task="t-7k2qf")
    assert state_of(slot) == WorkerState.OFFLINE


def test_a_heartbeat_exactly_one_lease_old_is_still_alive():
    assert state_of(running_slot("worker1", heartbeat_at=at(-30))) == WorkerState.IDLE


def test_a_ready_slot_that_never_sent_a_heartbeat_is_offline():
    assert state_of(running_slot("worker1", heartbeat_at=None)) == WorkerState.OFFLINE


def test_error_wins_over_a_running_busy_slot():
    slot = running_slot("worker1", current_task="t-7k2qf", error="Unauthorized")
    assert state_of(slot) == WorkerState.ERROR


def test_error_wins_over_a_stopped_slot():
    assert state_of(WorkerSlot("worker1", error="Unauthorized")) == WorkerState.ERROR


def test_error_wins_over_starting_and_offline():
    starting = WorkerSlot("worker1", enabled=True, started_at=at(-2), error="Unauthorized")
    offline = running_slot("worker2", heartbeat_at=at(-3600), error="Unauthorized")
    assert state_of(starting) == WorkerState.ERROR
    assert state_of(offline) == WorkerState.ERROR


# --- dead_workers -----------------------------------------------------------------------------


def test_a_worker_holding_a_running_task_with_a_stale_heartbeat_is_dead():
    slots = [running_slot("worker1", heartbeat_at=at(-31))]
    tasks = [task("t-run01", state=TaskState.RUNNING, worker="worker1")]
    assert dead_workers(slots, tasks, T0, LEASE) == ["worker1"]


def test_a_worker_holding_an_assigned_task_with_a_stale_heartbeat_is_dead():
    slots = [running_slot("worker1", heartbeat_at=at(-31))]
    tasks = [task("t-asg01", state=TaskState.ASSIGNED, worker="worker1")]
    assert dead_workers(slots, tasks, T0, LEASE) == ["worker1"]


def test_a_task_holder_that_never_sent_a_heartbeat_is_dead():
    slots = [running_slot("worker1", heartbeat_at=None)]
    tasks = [task("t-asg01", state=TaskState.ASSIGNED, worker="worker1")]
    assert dead_workers(slots, tasks, T0, LEASE) == ["worker1"]


def test_a_task_holder_with_a_fresh_heartbeat_is_alive():
    slots = [running_slot("worker1", heartbeat_at=at(-30))]
    tasks = [task("t-run01", state=TaskState.RUNNING, worker="worker1")]
    assert dead_workers(slots, tasks, T0, LEASE) == []


def test_a_silent_worker_holding_no_task_is_not_dead():
    slots = [running_slot("worker1", heartbeat_at=at(-3600))]
    assert dead_workers(slots, [], T0, LEASE) == []


def test_finished_and_pending_tasks_do_not_make_their_worker_a_holder():
    slots = [running_slot("worker1", heartbeat_at=at(-3600))]
    tasks = [
        task("t-done1", state=TaskState.COMPLETED, worker="worker1"),
        task("t-fail1", state=TaskState.FAILED, worker="worker1"),
        task("t-pend1", state=TaskState.PENDING, pinned_worker="worker1"),
    ]
    assert dead_workers(slots, tasks, T0, LEASE) == []


def test_only_the_stale_holders_are_dead_in_slot_order():
    slots = [
        running_slot("worker1", heartbeat_at=at(-40)),
        running_slot("worker2", heartbeat_at=T0),
        running_slot("worker3", heartbeat_at=at(-40)),
    ]
    tasks = [
        task("t-run03", state=TaskState.RUNNING, worker="worker3"),
        task("t-run02", state=TaskState.RUNNING, worker="worker2"),
        task("t-run01", state=TaskState.RUNNING, worker="worker1"),
    ]
    assert dead_workers(slots, tasks, T0, LEASE) == ["worker1", "worker3"]
