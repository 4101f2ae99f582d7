"""/addworker end to end: one-tap worker bots with Bot API 9.6 managed bots
(https://core.telegram.org/bots/api#keyboardbuttonrequestmanagedbot). The master offers the
button, the user creates a bot in the emulated Telegram client, the master fetches its token
(getManagedBotToken), keeps it encrypted, and the new worker joins the fleet."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from fleetgram.checks import StartupError
from fleetgram.domain import TaskState
from fleetgram.emulators.telegram_api import ChatMessage
from tests.e2e.harness import ADA, MALLORY, MASTER, World, wait_task

pytestmark = pytest.mark.e2e

KEY = "ZmxlZXRncmFtLXRlc3Qta2V5LTAxMjM0NTY3ODlhYmM="  # a fixed Fernet key (32 bytes)
OTHER_KEY = "b3RoZXIta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5YWI="
NEW_BOT = "ada_helper_bot"


def offers_the_button(message: ChatMessage) -> bool:
    rows = (message.reply_markup or {}).get("keyboard") or []
    return message.from_bot and any("request_managed_bot" in b for row in rows for b in row)


async def add_worker(world: World) -> str:
    """Ada sends /addworker, taps the button and creates @ada_helper_bot; the master's answer."""
    world.telegram.set_bot_management(MASTER, True)
    await world.open_chats(world.ada)
    await world.ada.send(MASTER, "/addworker")
    await world.ada.wait_for(MASTER, offers_the_button)
    await world.ada.create_managed_bot(MASTER, "Ada's helper", NEW_BOT)
    return (await world.ada.wait_for_text(MASTER, "in its chat: t.me/")).text


async def test_addworker_offers_the_one_tap_button(world: World) -> None:
    world.telegram.set_bot_management(MASTER, True)
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY):
        await world.open_chats(world.ada)
        await world.ada.send(MASTER, "/addworker")
        offer = await world.ada.wait_for(MASTER, offers_the_button)
        (button,) = offer.reply_markup["keyboard"][0]  # type: ignore[index]
        assert button["request_managed_bot"]["suggested_username"].endswith("_worker6_bot")
        assert offer.reply_markup.get("one_time_keyboard") is True  # type: ignore[union-attr]


async def test_a_created_bot_joins_as_a_worker_and_runs_a_pinned_prompt(world: World) -> None:
    world.claude.script("hello from the new worker", when="greet")
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY) as fleet:
        joined = await add_worker(world)
        assert f"worker6 (@{NEW_BOT}) joined; press Start in its chat" in joined
        await world.ada.start(NEW_BOT)
        task_id = await world.prompt("@worker6 greet me")
        task = await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=15)
        assert task.worker == "worker6"
        answer = await world.ada.wait_for_text(NEW_BOT, "hello from the new worker", timeout=15)
        assert answer.from_bot


async def test_the_token_is_stored_encrypted(world: World) -> None:
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY) as fleet:
        await add_worker(world)
        token = fleet.settings.token_for("worker6")
        (row,) = await fleet.store.managed_tokens()  # type: ignore[attr-defined]
        assert (row.slot, row.username) == ("worker6", NEW_BOT)
        assert token.encode() not in row.token_encrypted
        assert token.split(":")[1].encode() not in row.token_encrypted
        assert Fernet(KEY.encode()).decrypt(row.token_encrypted).decode() == token


async def test_an_added_worker_is_still_in_the_pool_after_a_restart(world: World) -> None:
    world.claude.script("still here", when="again")
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY):
        await add_worker(world)
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY) as fleet:
        assert fleet.settings.slot_names[-1] == "worker6"
        task_id = await world.prompt("@worker6 again please")
        task = await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=15)
        assert task.worker == "worker6"


async def test_a_wrong_key_at_restart_is_a_startup_error_naming_the_setting(
    world: World,
) -> None:
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY):
        await add_worker(world)
    with pytest.raises(StartupError) as failure:
        async with world.fleet(TOKEN_ENCRYPTION_KEY=OTHER_KEY):
            pass
    assert failure.value.setting == "TOKEN_ENCRYPTION_KEY"
    assert "does not decrypt" in failure.value.problem


async def test_without_a_key_addworker_says_it_is_not_configured(world: World) -> None:
    world.telegram.set_bot_management(MASTER, True)
    async with world.fleet():
        await world.open_chats(world.ada)
        await world.ada.send(MASTER, "/addworker")
        answer = await world.ada.wait_for_text(MASTER, "not configured")
        assert "TOKEN_ENCRYPTION_KEY" in answer.text and "Fernet.generate_key" in answer.text
        assert not any(offers_the_button(m) for m in world.ada.chat(MASTER))


async def test_a_non_admin_is_refused_when_admins_are_set(world: World) -> None:
    world.telegram.set_bot_management(MASTER, True)
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY, ALLOWED_USER_IDS=f"{ADA},{MALLORY}",
                           ADMIN_USER_IDS=str(ADA)):
        await world.mallory.start(MASTER)
        await world.mallory.send(MASTER, "/addworker")
        answer = await world.mallory.wait_for_text(MASTER, "admins")
        assert "ADMIN_USER_IDS" in answer.text
        assert not any(offers_the_button(m) for m in world.mallory.chat(MASTER))


async def test_management_off_at_botfather_gets_a_message_naming_the_setting(
    world: World,
) -> None:
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY) as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(MASTER, "/addworker")
        answer = await world.ada.wait_for_text(MASTER, "refused the bot-creation button")
        assert "Bot Management Mode" in answer.text and "@BotFather" in answer.text
        assert not any(offers_the_button(m) for m in world.ada.chat(MASTER))
        assert len(fleet.settings.slot_names) == 5


async def test_stored_tokens_without_a_key_at_restart_is_a_startup_error(world: World) -> None:
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY):
        await add_worker(world)
    with pytest.raises(StartupError) as failure:
        async with world.fleet():
            pass
    assert failure.value.setting == "TOKEN_ENCRYPTION_KEY"
    assert "is not set" in failure.value.problem


async def test_a_502_burst_on_getmanagedbottoken_is_waited_out_and_the_bot_joins(
    world: World,
) -> None:
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY) as fleet:
        world.telegram.fail_for(MASTER, 1.5, methods=["getManagedBotToken"])
        joined = await add_worker(world)
        assert f"worker6 (@{NEW_BOT}) joined" in joined
        assert fleet.settings.token_for("worker6") == world.telegram.bot_token(NEW_BOT)
    assert [c for c in world.telegram.calls_to(MASTER, "getManagedBotToken") if c.status == 502]


async def test_a_lost_getmanagedbottoken_answer_is_read_again(world: World) -> None:
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY) as fleet:
        world.telegram.lose_reply_next(MASTER, "getManagedBotToken")
        await add_worker(world)
        (row,) = await fleet.store.managed_tokens()  # type: ignore[attr-defined]
        assert row.slot == "worker6"
    assert len(world.telegram.calls_to(MASTER, "getManagedBotToken")) == 2


async def test_when_telegram_never_gives_the_token_the_user_is_told_and_nothing_is_stored(
    world: World,
) -> None:
    async with world.fleet(TOKEN_ENCRYPTION_KEY=KEY) as fleet:
        world.telegram.set_bot_management(MASTER, True)
        world.telegram.fail_for(MASTER, 60, methods=["getManagedBotToken"])
        await world.open_chats(world.ada)
        await world.ada.send(MASTER, "/addworker")
        await world.ada.wait_for(MASTER, offers_the_button)
        await world.ada.create_managed_bot(MASTER, "Ada's helper", NEW_BOT)
        answer = await world.ada.wait_for_text(MASTER, "did not give its token", timeout=30)
        assert f"@{NEW_BOT} was created" in answer.text and "/addworker" in answer.text
        assert await fleet.store.managed_tokens() == []  # type: ignore[attr-defined]
        assert len(fleet.settings.slot_names) == 5
