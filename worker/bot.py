"""A worker bot: one token slot, its own Telegram chat and its own Claude conversation per user.

It claims tasks from the queue (or is handed them on Kubernetes: the queue seam hides which),
streams Claude's answer into its chat, and records the outcome before it announces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from telegram import Update
from telegram.error import InvalidToken
from telegram.ext import Application, CommandHandler, ContextTypes, MessageHandler, filters

from fleetgram import metrics
from fleetgram.aio import being_cancelled, wait_ended
from fleetgram.claude.runner import ClaudeRunner, UsageMeter, describe_error
from fleetgram.config import Settings
from fleetgram.domain import Task, TaskSource, TaskState, event_payload, new_task_id, utcnow
from fleetgram.parsing import PROMPT_MAX, make_title
from fleetgram.store.base import CancelOutcome, Store
from fleetgram.telegram.app import build_application, install_allowlist, start_polling, stop_polling
from fleetgram.telegram.streaming import ChatUnavailable, StreamingReply

log = logging.getLogger(__name__)

WORKER_COMMANDS = [
    ("new", "Start a fresh conversation"),
    ("stop", "Cancel what I am doing"),
    ("help", "What I do and how to use me"),
]

CANCEL_POLL_SECONDS = 0.25


def format_footer(task: Task, seconds: float) -> str:
    u = task.usage
    return (
        f"✅ {task.id} done in {seconds:.1f}s · {u.total_tokens:,} tokens"
        f" ({u.cache_read_tokens:,} cached) · ${u.cost_usd:.4f}"
    )


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
    ) -> None:
        self.slot = slot
        self.settings = settings
        self.store = store
        self.runner = runner
        self.clock = clock
        self.app: Application = build_application(token, settings)
        self.username: str | None = None
        self.current_task: str | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._running_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._slot_lock = asyncio.Lock()
        install_allowlist(self.app, settings.allowed_user_ids)
        self.app.add_handler(CommandHandler(["start", "help"], self._on_help))
        self.app.add_handler(CommandHandler("new", self._on_new))
        self.app.add_handler(CommandHandler("stop", self._on_stop))
        self.app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self._on_text))

    # --- lifecycle -----------------------------------------------------------------------
    async def start(self) -> bool:
        """Start polling and working. False (slot marked error) if Telegram refuses the token."""
        try:
            await start_polling(self.app, WORKER_COMMANDS)
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
        now = self.clock()
        # Tasks this slot held when it last died go back to the queue (attempts counted).
        await self.store.requeue_worker_tasks(
            self.slot, now, max_attempts=self.settings.max_attempts, reason="worker restarted"
        )
        await self.store.update_slot(
            self.slot, username=self.username, ready_at=now, heartbeat_at=now, error=None,
            current_task=None, state_since=now,
        )
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
        if self._running_task is not None and not drain:
            self._running_task.cancel()
        work = [loop for loop in self._loops if loop.get_name().endswith("-work")]
        if drain:
            await wait_ended(work)
        for loop in self._loops:
            loop.cancel()
        await wait_ended(self._loops)
        await stop_polling(self.app)

    def wake(self) -> None:
        self._wake.set()

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
            try:
                task = await self.store.claim_next(self.slot, self.clock())
            except Exception:
                log.exception("claim failed", extra={"worker": self.slot})
                task = None
            if task is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
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
        store, slot = self.store, self.slot
        now = self.clock()
        # Busy before running: /workers must never show idle while a task is running here.
        await self._set_slot(task.id, state_since=now, heartbeat_at=now)
        running = await store.mark_running(task.id, slot, now)
        if running is None:
            await store.finish_task(
                task.id, slot, TaskState.CANCELLED, now,
                event=("cancelled", self._payload(task, by="user")),
            )
            await self._set_slot(None, state_since=self.clock())
            return
        task = running
        if task.source == TaskSource.MASTER:
            await store.add_event(
                "started", self._payload(task), task_id=task.id, chat_id=task.chat_id
            )
        started = time.monotonic()
        reply = StreamingReply(
            self.app.bot, task.user_id, header=f"{task.id} · {task.title}",
            min_interval=self.settings.stream_edit_interval,
        )
        blocked = False
        try:
            await reply.start()
        except ChatUnavailable:
            blocked = True
            await store.add_event(
                "blocked", self._payload(task), task_id=task.id, chat_id=task.chat_id
            )
        meter = UsageMeter(task.id, slot)
        cancelled_by_user = asyncio.Event()
        try:
            conversation = await store.active_conversation(slot, task.user_id)
            history = await store.load_turns(conversation)
            on_text = (lambda _delta: None) if blocked else reply.append
            claude = asyncio.create_task(
                self.runner.run(history, task.prompt, on_text=on_text, meter=meter)
            )
            watcher = asyncio.create_task(self._watch_cancel(task.id, claude, cancelled_by_user))
            try:
                outcome = await claude
            finally:
                watcher.cancel()
        except asyncio.CancelledError:
            await self._record_usage(meter)
            if not cancelled_by_user.is_set() or being_cancelled():
                # Shutting down: the task stays running in the store and is requeued (attempt
                # counted) when the worker starts again; say so and stop the flusher.
                if not blocked:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(reply.abort(
                            f"⏸ {task.id} interrupted: the worker stopped. "
                            "It runs again when the fleet is back."), 2)
                raise
            await store.finish_task(
                task.id, slot, TaskState.CANCELLED, self.clock(),
                event=("cancelled", self._payload(task, by="user")),
            )
            metrics.TASKS.labels("cancelled").inc()
            if not blocked:
                await self._safely(reply.abort(f"⏹ {task.id} cancelled."))
        except Exception as exc:
            await self._record_usage(meter)
            reason = describe_error(exc)
            log.warning("task failed", extra={"worker": slot, "task": task.id, "reason": reason})
            await store.finish_task(
                task.id, slot, TaskState.FAILED, self.clock(), error=reason,
                event=("failed", self._payload(task, error=reason)),
            )
            metrics.TASKS.labels("failed").inc()
            if not blocked:
                await self._safely(reply.abort(f"❌ {task.id} failed: {reason}"))
        else:
            await self._record_usage(meter)
            await store.append_turns(conversation, outcome.turns, task.id)
            seconds = time.monotonic() - started
            done = task.with_(usage=meter.total)
            finished = await store.finish_task(
                task.id, slot, TaskState.COMPLETED, self.clock(), result=outcome.text,
                event=("completed", self._payload(
                    done, seconds=round(seconds, 2), result=outcome.text if blocked else None,
                )),
            )
            metrics.TASKS.labels("completed").inc()
            if finished is not None and not blocked:
                await self._safely(reply.finish(format_footer(done, seconds)))
        finally:
            metrics.TASK_DURATION.observe(time.monotonic() - started)
            await self._set_slot(None, state_since=self.clock())

    _UNCHANGED = object()

    async def _set_slot(self, current_task: object = _UNCHANGED, **fields: object) -> None:
        """Slot writes are serialised so a heartbeat can never put back a stale current task."""
        async with self._slot_lock:
            if current_task is not WorkerBot._UNCHANGED:
                self.current_task = current_task  # type: ignore[assignment]
            await self.store.update_slot(self.slot, current_task=self.current_task, **fields)

    async def _watch_cancel(
        self, task_id: str, claude: asyncio.Task[object], flag: asyncio.Event
    ) -> None:
        while not claude.done():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            current = await self.store.get_task(task_id)
            if current is None or current.cancel_requested:
                flag.set()
                claude.cancel()
                return

    async def _record_usage(self, meter: UsageMeter) -> None:
        for call in meter.calls:
            await self.store.record_api_call(call)
            u = call.usage
            for kind, count in (("input", u.input_tokens), ("output", u.output_tokens),
                                ("cache_read", u.cache_read_tokens),
                                ("cache_write", u.cache_write_tokens)):
                metrics.CLAUDE_TOKENS.labels(kind).inc(count)
            metrics.CLAUDE_COST.inc(u.cost_usd)

    async def _safely(self, coro: object) -> None:
        try:
            await coro  # type: ignore[misc]
        except ChatUnavailable:
            pass
        except Exception:
            log.exception("could not update the worker chat", extra={"worker": self.slot})

    def _payload(self, task: Task, **extra: object) -> dict[str, object]:
        return event_payload(task, self.slot, self.username, **extra)

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

    async def _on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        assert message is not None and user is not None and message.text is not None
        prompt = message.text.strip()
        if len(prompt) > PROMPT_MAX:
            await message.reply_text(
                f"That prompt is {len(prompt)} characters; the limit is {PROMPT_MAX}."
            )
            return
        task = Task(
            id=new_task_id(), user_id=user.id, chat_id=message.chat_id, prompt=prompt,
            title=make_title(prompt), source=TaskSource.DIRECT, pinned_worker=self.slot,
            created_at=self.clock(),
        )
        task = await self.store.create_task(task)
        if self.current_task is not None:
            position = await self.store.queue_position(task.id)
            await message.reply_text(
                f"🕒 {task.id} queued (position {position}): I'll start when I finish "
                f"{self.current_task}."
            )
        self.wake()
