from __future__ import annotations

from typing import Any

import pytest

from fleetgram.store.sql import SqlStore
from tests.store.support import OpenStore

# One agent-mode exchange: the Messages API content blocks as sent and received.
EXCHANGE: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "text", "text": "What is in README.md?"}]},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me look."},
            {
                "type": "tool_use",
                "id": "toolu_01A",
                "name": "read_file",
                "input": {"path": "README.md", "range": [1, 40]},
            },
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_01A",
                "content": [{"type": "text", "text": "# fleetgram\nRuns bots — «fleet» ✓"}],
                "is_error": False,
            }
        ],
    },
    {"role": "assistant", "content": [{"type": "text", "text": "It describes fleetgram."}]},
]


async def test_the_active_conversation_is_created_once_per_worker_and_user(
    store: SqlStore,
) -> None:
    first = await store.active_conversation("worker1", 7)
    assert await store.active_conversation("worker1", 7) == first


async def test_each_worker_and_user_pair_has_its_own_conversation(store: SqlStore) -> None:
    ids = {
        await store.active_conversation("worker1", 7),
        await store.active_conversation("worker1", 8),
        await store.active_conversation("worker2", 7),
    }
    assert len(ids) == 3


async def test_a_new_conversation_becomes_the_active_one(store: SqlStore) -> None:
    old = await store.active_conversation("worker1", 7)
    new = await store.new_conversation("worker1", 7)
    assert new != old
    assert await store.active_conversation("worker1", 7) == new


async def test_turns_round_trip_their_content_blocks_in_order(store: SqlStore) -> None:
    conversation = await store.active_conversation("worker1", 7)
    await store.append_turns(conversation, EXCHANGE, "t-abcde")
    assert await store.load_turns(conversation) == EXCHANGE


async def test_appended_turns_follow_the_earlier_ones(store: SqlStore) -> None:
    conversation = await store.active_conversation("worker1", 7)
    await store.append_turns(conversation, EXCHANGE[:2], "t-abcde")
    await store.append_turns(conversation, EXCHANGE[2:], "t-abcde")
    assert await store.load_turns(conversation) == EXCHANGE


async def test_turns_survive_reopening_the_store(store: SqlStore, open_stores: OpenStore) -> None:
    conversation = await store.active_conversation("worker1", 7)
    await store.append_turns(conversation, EXCHANGE, None)
    await store.close()
    again = await open_stores()
    assert await again.active_conversation("worker1", 7) == conversation
    assert await again.load_turns(conversation) == EXCHANGE


async def test_an_old_conversation_keeps_its_turns_after_a_new_one_starts(
    store: SqlStore,
) -> None:
    old = await store.active_conversation("worker1", 7)
    await store.append_turns(old, EXCHANGE[:1], None)
    new = await store.new_conversation("worker1", 7)
    assert await store.load_turns(old) == EXCHANGE[:1]
    assert await store.load_turns(new) == []


async def test_replacing_the_turns_leaves_only_the_new_ones(store: SqlStore) -> None:
    conversation = await store.active_conversation("worker1", 100)
    await store.append_turns(conversation, EXCHANGE, "t-aaaaa")
    summary = [
        {"role": "user", "content": [{"type": "text", "text": "Summary: README describes it."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Understood."}]},
    ]
    await store.replace_turns(conversation, summary)
    assert await store.load_turns(conversation) == summary


async def test_turns_appended_after_a_replacement_follow_it(store: SqlStore) -> None:
    conversation = await store.active_conversation("worker1", 100)
    await store.append_turns(conversation, EXCHANGE, "t-aaaaa")
    await store.replace_turns(conversation, EXCHANGE[:2])
    await store.append_turns(conversation, EXCHANGE[2:], "t-bbbbb")
    assert await store.load_turns(conversation) == EXCHANGE


async def test_replacing_turns_touches_no_other_conversation(store: SqlStore) -> None:
    mine = await store.active_conversation("worker1", 100)
    other = await store.active_conversation("worker1", 200)
    await store.append_turns(mine, EXCHANGE, None)
    await store.append_turns(other, EXCHANGE, None)
    await store.replace_turns(mine, [])
    assert await store.load_turns(mine) == []
    assert await store.load_turns(other) == EXCHANGE


async def test_replacing_turns_of_an_unknown_conversation_fails_and_changes_nothing(
    store: SqlStore,
) -> None:
    with pytest.raises(KeyError):
        await store.replace_turns(424242, EXCHANGE)
    async with store._read() as tx:
        assert await tx.fetchall("SELECT * FROM turns") == []
