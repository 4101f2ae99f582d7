from __future__ import annotations

import pytest

from fleetgram.domain import WorkerSlot
from fleetgram.store.sql import SqlStore
from tests.store.support import at


async def test_ensure_slots_creates_the_missing_slots_disabled(store: SqlStore) -> None:
    await store.ensure_slots(["worker1", "worker2"])
    assert await store.get_slots() == [WorkerSlot("worker1"), WorkerSlot("worker2")]


async def test_ensure_slots_leaves_existing_slots_as_they_are(store: SqlStore) -> None:
    await store.ensure_slots(["worker1"])
    await store.update_slot("worker1", enabled=True, username="fleet_w1_bot")
    await store.ensure_slots(["worker1", "worker2"])
    assert await store.get_slots() == [
        WorkerSlot("worker1", enabled=True, username="fleet_w1_bot"),
        WorkerSlot("worker2"),
    ]


async def test_update_slot_sets_every_given_field(store: SqlStore) -> None:
    await store.ensure_slots(["worker1"])
    slot = WorkerSlot(
        "worker1",
        enabled=True,
        username="fleet_w1_bot",
        started_at=at(1),
        ready_at=at(2),
        heartbeat_at=at(3),
        error="bad token",
        current_task="t-abcde",
        state_since=at(4),
    )
    fields = {k: v for k, v in vars(slot).items() if k != "name"}
    await store.update_slot("worker1", **fields)
    assert await store.get_slots() == [slot]


async def test_update_slot_can_clear_a_field(store: SqlStore) -> None:
    await store.update_slot("worker1", error="bad token", current_task="t-abcde")
    await store.update_slot("worker1", error=None)
    assert await store.get_slots() == [WorkerSlot("worker1", current_task="t-abcde")]


async def test_update_slot_of_an_unknown_slot_creates_it(store: SqlStore) -> None:
    await store.update_slot("worker3", heartbeat_at=at(5))
    assert await store.get_slots() == [WorkerSlot("worker3", heartbeat_at=at(5))]


async def test_update_slot_refuses_a_field_a_slot_does_not_have(store: SqlStore) -> None:
    await store.ensure_slots(["worker1"])
    with pytest.raises(TypeError, match="status"):
        await store.update_slot("worker1", status="busy")


async def test_slots_are_listed_by_number(store: SqlStore) -> None:
    await store.ensure_slots(["worker10", "worker2", "worker1"])
    assert [s.name for s in await store.get_slots()] == ["worker1", "worker2", "worker10"]
