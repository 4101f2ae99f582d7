"""The usage ledger summed for budgets and /usage: per user (through the calls' tasks) and
worker, over a period, on SQLite and Postgres alike."""

from __future__ import annotations

from datetime import datetime, timedelta

from fleetgram.domain import Task, TaskState, Usage
from fleetgram.store import ApiCall
from fleetgram.store.base import UsageLine
from fleetgram.store.sql import SqlStore
from tests.store.support import T0, at, make_task

MIDNIGHT = T0.replace(hour=0)


async def recorded(store: SqlStore, user_id: int = 100) -> Task:
    return await store.create_task(make_task(user_id=user_id))


async def spend(store: SqlStore, task_id: str | None, worker: str, usage: Usage,
                when: datetime = T0) -> None:
    await store.record_api_call(ApiCall(task_id, worker, "claude-x", usage, at=when))


async def test_calls_add_up_per_user_and_worker(store: SqlStore) -> None:
    first, second = await recorded(store), await recorded(store)
    await spend(store, first.id, "worker1", Usage(100, 20, 5, 1, 0.01))
    await spend(store, first.id, "worker1", Usage(50, 30, 7, 0, 0.02))
    await spend(store, second.id, "worker2", Usage(10, 2, 0, 0, 0.005))
    assert await store.usage_since(MIDNIGHT) == [
        UsageLine(100, "worker1", Usage(150, 50, 12, 1, 0.03), tasks=1),
        UsageLine(100, "worker2", Usage(10, 2, 0, 0, 0.005), tasks=1),
    ]


async def test_calls_before_the_period_are_not_counted(store: SqlStore) -> None:
    task = await recorded(store)
    await spend(store, task.id, "worker1", Usage(cost_usd=1.0), when=MIDNIGHT - timedelta(
        microseconds=1))
    await spend(store, task.id, "worker1", Usage(cost_usd=0.25), when=MIDNIGHT)
    [today] = await store.usage_since(MIDNIGHT)
    assert today.usage.cost_usd == 0.25


async def test_until_ends_the_period_before_it(store: SqlStore) -> None:
    task = await recorded(store)
    await spend(store, task.id, "worker1", Usage(cost_usd=0.25), when=at(0))
    await spend(store, task.id, "worker1", Usage(cost_usd=1.0), when=at(60))
    [line] = await store.usage_since(MIDNIGHT, until=at(60))
    assert line.usage.cost_usd == 0.25


async def test_one_users_usage_leaves_out_the_others(store: SqlStore) -> None:
    ada, bob = await recorded(store, 1111), await recorded(store, 2222)
    await spend(store, ada.id, "worker1", Usage(cost_usd=0.5))
    await spend(store, bob.id, "worker1", Usage(cost_usd=7.0))
    assert [(u.user_id, u.usage.cost_usd) for u in
            await store.usage_since(MIDNIGHT, user_id=1111)] == [(1111, 0.5)]


async def test_every_user_is_listed_for_the_fleet(store: SqlStore) -> None:
    ada, bob = await recorded(store, 1111), await recorded(store, 2222)
    await spend(store, bob.id, "worker1", Usage(cost_usd=7.0))
    await spend(store, ada.id, "worker1", Usage(cost_usd=0.5))
    assert [(u.user_id, u.usage.cost_usd) for u in await store.usage_since(MIDNIGHT)] == [
        (1111, 0.5), (2222, 7.0)]


async def test_calls_of_tasks_no_longer_recorded_count_for_the_fleet_only(
    store: SqlStore,
) -> None:
    task = await recorded(store, 1111)
    await spend(store, task.id, "worker1", Usage(cost_usd=0.5))
    await spend(store, "t-purged", "worker2", Usage(cost_usd=0.25))
    await spend(store, None, "worker3", Usage(cost_usd=0.125))
    fleet = await store.usage_since(MIDNIGHT)
    assert [(u.user_id, u.worker, u.usage.cost_usd) for u in fleet] == [
        (1111, "worker1", 0.5), (None, "worker2", 0.25), (None, "worker3", 0.125)]
    assert len(await store.usage_since(MIDNIGHT, user_id=1111)) == 1


async def test_tasks_are_counted_once_however_many_calls(store: SqlStore) -> None:
    tasks = [await recorded(store) for _ in range(3)]
    for task in tasks:
        for _ in range(4):
            await spend(store, task.id, "worker1", Usage(1, 1, 0, 0, 0.001))
    [line] = await store.usage_since(MIDNIGHT)
    assert line.tasks == 3 and line.usage == Usage(12, 12, 0, 0, 0.012)


async def test_a_finished_tasks_calls_still_count(store: SqlStore) -> None:
    task = await recorded(store)
    await store.claim_next("worker1", at(1))
    await store.mark_running(task.id, "worker1", at(2))
    await spend(store, task.id, "worker1", Usage(cost_usd=0.5))
    await store.finish_task(task.id, "worker1", TaskState.FAILED, at(3), error="stopped")
    [line] = await store.usage_since(MIDNIGHT, user_id=100)
    assert line.usage.cost_usd == 0.5


async def test_no_calls_no_lines(store: SqlStore) -> None:
    assert await store.usage_since(MIDNIGHT) == []
