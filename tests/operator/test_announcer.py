"""The operator's announcements reach the outbox in order whatever the database does, and never
hold a round up for long (operator/announcer.py)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from fleetgram.operator.announcer import Announcer


@dataclass
class Note:
    task_id: str
    kind: str = "requeued"
    chat_id: int | None = 42
    payload: dict[str, Any] = field(default_factory=dict)


class FlakyOutbox:
    """An outbox whose database is up, down (refuses) or hung (never answers)."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.state = "up"
        self.tries = 0
        self.tried = asyncio.Event()  # set on each try

    async def add_event(self, kind: str, payload: dict[str, Any], *, task_id: str | None = None,
                        chat_id: int | None = None) -> None:
        self.tries += 1
        self.tried.set()
        if self.state == "down":
            raise OSError("connection refused")
        if self.state == "hung":
            await asyncio.Event().wait()
        self.written.append(str(task_id))


def announcer(outbox: FlakyOutbox, **kw: Any) -> Announcer:
    return Announcer(outbox, **{"wait": 0.2, "write_timeout": 0.2, "retry_first": 0.01,
                                "retry_max": 0.05, **kw})


async def test_with_the_database_up_an_announcement_is_written_before_the_round_goes_on() -> None:
    outbox = FlakyOutbox()
    await announcer(outbox).announce(Note("t-1"))
    assert outbox.written == ["t-1"]


async def test_with_the_database_down_the_round_goes_on_and_they_are_written_later_in_order(
) -> None:
    outbox = FlakyOutbox()
    outbox.state = "down"
    notes = announcer(outbox)
    await notes.announce(Note("t-1"))
    await notes.announce(Note("t-2"))
    assert outbox.written == [] and notes.waiting == 2
    outbox.state = "up"
    await notes.close(budget=5.0)
    assert outbox.written == ["t-1", "t-2"]


async def test_a_database_that_never_answers_holds_a_round_up_by_the_wait_only() -> None:
    outbox = FlakyOutbox()
    outbox.state = "hung"
    notes = announcer(outbox, wait=0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await notes.announce(Note("t-1"))
    assert loop.time() - started < 1.0  # not the write's own timeout, nor forever
    outbox.state = "up"
    await notes.close(budget=5.0)  # the hung write timed out and was tried again
    assert outbox.written == ["t-1"]


async def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    outbox = FlakyOutbox()
    outbox.state = "down"
    notes = announcer(outbox)
    with caplog.at_level(logging.INFO, logger="fleetgram.operator.announcer"):
        await notes.announce(Note("t-1"))
        while outbox.tries < 4:  # several failed tries
            outbox.tried.clear()
            await asyncio.wait_for(outbox.tried.wait(), 5.0)
        outbox.state = "up"
        await notes.close(budget=5.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["announcements wait for the database", "announcements are written again"]


async def test_past_the_limit_the_oldest_is_dropped_and_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = FlakyOutbox()
    outbox.state = "down"
    notes = announcer(outbox, limit=2, wait=0.0)
    for n in (1, 2, 3):
        await notes.announce(Note(f"t-{n}"))
    assert any("dropped" in r.getMessage() for r in caplog.records)
    outbox.state = "up"
    await notes.close(budget=5.0)
    assert outbox.written == ["t-2", "t-3"]


async def test_what_cannot_be_written_by_shutdown_is_named_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = FlakyOutbox()
    outbox.state = "down"
    notes = announcer(outbox, wait=0.0)
    await notes.announce(Note("t-lost"))
    await notes.close(budget=0.05)
    (record,) = [r for r in caplog.records if "not written at shutdown" in r.getMessage()]
    assert record.tasks == ["t-lost"]  # type: ignore[attr-defined]
