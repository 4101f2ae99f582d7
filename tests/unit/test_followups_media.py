"""A follow-up by reply that carries files (master/followups.py, resolve_follow_up): merged into
a pending parent, the files go with it; otherwise they are left to the new task."""

from __future__ import annotations

from fleetgram.domain import Attachment, Task, TaskState
from fleetgram.master.followups import merged_note, resolve_follow_up
from tests.unit.factories import task

PHOTO = Attachment("photo_7.jpg", "image/jpeg", b"\xff\xd8")
PDF = Attachment("plan.pdf", "application/pdf", b"%PDF-1.4")


class _Store:
    """The calls resolve_follow_up makes, in order; the parent claimed after `claimed_after`
    prompt updates were tried (None: never)."""

    def __init__(self, parent: Task, claimed_after: int | None = None) -> None:
        self.parent = parent
        self.claimed_after = claimed_after
        self.calls: list[tuple[str, object]] = []

    async def conversation_of_task(self, task_id: str) -> None:
        return None

    async def add_attachments(self, task_id: str, files: list[Attachment]) -> None:
        self.calls.append(("files", (task_id, [f.name for f in files])))

    async def update_pending_prompt(self, task_id: str, prompt: str, title: str, *,
                                    priority: int | None = None) -> Task | None:
        tried = sum(1 for kind, _ in self.calls if kind == "prompt")
        self.calls.append(("prompt", (task_id, prompt)))
        if self.claimed_after is not None and tried >= self.claimed_after:
            self.parent = self.parent.with_(state=TaskState.RUNNING, worker="worker1")
            return None
        return self.parent.with_(prompt=prompt)

    async def get_task(self, task_id: str) -> Task:
        return self.parent


async def test_files_of_a_reply_to_a_pending_task_are_added_to_it_before_its_prompt() -> None:
    store = _Store(task(state=TaskState.PENDING, prompt="plan the trip"))

    plan = await resolve_follow_up(store, store.parent, {}, "and this map",  # type: ignore[arg-type]
                                   files=[PHOTO, PDF])

    assert plan.merge
    assert store.calls == [("files", ("t-aaaaa", ["photo_7.jpg", "plan.pdf"])),
                           ("prompt", ("t-aaaaa", "plan the trip\n\nand this map"))]


async def test_files_are_added_once_when_the_parent_is_claimed_during_the_merge() -> None:
    store = _Store(task(state=TaskState.PENDING), claimed_after=0)

    plan = await resolve_follow_up(store, store.parent, {}, "and this map",  # type: ignore[arg-type]
                                   files=[PHOTO])

    assert not plan.merge and plan.pinned_worker == "worker1"
    assert [kind for kind, _ in store.calls] == ["files", "prompt"]


async def test_files_of_a_reply_to_a_finished_task_are_not_touched() -> None:
    store = _Store(task(state=TaskState.COMPLETED, worker="worker1"))

    plan = await resolve_follow_up(store, store.parent, {}, "and this map",  # type: ignore[arg-type]
                                   files=[PHOTO])

    assert not plan.merge and store.calls == []


def test_the_merged_note_says_how_many_files_went_with_the_reply() -> None:
    parent = task("t-bbbbb")
    assert merged_note(parent) == ("✏️ t-bbbbb has not started yet: your reply was added to its "
                                   "prompt, so it answers both.")
    assert "your reply and its file was added to it" in merged_note(parent, files=1)
    assert "your reply and its 3 files were added to it" in merged_note(parent, files=3)
