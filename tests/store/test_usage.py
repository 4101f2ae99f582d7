from __future__ import annotations

from fleetgram.domain import Usage
from fleetgram.store import ApiCall
from fleetgram.store.sql import SqlStore
from tests.store.support import make_task


async def test_api_calls_add_up_into_the_task_usage(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.record_api_call(ApiCall(task.id, "worker1", "claude-x", Usage(100, 20, 5, 1, 0.01)))
    await store.record_api_call(ApiCall(task.id, "worker1", "claude-x", Usage(50, 30, 7, 0, 0.02)))
    again = await store.get_task(task.id)
    assert again is not None
    assert again.usage == Usage(150, 50, 12, 1, 0.03)


async def test_the_ledger_keeps_every_call_of_a_task_in_order(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    calls = [
        ApiCall(
            task.id, "worker1", "claude-x", Usage(10, 2), stop_reason="tool_use", duration_s=1.5
        ),
        ApiCall(
            task.id, "worker1", "claude-x", Usage(12, 3), stop_reason="end_turn", duration_s=0.5
        ),
    ]
    for call in calls:
        await store.record_api_call(call)
    assert await store.api_calls(task.id) == calls


async def test_a_call_without_a_task_changes_no_task(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.record_api_call(ApiCall(None, "worker1", "claude-x", Usage(100, 20)))
    assert await store.get_task(task.id) == task
