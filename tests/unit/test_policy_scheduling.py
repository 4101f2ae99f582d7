"""Scheduling: queue order (priority, then age, then id) and plan_assignments."""

from __future__ import annotations

from fleetgram.domain import TaskState
from fleetgram.policy import plan_assignments, queue_order

from .factories import at, task


def ids(tasks) -> list[str]:
    return [t.id for t in tasks]


# --- queue order ------------------------------------------------------------------------------


def test_queue_order_puts_the_most_urgent_priority_first():
    tasks = [task("t-p5aaa", priority=5), task("t-p1aaa", priority=1), task("t-p10aa", priority=10)]
    assert ids(queue_order(tasks)) == ["t-p1aaa", "t-p5aaa", "t-p10aa"]


def test_queue_order_breaks_a_priority_tie_by_age_oldest_first():
    tasks = [task("t-newer", created_at=at(10)), task("t-older", created_at=at(0))]
    assert ids(queue_order(tasks)) == ["t-older", "t-newer"]


def test_priority_wins_over_age():
    tasks = [
        task("t-old5a", priority=5, created_at=at(0)),
        task("t-new1a", priority=1, created_at=at(9)),
    ]
    assert ids(queue_order(tasks)) == ["t-new1a", "t-old5a"]


def test_queue_order_breaks_a_priority_and_age_tie_by_id():
    tasks = [task("t-bbbbb"), task("t-aaaaa")]
    assert ids(queue_order(tasks)) == ["t-aaaaa", "t-bbbbb"]


# --- plan_assignments -------------------------------------------------------------------------


def test_assigns_tasks_in_queue_order_to_the_lowest_numbered_idle_workers():
    pending = [task("t-low55", priority=5), task("t-urg11", priority=1)]
    assert plan_assignments(pending, ["worker3", "worker1"]) == [
        ("t-urg11", "worker1"),
        ("t-low55", "worker3"),
    ]


def test_idle_workers_are_ordered_by_slot_number_not_by_text():
    assert plan_assignments([task("t-aaaaa")], ["worker10", "worker2"]) == [("t-aaaaa", "worker2")]


def test_with_more_tasks_than_idle_workers_only_the_first_in_queue_order_are_assigned():
    pending = [task(f"t-job{i}a", created_at=at(i)) for i in range(5)]
    assert plan_assignments(pending, ["worker1", "worker2"]) == [
        ("t-job0a", "worker1"),
        ("t-job1a", "worker2"),
    ]


def test_nothing_is_assigned_without_an_idle_worker():
    assert plan_assignments([task("t-aaaaa")], []) == []


def test_a_pinned_task_goes_to_its_own_worker_only():
    pinned = task("t-pin02", pinned_worker="worker2")
    assert plan_assignments([pinned], ["worker1", "worker2"]) == [("t-pin02", "worker2")]


def test_a_pinned_task_waits_while_its_worker_is_busy_and_does_not_block_the_queue():
    pending = [
        task("t-pin02", priority=1, pinned_worker="worker2"),
        task("t-other", priority=5),
    ]
    assert plan_assignments(pending, ["worker1"]) == [("t-other", "worker1")]


def test_a_pinned_task_is_not_given_to_another_idle_worker():
    assert plan_assignments([task("t-pin02", pinned_worker="worker2")], ["worker1"]) == []


def test_an_unpinned_task_leaves_a_pinned_tasks_worker_when_another_is_idle():
    pending = [
        task("t-urg11", priority=1),
        task("t-pin01", priority=5, pinned_worker="worker1"),
    ]
    assert sorted(plan_assignments(pending, ["worker1", "worker2"])) == [
        ("t-pin01", "worker1"),
        ("t-urg11", "worker2"),
    ]


def test_a_more_urgent_unpinned_task_still_takes_the_only_idle_worker():
    pending = [
        task("t-urg11", priority=1),
        task("t-pin01", priority=5, pinned_worker="worker1"),
    ]
    assert plan_assignments(pending, ["worker1"]) == [("t-urg11", "worker1")]


def test_a_task_with_a_cancel_request_is_skipped():
    pending = [task("t-cncl1", priority=1, cancel_requested=True), task("t-keep1", priority=5)]
    assert plan_assignments(pending, ["worker1"]) == [("t-keep1", "worker1")]


def test_only_pending_tasks_are_assigned():
    tasks = [
        task("t-asg01", priority=1, state=TaskState.ASSIGNED, worker="worker3"),
        task("t-run01", priority=1, state=TaskState.RUNNING, worker="worker4"),
        task("t-pend1", priority=9),
    ]
    assert plan_assignments(tasks, ["worker1"]) == [("t-pend1", "worker1")]


def test_each_idle_worker_gets_at_most_one_task():
    pending = [task("t-pin01", pinned_worker="worker1"), task("t-pin1b", pinned_worker="worker1")]
    assert plan_assignments(pending, ["worker1"]) == [("t-pin01", "worker1")]
