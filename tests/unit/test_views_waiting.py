"""/queue and /workers show a task that waits for its user (an approval in agent mode)."""

from __future__ import annotations

from fleetgram.domain import TaskState, WorkerSlot, WorkerState
from fleetgram.master.views import QueueCounts, queue_view, workers_view

from .factories import T0, at, task

APPROVAL = "approval: Bash `rm -rf build`"


def _running(**fields: object):
    return task("t-runn1", state=TaskState.RUNNING, worker="worker2", started_at=at(-90),
                title="long job", **fields)


def test_the_queue_shows_what_a_running_task_waits_for():
    text = queue_view([_running(waiting=APPROVAL)], [], QueueCounts(1, 0, 1, 0), T0)
    _head, line, note = text.splitlines()
    assert "<code>t-runn1</code>" in line and "long job" in line
    assert note.strip() == "⏳ waiting for you: approval: Bash `rm -rf build`"


def test_the_queue_shows_no_waiting_line_for_a_task_that_is_not_waiting():
    text = queue_view([_running()], [], QueueCounts(1, 0, 1, 0), T0)
    assert "waiting for you" not in text and len(text.splitlines()) == 2


def test_what_a_task_waits_for_is_escaped_as_html():
    text = queue_view([_running(waiting="approval: Bash `cat <a.txt >b.txt`")], [],
                      QueueCounts(1, 0, 1, 0), T0)
    assert "waiting for you: approval: Bash `cat &lt;a.txt &gt;b.txt`" in text


def test_workers_shows_that_the_viewers_own_task_waits_for_them():
    slots = [WorkerSlot("worker1", enabled=True, current_task="t-mine1", state_since=at(-5))]
    line = workers_view(slots, {"worker1": WorkerState.BUSY}, T0, {"t-mine1"},
                        waiting={"t-mine1": APPROVAL}).splitlines()[1]
    assert "busy on <code>t-mine1</code> for 5s" in line
    assert "⏳ waiting for you: approval: Bash `rm -rf build`" in line


def test_workers_does_not_show_what_another_users_task_waits_for():
    slots = [WorkerSlot("worker1", enabled=True, current_task="t-bob01", state_since=at(-5))]
    line = workers_view(slots, {"worker1": WorkerState.BUSY}, T0, {"t-mine1"},
                        waiting={"t-bob01": APPROVAL}).splitlines()[1]
    assert "another user's task" in line and "waiting" not in line and "rm -rf" not in line
