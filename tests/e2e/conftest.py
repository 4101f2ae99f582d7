from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram.emulators.claude_api import ClaudeEmulator
from fleetgram.emulators.telegram_api import TelegramEmulator
from tests.e2e.harness import ADA, MALLORY, World, add_bots
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
    # Generous chat limits: tests of the limits themselves set their own.
    telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = ClaudeEmulator(api_key="sk-ant-test-key-0001", tokens_per_second=400.0)
    await telegram.start()
    await claude.start()
    add_bots(telegram)
    world = World(
        telegram, claude, database_url, telegram.add_user(ADA, "Ada", "ada"),
        telegram.add_user(MALLORY, "Mallory", "mallory"),
    )
    try:
        yield world
    finally:
        await claude.stop()
        await telegram.stop()
