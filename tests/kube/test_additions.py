"""The store additions of issue 7 on BotTasks, behaving as the SQL store's do (tests/store):
the source message, counts, edits of pending tasks, requeueing one task, titles in the
store's own events, text refused before anything is written, and what is delegated to SQL."""

from __future__ import annotations

from typing import Any

import pytest

from fleetgram.domain import Task, TaskState
from fleetgram.kube.objects import BOTTASKS
from fleetgram.kube.queue import ClusterStore
from fleetgram.store import UnstorableText
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


def _assign_after_first_read(
    store: ClusterStore, emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch, task_id: str
) -> None:
    """The operator assigns the task just after the store first reads it."""
    real = store.kube.get_object
    reads = 0

    async def get_object(plural: str, name: str) -> dict[str, Any]:
        nonlocal reads
        obj = await real(plural, name)
        reads += 1
        if reads == 1 and name == task_id:
            assign(emu, task_id, "worker1", at(150))
        return obj

    monkeypatch.setattr(store.kube, "get_object", get_object)


# --- the message a task was made from --------------------------------------------------------

async def test_the_source_message_is_on_the_bottask_and_the_record(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(message_id=4242))
    assert bottask(emu, task.id)["spec"]["messageId"] == 4242
    assert (await store.get_task(task.id)) == task
    archived = await store.inner.get_task(task.id)
    assert archived is not None and archived.message_id == 4242


async def test_a_task_without_a_source_message_has_no_message_id(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task())
    assert "messageId" not in bottask(emu, task.id)["spec"]
    assert (await store.get_task(task.id)).message_id is None  # type: ignore[union-attr]


async def test_a_task_is_found_by_its_message_as_the_bottask_says(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    await store.create_task(make_task(chat_id=1, message_id=7))
    mine = await store.create_task(make_task(chat_id=2, message_id=7))
    assign(emu, mine.id, "worker1", at(100))  # the operator's change, not yet in SQL

    found = await store.find_task_by_message(2, 7)

    assert found is not None and (found.id, found.state) == (mine.id, TaskState.ASSIGNED)
    assert await store.find_task_by_message(2, 8) is None


async def test_a_purged_task_is_found_by_its_message_in_the_record(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(chat_id=2, message_id=7))
    await store.request_cancel(task.id, None, at(100))
    emu.delete("bottasks", task.id, NS)  # the operator's TTL

    found = await store.find_task_by_message(2, 7)

    assert found is not None and (found.id, found.state) == (task.id, TaskState.CANCELLED)


# --- counts ----------------------------------------------------------------------------------

async def test_count_counts_every_matching_bottask(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    for _ in range(5):
        await store.create_task(make_task(user_id=7))
    await store.create_task(make_task(user_id=8, pinned_worker="worker2"))
    claimed = await store.create_task(make_task(user_id=7))
    assign(emu, claimed.id, "worker1", at(100))

    assert len(await store.list_tasks([TaskState.PENDING], limit=3)) == 3
    assert await store.count_tasks([TaskState.PENDING]) == 6
    assert await store.count_tasks([TaskState.PENDING], user_id=7) == 5
    assert await store.count_tasks([TaskState.PENDING, TaskState.ASSIGNED], user_id=7) == 6
    assert await store.count_tasks([TaskState.PENDING], pinned=True) == 1
    assert await store.count_tasks([TaskState.PENDING], pinned=False) == 5
    assert await store.count_tasks([]) == 0


async def test_list_filters_on_pinning(store: ClusterStore) -> None:
    free = await store.create_task(make_task())
    pinned = await store.create_task(make_task(pinned_worker="worker2"))
    assert [t.id for t in await store.list_tasks(pinned=True)] == [pinned.id]
    assert [t.id for t in await store.list_tasks(pinned=False)] == [free.id]
    assert [t.id for t in await store.list_tasks()] == [free.id, pinned.id]


# --- edits -----------------------------------------------------------------------------------

async def test_an_edit_of_a_pending_task_changes_the_bottask_and_the_record(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(prompt="helo wrld", title="helo"))

    edited = await store.update_pending_prompt(task.id, "hello world", "hello")

    assert edited == task.with_(prompt="hello world", title="hello")
    spec = bottask(emu, task.id)["spec"]
    assert (spec["prompt"], spec["title"]) == ("hello world", "hello")
    assert await store.get_task(task.id) == edited
    assert await store.inner.get_task(task.id) == edited


async def test_an_edit_with_a_more_urgent_priority_raises_the_bottasks_only_that_way(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(priority=8))
    edited = await store.update_pending_prompt(task.id, "now urgent", "now", priority=1)
    assert edited is not None and edited.priority == 1
    assert bottask(emu, task.id)["spec"]["priority"] == 1
    again = await store.update_pending_prompt(task.id, "later", "later", priority=9)
    assert again is not None and bottask(emu, task.id)["spec"]["priority"] == 1


async def test_an_edit_of_an_assigned_task_changes_nothing(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(prompt="original"))
    assign(emu, task.id, "worker1", at(100))
    assert await store.update_pending_prompt(task.id, "edited", "edited") is None
    assert bottask(emu, task.id)["spec"]["prompt"] == "original"
    assert await store.update_pending_prompt("t-nope2", "edited", "edited") is None


async def test_an_edit_racing_the_operators_assignment_loses(
    store: ClusterStore, emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await store.create_task(make_task(prompt="original"))
    _assign_after_first_read(store, emu, monkeypatch, task.id)
    emu.clear_history()

    assert await store.update_pending_prompt(task.id, "edited", "edited") is None

    assert [r.status for r in emu.requests("patch", BOTTASKS, task.id)] == [409]
    obj = bottask(emu, task.id)
    assert (obj["spec"]["prompt"], obj["status"]["phase"]) == ("original", "Assigned")
    archived = await store.inner.get_task(task.id)
    assert archived is not None and archived.prompt == "original"


# --- requeue one task ------------------------------------------------------------------------

async def test_one_running_task_goes_back_to_pending_with_its_title(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu, chat_id=12)
    other = await _running(store, emu)

    requeued = await store.requeue_task(task.id, "worker1", at(200), max_attempts=3,
                                        reason="worker1 was not running it")

    assert requeued is not None
    assert (requeued.state, requeued.worker, requeued.attempts) == (TaskState.PENDING, None, 1)
    assert bottask(emu, task.id)["status"]["phase"] == "Pending"
    assert labels(emu, task.id) == {"fleetgram.dev/phase": "pending"}
    assert await store.inner.get_task(task.id) == requeued
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id, event.payload) == (
        "requeued", task.id, 12,
        {"attempts": 1, "reason": "worker1 was not running it", "worker": "worker1",
         "title": task.title},
    )
    still = await store.get_task(other.id)
    assert still is not None and still.state is TaskState.RUNNING


async def test_one_task_that_used_its_attempts_fails_with_its_title(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)

    failed = await store.requeue_task(task.id, "worker1", at(200), max_attempts=1,
                                      reason="stuck")

    assert failed is not None and failed.state is TaskState.FAILED
    assert bottask(emu, task.id)["status"]["phase"] == "Failed"
    [event] = await store.pending_events()
    assert (event.kind, event.payload["title"]) == ("failed", task.title)


async def test_a_task_not_active_on_that_worker_is_not_requeued(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    elsewhere = await _running(store, emu, worker="worker2")
    waiting = await store.create_task(make_task())
    for task_id in (elsewhere.id, waiting.id, "t-nope2"):
        assert await store.requeue_task(task_id, "worker1", at(200), max_attempts=3,
                                        reason="x") is None
    assert bottask(emu, elsewhere.id)["status"]["phase"] == "Running"
    assert await store.pending_events() == []


# --- text that cannot be stored --------------------------------------------------------------

@pytest.mark.parametrize("prompt", ["a\x00b", "a\udc00b"], ids=["nul", "surrogate"])
async def test_unstorable_text_is_refused_before_any_bottask_is_made(
    store: ClusterStore, emu: KubeEmulator, prompt: str
) -> None:
    task = make_task(prompt=prompt)
    with pytest.raises(UnstorableText):
        await store.create_task(task)
    assert emu.objects("bottasks", NS) == []
    assert await store.inner.get_task(task.id) is None


async def test_an_unstorable_edit_is_refused_and_changes_nothing(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(prompt="original"))
    with pytest.raises(UnstorableText):
        await store.update_pending_prompt(task.id, "bad\x00", "bad")
    assert bottask(emu, task.id)["spec"]["prompt"] == "original"


# --- the SQL store's parts -------------------------------------------------------------------

async def test_ambiguous_sends_are_counted_in_sql(store: ClusterStore) -> None:
    event_id = await store.add_event("a", {})
    assert await store.record_ambiguous_send(event_id) == 1
    [event] = await store.pending_events()
    assert event.ambiguous_sends == 1


async def test_worker_replies_are_kept_in_sql(store: ClusterStore) -> None:
    await store.remember_reply("worker1", "t-aaaaa", 100, 11)
    assert await store.inner.leftover_replies("worker1") == [("t-aaaaa", 100, 11)]
    assert await store.leftover_replies("worker1") == [("t-aaaaa", 100, 11)]
    await store.forget_replies("worker1", "t-aaaaa")
    assert await store.leftover_replies("worker1") == []


async def test_turns_are_replaced_in_sql(store: ClusterStore) -> None:
    conversation = await store.active_conversation("worker1", 100)
    turn = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    await store.append_turns(conversation, [turn, turn], None)
    await store.replace_turns(conversation, [turn])
    assert await store.inner.load_turns(conversation) == [turn]


async def test_an_answer_with_unstorable_text_is_recorded_with_replacement_characters(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    finished = await store.finish_task(task.id, "worker1", TaskState.COMPLETED, at(200),
                                       result="a\x00b")
    assert finished is not None and finished.result == "a\ufffdb"
    assert bottask(emu, task.id)["status"]["summary"] == "a\ufffdb"
    archived = await store.inner.get_task(task.id)
    assert archived is not None and archived.result == "a\ufffdb"


async def test_a_prompt_longer_than_a_bottask_holds_is_refused_before_anything_is_written(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = make_task(prompt="x" * 32001)
    with pytest.raises(UnstorableText) as refused:
        await store.create_task(task)
    assert "32001 characters" in str(refused.value) and "at most 32000" in str(refused.value)
    assert emu.objects("bottasks", NS) == []
    assert await store.inner.get_task(task.id) is None
    fits = await store.create_task(make_task(prompt="x" * 32000))
    assert (await store.get_task(fits.id)).prompt == "x" * 32000  # type: ignore[union-attr]
