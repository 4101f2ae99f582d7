"""A worker bot: one token slot, its own Telegram chat and its own Claude conversation per user.

It claims tasks from the queue (or is handed them on Kubernetes: the queue seam hides which),
streams Claude's answer into its chat, and records the outcome before it announces it. The
run of one task is `fleetgram.worker.run.TaskRun` (its decisions: `fleetgram.worker.steps`);
this module holds the bot's lifecycle, its loops and its chat handlers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path

from telegram import Message, ReplyParameters, Update
from telegram.error import InvalidToken
from telegram.ext import (
    Application,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from fleetgram.aio import wait_ended, wait_event
from fleetgram.claude.runner import ClaudeRunner
from fleetgram.config import EngineKind, Settings
from fleetgram.domain import (
    Attachment,
    Task,
    TaskSource,
    TaskState,
    event_payload,
    new_task_id,
    utcnow,
)
from fleetgram.engines.base import ApprovalChoice, Engine, ToolCall
from fleetgram.engines.chat import ChatEngine
from fleetgram.engines.permissions import approval_text
from fleetgram.intake import SlidingWindow, clean_text
from fleetgram.master.followups import link_reply
from fleetgram.parsing import PROMPT_MAX, make_title
from fleetgram.spend import intake_refusal
from fleetgram.store.base import CancelOutcome, Store
from fleetgram.store.signals import Channel, signals_of
from fleetgram.telegram.app import build_application, install_allowlist, start_polling, stop_polling
from fleetgram.telegram.delivery import Decision
from fleetgram.telegram.files import deliver_file
from fleetgram.telegram.media import ChatMedia, FileMode
from fleetgram.telegram.retrying import send_retrying
from fleetgram.worker.agent_chat import AGENT_COMMANDS, AgentChat, waiting_label
from fleetgram.worker.approvals import Approvals
from fleetgram.worker.run import NO_MESSAGE, Deliveries, TaskRun, format_footer
from fleetgram.worker.steps import (
    GROUP_REFUSAL,
    NOT_TEXT,
    direct_refusal,
    interrupted_note,
    prompt_rate_refusal,
)

log = logging.getLogger(__name__)

SAY_ATTEMPTS = 4  # sends of one note at most (an ambiguous one is resent once only)
SAY_MAX_WAIT = 5.0  # seconds waited between them at most

WORKER_COMMANDS = [
    ("new", "Start a fresh conversation"),
    ("stop", "Cancel what I am doing"),
    ("help", "What I do and how to use me"),
]

# How long a store write of the task path is retried before its step gives up.
STORE_RETRY_SECONDS = 20.0
# How long stopping waits for final answers still being delivered (in the background): with
# drain, as long as a slow final edit may take; without, a moment (the process must end
# within seconds). A delivery cut short stays remembered: the restart marks it interrupted.
DELIVERY_DRAIN_SECONDS = 5.0
DELIVERY_STOP_SECONDS = 1.0

__all__ = ["WorkerBot", "format_footer", "make_engine"]


def make_engine(settings: Settings, slot: str, store: Store, runner: ClaudeRunner) -> Engine:
    """WORKER_ENGINE: the Messages API (chat) or Claude Code (agent, the `agent` extra)."""
    if settings.worker_engine == EngineKind.AGENT:
        from fleetgram.engines.agent import AgentEngine  # the `agent` extra, loaded on demand

        return AgentEngine(settings, slot, store)
    return ChatEngine(runner, store, settings)


class WorkerBot:
    def __init__(
        self,
        slot: str,
        token: str,
        settings: Settings,
        store: Store,
        runner: ClaudeRunner,
        *,
        clock: Callable[[], datetime] = utcnow,
        prompt_window: SlidingWindow | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.slot = slot
        self.settings = settings
        self.store = store
        self.runner = runner
        self.engine: Engine = engine or make_engine(settings, slot, store, runner)
        self.clock = clock
        self.app: Application = build_application(token, settings)
        self.username: str | None = None
        self.current_task: str | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._running_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._unsubscribe: Callable[[], None] | None = None
        # Final answers of ended tasks still being delivered (see fleetgram.worker.run).
        self.deliveries = Deliveries(slot)
        self._slot_lock = asyncio.Lock()
        self.store_retry_seconds = STORE_RETRY_SECONDS
        self._floors: dict[int, int] = {}  # chat id -> newest message id known there
        # PROMPTS_PER_MINUTE counts a user's prompts across the fleet: the workers of one
        # process share the window they are given (see InProcessRuntime); alone, a worker
        # keeps its own.
        self.prompt_window = prompt_window or SlidingWindow(settings.prompts_per_minute, 60.0)
        install_allowlist(self.app, settings.allowed_user_ids)
        new_messages = filters.UpdateType.MESSAGE
        # One handler per update in group 0, the first that matches: refusals come first.
        self.app.add_handler(MessageHandler(~filters.ChatType.PRIVATE, self._on_group))
        self.app.add_handler(CommandHandler(["start", "help"], self._on_help))
        self.app.add_handler(CommandHandler("new", self._on_new))
        self.app.add_handler(CommandHandler("stop", self._on_stop))
        # Photos, documents and albums (agent mode: their files go into the workspace), voice
        # notes, stickers, videos: see fleetgram.telegram.media. Before the agent's handlers,
        # so an album is one task in both modes.
        self.media = ChatMedia(settings, submit=self._accept_media, reply=_reply_text,
                               files=FileMode.WORKSPACE if self.engine.kind == "agent"
                               else FileMode.CLAUDE)
        self.app.add_handler(MessageHandler(
            new_messages & filters.ChatType.PRIVATE & ~filters.TEXT, self.media.handle))
        self.agent_chat: AgentChat | None = None
        self.approvals: Approvals | None = None
        if self.engine.kind == "agent":
            self.agent_chat = AgentChat(self, self.engine)  # type: ignore[arg-type]
            self.approvals = Approvals(self.app.bot, timeout=settings.approval_timeout)
            self.app.add_handler(self.approvals.handler())
        self.app.add_handler(
            MessageHandler(new_messages & filters.TEXT & ~filters.COMMAND, self._on_text)
        )
        self.app.add_handler(
            MessageHandler(filters.UpdateType.EDITED_MESSAGE & filters.TEXT, self._on_edit)
        )
        self.app.add_handler(MessageHandler(new_messages & ~filters.TEXT, self._on_not_text))
        # Every message the user sends is a floor for the lost-copy probe (see known_floor).
        self.app.add_handler(TypeHandler(Update, self._note_incoming), group=1)

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> bool:
        """Start polling and working. False (slot marked error) if Telegram refuses the token."""
        try:
            commands = WORKER_COMMANDS + (AGENT_COMMANDS if self.agent_chat else [])
            await start_polling(self.app, commands)
        except InvalidToken:
            log.warning("worker token refused", extra={"worker": self.slot})
            await self.store.update_slot(
                self.slot, error="token refused by Telegram (getMe: Unauthorized)",
                state_since=self.clock(),
            )
            with contextlib.suppress(Exception):
                await self.app.shutdown()
            return False
        self.username = self.app.bot.username
        await self._mark_leftover_replies()
        now = self.clock()
        # Tasks this slot held when it last died go back to the queue (attempts counted).
        # An agent reruns them itself: its workspace holds the work as it was left.
        await self.store.requeue_worker_tasks(
            self.slot, now, max_attempts=self.settings.max_attempts, reason="worker restarted",
            keep_on_worker=self.agent_chat is not None,
        )
        await self.store.update_slot(
            self.slot, username=self.username, ready_at=now, heartbeat_at=now, error=None,
            current_task=None, state_since=now,
        )
        # "Tasks changed" (a task created or requeued, in this process or, on Postgres, any)
        # wakes the work loop at once; its poll stays as the safety net.
        signals = signals_of(self.store)
        if signals is not None:
            self._unsubscribe = signals.subscribe(Channel.TASKS, self.wake)
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name=f"{self.slot}-heartbeat"),
            asyncio.create_task(self._work_loop(), name=f"{self.slot}-work"),
        ]
        log.info("worker ready", extra={"worker": self.slot, "username": self.username})
        return True

    async def stop(self, *, drain: bool = True) -> None:
        """Stop claiming. With drain, let the current task finish; else cut it short (it stays
        running in the store and is requeued, attempt counted, when a worker restarts)."""
        self._stopping.set()
        self._wake.set()
        await self.media.close()  # an album still collecting is taken as it stands
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        running = self._running_task
        if running is not None and not drain:
            # The run leaves the "interrupted" note (bounded by NOTE_TIMEOUT) before it ends;
            # the work loop is cancelled only after, so nothing cancels the note itself.
            running.cancel()
            await wait_ended([running])
        work = [loop for loop in self._loops if loop.get_name().endswith("-work")]
        if drain:
            await wait_ended(work)
        for loop in self._loops:
            loop.cancel()
        await wait_ended(self._loops)
        await self._end_deliveries(DELIVERY_DRAIN_SECONDS if drain else DELIVERY_STOP_SECONDS)
        with contextlib.suppress(Exception):
            await self.engine.close()
        await stop_polling(self.app)

    def wake(self) -> None:
        self._wake.set()

    async def _end_deliveries(self, seconds: float) -> None:
        """Let the final answers being delivered land (bounded), before Telegram is let go."""
        if await self.deliveries.drain(seconds):
            return
        log.warning("final answers still being delivered at shutdown; cut short", extra={
            "worker": self.slot, "pending": self.deliveries.pending})
        await self.deliveries.cancel()

    # --- loops ---------------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._set_slot(heartbeat_at=self.clock())
            except Exception:
                log.exception("heartbeat failed", extra={"worker": self.slot})
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _work_loop(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the claim, not after: a wake-up during the claim is not lost.
            self._wake.clear()
            try:
                task = await self.store.claim_next(self.slot, self.clock())
            except Exception:
                log.exception("claim failed", extra={"worker": self.slot})
                task = None
            if task is None:
                await wait_event(self._wake, self.settings.poll_interval)
                continue
            self._running_task = asyncio.create_task(self._execute(task))
            try:
                await asyncio.shield(self._running_task)
            except asyncio.CancelledError:
                if not self._running_task.done():
                    self._running_task.cancel()
                raise
            except Exception:
                log.exception("task crashed", extra={"worker": self.slot, "task": task.id})
            finally:
                self._running_task = None

    # --- running a task ------------------------------------------------------------------
    async def _execute(self, task: Task) -> None:
        """Run one claimed task to its end (see fleetgram.worker.run for the steps)."""
        try:
            ending = await TaskRun(self, task).execute()
        finally:
            if self.approvals is not None:  # questions of an ended task are answered no
                self.approvals.cancel_task(task.id)
        log.info("task ended", extra={"worker": self.slot, "task": task.id,
                                      "phase": ending.phase.value})

    _UNCHANGED = object()

    async def _set_slot(self, current_task: object = _UNCHANGED, **fields: object) -> None:
        """Slot writes are serialised so a heartbeat can never put back a stale current task."""
        async with self._slot_lock:
            if current_task is not WorkerBot._UNCHANGED:
                self.current_task = current_task  # type: ignore[assignment]
            await self.store.update_slot(self.slot, current_task=self.current_task, **fields)

    def payload(self, task: Task, **extra: object) -> dict[str, object]:
        return event_payload(task, self.slot, self.username, **extra)

    # --- what the agent engine asks of the worker ------------------------------------------
    @property
    def workspace_dir(self) -> Path | None:
        """The agent's working directory; None for the chat engine."""
        return getattr(self.engine, "workspace_dir", None)

    def verbosity_for(self, user_id: int) -> int:
        if self.agent_chat is None:
            return 0
        return self.agent_chat.verbosity_for(user_id)

    async def ask_approval(self, run: TaskRun, call: ToolCall) -> ApprovalChoice:
        """Ask the task's user about `call` with buttons; the task shows as waiting meanwhile."""
        task = run.task
        if self.approvals is None:
            return ApprovalChoice.DENY
        what = waiting_label(call)
        await self._quietly(self.store.set_waiting(task.id, what))
        try:
            return await self.approvals.ask(
                chat_id=task.user_id, user_id=task.user_id, task_id=task.id,
                text=approval_text(call, self.workspace_dir))
        finally:
            await self._quietly(self.store.set_waiting(task.id, None))

    async def send_workspace_file(self, run: TaskRun, path: str, caption: str) -> str:
        root = self.workspace_dir
        if root is None:
            return "send_file is not available here."
        return await deliver_file(self.app.bot, run.task.user_id, root, path, caption)

    async def _quietly(self, write: Awaitable[object]) -> None:
        try:
            await write
        except Exception:
            log.warning("store write failed (display only)", extra={"worker": self.slot},
                        exc_info=True)

    # --- the worker chats ------------------------------------------------------------------
    def note_message(self, chat_id: int, message_id: int | None) -> None:
        """A message known to be in `chat_id` (the user's, or one of ours already tracked)."""
        if message_id is not None:
            self._floors[chat_id] = max(self._floors.get(chat_id, 0), message_id)

    def known_floor(self, task: Task) -> int | None:
        """The newest message id known in the task's worker chat: a lost-copy probe never
        looks at or below it (see StreamingReply)."""
        floor = self._floors.get(task.user_id)
        if task.source == TaskSource.DIRECT and task.message_id is not None:
            floor = max(floor or 0, task.message_id)
        return floor

    async def say(self, chat_id: int, text: str, *, reply_to: int | None = None) -> bool:
        """A one-line message in a worker chat, best effort, decided like every send of the
        fleet (fleetgram.telegram.delivery): a 429 or 5xx is waited out a few times, an
        ambiguous failure resent once at most. False if it could not be sent."""
        def failed(verdict: Decision) -> None:
            log.info("could not write to a worker chat", extra={
                "worker": self.slot, "outcome": verdict.action.value,
                "reason": verdict.reason[:200]})

        reply = None if reply_to is None else ReplyParameters(
            reply_to, allow_sending_without_reply=True)
        message = await send_retrying(
            lambda: self.app.bot.send_message(chat_id, text, reply_parameters=reply),
            on_failure=failed, attempts=SAY_ATTEMPTS, max_wait=SAY_MAX_WAIT)
        if message is None:
            return False
        self.note_message(chat_id, message.message_id)
        return True

    async def _mark_leftover_replies(self) -> None:
        """Replies this worker never finished because it died (kill -9): each gets the
        interrupted note, as a reply to it (a reply that was still a draft: NO_MESSAGE, the
        note alone), and is forgotten."""
        try:
            leftovers = await self.store.leftover_replies(self.slot)
        except Exception:
            log.exception("could not read leftover replies", extra={"worker": self.slot})
            return
        for task_id, chat_id, message_id in leftovers:
            await self.say(chat_id, await self._leftover_note(task_id),
                           reply_to=None if message_id == NO_MESSAGE else message_id)
            try:
                await self.store.forget_replies(self.slot, task_id)
            except Exception:
                log.exception("could not forget a leftover reply", extra={"worker": self.slot})

    async def _leftover_note(self, task_id: str) -> str:
        """The interrupted note; for a task that had finished (its final message was still
        being delivered when the worker died) a note that says so instead: it won't run again."""
        try:
            task = await self.store.get_task(task_id)
        except Exception:
            task = None
        if task is None or not task.state.finished:
            return interrupted_note(task_id)
        return (f"⚠️ {task_id} {task.state.value}, but the worker stopped while showing it: "
                "the end of this answer may be missing here.")

    # --- chat handlers -------------------------------------------------------------------
    async def _on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(
            f"I am {self.slot}, one of the fleet's Claude workers.\n"
            "Write to me and I work on it here; tasks the master gives me show up here too.\n"
            "Our conversation carries over from task to task.\n"
            "/new — start a fresh conversation\n/stop — cancel what I am doing"
        )

    async def _on_new(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_user is not None
        await self.store.new_conversation(self.slot, update.effective_user.id)
        await update.effective_message.reply_text(
            "🧹 Fresh conversation: I have forgotten what we said before."
        )

    async def _on_stop(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_user is not None
        task_id = self.current_task
        if task_id is None:
            await update.effective_message.reply_text("I am not working on anything.")
            return
        result = await self.store.request_cancel(task_id, update.effective_user.id, self.clock())
        if result.outcome == CancelOutcome.NOT_YOURS:
            await update.effective_message.reply_text(
                f"I am working on {task_id} for someone else; I can't stop it for you."
            )
        elif result.outcome == CancelOutcome.REQUESTED:
            await update.effective_message.reply_text(f"Stopping {task_id}…")
        else:
            await update.effective_message.reply_text(f"{task_id} has already finished.")

    async def _note_incoming(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.message
        if message is not None:
            self.note_message(message.chat_id, message.message_id)

    async def _on_group(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None:
            await message.reply_text(GROUP_REFUSAL)

    async def _on_not_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is not None:
            self.note_message(message.chat_id, message.message_id)
            await message.reply_text(NOT_TEXT)

    async def _on_edit(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or message.text is None or user is None:
            return
        task = await self._direct_task(message.chat_id, message.message_id, user.id)
        if task is None:
            return
        if task.state.finished:
            await message.reply_text(
                f"{task.id} has already finished ({task.state.value}); edits change nothing. "
                "Send a new message to ask again."
            )
            return
        if task.state == TaskState.PENDING:
            prompt = clean_text(message.text.strip()).text
            if not prompt:
                await message.reply_text(f"That edit is empty; {task.id} keeps its prompt.")
                return
            if len(prompt) > PROMPT_MAX:
                await message.reply_text(
                    f"That edit is {len(prompt)} characters (the limit is {PROMPT_MAX}); "
                    f"{task.id} keeps its prompt."
                )
                return
            updated = await self.store.update_pending_prompt(task.id, prompt, make_title(prompt))
            if updated is not None:
                await message.reply_text(f"✏️ {task.id} updated: it runs with your edit.")
                return
        await message.reply_text(f"Edits are not applied to a running task ({task.id}).")

    async def _direct_task(self, chat_id: int, message_id: int, user_id: int) -> Task | None:
        """The task written directly in this worker's chat as message `message_id`, if any
        (the master's chat, or another worker's, may hold a message with the same id)."""
        found = await self.store.find_task_by_message(chat_id, message_id, made_in=self.slot)
        return found if found is not None and found.user_id == user_id else None

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user, chat = update.effective_message, update.effective_user, update.effective_chat
        assert message is not None and user is not None
        refusal = direct_refusal(chat.type if chat else None, message.text is not None)
        if refusal is not None:
            await message.reply_text(refusal)
            return
        assert message.text is not None
        self.note_message(message.chat_id, message.message_id)
        cleaned = clean_text(message.text.strip())
        if not cleaned.text:
            return
        await self.accept_prompt(message, user.id, cleaned.text, note=cleaned.note)

    async def _accept_media(self, message: Message, user_id: int, prompt: str,
                            files: Sequence[Attachment]) -> None:
        await self.accept_prompt(message, user_id, prompt, files=files)

    async def accept_prompt(
        self, message: Message, user_id: int, prompt: str, *, note: str | None = None,
        files: Sequence[Attachment] = (),
    ) -> Task | None:
        """A prompt written in this worker's chat becomes a task pinned to this worker, within
        the user's limits; `files` (agent mode) go with it into the workspace."""
        if len(prompt) > PROMPT_MAX:
            await message.reply_text(
                f"That prompt is {len(prompt)} characters; the limit is {PROMPT_MAX}."
            )
            return None
        wait = self.prompt_window.take(user_id, time.monotonic())
        if wait > 0:
            await message.reply_text(prompt_rate_refusal(self.settings.prompts_per_minute, wait))
            return None
        pending = await self.store.count_tasks([TaskState.PENDING], user_id=user_id)
        if pending >= self.settings.max_pending_per_user:
            await message.reply_text(
                f"You have {pending} tasks waiting (the limit is "
                f"{self.settings.max_pending_per_user}); this one was not queued."
            )
            return None
        refusal = await intake_refusal(self.store, self.settings, user_id, self.clock())
        if refusal is not None:  # the user's daily budget is spent (fleetgram.budget)
            await message.reply_text(refusal)
            return None
        task = Task(
            id=new_task_id(), user_id=user_id, chat_id=message.chat_id, prompt=prompt,
            title=make_title(prompt), source=TaskSource.DIRECT, pinned_worker=self.slot,
            created_at=self.clock(), message_id=message.message_id,
        )
        if files:  # stored before the task exists, so a claim never finds it without them
            await self.store.add_attachments(task.id, files)
        replied = message.reply_to_message  # a reply continues that task (master/followups)
        await link_reply(self.store, message.chat_id, replied.message_id if replied else None,
                         task.id, made_in=self.slot, user_id=user_id)
        task = await self.store.create_task(task)
        if note:
            await message.reply_text(note)
        if self.current_task is not None:
            position = await self.store.queue_position(task.id)
            await message.reply_text(
                f"🕒 {task.id} queued (position {position}): I'll start when I finish "
                f"{self.current_task}."
            )
        self.wake()
        return task


async def _reply_text(message: Message, text: str) -> None:
    """A media message's one-line answer (a refusal, a transcript), as a reply to it."""
    await message.reply_text(text)
