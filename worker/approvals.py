"""Approvals by button in a worker chat (PERMISSION_MODE=ask).

A tool call that needs permission is shown in the worker chat with three buttons, Allow once /
Allow for this task / Deny; only the task's own user can press them, and no answer within
APPROVAL_TIMEOUT denies it. `Approvals.ask` is what the run's `TurnContext.approve` awaits;
`Approvals.handler()` is the CallbackQueryHandler the worker adds to its Application.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import CallbackQueryHandler, ContextTypes

from fleetgram.engines.base import ApprovalChoice
from fleetgram.engines.permissions import approval_outcome
from fleetgram.telegram.delivery import Action, Decision, decide
from fleetgram.telegram.retrying import send_retrying

log = logging.getLogger(__name__)

PREFIX = "ap:"
SEND_ATTEMPTS = 4  # sends of one question at most (an ambiguous one is resent once only)
SEND_MAX_WAIT = 5.0  # seconds waited between them at most
EDIT_ATTEMPTS = 3
EDIT_SECONDS = 5.0  # showing the outcome never holds the agent longer than this
STOPPED_EDIT_SECONDS = 2.0  # a cancelled task is told quickly or not at all
# Room kept for the outcome line: Telegram counts 4096 UTF-16 units per message.
QUESTION_MAX_UNITS = 3900
# Closed questions remembered, so a late press is told it was answered (bounded memory).
CLOSED_MEMORY = 1000

ONLY_OWNER = "Only the person who asked for this task can answer."
ALREADY_ANSWERED = "This was already answered."
NOT_OPEN = "This question is no longer open."

# secrets.token_urlsafe(6): 8 characters, 48 random bits; "ap:" + 8 + ":once" is 16 bytes.
_DATA = re.compile(r"^ap:([A-Za-z0-9_-]{8}):(once|task|deny)$")
_PRESSES = {"once": ApprovalChoice.ONCE, "task": ApprovalChoice.TASK, "deny": ApprovalChoice.DENY}


def outcome_line(choice: ApprovalChoice, timeout_seconds: float) -> str:
    """The line added under an answered question (the wording lives with the permissions)."""
    return approval_outcome(choice, timeout_seconds / 60)


def stopped_line(task_id: str) -> str:
    """The line added under a question whose task was cancelled while it waited."""
    return f"⏹ task {task_id} stopped: not needed any more"


def keyboard(question_id: str) -> InlineKeyboardMarkup:
    data = f"{PREFIX}{question_id}:"
    return InlineKeyboardMarkup([
        [InlineKeyboardButton("Allow once", callback_data=data + "once"),
         InlineKeyboardButton("Allow for this task", callback_data=data + "task")],
        [InlineKeyboardButton("Deny", callback_data=data + "deny")],
    ])


def clip(text: str, max_units: int = QUESTION_MAX_UNITS) -> str:
    """`text` cut to `max_units` UTF-16 units (Telegram's measure), with an ellipsis if cut."""
    if len(text.encode("utf-16-le")) // 2 <= max_units:
        return text
    out, units = [], 0
    for ch in text:
        units += len(ch.encode("utf-16-le")) // 2
        if units > max_units - 1:
            break
        out.append(ch)
    return "".join(out) + "…"


@dataclass
class _Question:
    task_id: str
    user_id: int
    future: asyncio.Future[ApprovalChoice]
    stopped: bool = False  # resolved by cancel_task: the message says the task stopped
    pressed_on: set[int] = field(default_factory=set)  # messages the answer came from


class Approvals:
    """The open questions of one worker bot, and the handler that answers them."""

    def __init__(
        self, bot: Bot, *, timeout: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bot = bot
        self.timeout = timeout
        self.clock = clock
        self._open: dict[str, _Question] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()  # id -> what a late press is told

    # --- the worker's side -----------------------------------------------------------------
    def handler(self) -> CallbackQueryHandler:
        return CallbackQueryHandler(self._on_press, pattern=r"^ap:")

    def pending(self, task_id: str) -> int:
        return sum(1 for q in self._open.values() if q.task_id == task_id)

    def cancel_task(self, task_id: str) -> None:
        for question in self._open.values():
            if question.task_id == task_id and not question.future.done():
                question.stopped = True
                question.future.set_result(ApprovalChoice.DENY)

    async def ask(self, *, chat_id: int, user_id: int, task_id: str, text: str) -> ApprovalChoice:
        question_id = secrets.token_urlsafe(6)
        while question_id in self._open or question_id in self._closed:
            question_id = secrets.token_urlsafe(6)
        text = clip(text)
        question = _Question(task_id, user_id, asyncio.get_running_loop().create_future())
        # Open before sending: a press can arrive before sendMessage's answer does.
        self._open[question_id] = question
        try:
            message = await self._send(chat_id, text, question_id, task_id)
        except BaseException:
            self._close(question_id, NOT_OPEN)
            raise
        if message is None:
            self._close(question_id, NOT_OPEN)
            return ApprovalChoice.DENY
        deadline = self.clock() + self.timeout
        try:
            while not question.future.done():
                remaining = deadline - self.clock()
                if remaining <= 0:
                    break
                await asyncio.wait({question.future}, timeout=remaining)
        except asyncio.CancelledError:
            self._close(question_id, NOT_OPEN)
            await self._edit_bounded(
                chat_id, {message.message_id}, text, stopped_line(task_id), STOPPED_EDIT_SECONDS)
            raise
        choice = question.future.result() if question.future.done() else ApprovalChoice.TIMEOUT
        self._close(question_id, NOT_OPEN if question.stopped else ALREADY_ANSWERED)
        line = stopped_line(task_id) if question.stopped else outcome_line(choice, self.timeout)
        log.info("approval answered", extra={"task_id": task_id, "choice": choice.value})
        await self._edit_bounded(
            chat_id, {message.message_id, *question.pressed_on}, text, line, EDIT_SECONDS)
        return choice

    # --- Telegram --------------------------------------------------------------------------
    async def _on_press(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        match = _DATA.match(query.data or "")
        question_id = match.group(1) if match else ""
        question = self._open.get(question_id)
        alert = False
        if match is None:
            answer = NOT_OPEN
        elif question is None:
            answer = self._closed.get(question_id, NOT_OPEN)
        elif question.future.done():  # resolved, its ask not yet back from the wait
            answer = NOT_OPEN if question.stopped else ALREADY_ANSWERED
        elif query.from_user.id != question.user_id:
            answer, alert = ONLY_OWNER, True
            log.info("approval pressed by someone else",
                     extra={"task_id": question.task_id, "user_id": query.from_user.id})
        else:
            choice = _PRESSES[match.group(2)]
            # Decided before answering: a slow answerCallbackQuery must not delay the agent.
            question.future.set_result(choice)
            if isinstance(query.message, Message):
                question.pressed_on.add(query.message.message_id)
            answer = outcome_line(choice, self.timeout)
        try:
            # Always answered: the client shows a spinner on the button until it is.
            await query.answer(answer, show_alert=alert)
        except TelegramError as exc:
            log.info("could not answer a button press", extra={"error": type(exc).__name__})

    async def _send(
        self, chat_id: int, text: str, question_id: str, task_id: str
    ) -> Message | None:
        """The question, sent as every send of the fleet is decided
        (fleetgram.telegram.delivery); None (logged) if Telegram would not take it."""
        def failed(verdict: Decision) -> None:
            log.warning("could not ask for an approval", extra={
                "task_id": task_id, "chat_id": chat_id, "outcome": verdict.action.value,
                "reason": verdict.reason[:200]})

        # A resend after an ambiguous failure carries the same buttons: either one answers.
        return await send_retrying(
            lambda: self.bot.send_message(chat_id, text, reply_markup=keyboard(question_id)),
            on_failure=failed, attempts=SEND_ATTEMPTS, max_wait=SEND_MAX_WAIT)

    async def _edit_bounded(
        self, chat_id: int, message_ids: set[int], text: str, line: str, seconds: float
    ) -> None:
        """Best effort: the question shows `line` and loses its buttons, within `seconds`.
        A cancellation of the caller is passed on."""
        edits = asyncio.ensure_future(asyncio.gather(
            *(self._edit(chat_id, m, f"{text}\n\n{line}") for m in sorted(message_ids))))
        try:
            done, _ = await asyncio.wait({edits}, timeout=seconds)
        except asyncio.CancelledError:
            edits.cancel()
            raise
        if not done:
            edits.cancel()
            log.info("showing an approval's outcome overran", extra={"chat_id": chat_id})

    async def _edit(self, chat_id: int, message_id: int, text: str) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        for _ in range(EDIT_ATTEMPTS):
            error: TelegramError | None = None
            try:
                # No reply_markup: Telegram removes the inline keyboard.
                await self.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id)
            except TelegramError as exc:
                error, failures = exc, failures + 1
            if isinstance(error, BadRequest) and "not modified" in str(error).lower():
                return  # an earlier, ambiguous edit went through
            verdict = decide(error, failures=failures, html=False, now=loop.time())
            if verdict.action == Action.DELIVERED:
                return
            log.info("could not show an approval's outcome", extra={
                "chat_id": chat_id, "outcome": verdict.action.value,
                "reason": verdict.reason[:200]})
            if verdict.action not in (Action.WAIT, Action.AMBIGUOUS):
                return  # an edit is idempotent: resending an ambiguous one is harmless
            await asyncio.sleep(max(0.0, verdict.until - loop.time()))

    def _close(self, question_id: str, late_answer: str) -> None:
        self._open.pop(question_id, None)
        self._closed[question_id] = late_answer
        while len(self._closed) > CLOSED_MEMORY:
            self._closed.popitem(last=False)

