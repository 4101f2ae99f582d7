"""Specifications of the Telegram Bot API emulator, checked through the real python-telegram-bot."""

from __future__ import annotations

import asyncio
import datetime as dtm
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp
import pytest
from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Update,
)
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.ext import (
    Application,
    ApplicationBuilder,
    BaseHandler,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from fleetgram.emulators.telegram_api import TelegramEmulator

# PTB warns about RetryAfter.retry_after becoming a timedelta whenever it builds one.
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated since version v22.2")

TOKEN = "123456:TEST-token"
BOT = "test_bot"
USER_ID = 4242


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    await emulator.start()
    emulator.add_bot(TOKEN, BOT, "Test Bot")
    yield emulator
    await emulator.stop()


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{emu.url}/bot", base_file_url=f"{emu.url}/file/bot") as b:
        yield b


@asynccontextmanager
async def running_app(
    emu: TelegramEmulator,
    handlers: Sequence[BaseHandler],
    *,
    poll_timeout: int = 1,
    token: str = TOKEN,
) -> AsyncIterator[Application]:
    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{emu.url}/bot")
        .base_file_url(f"{emu.url}/file/bot")
        .build()
    )
    for handler in handlers:
        app.add_handler(handler)
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=poll_timeout)  # type: ignore[union-attr]
        try:
            yield app
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()


async def opened_chat(emu: TelegramEmulator, bot: Bot) -> int:
    """A user who has /start-ed the bot (the update is consumed so it does not linger)."""
    user = emu.add_user(USER_ID, "Ann", "ann")
    await user.start(BOT)
    updates = await bot.get_updates(timeout=0)
    await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
    return USER_ID


def seconds(value: int | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else value


# --------------------------------------------------------------------------- conversations
async def test_bot_answers_a_users_start(emu: TelegramEmulator) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.effective_chat.type == "private"
        assert update.message is not None and update.message.from_user is not None
        assert update.message.from_user.first_name == "Ann"
        await update.message.reply_text(f"Hello, {update.message.from_user.first_name}!")

    user = emu.add_user(USER_ID, "Ann", "ann")
    async with running_app(emu, [CommandHandler("start", start)]):
        await user.start(BOT)
        reply = await user.wait_for_text(BOT, "Hello, Ann!", timeout=5)

    assert reply.from_bot and user.bot_texts(BOT) == ["Hello, Ann!"]
    assert [m.text for m in user.chat(BOT)] == ["/start", "Hello, Ann!"]
    startup = [c.method for c in emu.calls[:3]]
    assert startup == ["getMe", "deleteWebhook", "getUpdates"]
    sent = emu.calls_to(BOT, "sendMessage")[0]
    assert sent.status == 200 and sent.params["chat_id"] == USER_ID


async def test_user_command_carries_a_bot_command_entity(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user(USER_ID, "Ann")
    await user.send(BOT, "/task@test_bot write a poem")
    (update,) = await bot.get_updates(timeout=0)
    assert update.message is not None
    assert update.message.chat.id == USER_ID and update.message.chat.type == "private"
    (entity,) = update.message.entities
    assert (entity.type, entity.offset, entity.length) == ("bot_command", 0, len("/task@test_bot"))


async def test_long_polling_delivers_an_update_promptly(emu: TelegramEmulator) -> None:
    received: asyncio.Queue[float] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        received.put_nowait(loop.time())

    user = emu.add_user(USER_ID)
    async with running_app(emu, [MessageHandler(filters.TEXT, echo)], poll_timeout=20):
        await emu.wait_until_polling(BOT)
        await asyncio.sleep(0.1)
        sent_at = loop.time()
        await user.send(BOT, "ping")
        handled_at = await asyncio.wait_for(received.get(), 5)
    assert handled_at - sent_at < 0.5


async def test_get_updates_returns_empty_list_on_timeout(bot: Bot) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bot.get_updates(timeout=1) == ()
    assert 0.9 <= loop.time() - started < 3


async def test_offset_confirms_earlier_updates(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user(USER_ID)
    for text in ("one", "two", "three"):
        await user.send(BOT, text)
    first = await bot.get_updates(timeout=0, limit=2)
    assert [u.message.text for u in first if u.message] == ["one", "two"]
    again = await bot.get_updates(timeout=0)
    assert len(again) == 3  # nothing confirmed yet
    rest = await bot.get_updates(offset=first[-1].update_id + 1, timeout=0)
    assert [u.message.text for u in rest if u.message] == ["three"]
    assert len(emu.pending_updates(BOT)) == 1


async def test_a_second_poller_terminates_the_first_with_conflict(
    emu: TelegramEmulator, bot: Bot
) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.2)
    async with Bot(TOKEN, base_url=f"{emu.url}/bot") as second_instance:
        second = asyncio.create_task(second_instance.get_updates(timeout=1))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await first
        assert await second == ()


async def test_a_restarted_bot_gets_what_arrived_while_it_was_down(emu: TelegramEmulator) -> None:
    seen: list[str] = []

    async def record(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        seen.append(update.message.text)
        await update.message.reply_text(f"got {update.message.text}")

    user = emu.add_user(USER_ID)
    handlers = [MessageHandler(filters.TEXT, record)]
    async with running_app(emu, handlers):
        await user.send(BOT, "first")
        await user.wait_for_text(BOT, "got first")
    await user.send(BOT, "while down")
    async with running_app(emu, handlers):
        await user.wait_for_text(BOT, "got while down")
    assert seen == ["first", "while down"]
    assert 499 in [c.status for c in emu.calls_to(BOT, "getUpdates")]  # cancelled on stop


async def test_unknown_token_raises_invalid_token_on_initialize(emu: TelegramEmulator) -> None:
    app = ApplicationBuilder().token("999:nope").base_url(f"{emu.url}/bot").build()
    with pytest.raises(InvalidToken):
        await app.initialize()
    (call,) = emu.calls
    assert (call.method, call.status) == ("getMe", 401)
    assert call.response == {"ok": False, "error_code": 401, "description": "Unauthorized"}


async def test_unknown_method_answers_404(emu: TelegramEmulator, bot: Bot) -> None:
    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("noSuchMethod")
    assert emu.calls[-1].response == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_json_and_form_requests_are_both_understood(emu: TelegramEmulator) -> None:
    await emu.add_user(USER_ID).start(BOT)
    async with aiohttp.ClientSession() as http:
        url = f"{emu.url}/bot{TOKEN}/sendMessage"
        async with http.post(url, json={"chat_id": USER_ID, "text": "via json"}) as r:
            assert (r.status, (await r.json())["result"]["text"]) == (200, "via json")
        async with http.post(url, data={"chat_id": str(USER_ID), "text": "via form"}) as r:
            assert (r.status, (await r.json())["result"]["text"]) == (200, "via form")
        async with http.get(f"{emu.url}/bot{TOKEN}/getMe") as r:
            assert (await r.json())["result"]["username"] == BOT


# --------------------------------------------------------------------------- text rules
async def test_text_over_4096_utf16_units_is_rejected(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(chat_id, "a" * 4097)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(chat_id, "😀" * 2049)  # 2049 characters, 4098 UTF-16 units
    await bot.send_message(chat_id, "😀" * 2048)
    await bot.send_message(chat_id, "<b>" + "a" * 4096 + "</b>", parse_mode="HTML")  # tags are free
    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(chat_id, "")
    with pytest.raises(BadRequest, match="Message must be non-empty"):
        await bot.send_message(chat_id, "<b> </b>", parse_mode="HTML")
    assert emu.calls_to(BOT, "sendMessage")[0].response == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: message is too long",
    }


async def test_identical_edit_is_rejected_as_not_modified(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Stop", callback_data="stop")]])
    message = await bot.send_message(
        chat_id, "<b>Working</b>", parse_mode="HTML", reply_markup=keyboard
    )
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text(
            "<strong>Working</strong>",  # other markup, same text and entities
            chat_id,
            message.message_id,
            parse_mode="HTML",
            reply_markup=keyboard,
        )
    await asyncio.sleep(1)  # let the chat's flood bucket refill
    edited = await bot.edit_message_text("Done", chat_id, message.message_id)  # drops the keyboard
    assert isinstance(edited, type(message)) and edited.edit_date is not None
    (shown,) = emu.history(BOT, chat_id)[1:]
    assert (shown.text, shown.edits, shown.edit_history, shown.buttons()) == (
        "Done",
        1,
        ["Working"],
        [],
    )


async def test_editing_or_deleting_missing_messages_fails(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id, 999)
    with pytest.raises(BadRequest, match="Message can't be edited"):
        await bot.edit_message_text("x", chat_id, 1)  # the user's own /start
    message = await bot.send_message(chat_id, "bye")
    assert await bot.delete_message(chat_id, message.message_id)
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(chat_id, message.message_id)
    assert emu._users[chat_id].bot_texts(BOT) == []


@pytest.mark.parametrize(
    ("html", "detail"),
    [
        ("2 < 3", 'Unsupported start tag "" at byte offset 2'),
        ("use <foo> here", 'Unsupported start tag "foo" at byte offset 4'),
        ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
async def test_bad_html_is_rejected(
    emu: TelegramEmulator, bot: Bot, html: str, detail: str
) -> None:
    chat_id = await opened_chat(emu, bot)
    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_message(chat_id, html, parse_mode="HTML")
    assert emu.calls_to(BOT, "sendMessage")[-1].response == {
        "ok": False,
        "error_code": 400,
        "description": f"Bad Request: can't parse entities: {detail}",
    }


async def test_good_html_is_accepted_and_rendered(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    html = (
        '<b>Job</b> <i>#7</i> &lt;done&gt; &amp; <a href="https://example.com">link</a>\n'
        '<pre><code class="language-python">print(1)</code></pre>'
        "<blockquote expandable>quote</blockquote> <tg-spoiler>s</tg-spoiler> &#128512;"
    )
    message = await bot.send_message(chat_id, html, parse_mode="HTML")
    assert message.text == "Job #7 <done> & link\nprint(1)quote s 😀"
    kinds = {(e.type, e.language or e.url) for e in message.entities}
    assert ("pre", "python") in kinds and ("text_link", "https://example.com") in kinds
    assert {"bold", "italic", "expandable_blockquote", "spoiler"} <= {
        e.type for e in message.entities
    }
    (shown,) = emu.history(BOT, chat_id)[1:]
    assert (shown.raw_text, shown.parse_mode, shown.text) == (html, "HTML", message.text)


async def test_markdown_v2_reserved_characters_must_be_escaped(
    emu: TelegramEmulator, bot: Bot
) -> None:
    chat_id = await opened_chat(emu, bot)
    with pytest.raises(BadRequest, match=r"(?i)character '\.' is reserved"):
        await bot.send_message(chat_id, "*Done*. Next?", parse_mode="MarkdownV2")
    message = await bot.send_message(chat_id, "*Done*\\. Next?", parse_mode="MarkdownV2")
    assert message.text == "Done. Next?" and message.entities[0].type == "bold"


# --------------------------------------------------------------------------- who may be messaged
async def test_bot_cannot_message_a_user_who_never_opened_it(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.add_user(USER_ID, "Shy")
    with pytest.raises(Forbidden, match="bot can't initiate conversation with a user"):
        await bot.send_message(USER_ID, "hi")
    with pytest.raises(Forbidden):
        await bot.send_chat_action(USER_ID, "typing")
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(777, "hi")
    assert [c.status for c in emu.calls_to(BOT, "sendMessage")] == [403, 400]


async def test_blocked_bot_gets_forbidden(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    emu._users[chat_id].block(BOT)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(chat_id, "hi")


# --------------------------------------------------------------------------- flood control
async def test_a_chat_burst_raises_retry_after(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    for n in range(3):  # chat_burst
        await bot.send_message(chat_id, f"update {n}")
    await bot.send_chat_action(chat_id, "typing")  # not counted
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(chat_id, "one too many")
    assert seconds(caught.value.retry_after) == 1
    rejected = emu.calls_to(BOT, "sendMessage")[-1]
    assert rejected.status == 429
    assert rejected.response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    }
    await asyncio.sleep(1.05)
    await bot.send_message(chat_id, "after waiting")
    assert emu._users[chat_id].bot_texts(BOT)[-1] == "after waiting"


async def test_the_bot_wide_limit_spans_chats(bot: Bot) -> None:
    emu = TelegramEmulator(bot_rate=4, chat_burst=10)
    await emu.start()
    try:
        emu.add_bot("77:fleet", "fleet_bot")
        for uid in range(1, 6):
            await emu.add_user(uid).start("fleet_bot")
        async with Bot("77:fleet", base_url=f"{emu.url}/bot") as fleet:
            for uid in range(1, 5):
                await fleet.send_message(uid, "broadcast")
            with pytest.raises(RetryAfter):
                await fleet.send_message(5, "broadcast")
    finally:
        await emu.stop()


async def test_replies_quote_an_existing_message(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    reply = await bot.send_message(chat_id, "noted", reply_to_message_id=1)
    assert reply.reply_to_message is not None and reply.reply_to_message.text == "/start"
    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(chat_id, "noted", reply_to_message_id=99)
    assert emu.history(BOT, chat_id)[-1].reply_to == 1


# ------------------------------------------------------------------- buttons, commands, files
async def test_inline_button_press_reaches_the_callback_handler(emu: TelegramEmulator) -> None:
    answered: asyncio.Event = asyncio.Event()

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        keyboard = [[InlineKeyboardButton("Approve", callback_data="approve:7")]]
        await update.message.reply_text("Run job 7?", reply_markup=InlineKeyboardMarkup(keyboard))

    async def on_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data == "approve:7" and query.from_user.id == USER_ID
        await query.answer("Approved")
        await query.edit_message_text("Job 7 approved")
        with pytest.raises(BadRequest, match="Query is too old"):
            await query.answer("twice")
        answered.set()

    user = emu.add_user(USER_ID, "Ann")
    handlers = [CommandHandler("start", start), CallbackQueryHandler(on_press, pattern="^approve:")]
    async with running_app(emu, handlers):
        await user.start(BOT)
        prompt = await user.wait_for_text(BOT, "Run job 7?")
        assert prompt.buttons() == [("Approve", "approve:7")]
        with pytest.raises(AssertionError, match="no button"):
            await user.press(BOT, prompt.message_id, "reject:7")
        query_id = await user.press(BOT, prompt.message_id, "approve:7")
        await asyncio.wait_for(answered.wait(), 5)
        await user.wait_for_text(BOT, "Job 7 approved")
    assert emu.callback_answer(query_id) == {"text": "Approved"}
    assert [c.status for c in emu.calls_to(BOT, "answerCallbackQuery")] == [200, 400]


async def test_set_my_commands_is_recorded(emu: TelegramEmulator, bot: Bot) -> None:
    await bot.set_my_commands([BotCommand("start", "Start"), BotCommand("status", "Fleet status")])
    assert emu.commands(BOT) == [("start", "Start"), ("status", "Fleet status")]
    assert [(c.command, c.description) for c in await bot.get_my_commands()] == emu.commands(BOT)
    with pytest.raises(BadRequest, match=r"(?i)BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand("Status", "upper case is not allowed")])
    await bot.delete_my_commands()
    assert emu.commands(BOT) == []


async def test_send_document_is_recorded(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    payload = b"line\n" * 1000
    message = await bot.send_document(
        chat_id,
        InputFile(payload, filename="report.txt"),
        caption="<b>Report</b>",
        parse_mode="HTML",
    )
    assert message.document is not None and message.document.file_name == "report.txt"
    assert message.caption == "Report"
    call = emu.calls_to(BOT, "sendDocument")[0]
    assert call.params["document"]["file_name"] == "report.txt"
    assert call.params["document"]["size"] == len(payload)
    (shown,) = emu.history(BOT, chat_id)[1:]
    assert shown.document is not None
    assert (shown.document["file_name"], shown.document["size"], shown.document["caption"]) == (
        "report.txt",
        len(payload),
        "Report",
    )
    downloaded = await (await bot.get_file(message.document.file_id)).download_as_bytearray()
    assert bytes(downloaded) == payload


# --------------------------------------------------------------------------- injection and helpers
async def test_fail_next_injects_errors(emu: TelegramEmulator, bot: Bot) -> None:
    chat_id = await opened_chat(emu, bot)
    emu.fail_next(BOT, "sendMessage", 502, "Bad Gateway", count=2)
    emu.fail_next(BOT, "sendMessage", 429, "Too Many Requests: retry after 5", retry_after=5)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Bad Gateway"):
            await bot.send_message(chat_id, "hi")
    with pytest.raises(RetryAfter):
        await bot.send_message(chat_id, "hi")
    await bot.send_message(chat_id, "hi")
    assert [c.status for c in emu.calls_to(BOT, "sendMessage")] == [502, 502, 429, 200]
    assert emu._users[chat_id].bot_texts(BOT) == ["hi"]


async def test_wait_for_times_out_showing_the_chat(emu: TelegramEmulator) -> None:
    user = emu.add_user(USER_ID)
    await user.send(BOT, "anyone there?")
    with pytest.raises(AssertionError, match="anyone there"):
        await user.wait_for_text(BOT, "anyone", timeout=0.1)  # only the bot's messages count
    assert "test_bot" in repr(emu) and "sent #1" in emu.bot_log(BOT)[0]


async def test_a_user_upload_reaches_the_bot(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user(USER_ID)
    await user.send_document(BOT, "notes.md", b"# plan", caption="my notes")
    (update,) = await bot.get_updates(timeout=0)
    assert update.message is not None and update.message.document is not None
    assert (update.message.document.file_name, update.message.caption) == ("notes.md", "my notes")
    file = await bot.get_file(update.message.document.file_id)
    assert bytes(await file.download_as_bytearray()) == b"# plan"
