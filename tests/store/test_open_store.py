"""open_store picks the engine from DATABASE_URL. These read only the URL, so they need no
database and run once."""

from __future__ import annotations

import pytest

from fleetgram.domain import TaskState
from fleetgram.store import open_store
from fleetgram.store.postgres import PostgresStore
from fleetgram.store.sqlite import SQLiteStore
from tests.store.support import make_task


def test_a_sqlite_url_gives_a_sqlite_store_on_that_path() -> None:
    store = open_store("sqlite:////var/lib/fleetgram/queue.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == "/var/lib/fleetgram/queue.db"


def test_a_sqlite_url_with_three_slashes_is_a_relative_path() -> None:
    store = open_store("sqlite:///data/fleetgram.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == "data/fleetgram.db"


def test_a_plain_path_gives_a_sqlite_store() -> None:
    store = open_store("./fleetgram.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == "./fleetgram.db"


@pytest.mark.parametrize(
    "url", ["postgresql://fleet@db.internal:5432/fleetgram", "postgres://fleet@db/fleetgram"]
)
def test_a_postgres_url_gives_a_postgres_store(url: str) -> None:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    assert store.url == url


@pytest.mark.parametrize("url", ["", "mysql://root@db/fleet", "sqlite://", "sqlite:///"])
def test_any_other_url_is_refused_naming_database_url(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL"):
        open_store(url)


def test_a_refused_url_is_not_echoed_with_its_password() -> None:
    with pytest.raises(ValueError) as refused:
        open_store("mysql://root:hunter2@db/fleet")
    assert "hunter2" not in str(refused.value)


async def test_the_store_is_returned_unopened() -> None:
    store = open_store("sqlite:///:memory:")
    with pytest.raises(RuntimeError, match="open"):
        await store.get_task("t-aaaaa")


async def test_an_in_memory_sqlite_store_keeps_tasks_while_open() -> None:
    store = open_store("sqlite:///:memory:")
    await store.open()
    try:
        task = await store.create_task(make_task())
        assert await store.list_tasks([TaskState.PENDING]) == [task]
    finally:
        await store.close()
