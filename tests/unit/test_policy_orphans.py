"""The safety net that does not rely on heartbeats: orphaned_tasks.

A worker stuck around one task (a Telegram call that failed before the Claude call, a store
write that failed after it) keeps heartbeating, so dead_workers never fires. What gives it
away is its slot: it no longer says it runs the task. Such a task goes back to the queue once
the mismatch has lasted the grace (the orchestrators use WORKER_LEASE_SECONDS).
"""

from __future__ import annotations

from fleetgram.domain import TaskState
from fleetgram.policy import orphan_key, orphaned_tasks

from .factories import T0, at, running_slot, task

GRACE = 30.0


def running(task_id: str, worker: str = "worker1", attempts: int = 1, **fields):
    return task(task_id, state=TaskState.RUNNING, worker=worker, attempts=attempts, **fields)


def test_a_running_task_its_slot_still_names_is_not_an_orphan():
    slots = [running_slot("worker1", current_task="t-run01")]
    result = orphaned_tasks(slots, [running("t-run01")], {}, T0, GRACE)
    assert result.tasks == [] and result.first_seen == {}


def test_a_running_task_on_an_idle_slot_is_first_only_noted():
    slots = [running_slot("worker1", current_task=None)]
    stuck = running("t-run01")
    result = orphaned_tasks(slots, [stuck], {}, T0, GRACE)
    assert result.tasks == []
    assert result.first_seen == {orphan_key(stuck): T0}


def test_a_mismatch_that_lasts_the_grace_orphans_the_task():
    slots = [running_slot("worker1", current_task=None)]
    stuck = running("t-run01")
    result = orphaned_tasks(slots, [stuck], {orphan_key(stuck): at(-30)}, T0, GRACE)
    assert result.tasks == [stuck]


def test_a_mismatch_younger_than_the_grace_waits():
    slots = [running_slot("worker1", current_task=None)]
    stuck = running("t-run01")
    result = orphaned_tasks(slots, [stuck], {orphan_key(stuck): at(-29)}, T0, GRACE)
    assert result.tasks == []
    assert result.first_seen == {orphan_key(stuck): at(-29)}


def test_heartbeats_do_not_matter_a_fresh_one_does_not_save_the_task():
    slots = [running_slot("worker1", current_task=None, heartbeat_at=T0)]
    stuck = running("t-run01")
    result = orphaned_tasks(slots, [stuck], {orphan_key(stuck): at(-60)}, T0, GRACE)
    assert result.tasks == [stuck]


def test_a_slot_naming_another_task_orphans_the_one_it_does_not_name():
    slots = [running_slot("worker1", current_task="t-new01")]
    old = running("t-old01")
    new = task("t-new01", state=TaskState.ASSIGNED, worker="worker1", attempts=1)
    result = orphaned_tasks(slots, [old, new], {orphan_key(old): at(-31)}, T0, GRACE)
    assert result.tasks == [old]
    assert set(result.first_seen) == {orphan_key(old)}


def test_an_assigned_task_not_yet_on_its_slot_is_normal_for_a_moment():
    slots = [running_slot("worker1", current_task=None)]
    claimed = task("t-asg01", state=TaskState.ASSIGNED, worker="worker1", attempts=1)
    result = orphaned_tasks(slots, [claimed], {}, T0, GRACE)
    assert result.tasks == []
    later = orphaned_tasks(slots, [claimed], result.first_seen, at(31), GRACE)
    assert later.tasks == [claimed]


def test_a_mismatch_that_ends_is_forgotten():
    stuck = running("t-run01")
    slots = [running_slot("worker1", current_task="t-run01")]
    result = orphaned_tasks(slots, [stuck], {orphan_key(stuck): at(-10)}, T0, GRACE)
    assert result.first_seen == {}


def test_a_task_requeued_and_claimed_again_gets_a_fresh_clock():
    first_run = running("t-run01", attempts=1)
    second_run = task("t-run01", state=TaskState.ASSIGNED, worker="worker2", attempts=2)
    slots = [running_slot("worker1"), running_slot("worker2", current_task=None)]
    result = orphaned_tasks(slots, [second_run], {orphan_key(first_run): at(-100)}, T0, GRACE)
    assert result.tasks == []
    assert result.first_seen == {orphan_key(second_run): T0}


def test_a_task_on_a_stopped_slot_or_one_outside_the_pool_is_an_orphan_after_the_grace():
    slots = [running_slot("worker1", enabled=False, current_task=None)]
    on_stopped = running("t-run01")
    elsewhere = running("t-run09", worker="worker9")
    seen = {orphan_key(on_stopped): at(-40), orphan_key(elsewhere): at(-40)}
    result = orphaned_tasks(slots, [on_stopped, elsewhere], seen, T0, GRACE)
    assert result.tasks == [on_stopped, elsewhere]


def test_pending_and_finished_tasks_are_never_orphans():
    slots = [running_slot("worker1", current_task=None)]
    tasks = [
        task("t-pend1", state=TaskState.PENDING),
        task("t-done1", state=TaskState.COMPLETED, worker="worker1"),
    ]
    result = orphaned_tasks(slots, tasks, {}, at(1000), GRACE)
    assert result.tasks == [] and result.first_seen == {}
