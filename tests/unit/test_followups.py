"""Where a follow-up by reply runs (master/followups.py): pure decisions over plain data."""

from __future__ import annotations

from fleetgram.domain import TaskState, WorkerState
from fleetgram.master.followups import Opened, carried_context, plan_follow_up
from tests.unit.factories import task

IDLE = {"worker1": WorkerState.IDLE, "worker2": WorkerState.IDLE}


def test_a_reply_to_a_pending_task_is_merged_into_it() -> None:
    plan = plan_follow_up(task(state=TaskState.PENDING), None, IDLE)
    assert plan.merge and plan.pinned_worker is None


def test_a_reply_to_a_running_task_waits_for_it_on_its_worker() -> None:
    parent = task(state=TaskState.RUNNING, worker="worker1")
    plan = plan_follow_up(parent, "worker1", {"worker1": WorkerState.BUSY})
    assert (plan.merge, plan.pinned_worker) == (False, "worker1")
    assert "after t-aaaaa" in plan.note


def test_a_reply_to_a_finished_task_goes_to_its_worker_when_that_worker_is_free() -> None:
    parent = task(state=TaskState.COMPLETED, worker="worker1")
    assert plan_follow_up(parent, "worker1", IDLE).pinned_worker == "worker1"


def test_a_reply_to_a_finished_task_whose_worker_is_busy_goes_to_any_worker() -> None:
    parent = task(state=TaskState.COMPLETED, worker="worker1")
    plan = plan_follow_up(parent, "worker1", {"worker1": WorkerState.BUSY,
                                              "worker2": WorkerState.IDLE})
    assert plan.pinned_worker is None
    assert plan.note == "worker1 is busy: the next free worker continues the conversation."


def test_a_reply_to_a_task_that_never_started_starts_fresh_and_says_so() -> None:
    plan = plan_follow_up(task(state=TaskState.CANCELLED), None, IDLE)
    assert plan.pinned_worker is None and "fresh conversation" in plan.note


def test_the_header_of_a_carried_agent_follow_up_says_the_session_stayed_behind() -> None:
    opened = Opened(7, "t-aaaaa", carried_from="worker1", context="Earlier…")
    assert opened.header.startswith("↪️ follow-up of t-aaaaa")
    assert "session stays in worker1's workspace" in opened.header
    assert Opened(7, "t-aaaaa").header == "↪️ follow-up of t-aaaaa"


def test_the_carried_text_holds_the_earlier_prompt_and_answer() -> None:
    text = carried_context(task(prompt="name a colour", result="Teal."))
    assert "User: name a colour" in text and "Assistant: Teal." in text


class _NothingRecorded:
    """A store that has not recorded the replied-to message yet (its id is written just after
    Telegram accepts it), holding one task of user 42."""

    def __init__(self, task: object) -> None:
        self.task = task

    async def task_of_message(self, *_: object) -> None:
        return None

    async def find_task_by_message(self, *_: object, **__: object) -> None:
        return None

    async def get_task(self, task_id: str) -> object | None:
        return self.task if task_id == getattr(self.task, "id", None) else None


async def test_a_reply_to_a_message_not_yet_recorded_finds_the_task_it_names() -> None:
    from types import SimpleNamespace

    from fleetgram.master.followups import parent_of_reply

    task = SimpleNamespace(id="t-abc12", user_id=42)
    store = _NothingRecorded(task)
    shown = "🆕 t-abc12 · priority 5 (normal) · position 1 of 1\nwrite the notes"
    assert await parent_of_reply(store, 42, 7, made_in="master", user_id=42,  # type: ignore[arg-type]
                                 shown=shown) is task
    assert await parent_of_reply(store, 42, 7, made_in="master", user_id=99,  # type: ignore[arg-type]
                                 shown=shown) is None  # another user's task: not theirs
    assert await parent_of_reply(store, 42, 7, made_in="master", user_id=42) is None  # type: ignore[arg-type]
