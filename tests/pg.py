"""Throwaway PostgreSQL databases for tests against the real server.

Each test gets a database of its own, with a unique name, created through the server's
`postgres` database and dropped afterwards; tests are isolated from one another and several
pytest processes can run at once.

    async with fresh_pg_database() as url:      # "postgresql://postgres@127.0.0.1:5432/fg_..."
        store = open_store(url)

or, in a conftest: `from tests.pg import pg_url  # noqa: F401` and ask for the `pg_url` fixture.

The server is found at FLEETGRAM_TEST_PG_ADMIN_URL (a URL to a database the user may create
databases from), by default postgresql://postgres@127.0.0.1:5432/postgres. When it cannot be
reached the test FAILS with a message saying so; it is never skipped (CI starts Postgres).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
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


async def _admin() -> psycopg.AsyncConnection[tuple[object, ...]]:
    url = admin_url()
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        raise PostgresUnavailableError(
            f"PostgreSQL is not reachable at {url} ({error}). These tests need the real server: "
            f"start it (CI's .ci/run does) or point {ADMIN_URL_ENV} at one."
        ) from error


async def create_database(prefix: str = "fg_test") -> str:
    """Create an empty database with a unique name; its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    async with await _admin() as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(name)


async def drop_database(url: str) -> None:
    """Drop the database of `url`, closing whatever connections are still on it."""
    name = urlsplit(url).path.lstrip("/")
    async with await _admin() as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@asynccontextmanager
async def fresh_pg_database(prefix: str = "fg_test") -> AsyncIterator[str]:
    """A new empty database for the duration of the block; its URL."""
    url = await create_database(prefix)
    try:
        yield url
    finally:
        await drop_database(url)


async def create_database_or_fail(prefix: str = "fg_test") -> str:
    """create_database, failing the running test with a clear message if there is no server."""
    try:
        return await create_database(prefix)
    except PostgresUnavailableError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """The URL of a fresh, empty database, dropped after the test; fails if no server."""
    url = await create_database_or_fail()
    try:
        yield url
    finally:
        await drop_database(url)
