"""StreamingReply against the Telegram Bot API emulator, with the real python-telegram-bot.

These tests stream with edits (``drafts=False``): what groups and bots whose drafts Telegram
refuses get. Native streaming with drafts is in test_streaming_drafts.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator

import pytest
import telegram

from fleetgram.emulators.telegram_api import ChatMessage, SimUser, TelegramEmulator
from fleetgram.telegram.streaming import ChatUnavailable, StreamingReply
from tests.telegram.streaming_text import answer_of, stream

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


def edits_by_message(emu: TelegramEmulator) -> dict[int, list[float]]:
    times: dict[int, list[float]] = defaultdict(list)
    for call in emu.calls_to(BOT, "editMessageText"):
        times[int(call.params["message_id"])].append(call.at)
    return times


# ----------------------------------------------------------------------------- the happy path
async def test_start_shows_a_placeholder_message_at_once() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        await reply.start()
        assert [m.text for m in bot_messages(user)] == ["…"]
        assert reply.message_ids == [bot_messages(user)[0].message_id]
        await reply.finish()


async def test_a_long_answer_ends_as_three_messages_holding_all_of_it() -> None:
    answer = answer_of(10_000)
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        await reply.start()
        reply.append("first part")
        await user.wait_for_text(BOT, "first part", timeout=3)
        reply.append(" and more")
        await user.wait_for_text(BOT, "first part and more", timeout=3)
        await reply.finish()


async def test_edits_of_a_message_are_at_least_the_interval_apart() -> None:
    answer = answer_of(9_000, seed=2)
    async with chat() as (emu, bot, _user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(
            bot, USER_ID, drafts=False, header="t-7k2qf · Fix the tests", min_interval=0.1
        )
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
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        await reply.start()
        reply.append("The answer.")
        await reply.finish(footer="✅ done · 1.2k tokens")
        assert [m.text for m in bot_messages(user)] == ["The answer.\n\n✅ done · 1.2k tokens"]


async def test_trailing_blank_lines_past_a_full_message_open_no_new_message() -> None:
    text = " ".join(["word"] * 20) + "\n\n\n\n\n"
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL, limit=100)
        await reply.start()
        reply.append(text)
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == [text.strip()]


async def test_a_reply_that_ends_without_text_says_so() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        await reply.start()
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["(no text)"]


async def test_a_code_block_spanning_messages_is_code_in_each() -> None:
    code = "\n".join(f"    value_{i} = compute({i}) + offset  # step {i}" for i in range(160))
    answer = f"Here is the code:\n\n```python\n{code}\n```\n\nThat is all."
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        reply.append(answer)
        ids = await reply.finish()
        assert len(ids) == 2
        assert "\n\n".join(m.text for m in bot_messages(user)) == answer


# ----------------------------------------------------------------------------- Telegram says no
async def test_flood_control_is_waited_out_and_the_final_text_arrives() -> None:
    answer = answer_of(1_500, seed=5)
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=0.1)
        await reply.start()
        await stream(reply, answer, pause=0.002)
        await reply.finish(footer="done")
        texts = [m.text for m in bot_messages(user)]
        assert "\n\n".join(texts) == answer + "\n\ndone"
        assert any(c.status == 429 for c in emu.calls)


async def test_html_telegram_cannot_parse_is_sent_as_plain_text() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        emu.fail_next(BOT, "sendMessage", 400, "Bad Request: can't parse entities: boom")
        reply.append("_x_ y")
        await reply.finish()
        assert [(m.text, m.parse_mode) for m in bot_messages(user)] == [("_x_ y", None)]


async def test_an_edit_that_changes_nothing_visible_is_not_an_error() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        await reply.start()
        reply.append("same text")
        await user.wait_for_text(BOT, "same text", timeout=3)
        reply.append("\n\n")  # trailing blank lines: Telegram trims them, "not modified"
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["same text"]
        assert any(c.status == 400 for c in emu.calls_to(BOT, "editMessageText"))


async def test_network_errors_are_retried() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        reply.backoff_base = 0.05
        await reply.start()
        emu.fail_next(BOT, "editMessageText", 502, "Bad Gateway", count=2)
        reply.append("arrives anyway")
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["arrives anyway"]


async def test_the_final_text_is_sent_anew_when_the_final_edit_keeps_failing() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        reply.network_retries, reply.final_attempts = 0, 1
        await reply.start()
        emu.fail_next(BOT, "editMessageText", 502, "Bad Gateway")
        reply.append("the final text")
        await reply.finish()
        # the stale "…" message was replaced: one message, the final one
        assert [m.text for m in bot_messages(user)] == ["the final text"]
        await reply.finish()  # a second finish changes nothing
        assert [m.text for m in bot_messages(user)] == ["the final text"]


async def test_a_user_who_never_opened_the_bot_makes_start_raise_chat_unavailable() -> None:
    async with chat(opened=False) as (_emu, bot, _user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        with pytest.raises(ChatUnavailable):
            await reply.start()
        with pytest.raises(ChatUnavailable):
            await reply.finish()


async def test_a_user_who_blocks_the_bot_midway_makes_finish_raise_chat_unavailable() -> None:
    async with chat() as (_emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        with pytest.raises(ChatUnavailable):
            await reply.start()
        await reply.abort("⏹ cancelled")


async def test_abort_shows_the_text_so_far_and_the_note() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
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
        reply = StreamingReply(bot, USER_ID, drafts=False, header="Task", min_interval=INTERVAL)
        await reply.start()
        await reply.abort("⏹ cancelled")
        assert [m.text for m in bot_messages(user)] == ["Task\n⏹ cancelled"]


async def test_finish_stops_the_background_flusher() -> None:
    async with chat() as (_emu, bot, _user):
        reply = StreamingReply(bot, USER_ID, drafts=False, min_interval=INTERVAL)
        await reply.start()
        reply.append("x")
        before = {t for t in asyncio.all_tasks() if "streaming-reply" in t.get_name()}
        assert before
        await reply.finish()
        assert all(t.done() for t in before)


# ----------------------------------------------------------------------------- lost and garbled
async def test_a_lost_reply_on_the_header_leaves_one_header_and_no_stale_placeholder() -> None:
    async with chat() as (emu, bot, user):
        # the worker knows the user's /start (#1) is in the chat: the probe looks above it
        reply = StreamingReply(bot, USER_ID, drafts=False, header="t-7k2qf · Fix it",
                               min_interval=INTERVAL, known_floor=1)
        reply.backoff_base = 0.05
        emu.lose_reply_next(BOT, "sendMessage")
        await reply.start()
        reply.append("the answer")
        await reply.finish("done")
        assert [m.text for m in bot_messages(user)] == ["t-7k2qf · Fix it\nthe answer\n\ndone"]
        assert len(emu.calls_to(BOT, "sendMessage")) == 2  # the lost one and the resend
        assert reply.lost_copies_deleted == 1


async def test_the_probe_leaves_a_users_message_alone() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, header="Task", min_interval=INTERVAL)
        reply.backoff_base = 0.05
        emu.fail_next(BOT, "sendMessage", 502, "Bad Gateway")  # not processed
        # a TimedOut-like doubt without a lost copy: the message before is the user's /start
        emu.malformed_next(BOT, "sendMessage", processed=False)
        await reply.start()
        await reply.finish()
        texts = [m.text for m in user.chat(BOT)]
        assert texts == ["/start", "Task\n(no text)"]
        assert reply.lost_copies_deleted == 0


async def test_the_probe_never_touches_a_message_at_or_below_the_known_floor() -> None:
    async with chat() as (emu, bot, user):
        earlier = await bot.send_message(USER_ID, "Task\n…")  # same text as our header, by chance
        reply = StreamingReply(
            bot, USER_ID, header="Task", min_interval=INTERVAL, known_floor=earlier.message_id,
            drafts=False,
        )
        reply.backoff_base = 0.05
        emu.malformed_next(BOT, "sendMessage", processed=False)
        await reply.start()
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["Task\n…", "Task\n(no text)"]


async def test_a_malformed_answer_to_the_final_edit_does_not_lose_the_final_text() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, header="Task", min_interval=INTERVAL)
        reply.backoff_base = 0.05
        await reply.start()
        reply.append("every word of the answer")
        emu.malformed_next(BOT, "editMessageText", processed=False)
        await reply.finish("✅ footer")
        assert [m.text for m in bot_messages(user)] == [
            "Task\nevery word of the answer\n\n✅ footer"
        ]


async def test_final_edits_that_always_fail_end_in_a_new_message_with_the_final_text() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, header="Task", min_interval=INTERVAL)
        reply.backoff_base, reply.backoff_max, reply.network_retries = 0.02, 0.05, 1
        await reply.start()
        reply.append("the answer")
        emu.malformed_next(BOT, "editMessageText", count=50, processed=False)
        await reply.finish("✅ footer")
        texts = [m.text for m in bot_messages(user)]
        assert texts[-1] == "Task\nthe answer\n\n✅ footer"
        assert len(texts) == 1  # the stale "…" was deleted


def test_only_failures_after_which_telegram_may_have_acted_count_as_doubtful() -> None:
    from telegram.error import NetworkError, TelegramError, TimedOut

    from fleetgram.telegram.streaming import maybe_processed

    lost = NetworkError(
        "httpx.RemoteProtocolError: Server disconnected without sending a response."
    )
    assert maybe_processed(lost)
    assert maybe_processed(TimedOut())
    assert maybe_processed(TelegramError("Invalid server response"))
    assert not maybe_processed(NetworkError("httpx.ConnectError: All connection attempts failed"))
    front_end = NetworkError("Bad Gateway (502). Parsing the server response failed")
    assert not maybe_processed(front_end)


async def test_start_may_be_tried_again_and_removes_a_copy_lost_on_the_way() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, header="Task", min_interval=INTERVAL,
                               known_floor=1)
        reply.backoff_base, reply.network_retries = 0.02, 0
        emu.lose_reply_next(BOT, "sendMessage")  # processed, answer lost: given up
        with pytest.raises(telegram.error.NetworkError):
            await reply.start()
        await reply.start()  # Telegram is back
        reply.append("done")
        await reply.finish()
        assert [m.text for m in bot_messages(user)] == ["Task\ndone"]
        assert reply.lost_copies_deleted == 1


async def test_two_lost_replies_on_the_header_leave_no_stale_copy() -> None:
    async with chat() as (emu, bot, user):
        reply = StreamingReply(bot, USER_ID, drafts=False, header="t-7k2qf · Fix it",
                               min_interval=INTERVAL, known_floor=1)
        reply.backoff_base = 0.02
        emu.lose_reply_next(BOT, "sendMessage", count=2)
        await reply.start()
        reply.append("the answer")
        await reply.finish("done")
        assert [m.text for m in bot_messages(user)] == ["t-7k2qf · Fix it\nthe answer\n\ndone"]
        assert reply.lost_copies_deleted == 2


async def test_without_a_known_floor_the_probe_never_edits_an_older_message() -> None:
    async with chat() as (emu, bot, user):
        older = await bot.send_message(USER_ID, "an earlier answer of ours")
        reply = StreamingReply(bot, USER_ID, drafts=False, header="Task", min_interval=INTERVAL)
        reply.backoff_base = 0.02
        emu.malformed_next(BOT, "sendMessage", processed=False)  # a doubt, no copy left
        await reply.start()
        await reply.finish()
        texts = [m.text for m in bot_messages(user)]
        assert texts == ["an earlier answer of ours", "Task\n(no text)"]
        assert older.message_id == bot_messages(user)[0].message_id
