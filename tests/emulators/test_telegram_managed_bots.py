"""Specifications of the emulator's managed bots (Bot API 9.6), checked through the real
python-telegram-bot: the request_managed_bot reply-keyboard button
(https://core.telegram.org/bots/api#keyboardbuttonrequestmanagedbot), the bot a user creates
with it, the `managed_bot` update and the `managed_bot_created` service message, and
getManagedBotToken / replaceManagedBotToken (https://core.telegram.org/bots/api#getmanagedbottoken).
The BotFather toggle is the Mini App's bot management setting (getMe: can_manage_bots)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from telegram import (
    Bot,
    KeyboardButton,
    KeyboardButtonRequestManagedBot,
    ReplyKeyboardMarkup,
    Update,
)
from telegram.error import BadRequest, InvalidToken

from fleetgram.emulators.telegram_api import ApiError, TelegramEmulator

TOKEN = "123456:MANAGER-token"
OTHER_TOKEN = "654321:OTHER-token"
MANAGER = "manager_bot"
OTHER = "other_bot"
USER_ID = 4242
GROUP = -4001


def keyboard(*request_ids: int) -> ReplyKeyboardMarkup:
    return ReplyKeyboardMarkup([[KeyboardButton(
        f"Create {rid}", request_managed_bot=KeyboardButtonRequestManagedBot(
            request_id=rid, suggested_name="Helper", suggested_username="helper_bot"))
        for rid in request_ids]], one_time_keyboard=True)


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    await emulator.start()
    emulator.add_bot(TOKEN, MANAGER, "Manager")
    emulator.add_bot(OTHER_TOKEN, OTHER, "Other")
    yield emulator
    await emulator.stop()


def client(emu: TelegramEmulator, token: str) -> Bot:
    return Bot(token, base_url=f"{emu.url}/bot", base_file_url=f"{emu.url}/file/bot")


@pytest.fixture
async def manager(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    async with client(emu, TOKEN) as bot:
        yield bot


async def offer_button(emu: TelegramEmulator, manager: Bot) -> None:
    emu.set_bot_management(MANAGER, True)
    user = emu.add_user(USER_ID, "Ann")
    await user.start(MANAGER)
    (start,) = await manager.get_updates(timeout=0)
    await manager.get_updates(offset=start.update_id + 1, timeout=0)  # the /start, confirmed
    await manager.send_message(USER_ID, "make one", reply_markup=keyboard(7))


async def test_get_me_reports_the_botfather_management_toggle(
    emu: TelegramEmulator, manager: Bot
) -> None:
    assert (await manager.get_me()).can_manage_bots is False
    emu.set_bot_management(MANAGER, True)
    assert (await manager.get_me()).can_manage_bots is True


async def test_the_button_is_refused_when_management_is_off(
    emu: TelegramEmulator, manager: Bot
) -> None:
    await emu.add_user(USER_ID, "Ann").start(MANAGER)
    with pytest.raises(BadRequest, match="Button_type_invalid"):
        await manager.send_message(USER_ID, "make one", reply_markup=keyboard(1))


async def test_the_button_is_refused_outside_private_chats(
    emu: TelegramEmulator, manager: Bot
) -> None:
    emu.set_bot_management(MANAGER, True)
    await emu.add_user(USER_ID, "Ann").send_in_group(MANAGER, GROUP, "hi")
    with pytest.raises(BadRequest, match="Button_type_invalid"):
        await manager.send_message(GROUP, "make one", reply_markup=keyboard(1))


async def test_request_ids_must_be_unique_int32_in_the_message(
    emu: TelegramEmulator, manager: Bot
) -> None:
    emu.set_bot_management(MANAGER, True)
    await emu.add_user(USER_ID, "Ann").start(MANAGER)
    with pytest.raises(BadRequest, match="Button_id_invalid"):
        await manager.send_message(USER_ID, "two", reply_markup=keyboard(3, 3))
    with pytest.raises(BadRequest, match="valid number"):
        await manager.send_message(USER_ID, "big", reply_markup=keyboard(2**31))
    sent = await manager.send_message(USER_ID, "ok", reply_markup=keyboard(-2**31, 2**31 - 1))
    assert sent.message_id


async def test_creating_a_bot_sends_the_update_and_the_service_message(
    emu: TelegramEmulator, manager: Bot
) -> None:
    await offer_button(emu, manager)
    user = emu.add_user(USER_ID, "Ann")
    assert await user.create_managed_bot(MANAGER, "Helper", "@helper_bot") == "helper_bot"

    updates: list[Update] = await manager.get_updates(timeout=0)
    kinds = [u.managed_bot is not None for u in updates]
    assert kinds == [True, False]
    managed, service = updates[0].managed_bot, updates[1].message
    assert managed is not None and managed.user.id == USER_ID
    assert managed.bot.username == "helper_bot" and managed.bot.is_bot
    assert service is not None and service.managed_bot_created is not None
    assert service.managed_bot_created.bot == managed.bot
    assert service.from_user is not None and service.from_user.id == USER_ID
    assert emu.managed_bots(MANAGER) == ["helper_bot"]


async def test_the_manager_gets_a_token_that_works(emu: TelegramEmulator, manager: Bot) -> None:
    await offer_button(emu, manager)
    await emu.add_user(USER_ID, "Ann").create_managed_bot(MANAGER, "Helper", "helper_bot")
    (update, _) = await manager.get_updates(timeout=0)
    assert update.managed_bot is not None
    token = await manager.get_managed_bot_token(user_id=update.managed_bot.bot.id)
    async with client(emu, token) as helper:
        me = await helper.get_me()
    assert (me.id, me.username, me.first_name) == (update.managed_bot.bot.id, "helper_bot",
                                                   "Helper")


async def test_only_the_manager_may_read_or_replace_the_token(
    emu: TelegramEmulator, manager: Bot
) -> None:
    await offer_button(emu, manager)
    await emu.add_user(USER_ID, "Ann").create_managed_bot(MANAGER, "Helper", "helper_bot")
    (update, _) = await manager.get_updates(timeout=0)
    assert update.managed_bot is not None
    helper_id = update.managed_bot.bot.id
    async with client(emu, OTHER_TOKEN) as other:
        with pytest.raises(BadRequest, match="Bot_invalid"):
            await other.get_managed_bot_token(user_id=helper_id)
    with pytest.raises(BadRequest, match="Bot_invalid"):
        await manager.get_managed_bot_token(user_id=654321)  # a bot it does not manage


async def test_replacing_the_token_revokes_the_old_one(emu: TelegramEmulator, manager: Bot) -> None:
    await offer_button(emu, manager)
    await emu.add_user(USER_ID, "Ann").create_managed_bot(MANAGER, "Helper", "helper_bot")
    (update, _) = await manager.get_updates(timeout=0)
    assert update.managed_bot is not None
    old = await manager.get_managed_bot_token(user_id=update.managed_bot.bot.id)
    new = await manager.replace_managed_bot_token(user_id=update.managed_bot.bot.id)
    assert new != old
    async with client(emu, new) as helper:
        assert (await helper.get_me()).username == "helper_bot"
    with pytest.raises(InvalidToken):
        async with client(emu, old) as helper:
            await helper.get_me()


async def test_creation_follows_bots_create_bot_rules(emu: TelegramEmulator, manager: Bot) -> None:
    await offer_button(emu, manager)
    user = emu.add_user(USER_ID, "Ann")
    with pytest.raises(ApiError, match="USERNAME_SUFFIX_MISSING"):
        await user.create_managed_bot(MANAGER, "Helper", "helper_robo")
    with pytest.raises(ApiError, match="USERNAME_OCCUPIED"):
        await user.create_managed_bot(MANAGER, "Helper", OTHER)
    emu.set_bot_management(MANAGER, False)  # turned off after the button was sent
    with pytest.raises(ApiError, match="MANAGER_PERMISSION_MISSING"):
        await user.create_managed_bot(MANAGER, "Helper", "helper_bot")
    assert emu.managed_bots(MANAGER) == []


async def test_creating_needs_a_button_in_the_chat(emu: TelegramEmulator) -> None:
    emu.set_bot_management(MANAGER, True)
    user = emu.add_user(USER_ID, "Ann")
    with pytest.raises(AssertionError, match="no request_managed_bot button"):
        await user.create_managed_bot(MANAGER, "Helper", "helper_bot")
