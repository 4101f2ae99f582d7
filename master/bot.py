"""The master bot: turns prompts and commands into tasks and answers about the fleet.

It never runs Claude itself. It writes tasks to the queue seam and announces what the outbox
says happened, so every notice it sends is already true in the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, RetryAfter
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from fleetgram.aio import wait_ended
from fleetgram.config import Settings
from fleetgram.domain import Task, TaskSource, TaskState, WorkerState, new_task_id, utcnow
from fleetgram.master.views import (
    HELP,
    MASTER_COMMANDS,
    queue_view,
    receipt,
    render_event,
    workers_view,
)
from fleetgram.parsing import ParseError, make_title, parse_prompt, parse_task_id
from fleetgram.policy import worker_state
from fleetgram.store.base import CancelOutcome, Store
from fleetgram.telegram.app import build_application, install_allowlist, start_polling, stop_polling
from fleetgram.telegram.formatting import markdown_to_html
from fleetgram.telegram.splitting import split_for_telegram

log = logging.getLogger(__name__)

_QUEUE_STATES = [TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING]


class MasterBot:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_new_task: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.on_new_task = on_new_task
        self.app: Application = build_application(settings.master_bot_token, settings)
        self._notifier: asyncio.Task[None] | None = None
        install_allowlist(self.app, settings.allowed_user_ids)
        add = self.app.add_handler
        add(CommandHandler(["start", "help"], self._on_help))
        add(CommandHandler("queue", self._on_queue))
        add(CommandHandler("workers", self._on_workers))
        add(CommandHandler("cancel", self._on_cancel))
        add(CommandHandler("urgent", self._on_urgent))
        add(CallbackQueryHandler(self._on_cancel_button, pattern=r"^cancel:"))
        add(MessageHandler(filters.TEXT & ~filters.COMMAND, self._on_text))
        add(MessageHandler(filters.COMMAND, self._on_unknown_command))

    async def start(self) -> None:
        await start_polling(self.app, MASTER_COMMANDS)
        self._notifier = asyncio.create_task(self._notify_loop(), name="master-notifier")
        log.info("master ready", extra={"username": self.app.bot.username})

    async def stop(self) -> None:
        if self._notifier is not None:
            self._notifier.cancel()
            await wait_ended([self._notifier])
        await stop_polling(self.app)

    # --- commands ------------------------------------------------------------------------
    async def _on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(HELP, parse_mode=ParseMode.HTML)

    async def _on_queue(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        tasks = await self.store.list_tasks(_QUEUE_STATES, limit=50)
        await update.effective_message.reply_text(
            queue_view(tasks, self.clock()), parse_mode=ParseMode.HTML
        )

    async def _states(self) -> tuple[list, dict[str, WorkerState]]:
        slots = await self.store.get_slots()
        now = self.clock()
        lease = self.settings.worker_lease_seconds
        return slots, {s.name: worker_state(s, now, lease) for s in slots}

    async def _on_workers(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        slots, states = await self._states()
        await update.effective_message.reply_text(
            workers_view(slots, states, self.clock()), parse_mode=ParseMode.HTML
        )

    async def _on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_user is not None
        try:
            task_id = parse_task_id(context.args or [])
        except ParseError as exc:
            await update.effective_message.reply_text(str(exc))
            return
        text = await self._cancel(task_id, update.effective_user.id)
        await update.effective_message.reply_text(text, parse_mode=ParseMode.HTML)

    async def _on_cancel_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None and update.effective_user is not None
        task_id = query.data.removeprefix("cancel:")
        text = await self._cancel(task_id, update.effective_user.id)
        await query.answer()
        if query.message is not None:
            await context.bot.send_message(query.message.chat.id, text, parse_mode=ParseMode.HTML)

    async def _cancel(self, task_id: str, user_id: int) -> str:
        result = await self.store.request_cancel(task_id, user_id, self.clock())
        match result.outcome:
            case CancelOutcome.NOT_FOUND:
                return f"There is no task {task_id}; see /queue."
            case CancelOutcome.NOT_YOURS:
                return f"{task_id} is someone else's task; only they can cancel it."
            case CancelOutcome.ALREADY_FINISHED:
                state = result.task.state.value if result.task else "finished"
                return f"{task_id} has already finished ({state})."
            case CancelOutcome.CANCELLED:
                return f"⏹ <b>{task_id}</b> cancelled before it started; it will not run."
            case CancelOutcome.REQUESTED:
                worker = result.task.worker if result.task else "its worker"
                return f"Stopping <b>{task_id}</b> on {worker}…"
        return "?"

    async def _on_urgent(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_message.text is not None
        text = update.effective_message.text.partition(" ")[2]
        await self._queue_prompt(update, text, priority=1)

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_message.text is not None
        await self._queue_prompt(update, update.effective_message.text)

    async def _on_unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("I don't know that command; see /help.")

    async def _queue_prompt(self, update: Update, text: str, priority: int | None = None) -> None:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None
        slots, states = await self._states()
        usernames = {s.username.lower(): s.name for s in slots if s.username}
        try:
            request = parse_prompt(
                text, [s.name for s in slots], usernames, priority=priority
            )
        except ParseError as exc:
            await message.reply_text(str(exc))
            return
        note = ""
        if request.pinned_worker:
            pin_state = states.get(request.pinned_worker)
            if pin_state == WorkerState.ERROR:
                await message.reply_text(
                    f"{request.pinned_worker} can't run: Telegram refused its token. "
                    "Fix it in WORKER_TOKEN_POOL or pick another worker."
                )
                return
            if pin_state == WorkerState.STOPPED:
                note = f"{request.pinned_worker} is stopped; starting it."
            elif pin_state == WorkerState.BUSY:
                note = f"{request.pinned_worker} is busy; it takes this next."
        task = Task(
            id=new_task_id(), user_id=user.id, chat_id=message.chat_id, prompt=request.prompt,
            title=make_title(request.prompt), priority=request.priority,
            source=TaskSource.MASTER, pinned_worker=request.pinned_worker,
            created_at=self.clock(),
        )
        task = await self.store.create_task(task)
        self.on_new_task()
        position = await self.store.queue_position(task.id)
        pending = len(await self.store.list_tasks([TaskState.PENDING], limit=1000))
        keyboard = InlineKeyboardMarkup(
            [[InlineKeyboardButton("Cancel", callback_data=f"cancel:{task.id}")]]
        )
        await message.reply_text(
            receipt(task, position, max(pending, position or 0), note),
            parse_mode=ParseMode.HTML,
            reply_markup=keyboard,
        )

    # --- the outbox ----------------------------------------------------------------------
    async def _notify_loop(self) -> None:
        while True:
            try:
                delivered = await self.deliver_events()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notifier failed; retrying")
                delivered = 0
            if not delivered:
                await asyncio.sleep(self.settings.poll_interval)

    async def deliver_events(self) -> int:
        events = await self.store.pending_events(limit=20)
        for event in events:
            text = render_event(event)
            if text is not None and event.chat_id is not None:
                await self._send_reliably(event.chat_id, text, html=True)
                result = event.payload.get("result")
                if result:
                    for chunk in split_for_telegram(str(result)):
                        await self._send_reliably(event.chat_id, markdown_to_html(chunk),
                                                  html=True, plain=chunk)
            await self.store.mark_event_delivered(event.id)
        return len(events)

    async def _send_reliably(
        self, chat_id: int, text: str, *, html: bool, plain: str | None = None
    ) -> None:
        for _ in range(5):
            try:
                await self.app.bot.send_message(
                    chat_id, text, parse_mode=ParseMode.HTML if html else None
                )
                return
            except RetryAfter as exc:
                await asyncio.sleep(_seconds(exc.retry_after))
            except BadRequest as exc:
                if "parse entities" in str(exc).lower() and html:
                    text, html = (plain if plain is not None else text), False
                    continue
                log.warning("notice refused", extra={"chat_id": chat_id, "error": str(exc)})
                return
            except Forbidden:
                log.warning("user blocked the master bot", extra={"chat_id": chat_id})
                return


def _seconds(value: object) -> float:
    total = getattr(value, "total_seconds", None)
    return float(total()) if callable(total) else float(value)  # type: ignore[arg-type]
