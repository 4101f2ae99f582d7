"""The emulator's sendMessageDraft, checked through the real python-telegram-bot: what the user's
client shows, and the answers a bot gets (https://core.telegram.org/bots/api#sendmessagedraft)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter

from fleetgram.emulators.telegram_api import THINKING, SimUser, TelegramEmulator

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

TOKEN = "123457:draft-token"
BOT = "drafts_bot"
USER_ID = 4242
GROUP_ID = -5005


@asynccontextmanager
async def world(**options: float | int | bool) -> AsyncIterator[
    tuple[TelegramEmulator, Bot, SimUser]
]:
    emu = TelegramEmulator(**options)  # type: ignore[arg-type]
    await emu.start()
    try:
        emu.add_bot(TOKEN, BOT)
        user = emu.add_user(USER_ID)
        await user.start(BOT)
        async with Bot(TOKEN, base_url=f"{emu.url}/bot") as bot:
            yield emu, bot, user
    finally:
        await emu.stop()


async def test_a_draft_is_shown_below_the_chat_and_is_no_message() -> None:
    async with world() as (_emu, bot, user):
        assert await bot.send_message_draft(USER_ID, 7, "half an answer") is True
        assert user.visible_draft(BOT) == "half an answer"
        assert [m.text for m in user.chat(BOT) if m.from_bot] == []


async def test_an_empty_draft_shows_thinking() -> None:
    async with world() as (_emu, bot, user):
        await bot.send_message_draft(USER_ID, 7, "")
        assert user.visible_draft(BOT) == THINKING
        await bot.send_message_draft(USER_ID, 7, "<b> </b>", parse_mode=ParseMode.HTML)
        assert user.visible_draft(BOT) == THINKING


async def test_a_draft_with_another_id_replaces_the_shown_one() -> None:
    async with world() as (_emu, bot, user):
        await bot.send_message_draft(USER_ID, 1, "first")
        await bot.send_message_draft(USER_ID, 2, "second")
        assert user.visible_draft(BOT) == "second"
        assert [(d.draft_id, d.text) for d in user.draft_log(BOT)] == [(1, "first"), (2, "second")]


async def test_a_message_from_the_bot_clears_the_draft() -> None:
    async with world() as (_emu, bot, user):
        await bot.send_message_draft(USER_ID, 1, "streaming")
        await bot.send_message(USER_ID, "the answer")
        assert user.visible_draft(BOT) is None


async def test_the_users_own_message_leaves_the_draft() -> None:
    async with world() as (_emu, bot, user):
        await bot.send_message_draft(USER_ID, 1, "streaming")
        await user.send(BOT, "hurry up")
        assert user.visible_draft(BOT) == "streaming"


async def test_a_draft_expires_after_its_last_write() -> None:
    async with world(draft_ttl=0.2) as (_emu, bot, user):
        await bot.send_message_draft(USER_ID, 1, "streaming")
        assert user.visible_draft(BOT) == "streaming"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while user.visible_draft(BOT) is not None:
            assert loop.time() < deadline, "the draft never expired"
            await asyncio.sleep(0.02)
        await bot.send_message_draft(USER_ID, 1, "streaming again")
        assert user.visible_draft(BOT) == "streaming again"


async def test_html_is_parsed_as_for_messages() -> None:
    async with world() as (_emu, bot, user):
        await bot.send_message_draft(USER_ID, 1, "<b>bold</b> &amp; plain",
                                     parse_mode=ParseMode.HTML)
        assert user.visible_draft(BOT) == "bold & plain"
        assert user.draft_log(BOT)[-1].entities == [{"type": "bold", "offset": 0, "length": 4}]


async def test_html_that_cannot_be_parsed_is_refused() -> None:
    async with world() as (_emu, bot, _user):
        with pytest.raises(BadRequest, match=r"(?i)can.t parse entities"):
            await bot.send_message_draft(USER_ID, 1, "<b>open", parse_mode=ParseMode.HTML)


async def test_text_over_4096_characters_is_refused() -> None:
    async with world() as (_emu, bot, user):
        await bot.send_message_draft(USER_ID, 1, "x" * 4096)
        with pytest.raises(BadRequest, match=r"(?i)message is too long"):
            await bot.send_message_draft(USER_ID, 1, "x" * 4097)
        assert user.visible_draft(BOT) == "x" * 4096


async def test_draft_id_zero_is_refused() -> None:
    async with world() as (_emu, bot, _user):
        with pytest.raises(BadRequest, match=r"(?i)random_id_invalid"):
            await bot.send_message_draft(USER_ID, 0, "text")


async def test_a_group_is_refused() -> None:
    async with world() as (_emu, bot, user):
        await user.send_in_group(BOT, GROUP_ID, "hi")
        with pytest.raises(BadRequest, match=r"(?i)textdraft_peer_invalid"):
            await bot.send_message_draft(GROUP_ID, 1, "text")


async def test_a_user_who_never_opened_the_bot_is_forbidden() -> None:
    async with world() as (emu, bot, _user):
        emu.add_user(999)
        with pytest.raises(Forbidden):
            await bot.send_message_draft(999, 1, "text")


async def test_drafts_past_the_allowance_get_429_while_messages_still_go() -> None:
    async with world(draft_rate=1.0, draft_burst=2) as (_emu, bot, user):
        await bot.send_message_draft(USER_ID, 1, "a")
        await bot.send_message_draft(USER_ID, 1, "ab")
        with pytest.raises(RetryAfter):
            await bot.send_message_draft(USER_ID, 1, "abc")
        await bot.send_message(USER_ID, "abc")  # the message allowance is apart
        assert user.visible_draft(BOT) is None


async def test_drafts_do_not_use_the_message_allowance() -> None:
    async with world(chat_burst=1, chat_rate=1.0) as (_emu, bot, user):
        for length in range(1, 6):
            await bot.send_message_draft(USER_ID, 1, "x" * length)
        await bot.send_message(USER_ID, "done")
        assert [m.text for m in user.chat(BOT) if m.from_bot] == ["done"]


async def test_a_server_without_drafts_answers_not_found() -> None:
    async with world(drafts_supported=False) as (_emu, bot, user):
        with pytest.raises(InvalidToken, match="Not Found"):
            await bot.send_message_draft(USER_ID, 1, "text")
        assert user.visible_draft(BOT) is None


async def test_a_flood_window_covers_drafts() -> None:
    async with world() as (emu, bot, _user):
        emu.flood(BOT, 2.0, methods=["sendMessageDraft"])
        with pytest.raises(RetryAfter):
            await bot.send_message_draft(USER_ID, 1, "text")
