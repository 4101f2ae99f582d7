"""The master bot: turns prompts and commands into tasks and answers about the fleet.

It never runs Claude itself. It writes tasks to the queue seam and announces what the outbox
says happened, so every notice it sends is already true in the store. The receipt of a prompt
is itself an outbox event, written in the same transaction as the task (master/outbox.py).

It works in private chats only: each user sees their own tasks, and other users' work only
as counts.
"""

from __future__ import annotations

import asyncio
import collections
import html
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from telegram.constants import ChatType, ParseMode
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from fleetgram.aio import wait_ended, wait_event
from fleetgram.config import EngineKind, Settings
from fleetgram.domain import (
    Attachment,
    Event,
    Task,
    TaskSource,
    TaskState,
    WorkerSlot,
    WorkerState,
    new_task_id,
    utcnow,
)
from fleetgram.intake import Part, SlidingWindow, Stamper, clean_text, continues, join_parts
from fleetgram.intake import may_continue as may_continue_paste
from fleetgram.master.addworker import Onboarding
from fleetgram.master.followups import merged_note, parent_of_reply, resolve_follow_up
from fleetgram.master.outbox import Outbox, Outgoing
from fleetgram.master.usage import usage_text
from fleetgram.master.views import (
    HELP,
    MASTER_COMMANDS,
    QUEUE_LINES,
    QueueCounts,
    priority_label,
    queue_buttons,
    queue_view,
    receipt,
    receipt_payload,
    render_event,
    workers_view,
)
from fleetgram.parsing import (
    ParseError,
    make_title,
    parse_cancel_data,
    parse_prompt,
    parse_task_id,
)
from fleetgram.policy import worker_state
from fleetgram.spend import intake_refusal
from fleetgram.store import DuplicateTaskError
from fleetgram.store.base import CancelOutcome, Store, UnstorableText
from fleetgram.telegram.app import (
    CountingRequest,
    build_application,
    install_allowlist,
    start_polling,
    stop_polling,
)
from fleetgram.telegram.delivery import MAX_AMBIGUOUS_SENDS, Action, decide
from fleetgram.telegram.formatting import markdown_to_html
from fleetgram.telegram.media import ChatMedia, FileMode
from fleetgram.telegram.splitting import split_for_telegram

log = logging.getLogger(__name__)

_ACTIVE = [TaskState.ASSIGNED, TaskState.RUNNING]
_PENDING = [TaskState.PENDING]

GROUP_REFUSAL = "I work in private chats; write to me directly."
ID_ATTEMPTS = 3  # fresh task ids tried when one is already taken
NOT_QUEUED = (
    "⚠️ I could not save that prompt: the database did not accept it. Nothing was queued; "
    "please send it again in a minute."
)
# Receipts whose queue position is remembered in memory until they are sent.
_POSITIONS_KEPT = 5000
# Direct answers (not outbox notices) wait out 429s up to this long in total.
_REPLY_PATIENCE = 60.0


@dataclass
class _Paste:
    """Messages of one user that may be the parts of one split paste, not yet queued."""

    chat_id: int
    parts: list[Part]
    timer: asyncio.Task[None] | None = field(default=None, repr=False)


class MasterBot:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_new_task: Callable[[], None] = lambda: None,
        prompt_window: SlidingWindow | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.on_new_task = on_new_task
        self.app: Application = build_application(settings.master_bot_token, settings)
        # Notices and answers go through a bot without PTB's AIORateLimiter: that limiter
        # pauses every chat while one chat waits out a 429; the outbox waits per chat.
        self.sender = Bot(
            settings.master_bot_token,
            base_url=settings.telegram_base_url,
            base_file_url=settings.telegram_file_url,
            request=CountingRequest(connection_pool_size=16, read_timeout=10.0, pool_timeout=5.0),
        )
        self.outbox = Outbox(
            store, self.sender, self._compose, self._route,
            poll_interval=max(0.05, settings.poll_interval),
        )
        self._notifier: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()  # answers waiting out a 429 give up at shutdown
        self._stamp = Stamper(clock)
        # PROMPTS_PER_MINUTE is per user across the fleet: `fleetgram up` shares one window
        # between the master and its in-process workers.
        self._rate = prompt_window or SlidingWindow(settings.prompts_per_minute, 60.0)
        self._user_locks: dict[int, asyncio.Lock] = {}  # allowed users only: bounded
        self._pastes: dict[tuple[int, int], _Paste] = {}
        self._positions: collections.OrderedDict[str, asyncio.Future[tuple[int | None, int]]] = (
            collections.OrderedDict()
        )
        install_allowlist(self.app, settings.allowed_user_ids)
        self.app.add_handler(TypeHandler(Update, self._private_only), group=0)
        only_new = filters.UpdateType.MESSAGE

        def add(handler: object) -> None:
            self.app.add_handler(handler, group=1)  # type: ignore[arg-type]

        add(MessageHandler(filters.UpdateType.EDITED_MESSAGE, self._on_edit))
        add(CommandHandler(["start", "help"], self._on_help, filters=only_new))
        add(CommandHandler("queue", self._on_queue, filters=only_new))
        add(CommandHandler("workers", self._on_workers, filters=only_new))
        add(CommandHandler("cancel", self._on_cancel, filters=only_new))
        add(CommandHandler("urgent", self._on_urgent, filters=only_new))
        add(CommandHandler("usage", self._on_usage, filters=only_new))
        # /addworker and the managed_bot_created message (master/addworker.py).
        self.onboarding = Onboarding(settings, store)
        self.onboarding.install(add)
        add(CallbackQueryHandler(self._on_cancel_button, pattern=r"^cancel:"))
        add(CallbackQueryHandler(self._on_unknown_button))
        add(MessageHandler(only_new & filters.TEXT & ~filters.COMMAND, self._on_text))
        add(MessageHandler(only_new & filters.COMMAND, self._on_unknown_command))
        # Photos, documents and albums become tasks (agent mode: their files go into the
        # workspace), voice notes too; stickers and videos get one line
        # (fleetgram.telegram.media).
        agent = settings.worker_engine == EngineKind.AGENT
        self.media = ChatMedia(settings, submit=self._queue_media, reply=self._reply_to,
                               files=FileMode.WORKSPACE if agent else FileMode.CLAUDE)
        add(MessageHandler(only_new, self.media.handle))

    async def start(self) -> None:
        await start_polling(self.app, MASTER_COMMANDS)
        self._notifier = asyncio.create_task(self.outbox.run(), name="master-notifier")
        log.info("master ready", extra={"username": self.app.bot.username})

    async def stop(self) -> None:
        self._stopping.set()
        await self.media.close()  # albums still collecting are queued as they stand
        timers = [p.timer for p in self._pastes.values() if p.timer is not None]
        for timer in timers:
            timer.cancel()
        # A paste still waiting for its next part is queued as it stands, not dropped.
        pastes, self._pastes = self._pastes, {}
        for (user_id, _), paste in pastes.items():
            try:
                await self._queue_prompt(user_id, paste.chat_id, paste.parts)
            except Exception as exc:
                _log_failure("could not queue a paste at shutdown", exc, user_id)
        if self._notifier is not None:
            self._notifier.cancel()
        await wait_ended([t for t in [self._notifier, *timers] if t is not None])
        try:
            await stop_polling(self.app)
        finally:
            await self.sender.shutdown()

    async def deliver_events(self) -> int:
        """One outbox pass (tests and tools); the notifier loop does this continuously."""
        return int(await self.outbox.deliver_once())

    # --- gates -------------------------------------------------------------------------------
    async def _private_only(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Groups would show one user's tasks and answers to everyone there: refuse in one
        line (a command such as /queue@bot included) and do nothing else."""
        chat = update.effective_chat
        if chat is None or chat.type == ChatType.PRIVATE:
            return
        log.info("refused a non-private chat", extra={"chat_id": chat.id, "type": chat.type})
        if update.callback_query is not None:
            await update.callback_query.answer(GROUP_REFUSAL)
        elif update.message is not None:
            await self._say(chat.id, GROUP_REFUSAL)
        raise ApplicationHandlerStop

    # --- replies -------------------------------------------------------------------------------
    async def _say(self, chat_id: int, text: str, *, html_text: bool = False,
                   markup: InlineKeyboardMarkup | None = None) -> None:
        """A direct answer (not an outbox notice), with the outbox's decisions: waits out a 429
        or a 502 for a while (without holding up other chats), falls back to plain text if
        the HTML is refused, resends once after an ambiguous failure (so an answer is never
        lost to one dropped reply, nor shown more than twice); failures are logged."""
        await self.outbox.ensure_ready()
        use_html = html_text
        failures = ambiguous = 0
        give_up_at = _monotonic() + _REPLY_PATIENCE
        while True:
            error: Exception | None = None
            try:
                await self.sender.send_message(
                    chat_id, text if use_html or not html_text else _plain(text),
                    parse_mode=ParseMode.HTML if use_html else None, reply_markup=markup,
                )
            except Exception as exc:
                error = exc
                failures += 1
            verdict = decide(error, failures=failures, html=use_html, now=_monotonic())
            match verdict.action:
                case Action.DELIVERED:
                    return
                case Action.PLAIN:
                    use_html = False
                    continue
                case Action.AMBIGUOUS if ambiguous + 1 < MAX_AMBIGUOUS_SENDS:
                    ambiguous += 1
                    continue
                case Action.WAIT if verdict.until <= give_up_at:
                    if not await wait_event(self._stopping,
                                            max(0.0, verdict.until - _monotonic())):
                        continue
            log.warning("answer not delivered", extra={
                "chat_id": chat_id, "outcome": verdict.action.value,
                "reason": verdict.reason[:200],
            })
            return

    # --- commands ------------------------------------------------------------------------
    async def _on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await self._say(update.effective_chat.id, HELP, html_text=True)

    async def _on_usage(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.effective_user is not None
        text = await usage_text(self.store, self.settings, update.effective_user.id,
                                self.clock())
        await self._say(update.effective_chat.id, text, html_text=True)

    async def _on_queue(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.effective_user is not None
        me = update.effective_user.id
        running = await self.store.list_tasks(_ACTIVE, user_id=me, limit=QUEUE_LINES)
        pending = await self.store.list_tasks(
            _PENDING, user_id=me, limit=max(1, QUEUE_LINES - len(running))
        )
        counts = QueueCounts(
            running=await self.store.count_tasks(_ACTIVE),
            pending=await self.store.count_tasks(_PENDING),
            mine_running=await self.store.count_tasks(_ACTIVE, user_id=me),
            mine_pending=await self.store.count_tasks(_PENDING, user_id=me),
        )
        text = queue_view(running, pending, counts, self.clock())
        # Cancel buttons for the viewer's own tasks only (they are all /queue lists).
        unloaded = counts.mine_running + counts.mine_pending - len(running) - len(pending)
        buttons, note = queue_buttons(running, pending, unloaded)
        markup = InlineKeyboardMarkup(
            [[InlineKeyboardButton(label, callback_data=data) for label, data in buttons[i:i + 2]]
             for i in range(0, len(buttons), 2)]) if buttons else None
        text += f"\n{note}" if note else ""
        await self._say(update.effective_chat.id, text, html_text=True, markup=markup)

    async def _states(self) -> tuple[list[WorkerSlot], dict[str, WorkerState]]:
        slots = await self.store.get_slots()
        now = self.clock()
        lease = self.settings.worker_lease_seconds
        return slots, {s.name: worker_state(s, now, lease) for s in slots}

    async def _on_workers(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.effective_user is not None
        slots, states = await self._states()
        mine = set()
        waiting: dict[str, str] = {}
        for slot in slots:
            if slot.current_task:
                task = await self.store.get_task(slot.current_task)
                if task is not None and task.user_id == update.effective_user.id:
                    mine.add(task.id)
                    if task.waiting:
                        waiting[task.id] = task.waiting
        text = workers_view(slots, states, self.clock(), viewer_tasks=mine, waiting=waiting)
        await self._say(update.effective_chat.id, text, html_text=True)

    async def _on_cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None and update.effective_user is not None
        try:
            task_id = parse_task_id(context.args or [])
        except ParseError as exc:
            await self._say(update.effective_chat.id, str(exc))
            return
        text = await self._cancel(task_id, update.effective_user.id)
        if text is not None:
            await self._say(update.effective_chat.id, text, html_text=True)

    async def _on_cancel_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and update.effective_user is not None
        task_id = parse_cancel_data(query.data or "")
        if task_id is None:
            await query.answer("That button is not one of mine.")
            return
        text = await self._cancel(task_id, update.effective_user.id)
        await query.answer()
        if text is not None and query.message is not None:
            await self._say(query.message.chat.id, text, html_text=True)

    async def _on_unknown_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer("That button is not one of mine.")

    async def _cancel(self, task_id: str, user_id: int) -> str | None:
        """The answer to a cancel request; None when the outbox notice is the answer (a
        pending task cancelled: the store wrote a 'cancelled' event, one message, not two)."""
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
                self.outbox.wake()
                return None
            case CancelOutcome.REQUESTED:
                worker = result.task.worker if result.task else "its worker"
                return f"Stopping <b>{task_id}</b> on {worker}…"
        return "?"

    async def _on_urgent(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        stamp, at = self._stamp(), _monotonic()
        message, user = update.effective_message, update.effective_user
        assert message is not None and message.text is not None and user is not None
        words = message.text.split(maxsplit=1)
        part = Part(words[1] if len(words) > 1 else "", message.message_id, at, stamp)
        parent = await self._parent_of(message, user.id)
        await self._queue_prompt(user.id, message.chat_id, [part], priority=1, parent=parent)

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        # The stamp first, before anything is awaited: it fixes this prompt's place in line.
        stamp, at = self._stamp(), _monotonic()
        message, user = update.effective_message, update.effective_user
        assert message is not None and message.text is not None and user is not None
        part = Part(message.text, message.message_id, at, stamp)
        parent = await self._parent_of(message, user.id)
        if parent is not None:
            await self._queue_prompt(user.id, message.chat_id, [part], parent=parent)
            return
        await self._take_part(user.id, message.chat_id, part)

    async def _parent_of(self, message: Message, user_id: int) -> Task | None:
        """The task a message replies to (a text, a command, media): it is a follow-up."""
        replied = message.reply_to_message
        if replied is None:
            return None
        from_bot = replied.from_user is not None and replied.from_user.is_bot
        return await parent_of_reply(
            self.store, message.chat_id, replied.message_id, made_in=TaskSource.MASTER.value,
            user_id=user_id, shown=(replied.text or replied.caption) if from_bot else None)

    async def _queue_media(self, message: Message, user_id: int, text: str,
                           files: Sequence[Attachment]) -> None:
        """A prompt made of media (a caption and files, a transcript): queued like text, a
        follow-up when it replies to a task's message."""
        part = Part(text, message.message_id, _monotonic(), self._stamp())
        parent = await self._parent_of(message, user_id)
        await self._queue_prompt(user_id, message.chat_id, [part], files=files, parent=parent)

    async def _reply_to(self, message: Message, text: str) -> None:
        await self._say(message.chat_id, text)

    async def _on_unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await self._say(update.effective_chat.id, "I don't know that command; see /help.")

    # --- edits -------------------------------------------------------------------------------
    async def _on_edit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.edited_message, update.effective_user
        assert message is not None and user is not None
        chat_id = message.chat_id
        task = await self.store.find_task_by_message(chat_id, message.message_id,
                                                     made_in=TaskSource.MASTER.value)
        if task is None or task.user_id != user.id:
            await self._say(chat_id, "That message did not make a task, so the edit changes "
                                     "nothing; send the prompt as a new message.")
            return
        if task.state == TaskState.PENDING and message.text:
            slots, _ = await self._states()
            usernames = {s.username.lower(): s.name for s in slots if s.username}
            try:
                request = parse_prompt(clean_text(message.text).text, [s.name for s in slots],
                                       usernames)
            except ParseError as exc:
                await self._say(chat_id, f"{exc} {task.id} keeps its earlier text.")
                return
            updated = await self.store.update_pending_prompt(
                task.id, request.prompt, make_title(request.prompt)
            )
            if updated is not None:
                await self._say(chat_id, f"✏️ {task.id} updated: {updated.title}")
                return
            task = await self.store.get_task(task.id) or task
        if task.state.finished:
            await self._say(chat_id, f"{task.id} has already finished ({task.state.value}); "
                                     "edits are not applied. Send a new message to run it again.")
        elif task.state == TaskState.PENDING:
            await self._say(chat_id, f"That edit has no text; {task.id} keeps its earlier text.")
        else:
            await self._say(chat_id, f"✏️ {task.id} is already running on {task.worker}: edits "
                                     f"are not applied to a running task. Send a new message, "
                                     f"or /cancel {task.id}.")

    # --- prompts -------------------------------------------------------------------------------
    async def _take_part(self, user_id: int, chat_id: int, part: Part) -> None:
        """Queue a text message, unless it may be the first of the parts a Telegram app split a
        long paste into: those wait (PASTE_MERGE_WINDOW) for the rest and become one task."""
        key = (user_id, chat_id)
        window = self.settings.paste_merge_window
        paste = self._pastes.get(key)
        if paste is not None:
            if paste.timer is not None:
                paste.timer.cancel()
            if continues(paste.parts[-1], part, window):
                paste.parts.append(part)
                if may_continue_paste(part):
                    paste.timer = asyncio.create_task(self._flush_later(key, paste, window))
                    return
                del self._pastes[key]
                await self._queue_prompt(user_id, chat_id, paste.parts)
                return
            del self._pastes[key]
            await self._queue_prompt(user_id, chat_id, paste.parts)
        if window > 0 and may_continue_paste(part):
            paste = self._pastes[key] = _Paste(chat_id, [part])
            paste.timer = asyncio.create_task(self._flush_later(key, paste, window))
            return
        await self._queue_prompt(user_id, chat_id, [part])

    async def _flush_later(self, key: tuple[int, int], paste: _Paste, window: float) -> None:
        await asyncio.sleep(window)
        if self._pastes.get(key) is not paste:
            return
        del self._pastes[key]
        paste.timer = None  # this task is ending: nobody may cancel it from here on
        try:
            await self._queue_prompt(key[0], paste.chat_id, paste.parts)
        except Exception as exc:
            _log_failure("queuing a paste failed", exc, key[0])
            await self._say(paste.chat_id, NOT_QUEUED)

    async def _queue_prompt(
        self, user_id: int, chat_id: int, parts: Sequence[Part], priority: int | None = None,
        files: Sequence[Attachment] = (), parent: Task | None = None,
    ) -> None:
        first = parts[0]
        cleaned = clean_text(join_parts(parts))
        wait = self._rate.take(user_id, _monotonic())
        if wait > 0:
            limit = self.settings.prompts_per_minute
            await self._say(chat_id, f"Slow down: at most {limit} prompts a minute "
                                     f"(PROMPTS_PER_MINUTE). Nothing was queued; try again in "
                                     f"{math.ceil(wait)} s.")
            return
        # One user's prompts are queued one at a time (in arrival order: asyncio locks are
        # fair), so the pending-limit count is exact; other users are not held up.
        async with self._user_locks.setdefault(user_id, asyncio.Lock()):
            await self._queue_checked(user_id, chat_id, parts, first, cleaned.text,
                                      cleaned.note, priority, files, parent)

    async def _queue_checked(
        self, user_id: int, chat_id: int, parts: Sequence[Part], first: Part, text: str,
        cleaned_note: str, priority: int | None, files: Sequence[Attachment] = (),
        parent: Task | None = None,
    ) -> None:
        try:
            slots, states = await self._states()
            waiting = await self.store.count_tasks(_PENDING, user_id=user_id)
        except Exception as exc:
            _log_failure("could not read the store to queue a prompt", exc, user_id)
            await self._say(chat_id, NOT_QUEUED)
            return
        usernames = {s.username.lower(): s.name for s in slots if s.username}
        try:
            request = parse_prompt(text, [s.name for s in slots], usernames, priority=priority)
        except ParseError as exc:
            await self._say(chat_id, str(exc))
            return
        limit = self.settings.max_pending_per_user
        if waiting >= limit:
            await self._say(chat_id, f"You have {waiting} tasks waiting, the limit "
                                     f"(MAX_PENDING_PER_USER) is {limit}. Nothing was queued: "
                                     f"wait for some to finish or /cancel some.")
            return
        refusal = await intake_refusal(self.store, self.settings, user_id, self.clock())
        if refusal is not None:  # the user's daily budget is spent (fleetgram.budget)
            await self._say(chat_id, refusal)
            return
        note = ""
        if parent is not None:  # a reply: where the follow-up runs (master/followups.py)
            plan = await resolve_follow_up(
                self.store, parent, states, request.prompt, files=files,
                priority=request.priority if request.priority_given else None)
            if plan.merge:
                raised = request.priority_given and request.priority < parent.priority
                await self._say(chat_id, merged_note(
                    parent, files=len(files),
                    raised_to=priority_label(request.priority) if raised else None))
                return
            note = plan.note
            if not request.pinned_worker and plan.pinned_worker:
                request = replace(request, pinned_worker=plan.pinned_worker)
        if request.pinned_worker:
            pin_state = states.get(request.pinned_worker)
            if pin_state == WorkerState.ERROR:
                await self._say(chat_id, f"{request.pinned_worker} can't run: Telegram refused "
                                         "its token. Fix it in WORKER_TOKEN_POOL or pick another "
                                         "worker.")
                return
            if pin_state == WorkerState.STOPPED:
                note = f"{request.pinned_worker} is stopped; starting it."
            elif pin_state == WorkerState.BUSY and not note:
                note = f"{request.pinned_worker} is busy; it takes this next."
        task = Task(
            id=new_task_id(), user_id=user_id, chat_id=chat_id, prompt=request.prompt,
            title=make_title(request.prompt), priority=request.priority,
            source=TaskSource.MASTER, pinned_worker=request.pinned_worker,
            message_id=first.message_id, created_at=first.stamp,
        )
        position: asyncio.Future[tuple[int | None, int]] = (
            asyncio.get_running_loop().create_future()
        )
        self._remember_position(task.id, position)
        follows = parent.id if parent is not None else None
        payload = receipt_payload(task, note, joined=len(parts), cleaned=cleaned_note,
                                  follow_up_of=follows)
        try:
            try:
                for attempt in range(1, ID_ATTEMPTS + 1):
                    if files:  # before the task exists: no worker claims it without them
                        await self.store.add_attachments(task.id, files)
                    if follows:  # likewise the link to the conversation it continues
                        await self.store.link_follow_up(task.id, follows)
                    try:
                        await self.store.create_task(task, event=("receipt", payload))
                        break
                    except DuplicateTaskError:
                        # Five characters give 33.5M ids: a collision is rare, not impossible
                        # (a burst of 200 prompts in one database meets one in ~1,700 runs).
                        if attempt == ID_ATTEMPTS:
                            raise
                        self._positions.pop(task.id, None)
                        task = task.with_(id=new_task_id())
                        self._remember_position(task.id, position)
                        payload = receipt_payload(task, note, joined=len(parts),
                                                  cleaned=cleaned_note, follow_up_of=follows)
            except UnstorableText as exc:
                self._positions.pop(task.id, None)
                await self._say(chat_id, f"⚠️ That prompt can't be stored: it contains "
                                         f"{exc.problem}. Nothing was queued.")
                return
            except Exception as exc:
                self._positions.pop(task.id, None)
                _log_failure("could not store a prompt", exc, user_id)
                await self._say(chat_id, NOT_QUEUED)
                return
            self.on_new_task()
            try:
                where = await self.store.queue_position(task.id)
                total = await self.store.count_tasks(_PENDING)
            except Exception as exc:
                _log_failure("could not count the queue for a receipt", exc, user_id)
                where, total = None, 0
            position.set_result((where, total))
        finally:
            if not position.done():  # interrupted: the outbox counts when it sends
                position.cancel()
            self.outbox.wake()

    def _remember_position(
        self, task_id: str, future: asyncio.Future[tuple[int | None, int]]
    ) -> None:
        self._positions[task_id] = future
        while len(self._positions) > _POSITIONS_KEPT:
            self._positions.popitem(last=False)

    # --- the outbox ----------------------------------------------------------------------
    async def _route(self, event: Event) -> int | None:
        """Notices go to private chats only (a user's private chat id is their user id): an
        event of a task made in a group goes to the task's user instead."""
        if event.chat_id is not None and event.chat_id > 0:
            return event.chat_id
        if event.task_id is None:
            return None
        task = await self.store.get_task(event.task_id)
        return task.user_id if task is not None else None

    async def _compose(self, event: Event) -> Sequence[Outgoing] | None:
        if event.kind == "receipt":
            return await self._compose_receipt(event)
        if "title" not in event.payload and event.task_id is not None:
            known = await self.store.get_task(event.task_id)  # notices always name the task
            if known is not None:
                event = replace(event, payload={**event.payload, "title": known.title})
        text = render_event(event)
        if text is None:
            return []
        out = [Outgoing(text, _plain(text))]
        result = event.payload.get("result")
        if result:
            out += [Outgoing(markdown_to_html(chunk), chunk)
                    for chunk in split_for_telegram(str(result))]
        return out

    async def _compose_receipt(self, event: Event) -> Sequence[Outgoing] | None:
        task_id = event.task_id or "?"
        future = self._positions.get(task_id)
        if future is not None and not future.done():
            return None  # still counting its place in the queue: the receipt waits
        if future is not None and not future.cancelled():
            where, total = future.result()
        else:  # written before a restart: count now
            where = await self.store.queue_position(task_id)
            total = await self.store.count_tasks(_PENDING)
        text = receipt(task_id, event.payload, where, total)
        keyboard = InlineKeyboardMarkup(
            [[InlineKeyboardButton("Cancel", callback_data=f"cancel:{task_id}")]]
        )
        return [Outgoing(text, _plain(text), keyboard)]


def _log_failure(what: str, error: Exception, user_id: int) -> None:
    """An error's type at ERROR; its message and stack (which may quote a prompt) only at
    DEBUG: logs above DEBUG never carry prompt text."""
    log.error(what, extra={"user_id": user_id, "error": type(error).__name__})
    log.debug(what, exc_info=error)


_TAG = re.compile(r"<[^>]+>")


def _plain(text: str) -> str:
    """The HTML notice as plain text, for when Telegram refuses its entities."""
    return html.unescape(_TAG.sub("", text))


def _monotonic() -> float:
    return asyncio.get_running_loop().time()
