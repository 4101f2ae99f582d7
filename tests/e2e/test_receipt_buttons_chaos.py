"""A receipt's Cancel button when Telegram refuses to remove it (editMessageReplyMarkup,
https://core.telegram.org/bots/api#editmessagereplymarkup): the task's notices arrive anyway,
each once; a 429 or a 5xx burst delays the button's removal, a refusal (400, 403) ends it, and
nothing is tried again and again."""

from __future__ import annotations

import pytest

from fleetgram.domain import TaskState
from fleetgram.emulators.telegram_api import Call, ChatMessage
from tests.e2e.harness import ADA, MASTER, World, wait_task, wait_until
from tests.e2e.test_master_chaos import notices, settled

pytestmark = pytest.mark.e2e

UNBUTTON = "editMessageReplyMarkup"


def in_chat(world: World, message_id: int) -> ChatMessage | None:
    """The message as Ada's client shows it now (None once deleted)."""
    return next((m for m in world.ada.chat(MASTER) if m.message_id == message_id), None)


def has_buttons(world: World, message_id: int) -> bool:
    message = in_chat(world, message_id)
    return message is not None and bool(message.buttons())


def edits_of(world: World, message_id: int) -> list[Call]:
    """The master's calls to remove the buttons of `message_id`, answered or not."""
    return [c for c in world.telegram.calls_to(MASTER, UNBUTTON)
            if c.params.get("message_id") == message_id]


async def a_task(world: World, text: str) -> tuple[str, int]:
    """Ada's task: its id and its receipt's message id (the receipt shows Cancel)."""
    task_id = await world.prompt(text)
    receipt = await world.ada.wait_for(MASTER, lambda m: f"🆕 {task_id}" in m.text)
    assert receipt.buttons() == [("Cancel", f"cancel:{task_id}")]
    return task_id, receipt.message_id


async def the_outbox_moved_on(world: World) -> None:
    """A later task's receipt arrives: the outbox is done with the earlier task's ending and
    its button (one chat's notices go in order, the button's first try with its notice)."""
    await a_task(world, "a later task")


async def test_a_429_on_the_button_is_waited_out_then_the_button_goes(world: World) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        world.telegram.flood(MASTER, 4.0, chat_id=ADA, methods=[UNBUTTON])
        task_id, receipt = await a_task(world, "a task whose button meets a 429")

        await world.ada.wait_to_see(MASTER, f"✅ {task_id} done")
        await wait_until(lambda: not has_buttons(world, receipt), 15, "the button to go")

        await wait_task(fleet, task_id, TaskState.COMPLETED)
        # One refusal: the retry came after the retry_after Telegram gave, not before.
        assert [c.status for c in edits_of(world, receipt)] == [429, 200]
        assert notices(world, ADA, task_id) == ["receipt", "started", "completed"]


async def test_a_bad_gateway_burst_on_the_button_delays_it_and_no_notice(world: World) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        world.telegram.fail_for(MASTER, 3.0, methods=[UNBUTTON])
        task_id, receipt = await a_task(world, "a task whose button meets a bad gateway")

        await world.ada.wait_to_see(MASTER, f"✅ {task_id} done")
        assert has_buttons(world, receipt)  # the notice did not wait for the button
        await wait_until(lambda: not has_buttons(world, receipt), 20, "the button to go")

        await wait_task(fleet, task_id, TaskState.COMPLETED)
        statuses = [c.status for c in edits_of(world, receipt)]
        assert statuses[-1] == 200 and 1 <= statuses.count(502) <= 6  # backed off
        assert notices(world, ADA, task_id) == ["receipt", "started", "completed"]


async def test_a_lost_answer_to_the_button_removal_is_checked_once_then_left(
    world: World,
) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        world.telegram.lose_reply_next(MASTER, UNBUTTON)
        task_id, receipt = await a_task(world, "a task whose button edit loses its answer")

        await world.ada.wait_to_see(MASTER, f"✅ {task_id} done")
        await wait_until(lambda: not has_buttons(world, receipt), 10, "the button to go")
        await wait_until(lambda: len(edits_of(world, receipt)) == 2, 10, "a second try")
        await wait_until(lambda: fleet.master.outbox.buttons_to_retry == 0, 10,
                         "the outbox to be done with the button")

        # Done, though unconfirmed: tried once more, told "message is not modified", left.
        answers = [c.response or {} for c in edits_of(world, receipt)]
        assert len(answers) == 2
        assert "message is not modified" in answers[1].get("description", "")
        assert notices(world, ADA, task_id) == ["receipt", "started", "completed"]


async def test_a_receipt_the_user_deleted_is_not_edited_again(world: World) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        world.claude.tokens_per_second = 2.0  # the task outlasts the deletion
        task_id, receipt = await a_task(world, "a task whose receipt the user deletes")
        world.ada.delete(MASTER, receipt)
        world.claude.tokens_per_second = 400.0

        await world.ada.wait_to_see(MASTER, f"✅ {task_id} done")
        await the_outbox_moved_on(world)

        answers = [c.response or {} for c in edits_of(world, receipt)]
        assert [a.get("description") for a in answers] == [
            "Bad Request: message to edit not found"]
        assert fleet.master.outbox.buttons_to_retry == 0
        assert in_chat(world, receipt) is None
        assert notices(world, ADA, task_id) == ["started", "completed"]


async def test_a_forbidden_button_removal_is_given_up_and_later_tasks_go_on(
    world: World,
) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        world.telegram.fail_next(MASTER, UNBUTTON, 403, "Forbidden: bot was blocked by the user")
        task_id, receipt = await a_task(world, "a task whose button edit is forbidden")

        await world.ada.wait_to_see(MASTER, f"✅ {task_id} done")
        await the_outbox_moved_on(world)

        assert [c.status for c in edits_of(world, receipt)] == [403]
        assert fleet.master.outbox.buttons_to_retry == 0
        assert has_buttons(world, receipt)  # left as it is: pressing it says the task is over
        assert notices(world, ADA, task_id) == ["receipt", "started", "completed"]
