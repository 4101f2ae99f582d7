"""The Telegram emulator's chaos API, checked through the real python-telegram-bot 22.

Each test names what the client sees (the exception PTB raises) and what the service did
(whether the message reached the user's chat), because that pair is what bot code must cope
with: an error that means "nothing happened" and one that means "maybe it happened".
"""

from __future__ import annotations

import asyncio
import datetime as dtm
from collections.abc import AsyncIterator

import pytest
from telegram import Bot
from telegram.error import NetworkError, RetryAfter, TelegramError

from fleetgram.emulators.telegram_api import TelegramEmulator

# PTB warns about RetryAfter.retry_after becoming a timedelta whenever it builds one.
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated since version v22.2")

TOKEN = "123456:TEST-token"
BOT = "test_bot"
ANN, BEN = 4242, 4343


@pytest.fixture
async def emu() -> AsyncIterator[TelegramEmulator]:
    emulator = TelegramEmulator()
    await emulator.start()
    emulator.add_bot(TOKEN, BOT, "Test Bot")
    for user_id, name in ((ANN, "Ann"), (BEN, "Ben")):
        await emulator.add_user(user_id, name).start(BOT)  # the chat is open to the bot
    yield emulator
    await emulator.stop()


@pytest.fixture
async def bot(emu: TelegramEmulator) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=f"{emu.url}/bot", base_file_url=f"{emu.url}/file/bot") as b:
        yield b


def bot_texts(emu: TelegramEmulator, user_id: int) -> list[str]:
    return [m.text for m in emu.history(BOT, user_id) if m.from_bot]


def seconds(value: int | dtm.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dtm.timedelta) else value


# --------------------------------------------------------------------------- fail_for
async def test_an_outage_raises_network_error_with_nginx_bad_gateway_and_sends_nothing(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.fail_for(BOT, 30)

    with pytest.raises(NetworkError) as caught:
        await bot.send_message(ANN, "hello")

    # _baserequest._request_wrapper: the HTML page is no JSON, so the message is the HTTP
    # phrase plus the unparsable body, chained from parse_json_payload's error.
    assert str(caught.value).startswith("Bad Gateway (502). Parsing the server response b'<html>")
    assert "nginx" in str(caught.value)
    assert isinstance(caught.value.__cause__, TelegramError)
    assert caught.value.__cause__.message == "Invalid server response"
    assert bot_texts(emu, ANN) == []
    (call,) = emu.calls_to(BOT, "sendMessage")
    assert (call.status, call.fault, call.response) == (502, "outage", None)


async def test_an_outage_ends_after_its_window_and_calls_succeed_again(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.fail_for(BOT, 1.5)
    with pytest.raises(NetworkError):
        await bot.send_message(ANN, "during")
    await asyncio.sleep(1.7)

    sent = await bot.send_message(ANN, "after")

    assert sent.text == "after"
    assert bot_texts(emu, ANN) == ["after"]
    assert [c.fault for c in emu.calls_to(BOT, "sendMessage")] == ["outage", None]


async def test_an_outage_spares_get_updates_unless_named(emu: TelegramEmulator, bot: Bot) -> None:
    emu.fail_for(BOT, 30)

    updates = await bot.get_updates(timeout=0)

    assert [u.message.text for u in updates if u.message] == ["/start", "/start"]


async def test_an_outage_limited_to_some_methods_leaves_the_others_working(
    emu: TelegramEmulator, bot: Bot
) -> None:
    sent = await bot.send_message(ANN, "draft")
    emu.fail_for(BOT, 30, methods=["editMessageText", "getUpdates"])

    with pytest.raises(NetworkError, match=r"^Bad Gateway \(502\)"):
        await bot.edit_message_text("final", chat_id=ANN, message_id=sent.message_id)
    with pytest.raises(NetworkError, match=r"^Bad Gateway \(502\)"):
        await bot.get_updates(timeout=0)
    await bot.send_message(ANN, "still works")

    assert bot_texts(emu, ANN) == ["draft", "still works"]


async def test_an_outage_with_a_json_body_raises_the_bot_apis_description(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.fail_for(BOT, 30, code=504, description="Gateway Timeout", json_body=True)

    with pytest.raises(NetworkError) as caught:
        await bot.send_message(ANN, "hello")

    assert str(caught.value) == "Gateway Timeout"
    assert bot_texts(emu, ANN) == []


# --------------------------------------------------------------------------- flood
async def test_a_flood_refuses_every_call_with_a_retry_after_counting_down(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.flood(BOT, 4.0)

    with pytest.raises(RetryAfter) as first:
        await bot.send_message(ANN, "one")
    await asyncio.sleep(1.0)
    with pytest.raises(RetryAfter) as second:
        await bot.send_message(BEN, "two")

    first_wait, second_wait = seconds(first.value.retry_after), seconds(second.value.retry_after)
    assert first_wait in (3, 4)  # the whole seconds left of 4, rounded up
    assert 1 <= second_wait < first_wait
    assert bot_texts(emu, ANN) == [] and bot_texts(emu, BEN) == []
    refused = emu.calls_to(BOT, "sendMessage")
    assert [(c.status, c.fault) for c in refused] == [(429, "flood"), (429, "flood")]
    assert refused[1].response == {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {second_wait:g}",
        "parameters": {"retry_after": second_wait},
    }


async def test_a_flood_ends_and_the_retried_call_goes_through(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.flood(BOT, 1.0)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(ANN, "hello")

    await asyncio.sleep(seconds(caught.value.retry_after) + 0.1)
    await bot.send_message(ANN, "hello")

    assert bot_texts(emu, ANN) == ["hello"]


async def test_a_flood_on_one_chat_spares_the_others(emu: TelegramEmulator, bot: Bot) -> None:
    emu.flood(BOT, 30, chat_id=ANN)

    with pytest.raises(RetryAfter):
        await bot.send_message(ANN, "to ann")
    await bot.send_message(BEN, "to ben")

    assert bot_texts(emu, ANN) == [] and bot_texts(emu, BEN) == ["to ben"]


# --------------------------------------------------------------------------- lose_reply_next
async def test_a_lost_reply_raises_network_error_though_the_message_was_sent(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.lose_reply_next(BOT, "sendMessage")

    with pytest.raises(NetworkError) as caught:
        await bot.send_message(ANN, "did it arrive?")

    # _httpxrequest.do_request wraps every httpx.HTTPError as NetworkError("httpx.<Name>: ...")
    assert str(caught.value) == (
        "httpx.RemoteProtocolError: Server disconnected without sending a response."
    )
    assert bot_texts(emu, ANN) == ["did it arrive?"]
    (call,) = emu.calls_to(BOT, "sendMessage")
    assert (call.status, call.fault) == (200, "lost_reply")


async def test_a_lost_reply_hits_only_the_next_calls_of_that_method(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.lose_reply_next(BOT, "sendMessage", count=2)

    for text in ("one", "two"):
        with pytest.raises(NetworkError):
            await bot.send_message(ANN, text)
    third = await bot.send_message(ANN, "three")

    assert third.text == "three"
    assert bot_texts(emu, ANN) == ["one", "two", "three"]


# --------------------------------------------------------------------------- malformed_next
async def test_a_malformed_answer_raises_invalid_server_response_and_sends_nothing(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.malformed_next(BOT, "sendMessage")

    with pytest.raises(TelegramError) as caught:
        await bot.send_message(ANN, "hello")

    assert type(caught.value) is TelegramError  # not a NetworkError: parse_json_payload
    assert caught.value.message == "Invalid server response"
    assert bot_texts(emu, ANN) == []
    (call,) = emu.calls_to(BOT, "sendMessage")
    assert (call.status, call.fault) == (200, "malformed")


async def test_a_processed_call_with_a_malformed_answer_still_sends_the_message(
    emu: TelegramEmulator, bot: Bot
) -> None:
    emu.malformed_next(BOT, "sendMessage", processed=True)

    with pytest.raises(TelegramError, match=r"^Invalid server response$"):
        await bot.send_message(ANN, "hello")
    await bot.send_message(ANN, "again")

    assert bot_texts(emu, ANN) == ["hello", "again"]
