"""Every store test runs twice: on SQLite (a file in tmp_path) and on the real PostgreSQL
(an empty database, see tests/pg.py). The Postgres runs are marked `postgres`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram.store import open_store
from fleetgram.store.sql import SqlStore
from tests.pg import pg_session_database, pg_url  # noqa: F401  (fixtures)
from tests.store.support import OpenStore


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleetgram.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


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
