"""StreamingReply against the Telegram Bot API emulator, with the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
import telegram

from fleetgram.telegram.streaming import ChatUnavailable, StreamingReply
from tests.emulators.telegram_api import ChatMessage, SimUser, TelegramEmulator

TOKEN = "700001:streaming-test-token"
BOT = "worker1_bot"
USER_ID = 4242
INTERVAL = 0.2

# PTB's RetryAfter itself reads its deprecated int ``retry_after`` when built.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")


@contextlib.asynccontextmanager
async def chat(
    *, opened: bool = True, chat_burst: int = 100, chat_rate: float = 100.0
) -> AsyncIterator[tuple[TelegramEmulator, telegram.Bot, SimUser]]:
    """An emulator with one bot and one user (who opened the bot unless ``opened`` is False).
    Flood control is out of the way unless ``chat_burst`` / ``chat_rate`` say otherwise."""
    emu = TelegramEmulator(chat_burst=chat_burst, chat_rate=chat_rate)
    await emu.start()
    try:
        emu.add_bot(TOKEN, BOT)
        user = emu.add_user(USER_ID)
        if opened:
            await user.start(BOT)
        async with telegram.Bot(TOKEN, base_url=f"{emu.url}/bot") as bot:
            yield emu, bot, user
    finally:
        await emu.stop()


def bot_messages(user: SimUser) -> list[ChatMessage]:
    return [m for m in user.chat(BOT) if m.from_bot]


def answer_of(length: int, seed: int = 1) -> str:
    """Paragraphs of words, ``length`` characters in all."""
    rng = random.Random(seed)
    words = "the fleet of workers answers every task while the master keeps the queue".split()
    paragraphs: list[str] = []
    size = 0
    while size < length:
        paragraph = " ".join(rng.choice(words) for _ in range(rng.randint(20, 60)))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)[:length].rstrip()


async def stream(reply: StreamingReply, text: str, *, pause: float = 0.004) -> None:
    rng = random.Random(len(text))
    position = 0
    while position < len(text):
        step = rng.randint(5, 60)
        reply.append(text[position : position + step])
        position += step
        await asyncio.sleep(pause)


def edits_by_message(emu: TelegramEmulator) -> dict[int, list[float]]:
    times: dict[int, list[float]] = defaultdict(list)
    for call in emu.calls_to(BOT, "editMessageText"):
        times[int(call.params["message_id"])].append(call.at)
    return times


# ----------------------------------------------------------------------------- the happy path
async def test_start_shows_a_placeholder_message_at_once() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        assert [m.text for m in bot_messages(user)] == ["…"]
        assert reply.message_ids == [bot_messages(user)[0].message_id]
        await reply.finish()


async def test_a_long_answer_ends_as_three_messages_holding_all_of_it() -> None:
    answer = answer_of(10_000)
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        await stream(reply, answer)
        ids = await reply.finish()
        shown = bot_messages(user)
        assert len(shown) == 3
        assert ids == [m.message_id for m in shown]
        assert "\n\n".join(m.text for m in shown) == answer
        assert reply.text == answer


async def test_the_text_grows_in_the_chat_while_it_streams() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        reply.append("first part")
        await user.wait_for_text(BOT, "first part", timeout=3)
        reply.append(" and more")
        await user.wait_for_text(BOT, "first part and more", timeout=3)
        await reply.finish()


async def test_edits_of_a_message_are_at_least_the_interval_apart() -> None:
    answer = answer_of(9_000, seed=2)
    async with chat() as (emu, bot, _user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        began = asyncio.get_running_loop().time()
        await stream(reply, answer)
        await reply.finish()
        took = asyncio.get_running_loop().time() - began
        times = edits_by_message(emu)
        assert times, "the reply was never edited"
        for stamps in times.values():
            gaps = [b - a for a, b in itertools.pairwise(stamps)]
            assert all(gap >= INTERVAL * 0.9 for gap in gaps), gaps
        total = sum(len(stamps) for stamps in times.values())
        assert total <= took / INTERVAL + 3


async def test_a_full_message_is_not_edited_once_the_next_one_exists() -> None:
    answer = answer_of(8_000, seed=3)
    async with chat() as (emu, bot, _user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        await stream(reply, answer)
        await reply.finish()
        sent_at = [call.at for call in emu.calls_to(BOT, "sendMessage")]
        assert len(sent_at) == len(reply.message_ids) == 3
        edits = edits_by_message(emu)
        for index, message_id in enumerate(reply.message_ids[:-1]):
            assert all(at <= sent_at[index + 1] for at in edits[message_id])


async def test_html_is_sent_with_parse_mode_per_call() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        reply.append("Some **bold** and `code`")
        await reply.finish()
        (message,) = bot_messages(user)
        assert message.text == "Some bold and code"
        assert {e["type"] for e in message.entities} == {"bold", "code"}
        calls = emu.calls_to(BOT, "sendMessage") + emu.calls_to(BOT, "editMessageText")
        assert all(call.params.get("parse_mode") == "HTML" for call in calls)


async def test_the_header_is_a_bold_line_atop_the_first_message() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, header="t-7k2qf · Fix the tests", min_interval=0.1)
        await reply.start()
        assert bot_messages(user)[0].text == "t-7k2qf · Fix the tests\n…"
        answer = answer_of(5_000)
        reply.append(answer)
        await reply.finish()
        first, second = bot_messages(user)
        assert first.text.startswith("t-7k2qf · Fix the tests\n" + answer[:50])
        assert "\n\n".join([first.text.split("\n", 1)[1], second.text]) == answer
        assert first.entities[0] == {"type": "bold", "offset": 0, "length": 23}
        assert not second.text.startswith("t-7k2qf")


async def test_the_footer_ends_the_last_message() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        reply.append("The answer.")
        await reply.finish(footer="✅ done · 1.2k tokens")
        assert [m.text for m in bot_messages(user)] == ["The answer.\n\n✅ done · 1.2k tokens"]


async def test_trailing_blank_lines_past_a_full_message_open_no_new_message() -> None:
    text = " ".join(["word"] * 20) + "\n\n\n\n\n"
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL, limit=100)
        await reply.start()
        reply.append(text)
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == [text.strip()]


async def test_a_reply_that_ends_without_text_says_so() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["(no text)"]


async def test_a_code_block_spanning_messages_is_code_in_each() -> None:
    code = "\n".join(f"    value_{i} = compute({i}) + offset  # step {i}" for i in range(160))
    answer = f"Here is the code:\n\n```python\n{code}\n```\n\nThat is all."
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        await stream(reply, answer, pause=0.001)
        await reply.finish()
        shown = bot_messages(user)
        assert len(shown) >= 3
        for message in shown:
            pre = [e for e in message.entities if e["type"] == "pre"]
            assert pre and pre[0].get("language") == "python"
        assert shown[-1].text.endswith("That is all.")


async def test_finish_without_start_sends_the_whole_text() -> None:
    answer = answer_of(6_000, seed=4)
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        reply.append(answer)
        ids = await reply.finish()
        assert len(ids) == 2
        assert "\n\n".join(m.text for m in bot_messages(user)) == answer


# ----------------------------------------------------------------------------- Telegram says no
async def test_flood_control_is_waited_out_and_the_final_text_arrives() -> None:
    answer = answer_of(1_500, seed=5)
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        emu.fail_next(BOT, "editMessageText", 429, "Too Many Requests: retry after 1", 1)
        await stream(reply, answer)
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == [answer]
        edits = emu.calls_to(BOT, "editMessageText")
        refused = [c for c in edits if c.status == 429]
        assert len(refused) == 1
        retried = edits[edits.index(refused[0]) + 1]
        assert retried.at - refused[0].at >= 1.0


async def test_the_emulators_own_flood_control_does_not_lose_text() -> None:
    answer = answer_of(5_000, seed=6)
    async with chat(chat_burst=2, chat_rate=2.0) as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=0.1)
        await reply.start()
        await stream(reply, answer, pause=0.002)
        await reply.finish(footer="done")
        texts = [m.text for m in bot_messages(user)]
        assert "\n\n".join(texts) == answer + "\n\ndone"
        assert any(c.status == 429 for c in emu.calls)


async def test_html_telegram_cannot_parse_is_sent_as_plain_text() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        emu.fail_next(
            BOT,
            "editMessageText",
            400,
            'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 0',
        )
        reply.append("A **bold** claim")
        await reply.finish()
        (message,) = bot_messages(user)
        assert message.text == "A **bold** claim"
        assert message.parse_mode is None


async def test_a_first_message_telegram_cannot_parse_is_sent_as_plain_text() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        emu.fail_next(BOT, "sendMessage", 400, "Bad Request: can't parse entities: boom")
        reply.append("_x_ y")
        await reply.finish()
        assert [(m.text, m.parse_mode) for m in bot_messages(user)] == [("_x_ y", None)]


async def test_an_edit_that_changes_nothing_visible_is_not_an_error() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        reply.append("same text")
        await user.wait_for_text(BOT, "same text", timeout=3)
        reply.append("\n\n")  # trailing blank lines: Telegram trims them, "not modified"
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["same text"]
        assert any(c.status == 400 for c in emu.calls_to(BOT, "editMessageText"))


async def test_network_errors_are_retried() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        reply.backoff_base = 0.05
        await reply.start()
        emu.fail_next(BOT, "editMessageText", 502, "Bad Gateway", count=2)
        reply.append("arrives anyway")
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["arrives anyway"]


async def test_finish_can_be_called_again_when_the_network_gave_up() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        reply.network_retries, reply.final_attempts = 0, 1
        await reply.start()
        emu.fail_next(BOT, "editMessageText", 502, "Bad Gateway")
        reply.append("the final text")
        with pytest.raises(telegram.error.NetworkError):
            await reply.finish()
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["the final text"]


async def test_a_user_who_never_opened_the_bot_makes_start_raise_chat_unavailable() -> None:
    async with chat(opened=False) as (_emu, bot, _user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        with pytest.raises(ChatUnavailable):
            await reply.start()
        with pytest.raises(ChatUnavailable):
            await reply.finish()


async def test_a_user_who_blocks_the_bot_midway_makes_finish_raise_chat_unavailable() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        reply.append("first")
        await user.wait_for_text(BOT, "first", timeout=3)
        user.block(BOT)
        reply.append(" " + answer_of(5_000))
        with pytest.raises(ChatUnavailable):
            await reply.finish()


# ----------------------------------------------------------------------------- abort
async def test_abort_in_a_chat_that_is_unavailable_does_not_raise() -> None:
    async with chat(opened=False) as (_emu, bot, _user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        with pytest.raises(ChatUnavailable):
            await reply.start()
        await reply.abort("⏹ cancelled")


async def test_abort_shows_the_text_so_far_and_the_note() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        reply.append("Working on it")
        await reply.abort("⏹ cancelled")
        assert [m.text for m in bot_messages(user)] == ["Working on it\n\n⏹ cancelled"]
        calls = len(emu.calls)
        reply.append(" and more")
        await asyncio.sleep(INTERVAL * 2)
        assert len(emu.calls) == calls
        assert reply.text == "Working on it"


async def test_abort_before_any_text_shows_only_the_note() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, header="Task", min_interval=INTERVAL)
        await reply.start()
        await reply.abort("⏹ cancelled")
        assert [m.text for m in bot_messages(user)] == ["Task\n⏹ cancelled"]


async def test_finish_stops_the_background_flusher() -> None:
    async with chat() as (_emu, bot, _user):
        reply = StreamingReply(bot, USER_ID, min_interval=INTERVAL)
        await reply.start()
        reply.append("x")
        before = {t for t in asyncio.all_tasks() if "streaming-reply" in t.get_name()}
        assert before
        await reply.finish()
        assert all(t.done() for t in before)
