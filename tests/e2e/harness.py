"""The end-to-end harness: the real fleet against emulated Telegram and Claude over HTTP.

Bots: the master is @fleet_master_bot; worker slot N is @fleet_workerN_bot. The user Ada
(id 1111) is allowed; Mallory (id 6666) is not.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fleetgram.config import Settings, load_settings
from fleetgram.domain import Task, TaskState
from fleetgram.emulators.claude_api import ClaudeEmulator
from fleetgram.emulators.telegram_api import SimUser, TelegramEmulator
from fleetgram.fleet import Fleet
from fleetgram.store import open_store

MASTER = "fleet_master_bot"
MASTER_TOKEN = "1000:master-token-abcdef"
ADA = 1111
MALLORY = 6666
API_KEY = "sk-ant-test-key-0001"


def worker_bot(n: int) -> str:
    return f"fleet_worker{n}_bot"


def worker_token(n: int) -> str:
    return f"{2000 + n}:worker{n}-token-abcdef"


def fleet_env(telegram: TelegramEmulator, claude: ClaudeEmulator, database_url: str,
              workers: int = 5, **overrides: Any) -> dict[str, str]:
    env = {
        "MASTER_BOT_TOKEN": MASTER_TOKEN,
        "WORKER_TOKEN_POOL": ",".join(worker_token(n) for n in range(1, workers + 1)),
        "ALLOWED_USER_IDS": str(ADA),
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": claude.url,
        "TELEGRAM_API_URL": telegram.url,
        "DATABASE_URL": database_url,
        "CLAUDE_MODEL": "claude-sonnet-5-5",
        "CLAUDE_MAX_RETRIES": "3",
        "CLAUDE_TIMEOUT": "20",
        "MIN_WORKERS": "1",
        "MAX_WORKERS": "5",
        "SCALE_UP_THRESHOLD": "3",
        "SCALE_DOWN_DELAY": "60",
        "POLL_INTERVAL": "0.05",
        "STREAM_EDIT_INTERVAL": "0.2",
        "HEARTBEAT_INTERVAL": "0.2",
        "WORKER_LEASE_SECONDS": "3",
        "HEALTH_PORT": "0",  # tests run in parallel: a fixed port would be shared
    }
    env.update({k: str(v) for k, v in overrides.items()})
    return env


@dataclass
class World:
    telegram: TelegramEmulator
    claude: ClaudeEmulator
    database_url: str
    ada: SimUser
    mallory: SimUser

    def settings(self, workers: int = 5, **overrides: Any) -> Settings:
        env = fleet_env(self.telegram, self.claude, self.database_url, workers, **overrides)
        return load_settings(env, dotenv=None)

    @asynccontextmanager
    async def fleet(self, workers: int = 5, **overrides: Any) -> AsyncIterator[Fleet]:
        fleet = Fleet(self.settings(workers, **overrides))
        await fleet.start()
        try:
            yield fleet
        finally:
            await fleet.stop()

    async def prompt(self, text: str, timeout: float = 10.0) -> str:
        """Ada sends `text` to the master; the task id from its receipt."""
        await self.ada.send(MASTER, text)
        title = text.split(" ", 1)[1] if text.startswith(("!", "@", "/urgent")) else text
        receipt = await self.ada.wait_for(
            MASTER, lambda m: m.from_bot and "🆕" in m.text and title[:40] in m.text, timeout
        )
        return task_id_in(receipt.text)

    async def open_chats(self, user: SimUser, workers: int = 5) -> None:
        """The user presses Start in the master's chat, and opened every worker's chat earlier
        (a /start waiting in a stopped worker's chat would wake that worker)."""
        await user.start(MASTER)
        for n in range(1, workers + 1):
            user.opened_earlier(worker_bot(n))


def add_bots(telegram: TelegramEmulator, workers: int = 5) -> None:
    telegram.add_bot(MASTER_TOKEN, MASTER, "Claude Master")
    for n in range(1, workers + 1):
        telegram.add_bot(worker_token(n), worker_bot(n), f"Claude Worker {n}")


@asynccontextmanager
async def emulated_world(database_url: str) -> AsyncIterator[World]:
    """The Telegram and Claude emulators running, five worker bots, Ada (allowed) and Mallory
    (not), on `database_url`. Generous chat limits: tests of the limits set their own."""
    telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = ClaudeEmulator(api_key=API_KEY, tokens_per_second=400.0)
    await telegram.start()
    await claude.start()
    add_bots(telegram)
    try:
        yield World(telegram, claude, database_url, telegram.add_user(ADA, "Ada", "ada"),
                    telegram.add_user(MALLORY, "Mallory", "mallory"))
    finally:
        await claude.stop()
        await telegram.stop()


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0,
                     message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.05)


async def wait_task(fleet: Fleet, task_id: str, state: TaskState, timeout: float = 10.0) -> Task:
    async def check() -> Task | None:
        task = await fleet.store.get_task(task_id)
        return task if task is not None and task.state == state else None

    return await wait_until(check, timeout, f"{task_id} to be {state.value}")


def task_id_in(text: str) -> str:
    import re

    match = re.search(r"\bt-[a-z0-9]{5}\b", text)
    assert match, f"no task id in {text!r}"
    return match.group(0)


__all__ = ["open_store"]
