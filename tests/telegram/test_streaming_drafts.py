"""StreamingReply's native streaming (sendMessageDraft) against the Telegram Bot API emulator,
with the real python-telegram-bot: what the user's client shows while Claude writes, and the
permanent messages the reply leaves."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
import telegram

from fleetgram.emulators.telegram_api import THINKING, ChatMessage, SimUser, TelegramEmulator
from fleetgram.telegram.streaming import StreamingReply, drafts_refused, forget_draft_refusals
from tests.telegram.streaming_text import answer_of, stream

TOKEN = "700002:drafts-test-token"
BOT = "drafting_bot"
USER_ID = 4343
GROUP_ID = -4001
INTERVAL = 0.2
DRAFT_INTERVAL = 0.05

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


@pytest.fixture(autouse=True)
def _fresh_refusals() -> Iterator[None]:
    """Refused drafts are remembered per bot for the process: each test starts afresh."""
    forget_draft_refusals()
    yield
    forget_draft_refusals()


@contextlib.asynccontextmanager
async def chat(**emulator: float | int | bool) -> AsyncIterator[
    tuple[TelegramEmulator, telegram.Bot, SimUser]
]:
    """An emulator with one bot and one user who opened it; message flood control out of the
    way unless ``emulator`` says otherwise."""
    options: dict[str, float | int | bool] = {"chat_burst": 100, "chat_rate": 100.0}
    options.update(emulator)
    emu = TelegramEmulator(**options)  # type: ignore[arg-type]
    await emu.start()
    try:
        emu.add_bot(TOKEN, BOT)
        user = emu.add_user(USER_ID)
        await user.start(BOT)
        async with telegram.Bot(TOKEN, base_url=f"{emu.url}/bot") as bot:
            yield emu, bot, user
    finally:
        await emu.stop()


def reply_in(bot: telegram.Bot, chat_id: int = USER_ID, **options: object) -> StreamingReply:
    return StreamingReply(
        bot, chat_id, min_interval=INTERVAL, draft_interval=DRAFT_INTERVAL,
        **options,  # type: ignore[arg-type]
    )


def bot_messages(user: SimUser) -> list[ChatMessage]:
    return [m for m in user.chat(BOT) if m.from_bot]


# ----------------------------------------------------------------------------- private chats
async def test_start_shows_a_thinking_placeholder_and_no_message() -> None:
    async with chat() as (_emu, bot, user):
        reply = reply_in(bot)
        await reply.start()
        assert user.visible_draft(BOT) == THINKING
        assert bot_messages(user) == []
        assert reply.message_ids == []
        await reply.finish()


async def test_start_with_a_header_drafts_the_header() -> None:
    async with chat() as (_emu, bot, user):
        reply = reply_in(bot, header="t-7k2qf · Fix the tests")
        await reply.start()
        assert user.visible_draft(BOT) == "t-7k2qf · Fix the tests\n…"
        assert bot_messages(user) == []
        await reply.finish()


async def test_the_text_grows_in_a_draft_then_stays_as_one_message() -> None:
    async with chat() as (emu, bot, user):
        reply = reply_in(bot, header="Task")
        await reply.start()
        reply.append("first part")
        await user.wait_for_draft(BOT, lambda shown: "first part" in shown, timeout=3)
        reply.append(" and more")
        await user.wait_for_draft(BOT, lambda shown: "first part and more" in shown, timeout=3)
        assert bot_messages(user) == []
        ids = await reply.finish("done")
        assert [m.text for m in bot_messages(user)] == ["Task\nfirst part and more\n\ndone"]
        assert ids == [bot_messages(user)[0].message_id]
        assert user.visible_draft(BOT) is None  # the message replaced the draft
        assert emu.calls_to(BOT, "editMessageText") == []


async def test_the_first_text_is_drafted_without_waiting_for_the_interval() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL, draft_interval=60.0)
        await reply.start()
        reply.append("hello")
        await user.wait_for_draft(BOT, lambda shown: shown == "hello", timeout=3)
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["hello"]


async def test_drafts_are_the_draft_interval_apart() -> None:
    async with chat() as (emu, bot, _user):
        reply = reply_in(bot)
        await reply.start()
        await stream(reply, answer_of(3_000, seed=3))
        await reply.finish()
        texted = [c.at for c in emu.calls_to(BOT, "sendMessageDraft") if c.params.get("text")]
        gaps = [later - earlier for earlier, later in itertools.pairwise(texted[1:])]
        assert len(texted) > 3
        assert min(gaps) >= DRAFT_INTERVAL * 0.9  # the first text may follow the placeholder


async def test_a_long_answer_leaves_its_full_parts_as_messages_while_the_rest_is_drafted(
) -> None:
    answer = answer_of(10_000)
    async with chat() as (emu, bot, user):
        reply = reply_in(bot)
        await reply.start()
        await stream(reply, answer[:6_000])
        first = await user.wait_for(BOT, lambda m: m.from_bot, timeout=5)
        rest = await user.wait_for_draft(BOT, lambda shown: shown.endswith(answer[5_950:6_000]),
                                         timeout=5)
        assert answer.startswith(first.text)
        assert first.text not in rest  # the draft holds only what the message does not
        await stream(reply, answer[6_000:])
        ids = await reply.finish()
        shown = bot_messages(user)
        assert len(shown) == 3
        assert ids == [m.message_id for m in shown]
        assert "\n\n".join(m.text for m in shown) == answer
        assert emu.calls_to(BOT, "editMessageText") == []
        draft_ids = {c.params["draft_id"] for c in emu.calls_to(BOT, "sendMessageDraft")}
        assert len(draft_ids) >= 2  # one draft id per message-sized part


async def test_a_quiet_draft_stays_visible_until_the_text_goes_on() -> None:
    # The client drops a draft draft_ttl after its last write: 0.6 s here, 30 s on Telegram.
    async with chat(draft_ttl=0.6) as (_emu, bot, user):
        reply = reply_in(bot, draft_keepalive=0.3)
        await reply.start()
        reply.append("thinking about it")
        await user.wait_for_draft(BOT, lambda shown: shown == "thinking about it", timeout=3)
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + 2.0  # over three times the expiry without new text
        while loop.time() < quiet_until:
            assert user.visible_draft(BOT) == "thinking about it"
            await asyncio.sleep(0.02)
        reply.append(", done")
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["thinking about it, done"]


async def test_flood_control_on_a_draft_is_waited_out() -> None:
    async with chat() as (emu, bot, user):
        reply = reply_in(bot)
        await reply.start()
        emu.fail_next(BOT, "sendMessageDraft", 429, "Too Many Requests: retry after 1",
                      retry_after=1)
        reply.append("after the flood")
        await user.wait_for_draft(BOT, lambda shown: shown == "after the flood", timeout=5)
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["after the flood"]


async def test_the_emulators_draft_allowance_does_not_lose_text() -> None:
    answer = answer_of(3_000, seed=4)
    async with chat(draft_rate=2.0, draft_burst=1) as (_emu, bot, user):
        reply = reply_in(bot)
        await reply.start()
        await stream(reply, answer)
        await reply.finish()
        assert "\n\n".join(m.text for m in bot_messages(user)) == answer


async def test_html_telegram_cannot_parse_in_a_draft_is_drafted_as_plain_text() -> None:
    async with chat() as (emu, bot, user):
        reply = reply_in(bot)
        await reply.start()
        emu.fail_next(BOT, "sendMessageDraft", 400,
                      "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte "
                      "offset 0")
        reply.append("some **bold** text")
        await user.wait_for_draft(BOT, lambda shown: shown == "some **bold** text", timeout=3)
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["some bold text"]


async def test_the_final_text_survives_a_lost_reply_to_its_message() -> None:
    async with chat() as (emu, bot, user):
        floor = await bot.send_message(USER_ID, "an earlier answer")
        reply = reply_in(bot, header="Task", known_floor=floor.message_id)
        reply.backoff_base = 0.05
        await reply.start()
        reply.append("the whole answer")
        await user.wait_for_draft(BOT, lambda shown: "the whole answer" in shown, timeout=3)
        emu.lose_reply_next(BOT, "sendMessage")
        ids = await reply.finish()
        assert [m.text for m in bot_messages(user)] == [
            "an earlier answer", "Task\nthe whole answer",
        ]
        assert ids == [bot_messages(user)[-1].message_id]


async def test_a_user_who_never_opened_the_bot_makes_start_raise_chat_unavailable() -> None:
    from fleetgram.telegram.streaming import ChatUnavailable

    async with chat() as (emu, bot, _user):
        stranger = emu.add_user(5151)
        reply = reply_in(bot, chat_id=stranger.user_id)
        with pytest.raises(ChatUnavailable):
            await reply.start()


# ----------------------------------------------------------------------------- edits instead
async def test_a_group_chat_streams_with_edits() -> None:
    async with chat() as (emu, bot, user):
        await user.send_in_group(BOT, GROUP_ID, "hello bot")
        reply = reply_in(bot, chat_id=GROUP_ID)
        await reply.start()
        reply.append("growing")
        await asyncio.sleep(0)
        reply.append(" text")
        ids = await reply.finish()
        shown = [m for m in emu.group_messages(GROUP_ID) if m.message_id in ids]
        assert [m.text for m in shown] == ["growing text"]
        assert emu.calls_to(BOT, "sendMessageDraft") == []


async def test_a_server_without_drafts_gets_edits_and_the_whole_final_text() -> None:
    answer = answer_of(5_000, seed=5)
    async with chat(drafts_supported=False) as (_emu, bot, user):
        reply = reply_in(bot)
        await reply.start()
        assert [m.text for m in bot_messages(user)] == ["…"]  # today's first message
        await stream(reply, answer)
        await reply.finish()
        assert "\n\n".join(m.text for m in bot_messages(user)) == answer
        assert drafts_refused(bot)


async def test_once_refused_later_replies_do_not_try_drafts_again() -> None:
    async with chat(drafts_supported=False) as (emu, bot, user):
        first = reply_in(bot)
        await first.start()
        first.append("one")
        await first.finish()
        tried = len(emu.calls_to(BOT, "sendMessageDraft"))
        second = reply_in(bot)
        await second.start()
        second.append("two")
        await second.finish()
        assert len(emu.calls_to(BOT, "sendMessageDraft")) == tried
        assert [m.text for m in bot_messages(user)] == ["one", "two"]


async def test_a_draft_refused_midway_falls_back_to_edits_without_losing_text() -> None:
    answer = answer_of(2_000, seed=6)
    async with chat() as (emu, bot, user):
        reply = reply_in(bot)
        await reply.start()
        emu.fail_next(BOT, "sendMessageDraft", 400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        await stream(reply, answer)
        await reply.finish()
        assert "\n\n".join(m.text for m in bot_messages(user)) == answer
        assert drafts_refused(bot)


async def test_drafts_can_be_turned_off() -> None:
    async with chat() as (emu, bot, user):
        reply = reply_in(bot, drafts=False)
        await reply.start()
        reply.append("edited in")
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["edited in"]
        assert emu.calls_to(BOT, "sendMessageDraft") == []
