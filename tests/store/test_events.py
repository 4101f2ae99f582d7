from __future__ import annotations

from fleetgram.store.sql import SqlStore


async def test_pending_events_come_oldest_first(store: SqlStore) -> None:
    first = await store.add_event("a", {})
    second = await store.add_event("b", {})
    third = await store.add_event("c", {})
    assert [e.id for e in await store.pending_events()] == [first, second, third]


async def test_an_event_keeps_its_task_chat_and_json_payload(store: SqlStore) -> None:
    payload = {"text": "done ✓", "n": 3, "cost": 0.25, "items": [1, None, {"k": True}]}
    await store.add_event("progress", payload, task_id="t-abcde", chat_id=-100123)
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id, event.payload) == (
        "progress",
        "t-abcde",
        -100123,
        payload,
    )
    assert event.created_at.tzinfo is not None


async def test_a_delivered_event_is_no_longer_pending(store: SqlStore) -> None:
    first = await store.add_event("a", {})
    second = await store.add_event("b", {})
    await store.mark_event_delivered(first)
    assert [e.id for e in await store.pending_events()] == [second]


async def test_pending_events_returns_at_most_limit_events(store: SqlStore) -> None:
    ids = [await store.add_event("e", {"n": n}) for n in range(5)]
    assert [e.id for e in await store.pending_events(limit=2)] == ids[:2]


async def test_a_new_event_has_had_no_ambiguous_send(store: SqlStore) -> None:
    await store.add_event("a", {})
    [event] = await store.pending_events()
    assert event.ambiguous_sends == 0


async def test_ambiguous_sends_are_counted_on_the_event(store: SqlStore) -> None:
    event_id = await store.add_event("a", {})
    other = await store.add_event("b", {})
    assert await store.record_ambiguous_send(event_id) == 1
    assert await store.record_ambiguous_send(event_id) == 2
    assert [(e.id, e.ambiguous_sends) for e in await store.pending_events()] == [
        (event_id, 2), (other, 0),
    ]


async def test_an_ambiguous_send_of_an_unknown_event_counts_nothing(store: SqlStore) -> None:
    assert await store.record_ambiguous_send(424242) == 0
