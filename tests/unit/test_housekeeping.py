"""Retention: the Housekeeper purges what finished more than RETENTION_DAYS ago, at start and
then every round, and survives a failing purge.

The first tests drive it with a recording store (plain data); the last one goes through the
real stores, SQLite and PostgreSQL, to show what is kept and what goes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fleetgram.config import Settings, load_settings
from fleetgram.domain import TaskState, Usage
from fleetgram.housekeeping import Housekeeper, purge_cutoff
from fleetgram.store import open_store
from fleetgram.store.base import ApiCall
from fleetgram.store.sql import SqlStore
from tests.pg import pg_session_database, pg_url  # noqa: F401  (fixtures)
from tests.store.support import make_task

from .factories import T0, at


def settings(**env: str) -> Settings:
    base = {
        "MASTER_BOT_TOKEN": "1000:master-token-abcdef",
        "WORKER_TOKEN_POOL": "2001:worker1-token-abcdef",
        "ALLOWED_USER_IDS": "1111",
        "ANTHROPIC_API_KEY": "sk-ant-test",
    }
    base.update(env)
    return load_settings(base, dotenv=None)


class RecordingStore:
    def __init__(self, fail_first: int = 0) -> None:
        self.cutoffs: list[datetime] = []
        self.fail_first = fail_first

    async def purge_finished(self, before: datetime) -> int:
        self.cutoffs.append(before)
        if len(self.cutoffs) <= self.fail_first:
            raise OSError("disk I/O error")
        return 2


def test_the_cutoff_is_retention_days_before_now():
    assert purge_cutoff(T0, 30) == T0 - timedelta(days=30)
    assert purge_cutoff(T0, 0.5) == at(-12 * 3600)


async def test_a_purge_asks_the_store_for_everything_older_than_the_retention():
    store = RecordingStore()
    keeper = Housekeeper(settings(RETENTION_DAYS="7"), store, clock=lambda: T0)  # type: ignore[arg-type]
    assert await keeper.purge_once() == 2
    assert store.cutoffs == [T0 - timedelta(days=7)]


async def test_the_loop_purges_at_start_then_every_round_and_outlives_a_failure():
    store = RecordingStore(fail_first=1)
    keeper = Housekeeper(settings(), store, clock=lambda: T0, every=0.01)  # type: ignore[arg-type]
    loop = asyncio.create_task(keeper.run())
    try:
        for _ in range(500):
            if len(store.cutoffs) >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
    # The first purge (at start) failed; the loop kept going and purged again.
    assert len(store.cutoffs) >= 3
    assert loop.cancelled()


# --- through the real stores ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fleetgram.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    store = open_store(url)
    assert isinstance(store, SqlStore)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_the_housekeeper_purges_old_finished_work_and_keeps_the_rest(
    sql_store: SqlStore,
) -> None:
    store = sql_store
    now = datetime.now(T0.tzinfo)
    old = await store.create_task(make_task(
        state=TaskState.COMPLETED, worker="worker1", completed_at=now - timedelta(days=31)))
    recent = await store.create_task(make_task(
        state=TaskState.COMPLETED, worker="worker1", completed_at=now - timedelta(days=29)))
    waiting = await store.create_task(make_task(created_at=now - timedelta(days=90)))
    await store.record_api_call(ApiCall(recent.id, "worker1", "claude-x", Usage(10, 5)))
    delivered = await store.add_event("completed", {}, task_id=recent.id)
    await store.mark_event_delivered(delivered)
    undelivered = await store.add_event("completed", {}, task_id=recent.id)

    # Today, with RETENTION_DAYS=30: only the task finished 31 days ago goes.
    keeper = Housekeeper(settings(RETENTION_DAYS="30"), store, clock=lambda: now)
    assert await keeper.purge_once() == 1
    assert {t.id for t in await store.list_tasks(limit=10)} == {recent.id, waiting.id}

    # Thirty-one days on: the other finished task, its delivered event and its ledger row go
    # too; the pending task and the undelivered event stay.
    later = Housekeeper(settings(RETENTION_DAYS="30"), store,
                        clock=lambda: now + timedelta(days=31))
    assert await later.purge_once() == 1
    assert [t.id for t in await store.list_tasks(limit=10)] == [waiting.id]
    assert [e.id for e in await store.pending_events()] == [undelivered]
    async with store._read() as tx:
        events = await tx.fetchall("SELECT id FROM events ORDER BY id")
        ledger = await tx.fetchall("SELECT id FROM api_calls")
    assert [row["id"] for row in events] == [undelivered]
    assert ledger == []
    assert old.id not in {t.id for t in await store.list_tasks(limit=10)}
