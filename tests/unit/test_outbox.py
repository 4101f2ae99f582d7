"""The outbox's delivery decisions (pure) and its loop against a fake store and bot."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from telegram.error import (
    BadRequest,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from fleetgram.domain import Event
from fleetgram.master.outbox import Outbox, Outgoing
from fleetgram.telegram.delivery import Action, backoff, decide

from .factories import T0


def caused(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


# --- decide -----------------------------------------------------------------------------------


def test_an_accepted_send_is_delivered():
    assert decide(None, failures=0, html=True, now=0.0).action is Action.DELIVERED


def test_a_429_waits_as_long_as_telegram_says_however_long():
    verdict = decide(RetryAfter(80), failures=9, html=True, now=100.0)
    assert verdict.action is Action.WAIT and 180.0 <= verdict.until <= 181.0


def test_refused_html_is_resent_as_plain_text():
    error = BadRequest("Can't parse entities: unsupported start tag \"x\" at byte offset 3")
    assert decide(error, failures=1, html=True, now=0).action is Action.PLAIN
    assert decide(error, failures=1, html=False, now=0).action is Action.GIVE_UP


def test_a_blocked_bot_or_a_missing_chat_gives_up():
    assert decide(Forbidden("bot was blocked by the user"), failures=1, html=True,
                  now=0).action is Action.GIVE_UP
    assert decide(BadRequest("Chat not found"), failures=1, html=True,
                  now=0).action is Action.GIVE_UP


def test_a_bad_gateway_page_is_retried_with_growing_backoff():
    error = caused(NetworkError("Bad Gateway (502). Parsing the server response b'<html>' "
                                "failed"), TelegramError("Invalid server response"))
    first = decide(error, failures=1, html=True, now=0.0)
    fifth = decide(error, failures=5, html=True, now=0.0)
    assert first.action is Action.WAIT and fifth.action is Action.WAIT
    assert first.until == backoff(1) < fifth.until == backoff(5) <= 30.0


def test_a_json_bad_gateway_answer_is_retried_not_counted_as_ambiguous():
    assert decide(NetworkError("Bad Gateway"), failures=1, html=True,
                  now=0).action is Action.WAIT


def test_a_connection_that_never_opened_is_retried():
    error = caused(NetworkError("httpx.ConnectError: All connection attempts failed"),
                   httpx.ConnectError("refused"))
    assert decide(error, failures=1, html=True, now=0).action is Action.WAIT
    pool = caused(TimedOut("Pool timeout"), httpx.PoolTimeout("pool"))
    assert decide(pool, failures=1, html=True, now=0).action is Action.WAIT


@pytest.mark.parametrize("error", [
    caused(NetworkError("httpx.RemoteProtocolError: Server disconnected without sending a "
                        "response."), httpx.RemoteProtocolError("disconnected")),
    caused(NetworkError("httpx.ReadError: "), httpx.ReadError("reset")),
    caused(TimedOut("Timed out"), httpx.ReadTimeout("read")),
    TelegramError("Invalid server response"),
])
def test_a_send_that_may_have_been_shown_is_ambiguous(error):
    assert decide(error, failures=1, html=True, now=0).action is Action.AMBIGUOUS


# --- the loop ---------------------------------------------------------------------------------


class FakeStore:
    def __init__(self, events: list[Event]) -> None:
        self.events = {e.id: e for e in events}
        self.delivered: list[int] = []
        self.ambiguous: dict[int, int] = {}

    async def pending_events(self, limit: int = 50) -> list[Event]:
        return [e for i, e in sorted(self.events.items()) if i not in self.delivered][:limit]

    async def mark_event_delivered(self, event_id: int) -> None:
        self.delivered.append(event_id)

    async def record_ambiguous_send(self, event_id: int) -> int:
        self.ambiguous[event_id] = self.ambiguous.get(event_id, 0) + 1
        return self.ambiguous[event_id]


class FakeBot:
    """Fails sends per chat as scripted; records what each chat was shown."""

    def __init__(self) -> None:
        self.shown: dict[int, list[str]] = {}
        self.script: dict[int, list[BaseException]] = {}

    async def initialize(self) -> None:
        return None

    async def send_message(self, chat_id: int, text: str, **_: Any) -> None:
        failures = self.script.get(chat_id)
        if failures:
            error = failures.pop(0)
            if isinstance(error, NetworkError) and "disconnected" in str(error):
                self.shown.setdefault(chat_id, []).append(text)  # processed, reply lost
            raise error
        self.shown.setdefault(chat_id, []).append(text)


def ev(event_id: int, chat_id: int, text: str) -> Event:
    return Event(event_id, "note", None, chat_id, {"text": text}, T0)


async def compose(event: Event) -> list[Outgoing]:
    return [Outgoing(event.payload["text"], event.payload["text"])]


async def route(event: Event) -> int | None:
    return event.chat_id


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def outbox(store: FakeStore, bot: FakeBot, clock: Clock) -> Outbox:
    return Outbox(store, bot, compose, route, poll_interval=0.05, clock=clock)  # type: ignore[arg-type]


async def test_a_chat_under_a_429_storm_waits_while_another_chat_is_served_in_order():
    store = FakeStore([ev(1, 10, "a1"), ev(2, 20, "b1"), ev(3, 10, "a2"), ev(4, 20, "b2")])
    bot, clock = FakeBot(), Clock()
    bot.script[10] = [RetryAfter(80)]
    box = outbox(store, bot, clock)
    await box.deliver_once()
    assert bot.shown == {20: ["b1", "b2"]}  # chat 10 held back, chat 20 not
    clock.now = 50.0
    await box.deliver_once()
    assert 10 not in bot.shown  # still inside the 80 s
    clock.now = 81.0
    await box.deliver_once()
    assert bot.shown[10] == ["a1", "a2"]  # in order, once each
    assert sorted(store.delivered) == [1, 2, 3, 4]


async def test_a_notice_whose_reply_is_lost_twice_is_shown_at_most_twice():
    store = FakeStore([ev(1, 10, "started")])
    bot, clock = FakeBot(), Clock()
    lost = NetworkError("httpx.RemoteProtocolError: Server disconnected")
    lost.__cause__ = httpx.RemoteProtocolError("disconnected")
    bot.script[10] = [lost, lost, lost]
    box = outbox(store, bot, clock)
    for _ in range(5):
        clock.now += 60.0
        await box.deliver_once()
    assert bot.shown[10] == ["started", "started"]
    assert store.delivered == [1] and store.ambiguous == {1: 2}


async def test_nothing_is_marked_delivered_while_telegram_keeps_failing():
    store = FakeStore([ev(1, 10, "done")])
    bot, clock = FakeBot(), Clock()
    bot.script[10] = [NetworkError("Bad Gateway")] * 8
    box = outbox(store, bot, clock)
    for _ in range(8):
        clock.now += 60.0
        await box.deliver_once()
        assert store.delivered == [] and 10 not in bot.shown
    clock.now += 60.0
    await box.deliver_once()
    assert bot.shown[10] == ["done"] and store.delivered == [1]


async def test_a_notice_that_is_not_ready_holds_back_later_notices_of_its_chat_only():
    store = FakeStore([ev(1, 10, "receipt"), ev(2, 10, "started"), ev(3, 20, "other")])
    bot, clock = FakeBot(), Clock()
    ready = asyncio.Event()

    async def slow_compose(event: Event) -> list[Outgoing] | None:
        if event.id == 1 and not ready.is_set():
            return None
        return await compose(event)

    box = Outbox(store, bot, slow_compose, route, poll_interval=0.05, clock=clock)  # type: ignore[arg-type]
    await box.deliver_once()
    assert bot.shown == {20: ["other"]}
    ready.set()
    await box.deliver_once()
    assert bot.shown[10] == ["receipt", "started"]
