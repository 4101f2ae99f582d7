"""What the store keeps for follow-ups by reply (migration 0007), on SQLite and Postgres."""

from __future__ import annotations

from fleetgram.domain import TaskState
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task


async def test_a_recorded_message_names_its_task_and_keeps_its_first_task(
    store: SqlStore,
) -> None:
    await store.record_messages("worker1", 1000, [5, 6], "t-00001", "answer")
    await store.record_messages("worker1", 1000, [6], "t-00002", "answer")  # kept: t-00001
    assert await store.task_of_message("worker1", 1000, 6) == "t-00001"
    assert await store.task_of_message("worker1", 2000, 6) is None  # another chat's #6
    assert await store.messages_of_task("t-00001", "answer") == [(1000, 5), (1000, 6)]
    assert await store.messages_of_task("t-00001", "receipt") == []


async def test_the_same_chat_and_message_id_with_another_bot_is_another_message(
    store: SqlStore,
) -> None:
    # A user's private chat has the same id with every bot, numbered from 1 in each.
    await store.record_messages("master", 1000, [3], "t-00001", "receipt")
    await store.record_messages("worker1", 1000, [3], "t-00002", "answer")
    assert await store.task_of_message("master", 1000, 3) == "t-00001"
    assert await store.task_of_message("worker1", 1000, 3) == "t-00002"


async def test_a_follow_up_finds_the_conversation_its_parent_ran_in(store: SqlStore) -> None:
    conversation = await store.new_conversation("worker1", 100)
    await store.link_conversation("t-00001", conversation)
    await store.link_follow_up("t-00002", "t-00001")
    assert await store.follow_up_of("t-00002") == "t-00001"
    assert await store.follow_up_of("t-00001") is None
    assert await store.conversation_of_task("t-00001") == (conversation, "worker1")
    assert await store.conversation_of_task("t-00002") is None


async def test_activating_an_older_conversation_makes_it_the_active_one(store: SqlStore) -> None:
    older = await store.new_conversation("worker1", 100)
    await store.new_conversation("worker1", 100)
    await store.activate_conversation(older)
    assert await store.active_conversation("worker1", 100) == older


async def test_the_follow_up_records_are_purged_with_their_tasks(store: SqlStore) -> None:
    old = await store.create_task(make_task(state=TaskState.COMPLETED, worker="worker1",
                                            completed_at=at(10)))
    live = await store.create_task(make_task())
    for task in (old, live):
        await store.record_messages("master", 1000, [int(task.id[-5:])], task.id, "receipt")
        await store.link_follow_up(task.id, "t-99999")
    async with store._write() as tx:  # both were recorded long ago
        for table in ("task_messages", "task_threads"):
            await tx.execute(f"UPDATE {table} SET created_at = ?", at(0))

    await store.purge_finished(at(500))

    assert await store.messages_of_task(old.id, "receipt") == []
    assert await store.follow_up_of(old.id) is None
    assert await store.messages_of_task(live.id, "receipt") != []
    assert await store.follow_up_of(live.id) == "t-99999"
