"""Throwaway PostgreSQL databases for tests against the real server.

Two ways in:

- `pg_url`, a pytest fixture: the URL of an empty database of this pytest process's own. One
  uniquely named database is created per process on first use and dropped at the end of the
  session; between tests its `public` schema is dropped and made anew (and any connection left on
  it closed), so each test starts from an empty database, as if just created, at a fraction of
  CREATE DATABASE's cost. Use it in a conftest with
  `from tests.pg import pg_session_database, pg_url  # noqa: F401`.
- `fresh_pg_database()`, an async context manager: a brand-new database for the block (or
  `await create_database_or_fail()` ... `await drop_database(url)`).

      async with fresh_pg_database() as url:  # postgresql://postgres@127.0.0.1:5432/fg_test_...
          store = open_store(url)

Database names hold the process id and a random part, so several pytest processes can run at
once. The server is found at FLEETGRAM_TEST_PG_ADMIN_URL (a URL of a database from which the
user may create databases), by default postgresql://postgres@127.0.0.1:5432/postgres. When it
cannot be reached, the tests that need it fail with a message saying so: they are never skipped
(CI starts Postgres).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

ADMIN_URL_ENV = "FLEETGRAM_TEST_PG_ADMIN_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class PostgresUnavailableError(RuntimeError):
    """The test server cannot be reached."""


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL


def database_url(name: str) -> str:
    """The admin URL with its database replaced by `name`."""
    return urlsplit(admin_url())._replace(path="/" + name).geturl()


def _database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        raise PostgresUnavailableError(
            f"PostgreSQL is not reachable at {url} ({str(error).strip()}). These tests need the "
            f"real server: start it (CI's .ci/run does) or point {ADMIN_URL_ENV} at one."
        ) from error


def create_database_now(prefix: str = "fg_test") -> str:
    """Create an empty database with a unique name; its URL. (Blocking.)"""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    with _connect(admin_url()) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(name)


def drop_database_now(url: str) -> None:
    """Drop the database of `url`, closing whatever connections are still on it. (Blocking.)"""
    with _connect(admin_url()) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(_database_name(url))
            )
        )


def empty_database_now(url: str) -> None:
    """Make the database of `url` as empty as a new one: close the connections left on it, then
    drop its public schema with everything in it and create it again. (Blocking.)"""
    with _connect(admin_url()) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (_database_name(url),),
        )
    with _connect(url) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


async def create_database(prefix: str = "fg_test") -> str:
    """Create an empty database with a unique name; its URL."""
    return await asyncio.to_thread(create_database_now, prefix)


async def create_database_or_fail(prefix: str = "fg_test") -> str:
    """create_database, failing the running test with a clear message if there is no server."""
    try:
        return await create_database(prefix)
    except PostgresUnavailableError as error:
        pytest.fail(str(error), pytrace=False)


async def drop_database(url: str) -> None:
    """Drop the database of `url`, closing whatever connections are still on it."""
    await asyncio.to_thread(drop_database_now, url)


@asynccontextmanager
async def fresh_pg_database(prefix: str = "fg_test") -> AsyncIterator[str]:
    """A brand-new empty database for the duration of the block; its URL."""
    url = await create_database(prefix)
    try:
        yield url
    finally:
        await drop_database(url)


class SessionDatabase:
    """The one throwaway database of a pytest process, emptied for each test."""

    def __init__(self) -> None:
        self._url: str | None = None
        self._used = False
        self._unavailable: str | None = None

    def empty(self) -> str:
        """The URL of the database, empty; fails the running test if there is no server."""
        if self._unavailable is not None:
            pytest.fail(self._unavailable, pytrace=False)
        try:
            if self._url is None:
                self._url = create_database_now()
            elif self._used:
                empty_database_now(self._url)
        except PostgresUnavailableError as error:
            self._unavailable = str(error)
            pytest.fail(self._unavailable, pytrace=False)
        self._used = True
        return self._url

    def drop(self) -> None:
        if self._url is not None:
            drop_database_now(self._url)
            self._url = None


@pytest.fixture(scope="session")
def pg_session_database() -> Iterator[SessionDatabase]:
    database = SessionDatabase()
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture
def pg_url(pg_session_database: SessionDatabase) -> str:
    """The URL of an empty database for this test (see the module's docstring)."""
    return pg_session_database.empty()
