"""Waking a stopped worker: which slots are peeked at, and whose waiting message counts."""

from __future__ import annotations

import logging

import pytest
from telegram.error import InvalidToken, NetworkError

from fleetgram.config import load_settings
from fleetgram.domain import WorkerSlot, WorkerState
from fleetgram.wakeup import StoppedChatWatcher, peekable, someone_allowed_waits, someone_waits

ADA, BOB, MALLORY = 1111, 2222, 6666
ALLOWED = frozenset({ADA, BOB})
TOKEN5 = "2005:worker5-token-abcdef"


class FakePeeker:
    def __init__(self, waiting: dict[str, list[int | None]] | None = None,
                 error: Exception | None = None) -> None:
        self.waiting = waiting or {}
        self.error = error
        self.asked: list[str] = []

    async def senders(self, token: str) -> list[int | None]:
        self.asked.append(token)
        if self.error is not None:
            raise self.error
        return self.waiting.get(token, [])

    async def close(self) -> None:
        return None


def test_only_stopped_slots_are_peeked_at():
    slots = [
        WorkerSlot("worker1", enabled=True),
        WorkerSlot("worker2", enabled=True),
        WorkerSlot("worker3", error="token refused by Telegram"),
        WorkerSlot("worker4"),
        WorkerSlot("worker5"),
    ]
    states = {
        "worker1": WorkerState.IDLE, "worker2": WorkerState.STARTING,
        "worker3": WorkerState.ERROR, "worker4": WorkerState.STOPPED,
        "worker5": WorkerState.STOPPED,
    }
    assert peekable(slots, states) == ["worker4", "worker5"]


def test_an_allowed_users_message_counts():
    assert someone_allowed_waits([MALLORY, ADA], ALLOWED)


def test_strangers_and_senderless_updates_do_not_count():
    assert not someone_allowed_waits([MALLORY, None], ALLOWED)
    assert not someone_allowed_waits([], ALLOWED)


async def test_a_waiting_message_from_ada_wants_the_slot():
    peeker = FakePeeker({TOKEN5: [ADA]})
    assert await someone_waits(peeker, "worker5", TOKEN5, ALLOWED)
    assert peeker.asked == [TOKEN5]


@pytest.mark.parametrize("error", [
    InvalidToken(f"The token `{TOKEN5}` was rejected by the server."),
    NetworkError("Bad Gateway"),
])
async def test_a_failed_peek_wants_nothing_and_never_logs_the_token(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assert not await someone_waits(FakePeeker(error=error), "worker5", TOKEN5, ALLOWED)
    assert "worker5-token" not in caplog.text
    assert any(getattr(r, "worker", None) == "worker5" for r in caplog.records)


async def test_the_single_host_watcher_peeks_with_the_slots_own_token():
    settings = load_settings({
        "MASTER_BOT_TOKEN": "1000:master-token-abcdef",
        "WORKER_TOKEN_POOL": f"2001:worker1-token-abcdef,{TOKEN5}",
        "ALLOWED_USER_IDS": str(ADA),
        "ANTHROPIC_API_KEY": "sk-ant-test",
    }, dotenv=None)
    peeker = FakePeeker({TOKEN5: [ADA]})
    watcher = StoppedChatWatcher(settings, peeker)
    assert await watcher.someone_waits("worker2")
    assert not await watcher.someone_waits("worker1")
    assert peeker.asked == [TOKEN5, "2001:worker1-token-abcdef"]
