"""Every store test runs twice: on SQLite (a file in tmp_path) and on the real PostgreSQL
(a throwaway database of its own, see tests/pg.py). Postgres runs are marked `postgres`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram.store import open_store
from fleetgram.store.sql import SqlStore
from tests.pg import create_database_or_fail, drop_database
from tests.store.support import OpenStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleetgram.db'}"
        return
    url = await create_database_or_fail()
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def open_stores(database_url: str) -> AsyncIterator[OpenStore]:
    """Opens another store on the test's database; all are closed after the test."""
    opened: list[SqlStore] = []

    async def open_one() -> SqlStore:
        store = open_store(database_url)
        assert isinstance(store, SqlStore)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in reversed(opened):
        await store.close()


@pytest.fixture
async def store(open_stores: OpenStore) -> SqlStore:
    return await open_stores()
