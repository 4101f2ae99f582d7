"""Strangers get one refusal each, and remembering them takes bounded memory."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from telegram import Chat, Message, Update, User
from telegram.ext import ApplicationBuilder, ApplicationHandlerStop

from fleetgram.telegram import app as app_module
from fleetgram.telegram.app import REFUSAL, RecentIds, install_allowlist

OWNER = 42


def test_recent_ids_remember_what_they_saw():
    ids = RecentIds(3)
    assert ids.seen(1) is False
    assert ids.seen(1) is True
    assert 1 in ids and 2 not in ids


def test_recent_ids_forget_the_least_recently_seen_beyond_capacity():
    ids = RecentIds(3)
    for n in (1, 2, 3):
        ids.seen(n)
    ids.seen(1)  # 1 is now the most recent; 2 the least
    ids.seen(4)
    assert len(ids) == 3
    assert 2 not in ids and all(n in ids for n in (1, 3, 4))


def test_recent_ids_need_room_for_one():
    with pytest.raises(ValueError):
        RecentIds(0)


def test_the_default_refusal_memory_is_ten_thousand_strangers():
    assert app_module.REFUSED_MEMORY == 10_000


class FakeBot:
    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    async def send_message(self, chat_id: int, text: str) -> None:
        self.sent.append((chat_id, text))


def message_from(user_id: int, update_id: int) -> Update:
    user = User(user_id, "someone", False)
    chat = Chat(user_id, Chat.PRIVATE)
    msg = Message(update_id, datetime.now(UTC), chat, from_user=user, text="hi")
    return Update(update_id, message=msg)


async def _gate(memory: int, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(app_module, "REFUSED_MEMORY", memory)
    application = ApplicationBuilder().token("1:fake-token-abcdef").build()
    install_allowlist(application, frozenset({OWNER}))
    handler = application.handlers[-1][0]
    bot = FakeBot()

    async def gate(update: Update) -> bool:
        """True if the update passed the gate."""
        try:
            await handler.callback(update, SimpleNamespace(bot=bot))
        except ApplicationHandlerStop:
            return False
        return True

    return gate, bot


async def test_a_stranger_is_refused_once_and_an_owner_passes(monkeypatch):
    gate, bot = await _gate(100, monkeypatch)
    assert await gate(message_from(OWNER, 1)) is True
    assert await gate(message_from(7, 2)) is False
    assert await gate(message_from(7, 3)) is False
    assert bot.sent == [(7, REFUSAL)]


async def test_the_refusal_memory_is_bounded_by_forgetting_the_oldest_stranger(monkeypatch):
    gate, bot = await _gate(3, monkeypatch)
    for n, stranger in enumerate((101, 102, 103, 104)):  # 101 falls out of memory
        await gate(message_from(stranger, n))
    await gate(message_from(104, 10))  # remembered: no second refusal
    await gate(message_from(101, 11))  # forgotten: refused again (one more line, bounded RAM)
    assert [chat for chat, _ in bot.sent] == [101, 102, 103, 104, 101]
