"""Tasks remember the Telegram message they were made from, and an edit of that message
replaces the prompt of a task that is still waiting (and of no other)."""

from __future__ import annotations

from fleetgram.domain import TaskState
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task


async def test_a_task_keeps_the_message_it_was_made_from(store: SqlStore) -> None:
    task = await store.create_task(make_task(message_id=4242))
    again = await store.get_task(task.id)
    assert again is not None and again.message_id == 4242
    assert again == task


async def test_a_task_is_found_by_its_chat_and_message(store: SqlStore) -> None:
    await store.create_task(make_task(chat_id=1, message_id=7))
    mine = await store.create_task(make_task(chat_id=2, message_id=7))
    await store.create_task(make_task(chat_id=2, message_id=8))
    assert await store.find_task_by_message(2, 7) == mine


async def test_no_task_is_found_for_a_message_that_made_none(store: SqlStore) -> None:
    await store.create_task(make_task(chat_id=2, message_id=7))
    await store.create_task(make_task(chat_id=2))  # no message recorded
    assert await store.find_task_by_message(2, 9) is None
    assert await store.find_task_by_message(3, 7) is None


async def test_an_edit_replaces_the_prompt_and_title_of_a_pending_task(store: SqlStore) -> None:
    task = await store.create_task(make_task(prompt="helo wrld", title="helo"))
    edited = await store.update_pending_prompt(task.id, "hello world", "hello")
    assert edited == task.with_(prompt="hello world", title="hello")
    assert await store.get_task(task.id) == edited


async def test_an_edited_task_keeps_its_place_in_the_queue(store: SqlStore) -> None:
    first = await store.create_task(make_task())
    second = await store.create_task(make_task())
    await store.update_pending_prompt(first.id, "changed", "changed")
    assert [t.id for t in await store.list_tasks([TaskState.PENDING])] == [first.id, second.id]
    assert await store.queue_position(first.id) == 1


async def test_an_edit_of_a_claimed_task_changes_nothing(store: SqlStore) -> None:
    task = await store.create_task(make_task(prompt="original"))
    claimed = await store.claim_next("worker1", at(100))
    assert await store.update_pending_prompt(task.id, "edited", "edited") is None
    assert await store.get_task(task.id) == claimed


async def test_an_edit_of_a_finished_or_unknown_task_changes_nothing(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    cancelled = await store.request_cancel(task.id, None, at(100))
    assert await store.update_pending_prompt(task.id, "edited", "edited") is None
    assert await store.get_task(task.id) == cancelled.task
    assert await store.update_pending_prompt("t-nope2", "edited", "edited") is None


async def test_of_two_tasks_made_from_one_message_the_newer_is_found(store: SqlStore) -> None:
    await store.create_task(make_task(chat_id=2, message_id=7, created_at=at(10)))
    newer = await store.create_task(make_task(chat_id=2, message_id=7, created_at=at(20)))
    assert await store.find_task_by_message(2, 7) == newer


async def test_the_same_message_id_in_the_master_and_a_worker_chat_finds_each_ones_task(
    store: SqlStore,
) -> None:
    from fleetgram.domain import TaskSource

    # A private chat's id is the user's id in every bot's chat; message ids restart in each.
    older = await store.create_task(make_task(chat_id=2, message_id=7, created_at=at(1)))
    direct = await store.create_task(make_task(
        chat_id=2, message_id=7, source=TaskSource.DIRECT, pinned_worker="worker2",
        created_at=at(2)))
    assert await store.find_task_by_message(2, 7, made_in="master") == older
    assert await store.find_task_by_message(2, 7, made_in="worker2") == direct
    assert await store.find_task_by_message(2, 7, made_in="worker1") is None


async def test_an_edit_with_a_more_urgent_priority_raises_the_tasks(store: SqlStore) -> None:
    task = await store.create_task(make_task(priority=8))
    edited = await store.update_pending_prompt(task.id, "now urgent", "now", priority=1)
    assert edited is not None and edited.priority == 1
    assert (await store.get_task(task.id)).priority == 1  # type: ignore[union-attr]


async def test_an_edit_never_makes_a_task_less_urgent(store: SqlStore) -> None:
    task = await store.create_task(make_task(priority=2))
    edited = await store.update_pending_prompt(task.id, "later", "later", priority=9)
    assert edited is not None and edited.priority == 2
    unchanged = await store.update_pending_prompt(task.id, "again", "again")
    assert unchanged is not None and unchanged.priority == 2
