"""The worker-chat messages of tasks in progress, kept so that a restarted worker can leave
the "interrupted" note on each."""

from __future__ import annotations

from fleetgram.store.sql import SqlStore


async def test_a_remembered_reply_is_left_over_until_forgotten(store: SqlStore) -> None:
    await store.remember_reply("worker1", "t-aaaaa", 100, 11)
    await store.remember_reply("worker1", "t-aaaaa", 100, 12)  # a long answer, two messages
    await store.remember_reply("worker1", "t-bbbbb", 200, 21)
    assert await store.leftover_replies("worker1") == [
        ("t-aaaaa", 100, 11), ("t-aaaaa", 100, 12), ("t-bbbbb", 200, 21),
    ]
    await store.forget_replies("worker1", "t-aaaaa")
    assert await store.leftover_replies("worker1") == [("t-bbbbb", 200, 21)]


async def test_replies_are_each_workers_own(store: SqlStore) -> None:
    await store.remember_reply("worker1", "t-aaaaa", 100, 11)
    await store.remember_reply("worker2", "t-aaaaa", 100, 12)
    await store.forget_replies("worker2", "t-aaaaa")
    assert await store.leftover_replies("worker1") == [("t-aaaaa", 100, 11)]
    assert await store.leftover_replies("worker2") == []


async def test_remembering_a_reply_twice_keeps_it_once(store: SqlStore) -> None:
    await store.remember_reply("worker1", "t-aaaaa", 100, 11)
    await store.remember_reply("worker1", "t-aaaaa", 100, 11)
    assert await store.leftover_replies("worker1") == [("t-aaaaa", 100, 11)]


async def test_forgetting_replies_never_remembered_is_harmless(store: SqlStore) -> None:
    await store.forget_replies("worker1", "t-aaaaa")
    assert await store.leftover_replies("worker1") == []
