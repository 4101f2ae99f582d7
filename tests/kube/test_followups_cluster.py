"""The cluster store keeps follow-up records (migration 0007) in its SQL store."""

from __future__ import annotations

from fleetgram.kube.queue import ClusterStore


async def test_follow_up_records_are_kept_in_sql(store: ClusterStore) -> None:
    conversation = await store.new_conversation("worker1", 100)
    await store.link_conversation("t-aaaaa", conversation)
    await store.link_follow_up("t-bbbbb", "t-aaaaa")
    await store.record_messages("master", 100, [11], "t-aaaaa", "receipt")
    await store.activate_conversation(conversation)

    assert await store.inner.task_of_message("master", 100, 11) == "t-aaaaa"
    assert await store.task_of_message("master", 100, 11) == "t-aaaaa"
    assert await store.messages_of_task("t-aaaaa", "receipt") == [(100, 11)]
    assert await store.follow_up_of("t-bbbbb") == "t-aaaaa"
    assert await store.conversation_of_task("t-aaaaa") == (conversation, "worker1")
