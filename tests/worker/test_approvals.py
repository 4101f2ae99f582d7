"""Approvals by button in a worker chat: what the task's user sees and what the agent is told.

A real python-telegram-bot Application polls the Telegram emulator; simulated users press the
buttons as a Telegram client would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from telegram.ext import Application, ApplicationBuilder

from fleetgram.emulators.telegram_api import ChatMessage, SimUser, TelegramEmulator
from fleetgram.engines.base import ApprovalChoice
from fleetgram.worker.approvals import (
    ALREADY_ANSWERED,
    NOT_OPEN,
    ONLY_OWNER,
    Approvals,
    outcome_line,
)

# PTB warns about RetryAfter.retry_after becoming a timedelta whenever it builds one.
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated since version v22.2")

TOKEN = "700001:worker-token"
BOT = "worker_one_bot"
OWNER = 4242
OTHER = 5151
TASK = "t-17"
QUESTION = "🔧 Bash wants to run:\npytest -q"
BUTTONS = ["Allow once", "Allow for this task", "Deny"]


@dataclass
class World:
    emu: TelegramEmulator
    app: Application
    owner: SimUser

    def approvals(self, timeout: float = 30.0) -> Approvals:
        approvals = Approvals(self.app.bot, timeout=timeout)
        self.app.add_handler(approvals.handler())
        return approvals

    def ask(self, approvals: Approvals) -> asyncio.Task[ApprovalChoice]:
        return asyncio.create_task(
            approvals.ask(chat_id=OWNER, user_id=OWNER, task_id=TASK, text=QUESTION))

    async def question(self) -> ChatMessage:
        return await self.owner.wait_for(BOT, lambda m: m.from_bot and bool(m.buttons()))

    def message(self, message_id: int) -> ChatMessage:
        return next(m for m in self.owner.chat(BOT) if m.message_id == message_id)

    async def answer_to(self, query_id: str) -> dict[str, object]:
        for _ in range(250):
            answer = self.emu.callback_answer(query_id)
            if answer is not None:
                return answer
            await asyncio.sleep(0.02)
        raise AssertionError(f"query {query_id} was never answered")


@pytest.fixture
async def world() -> AsyncIterator[World]:
    emu = TelegramEmulator()
    await emu.start()
    emu.add_bot(TOKEN, BOT, "Worker One")
    owner = emu.add_user(OWNER, "Ada", "ada")
    owner.opened_earlier(BOT)
    app = (
        ApplicationBuilder().token(TOKEN).base_url(f"{emu.url}/bot")
        .base_file_url(f"{emu.url}/file/bot").concurrent_updates(True).build()
    )
    try:
        async with app:
            await app.start()
            await app.updater.start_polling(poll_interval=0, timeout=1)  # type: ignore[union-attr]
            try:
                yield World(emu, app, owner)
            finally:
                await app.updater.stop()  # type: ignore[union-attr]
                await app.stop()
    finally:
        await emu.stop()


def data(question: ChatMessage, label: str) -> str:
    return dict(question.buttons())[label]


# ------------------------------------------------------------------------ the question
async def test_the_question_shows_the_text_and_three_buttons(world: World) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    assert question.text == QUESTION
    assert question.parse_mode is None
    assert [label for label, _ in question.buttons()] == BUTTONS
    rows = question.reply_markup["inline_keyboard"]  # type: ignore[index]
    assert [[b["text"] for b in row] for row in rows] == [BUTTONS[:2], BUTTONS[2:]]
    assert all(len(d.encode()) <= 64 and d.startswith("ap:") for _, d in question.buttons())
    assert approvals.pending(TASK) == 1
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking


async def test_each_question_has_its_own_unguessable_id(world: World) -> None:
    approvals = world.approvals()
    first, second = world.ask(approvals), world.ask(approvals)
    await world.owner.wait_for(BOT, lambda m: len([x for x in world.owner.chat(BOT)
                                                   if x.buttons()]) == 2)
    ids = {d.split(":")[1] for m in world.owner.chat(BOT) for _, d in m.buttons()}
    assert len(ids) == 2 and all(len(i) >= 8 for i in ids)
    assert approvals.pending(TASK) == 2
    for asking in (first, second):
        asking.cancel()
    await asyncio.gather(first, second, return_exceptions=True)


# ------------------------------------------------------------------------ the answers
async def test_allow_once_returns_once_and_the_message_says_so_without_buttons(
    world: World,
) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    query = await world.owner.press(BOT, question.message_id, data(question, "Allow once"))
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.ONCE
    shown = world.message(question.message_id)
    assert shown.text == f"{QUESTION}\n\n✅ Allowed once"
    assert shown.buttons() == []
    assert (await world.answer_to(query)).get("show_alert") in (None, False)
    assert approvals.pending(TASK) == 0


async def test_allow_for_this_task_returns_task(world: World) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    await world.owner.press(BOT, question.message_id, data(question, "Allow for this task"))
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.TASK
    assert world.message(question.message_id).text.endswith(
        "✅ Allowed for the rest of this task")


async def test_deny_returns_deny(world: World) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    await world.owner.press(BOT, question.message_id, data(question, "Deny"))
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.DENY
    shown = world.message(question.message_id)
    assert shown.text.endswith("⛔ Denied") and shown.buttons() == []


async def test_no_answer_within_the_timeout_returns_timeout_and_says_denied(
    world: World,
) -> None:
    approvals = world.approvals(timeout=0.5)
    asking = world.ask(approvals)
    question = await world.question()
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.TIMEOUT
    shown = world.message(question.message_id)
    assert shown.text == f"{QUESTION}\n\n⌛ No answer in 1 s: denied"
    assert shown.buttons() == []
    assert approvals.pending(TASK) == 0


async def test_a_late_press_on_an_expired_question_is_told_it_was_answered(
    world: World,
) -> None:
    approvals = world.approvals(timeout=0.3)
    asking = world.ask(approvals)
    question = await world.question()
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.TIMEOUT
    query = await world.owner.press_raw(BOT, question.message_id, data(question, "Allow once"))
    assert (await world.answer_to(query))["text"] == ALREADY_ANSWERED


# ------------------------------------------------------------------------ who may answer
async def test_another_users_press_is_refused_with_an_alert_and_the_owner_still_answers(
    world: World,
) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    # Someone else replays the buttons' data (a modified client) from their own chat.
    other = world.emu.add_user(OTHER, "Bob", "bob")
    other.opened_earlier(BOT)
    theirs = await world.app.bot.send_message(OTHER, "hello Bob")
    query = await other.press_raw(BOT, theirs.message_id, data(question, "Allow for this task"))
    assert await world.answer_to(query) == {"text": ONLY_OWNER, "show_alert": True}
    assert not asking.done() and approvals.pending(TASK) == 1
    assert world.message(question.message_id).buttons() == question.buttons()
    await world.owner.press(BOT, question.message_id, data(question, "Deny"))
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.DENY


async def test_a_press_after_the_answer_changes_nothing(world: World) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    await world.owner.press(BOT, question.message_id, data(question, "Allow once"))
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.ONCE
    answered = world.message(question.message_id)
    query = await world.owner.press_raw(BOT, question.message_id, data(question, "Deny"))
    assert (await world.answer_to(query))["text"] == ALREADY_ANSWERED
    after = world.message(question.message_id)
    assert (after.text, after.edits) == (answered.text, answered.edits)


async def test_a_press_no_open_question_carries_is_told_it_is_no_longer_open(
    world: World,
) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    for raw in ("ap:zz", "ap:AAAAAAAA:once", "ap:" + "x" * 60):
        query = await world.owner.press_raw(BOT, question.message_id, raw)
        assert (await world.answer_to(query))["text"] == NOT_OPEN
    assert not asking.done() and approvals.pending(TASK) == 1
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking


# ------------------------------------------------------------------------ cancellation
async def test_a_cancelled_ask_says_the_task_stopped_and_raises_cancelled(world: World) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asking, 5)
    shown = world.message(question.message_id)
    assert shown.text == f"{QUESTION}\n\n⏹ task {TASK} stopped: not needed any more"
    assert shown.buttons() == []
    assert approvals.pending(TASK) == 0


async def test_cancel_task_resolves_its_open_questions_as_deny(world: World) -> None:
    approvals = world.approvals()
    asking = world.ask(approvals)
    question = await world.question()
    other_task = asyncio.create_task(
        approvals.ask(chat_id=OWNER, user_id=OWNER, task_id="t-other", text="another"))
    await world.owner.wait_for(BOT, lambda m: m.text == "another" and bool(m.buttons()))
    approvals.cancel_task(TASK)
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.DENY
    assert world.message(question.message_id).text.endswith("stopped: not needed any more")
    assert approvals.pending(TASK) == 0 and approvals.pending("t-other") == 1
    other_task.cancel()
    await asyncio.gather(other_task, return_exceptions=True)


# ------------------------------------------------------------------------ sending fails
async def test_a_403_when_sending_the_question_returns_deny(world: World) -> None:
    approvals = world.approvals()
    world.owner.block(BOT)
    assert await asyncio.wait_for(world.ask(approvals), 5) == ApprovalChoice.DENY
    assert world.owner.bot_texts(BOT) == []
    assert approvals.pending(TASK) == 0
    assert [c.status for c in world.emu.calls_to(BOT, "sendMessage")] == [403]


async def test_a_short_outage_is_waited_out_and_the_question_still_asked(world: World) -> None:
    approvals = world.approvals()
    world.emu.fail_for(BOT, 0.3, methods=["sendMessage"])
    asking = world.ask(approvals)
    question = await world.question()
    statuses = [c.status for c in world.emu.calls_to(BOT, "sendMessage")]
    assert statuses[0] == 502 and statuses[-1] == 200
    await world.owner.press(BOT, question.message_id, data(question, "Allow once"))
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.ONCE


async def test_a_question_too_long_for_telegram_is_cut_so_the_outcome_still_fits(
    world: World,
) -> None:
    approvals = world.approvals()
    asking = asyncio.create_task(
        approvals.ask(chat_id=OWNER, user_id=OWNER, task_id=TASK, text="x" * 5000))
    question = await world.question()
    assert question.text.endswith("…") and len(question.text) < 4096
    await world.owner.press(BOT, question.message_id, data(question, "Deny"))
    assert await asyncio.wait_for(asking, 5) == ApprovalChoice.DENY
    assert world.message(question.message_id).text.endswith("…\n\n⛔ Denied")


# ------------------------------------------------------------------------ outcome lines
@pytest.mark.parametrize(("choice", "seconds", "line"), [
    (ApprovalChoice.ONCE, 600, "✅ Allowed once"),
    (ApprovalChoice.TASK, 600, "✅ Allowed for the rest of this task"),
    (ApprovalChoice.DENY, 600, "⛔ Denied"),
    (ApprovalChoice.TIMEOUT, 600, "⌛ No answer in 10 min: denied"),
    (ApprovalChoice.TIMEOUT, 90, "⌛ No answer in 1.5 min: denied"),
])
def test_outcome_lines(choice: ApprovalChoice, seconds: float, line: str) -> None:
    assert outcome_line(choice, seconds) == line
