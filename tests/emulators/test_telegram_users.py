"""Specifications of what the emulator's simulated users can do beyond typing text: edit a
message, write in a group, send a photo, a voice note or a sticker, and press a crafted button.
Each is checked through the real python-telegram-bot, which parses the updates as it does in
production (https://core.telegram.org/bots/api#update, #message)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from telegram import Bot, Update
from telegram.error import BadRequest, Forbidden, RetryAfter
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, ContextTypes, MessageHandler
from telegram.ext import filters as f

from fleetgram.emulators.telegram_api import TelegramEmulator

TOKEN = "123456:TEST-token"
OTHER_TOKEN = "654321:OTHER-token"
BOT = "test_bot"
OTHER = "other_bot"
USER_ID = 4242
GROUP = -4001
SUPERGROUP = -1002000000001

# PTB warns about Voice.duration becoming a timedelta whenever it builds one.
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated since version v22.2")


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    await emulator.start()
    emulator.add_bot(TOKEN, BOT, "Test Bot")
    emulator.add_bot(OTHER_TOKEN, OTHER, "Other Bot")
    yield emulator
    await emulator.stop()


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{emu.url}/bot", base_file_url=f"{emu.url}/file/bot") as b:
        yield b


async def next_update(bot: Bot) -> Update:
    """The one update waiting for the bot, confirmed so it is not seen again."""
    (update,) = await bot.get_updates(timeout=0)
    await bot.get_updates(offset=update.update_id + 1, timeout=0)
    return update


# --------------------------------------------------------------------------------- edits
async def test_an_edit_reaches_the_bot_as_an_edited_message_with_edit_date(
    emu: TelegramEmulator, bot: Bot
) -> None:
    user = emu.add_user(USER_ID, "Ann")
    message_id = await user.send(BOT, "write the dcos")
    first = await next_update(bot)
    assert first.message is not None and first.message.edit_date is None

    await user.edit(BOT, message_id, "write the docs")
    update = await next_update(bot)
    assert update.message is None and update.edited_message is not None
    edited = update.edited_message
    assert (edited.message_id, edited.text) == (message_id, "write the docs")
    assert edited.edit_date is not None and edited.chat.type == "private"
    (shown,) = user.chat(BOT)
    assert (shown.text, shown.edits, shown.sender_id) == ("write the docs", 1, USER_ID)
    assert shown.edit_history == ["write the dcos"]


async def test_an_edit_is_what_a_client_allows(emu: TelegramEmulator, bot: Bot) -> None:
    user = emu.add_user(USER_ID, "Ann")
    message_id = await user.send(BOT, "hello")
    sticker_id = await user.send_sticker(BOT)
    with pytest.raises(ValueError, match="unchanged"):
        await user.edit(BOT, message_id, "hello")
    with pytest.raises(ValueError, match="empty"):
        await user.edit(BOT, message_id, "   ")
    with pytest.raises(ValueError, match="sticker"):
        await user.edit(BOT, sticker_id, "text")
    await bot.send_message(USER_ID, "a bot message")
    with pytest.raises(AssertionError, match="no message #3"):
        await user.edit(BOT, 3, "not mine to edit")
    assert len(await bot.get_updates(timeout=0)) == 2  # the two messages, no edit


async def test_an_edit_reaches_an_edited_message_handler(emu: TelegramEmulator) -> None:
    async def on_edit(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.edited_message is not None
        await update.edited_message.reply_text(f"now: {update.edited_message.text}")

    user = emu.add_user(USER_ID, "Ann")
    app = (ApplicationBuilder().token(TOKEN).base_url(f"{emu.url}/bot")
           .base_file_url(f"{emu.url}/file/bot").build())
    app.add_handler(MessageHandler(f.UpdateType.EDITED_MESSAGE & f.TEXT, on_edit))
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)  # type: ignore[union-attr]
        try:
            message_id = await user.send(BOT, "first")
            await user.edit(BOT, message_id, "second")
            reply = await user.wait_for_text(BOT, "now: second", timeout=5)
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()
    assert reply.from_bot and user.bot_texts(BOT) == ["now: second"]


# --------------------------------------------------------------------------------- groups
async def test_a_group_message_reaches_the_bot_and_its_reply_is_in_the_group(
    emu: TelegramEmulator, bot: Bot
) -> None:
    user = emu.add_user(USER_ID, "Ann")
    message_id = await user.send_in_group(BOT, GROUP, "run this for everyone")
    update = await next_update(bot)
    assert update.message is not None and update.message.from_user is not None
    chat = update.message.chat
    assert (chat.id, chat.type, chat.title) == (GROUP, "group", "Team")
    assert update.message.from_user.id == USER_ID
    assert update.message.text == "run this for everyone"

    reply = await update.message.reply_text("private chats only")
    assert reply.chat.id == GROUP and reply.reply_to_message is not None
    shown = emu.group_messages(GROUP)
    assert [(m.text, m.from_bot, m.sender_id) for m in shown] == [
        ("run this for everyone", False, USER_ID),
        ("private chats only", True, int(TOKEN.split(":")[0])),
    ]
    assert shown[1].reply_to == message_id
    assert user.chat(BOT) == []  # nothing in the private chat


async def test_a_supergroup_id_gives_a_supergroup_chat(emu: TelegramEmulator, bot: Bot) -> None:
    await emu.add_user(USER_ID, "Ann").send_in_group(BOT, SUPERGROUP, "hi", group_title="Big")
    update = await next_update(bot)
    assert update.message is not None
    assert (update.message.chat.type, update.message.chat.title) == ("supergroup", "Big")


async def test_a_bot_writes_only_to_groups_it_is_a_member_of(
    emu: TelegramEmulator, bot: Bot
) -> None:
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(GROUP, "hello?")
    await emu.add_user(USER_ID, "Ann").send_in_group(OTHER, GROUP, "only the other bot is here")
    with pytest.raises(Forbidden, match="bot is not a member of the group chat"):
        await bot.send_message(GROUP, "hello?")
    assert await bot.get_updates(timeout=0) == ()
    assert [m.text for m in emu.group_messages(GROUP)] == ["only the other bot is here"]


async def test_a_group_is_held_to_20_messages_a_minute(emu: TelegramEmulator, bot: Bot) -> None:
    await emu.add_user(USER_ID, "Ann").send_in_group(BOT, GROUP, "hello")
    for n in range(3):  # the emulator's default burst
        await bot.send_message(GROUP, f"answer {n}")
    with pytest.raises(RetryAfter) as refused:
        await bot.send_message(GROUP, "one too many")
    retry_after = refused.value.retry_after
    seconds = retry_after.total_seconds() if hasattr(retry_after, "total_seconds") else retry_after
    assert seconds >= 3  # one message per 3 s on average
    assert [m.text for m in emu.group_messages(GROUP) if m.from_bot] == [
        "answer 0", "answer 1", "answer 2"]


async def test_in_privacy_mode_a_bot_gets_only_its_commands_from_a_group(
    emu: TelegramEmulator, bot: Bot
) -> None:
    user = emu.add_user(USER_ID, "Ann")
    await user.send_in_group(BOT, GROUP, "chatter the bot never sees", bot_is_admin=False)
    await user.send_in_group(BOT, GROUP, "/queue@other_bot", bot_is_admin=False)
    await user.send_in_group(BOT, GROUP, "/queue@test_bot", bot_is_admin=False)
    update = await next_update(bot)
    assert update.message is not None and update.message.text == "/queue@test_bot"
    assert len(emu.group_messages(GROUP)) == 3


# --------------------------------------------------------------------------------- media
async def test_a_photo_arrives_as_photo_sizes_with_its_caption(
    emu: TelegramEmulator, bot: Bot
) -> None:
    await emu.add_user(USER_ID, "Ann").send_photo(BOT, caption="the whiteboard")
    update = await next_update(bot)
    message = update.message
    assert message is not None and message.text is None and message.caption == "the whiteboard"
    assert [(p.width, p.height) for p in message.photo] == [
        (90, 67), (320, 240), (800, 600), (1280, 960)]
    assert len({p.file_unique_id for p in message.photo}) == 4
    largest = await (await bot.get_file(message.photo[-1].file_id)).download_as_bytearray()
    assert len(largest) == message.photo[-1].file_size


async def test_a_voice_note_and_a_sticker_arrive_as_voice_and_sticker(
    emu: TelegramEmulator, bot: Bot
) -> None:
    user = emu.add_user(USER_ID, "Ann")
    await user.send_voice(BOT, duration=7)
    await user.send_sticker(BOT, emoji="🎉")
    voice_update, sticker_update = await bot.get_updates(timeout=0)
    voice = voice_update.message.voice if voice_update.message else None
    sticker = sticker_update.message.sticker if sticker_update.message else None
    assert voice is not None and (voice.duration, voice.mime_type) == (7, "audio/ogg")
    assert sticker is not None and (sticker.type, sticker.emoji) == ("regular", "🎉")
    assert (sticker.width, sticker.height, sticker.is_animated) == (512, 512, False)
    assert [sorted(m.media or {}) for m in user.chat(BOT)] == [["voice"], ["sticker"]]


async def test_media_reach_ptbs_media_filters(emu: TelegramEmulator) -> None:
    async def kind(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        assert message is not None
        name = "photo" if message.photo else "voice" if message.voice else "sticker"
        await message.reply_text(f"got a {name}")

    user = emu.add_user(USER_ID, "Ann")
    app = (ApplicationBuilder().token(TOKEN).base_url(f"{emu.url}/bot")
           .base_file_url(f"{emu.url}/file/bot").build())
    app.add_handler(MessageHandler(f.PHOTO | f.VOICE | f.Sticker.ALL, kind))
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)  # type: ignore[union-attr]
        try:
            await user.send_photo(BOT)
            await user.send_voice(BOT)
            await user.send_sticker(BOT)
            for name in ("photo", "voice", "sticker"):
                await user.wait_for_text(BOT, f"got a {name}", timeout=5)
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()
    assert sorted(user.bot_texts(BOT)) == ["got a photo", "got a sticker", "got a voice"]


# --------------------------------------------------------------------------------- crafted buttons
async def test_press_raw_sends_callback_data_no_button_carries(emu: TelegramEmulator) -> None:
    pressed: asyncio.Queue[str] = asyncio.Queue()

    async def on_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None and update.callback_query.data is not None
        await update.callback_query.answer("not mine")
        await pressed.put(update.callback_query.data)

    user = emu.add_user(USER_ID, "Ann")
    app = (ApplicationBuilder().token(TOKEN).base_url(f"{emu.url}/bot")
           .base_file_url(f"{emu.url}/file/bot").build())
    app.add_handler(CallbackQueryHandler(on_press))
    async with app:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=1)  # type: ignore[union-attr]
        try:
            await user.send(BOT, "hi")
            sent = await app.bot.send_message(USER_ID, "no buttons here")
            with pytest.raises(AssertionError, match="no button"):
                await user.press(BOT, sent.message_id, "cancel:<b>x")
            with pytest.raises(AssertionError, match="no visible bot message #1"):
                await user.press_raw(BOT, 1, "cancel:<b>x")  # the user's own message
            query_id = await user.press_raw(BOT, sent.message_id, "cancel:<b>x")
            assert await asyncio.wait_for(pressed.get(), 5) == "cancel:<b>x"
        finally:
            await app.updater.stop()  # type: ignore[union-attr]
            await app.stop()
    assert emu.callback_answer(query_id) == {"text": "not mine"}
