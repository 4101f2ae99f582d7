"""`fleetgram worker --slot workerN` for a slot added with /addworker: the separate worker
process finds the slot's token among the stored (encrypted) ones, as `fleetgram up` does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleetgram import cli, tokens
from fleetgram.checks import StartupError
from fleetgram.config import ConfigError, Settings, load_settings
from fleetgram.store import open_store

KEY = "ZmxlZXRncmFtLXRlc3Qta2V5LTAxMjM0NTY3ODlhYmM="
ADDED = "777777:added-with-addworker"


def settings(tmp_path: Path, **overrides: str) -> Settings:
    env = {"WORKER_TOKEN_POOL": "123456:pool-worker-one", "ALLOWED_USER_IDS": "42",
           "ANTHROPIC_API_KEY": "sk-ant-test-key",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'fleet.sqlite3'}", **overrides}
    return load_settings(env, dotenv=None, need_master=False)


async def store_added_token(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'fleet.sqlite3'}")
    await store.open()
    try:
        await store.add_managed_token("worker2", 7777, "x_bot",
                                      tokens.TokenCipher(KEY).encrypt(ADDED))
    finally:
        await store.close()


def test_a_slot_added_with_addworker_runs_as_a_separate_worker(tmp_path: Path) -> None:
    asyncio.run(store_added_token(tmp_path))
    given = settings(tmp_path, TOKEN_ENCRYPTION_KEY=KEY)
    worker = cli._worker(given, "", "worker2")
    assert worker.bot.slot == "worker2"
    assert given.token_for("worker2") == ADDED


def test_without_the_key_the_separate_worker_refuses_naming_it(tmp_path: Path) -> None:
    asyncio.run(store_added_token(tmp_path))
    with pytest.raises(StartupError, match="TOKEN_ENCRYPTION_KEY"):
        cli._worker(settings(tmp_path), "", "worker2")


def test_an_unknown_slot_is_still_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="worker9"):
        cli._worker(settings(tmp_path), "", "worker9")
