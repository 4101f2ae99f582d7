from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import World, emulated_world
from tests.pg import create_database_or_fail, drop_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fleet.sqlite3'}"
        return
    url = await create_database_or_fail("fg_e2e")
    try:
        yield url
    finally:
        await drop_database(url)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with emulated_world(database_url) as world:
        yield world
