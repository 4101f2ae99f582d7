from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import ADA, MALLORY, World, add_bots
from tests.emulators import kube_api
from tests.emulators.claude_api import ClaudeEmulator
from tests.emulators.telegram_api import TelegramEmulator
from tests.pg import create_database_or_fail, drop_database

kube_emulator = kube_api.kube_emulator  # the fixture


@pytest.fixture
async def world() -> AsyncIterator[World]:
    telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = ClaudeEmulator(api_key="sk-ant-test-key-0001", tokens_per_second=400.0)
    await telegram.start()
    await claude.start()
    add_bots(telegram, 5)
    url = await create_database_or_fail("fg_cluster")
    world = World(telegram, claude, url, telegram.add_user(ADA, "Ada", "ada"),
                  telegram.add_user(MALLORY, "Mallory"))
    try:
        yield world
    finally:
        await claude.stop()
        await telegram.stop()
        await drop_database(url)
