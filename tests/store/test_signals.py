"""Change signals: a store tells its listeners "tasks changed" and "outbox changed" once the
write is committed; on Postgres other store instances (other processes) hear it through
LISTEN/NOTIFY, also after their LISTEN connection was killed."""

from __future__ import annotations

import asyncio
from collections import Counter

import psycopg
import pytest

from fleetgram.domain import Task, TaskState, new_task_id, utcnow
from fleetgram.store.postgres import PostgresStore
from fleetgram.store.signals import Channel, Signals
from fleetgram.store.sql import SqlStore
from tests.e2e.harness import wait_until
from tests.store.support import OpenStore

# Across processes: Postgres only (SQLite signals stay in their process).
ON_POSTGRES = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


def a_task() -> Task:
    return Task(id=new_task_id(), user_id=1, chat_id=1, prompt="hello", title="hello",
                created_at=utcnow())


def heard(signals: Signals) -> Counter[Channel]:
    """A counter of the signals fired from now on."""
    counts: Counter[Channel] = Counter()
    for channel in Channel:
        signals.subscribe(channel, lambda c=channel: counts.update([c]))
    return counts


async def listening(store: SqlStore) -> Counter[Channel]:
    """A counter of the signals the store fires from now on (on Postgres, once its LISTEN
    connection is up and its first "look now" on connecting has passed)."""
    counts = heard(store.signals)
    if isinstance(store, PostgresStore):
        await wait_until(store.listener.listening.is_set, 10, "the listener")
    counts.clear()
    return counts


async def test_a_new_task_signals_tasks_changed(store: SqlStore) -> None:
    counts = await listening(store)
    await store.create_task(a_task())
    assert counts[Channel.TASKS] >= 1
    assert counts[Channel.OUTBOX] == 0


async def test_an_outbox_event_signals_outbox_changed(store: SqlStore) -> None:
    counts = await listening(store)
    await store.add_event("notice", {"text": "hi"}, chat_id=1)
    assert counts[Channel.OUTBOX] >= 1
    assert counts[Channel.TASKS] == 0


async def test_a_requeued_task_signals_tasks_changed(store: SqlStore) -> None:
    task = await store.create_task(a_task())
    await store.claim_next("worker1", utcnow())
    counts = await listening(store)
    await store.requeue_task(task.id, "worker1", utcnow(), max_attempts=3, reason="test")
    assert counts[Channel.TASKS] >= 1
    assert counts[Channel.OUTBOX] >= 1  # its "requeued" event


async def test_a_claim_signals_nothing(store: SqlStore) -> None:
    await store.create_task(a_task())
    counts = await listening(store)
    assert await store.claim_next("worker1", utcnow()) is not None
    await store.add_event("notice", {"text": "after"}, chat_id=1)  # heard after the claim's
    await wait_until(lambda: counts[Channel.OUTBOX] >= 1, 10, "the later signal")
    assert counts[Channel.TASKS] == 0  # else the workers would wake one another for ever


async def test_a_rolled_back_write_signals_nothing(store: SqlStore) -> None:
    counts = await listening(store)
    with pytest.raises(RuntimeError):
        async with store._write() as tx:
            await tx.notify(Channel.TASKS)
            raise RuntimeError("the write fails")
    await store.add_event("notice", {"text": "after"}, chat_id=1)
    await wait_until(lambda: counts[Channel.OUTBOX] >= 1, 10, "the later signal")
    assert counts[Channel.TASKS] == 0


@ON_POSTGRES
async def test_a_notify_wakes_a_listener_only_after_its_transaction_commits(
    pg_url: str, open_stores: OpenStore
) -> None:
    listener = await open_stores()
    assert isinstance(listener, PostgresStore)
    counts = heard(listener.signals)
    await wait_until(listener.listener.listening.is_set, 10, "the listener")
    counts.clear()
    async with await psycopg.AsyncConnection.connect(pg_url) as writer, \
            await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as other:
        async with writer.transaction():
            await writer.execute("SELECT pg_notify(%s, '')", (Channel.TASKS.value,))
            # A later notification, committed at once: once it is heard, an earlier one
            # already delivered would have been heard before it.
            await other.execute("SELECT pg_notify(%s, '')", (Channel.OUTBOX.value,))
            await wait_until(lambda: counts[Channel.OUTBOX] >= 1, 10, "the committed notify")
            assert counts[Channel.TASKS] == 0
        await wait_until(lambda: counts[Channel.TASKS] >= 1, 10, "the notify after commit")


@ON_POSTGRES
async def test_another_store_hears_a_task_created_by_a_different_one(
    open_stores: OpenStore,
) -> None:
    worker_side = await open_stores()
    master_side = await open_stores()
    assert isinstance(worker_side, PostgresStore)
    woken = asyncio.Event()
    worker_side.signals.subscribe(Channel.TASKS, woken.set)
    await wait_until(worker_side.listener.listening.is_set, 10, "the listener")
    woken.clear()
    await master_side.create_task(a_task())
    await asyncio.wait_for(woken.wait(), 10)


@ON_POSTGRES
async def test_a_listener_whose_connection_is_killed_reconnects_and_still_wakes(
    pg_url: str, open_stores: OpenStore
) -> None:
    worker_side = await open_stores()
    master_side = await open_stores()
    assert isinstance(worker_side, PostgresStore)
    counts = heard(worker_side.signals)
    listener = worker_side.listener
    await wait_until(listener.listening.is_set, 10, "the listener")
    first_pid = listener.backend_pid
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
    await wait_until(lambda: listener.connections >= 2 and listener.listening.is_set(), 15,
                     "the listener to reconnect")
    assert listener.backend_pid != first_pid
    counts.clear()
    task = await master_side.create_task(a_task())
    await wait_until(lambda: counts[Channel.TASKS] >= 1, 10, "the wake-up after reconnecting")
    claimed = await worker_side.claim_next("worker1", utcnow())
    assert claimed is not None and claimed.id == task.id and claimed.state == TaskState.ASSIGNED


@ON_POSTGRES
async def test_a_bare_signal_wakes_other_stores_as_the_operator_would_after_an_assignment(
    open_stores: OpenStore,
) -> None:
    worker_side = await open_stores()
    operator_side = await open_stores()
    assert isinstance(worker_side, PostgresStore)
    woken = asyncio.Event()
    worker_side.signals.subscribe(Channel.TASKS, woken.set)
    await wait_until(worker_side.listener.listening.is_set, 10, "the listener")
    woken.clear()
    await operator_side.signal(Channel.TASKS)
    await asyncio.wait_for(woken.wait(), 10)
