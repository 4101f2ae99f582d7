"""The managed_tokens table (migration 0008): worker tokens added with /addworker, kept as the
encrypted bytes they were given, oldest first, on SQLite and on Postgres."""

from __future__ import annotations

import pytest

from fleetgram.store.sql import SqlStore


async def test_added_tokens_come_back_as_given_in_the_order_they_were_added(
    store: SqlStore,
) -> None:
    await store.add_managed_token("worker6", 7000000001, "first_bot", b"\x00cipher-one\xff")
    await store.add_managed_token("worker7", 7000000002, "second_bot", b"cipher-two")
    rows = await store.managed_tokens()
    assert [(r.slot, r.bot_id, r.username, r.token_encrypted) for r in rows] == [
        ("worker6", 7000000001, "first_bot", b"\x00cipher-one\xff"),
        ("worker7", 7000000002, "second_bot", b"cipher-two"),
    ]
    assert rows[0].created_at.tzinfo is not None


async def test_a_slot_holds_one_token(store: SqlStore) -> None:
    await store.add_managed_token("worker6", 1, "first_bot", b"a")
    with pytest.raises(Exception):  # noqa: B017 (each engine raises its own IntegrityError)
        await store.add_managed_token("worker6", 2, "second_bot", b"b")
    assert len(await store.managed_tokens()) == 1


async def test_the_chat_a_token_was_added_from_is_kept(store: SqlStore) -> None:
    await store.add_managed_token("worker6", 1, "first_bot", b"a", chat_id=1234567890123)
    await store.add_managed_token("worker7", 2, "second_bot", b"b")
    assert [r.chat_id for r in await store.managed_tokens()] == [1234567890123, None]
