"""One task on one worker, from claim to idle: the steps of `fleetgram.worker.steps`, with I/O.

Every step either succeeds, or ends the run through one visible path:
- store writes are retried with backoff for `store_retry_seconds`; if a write before the
  Claude call keeps failing the task is requeued, after it the outcome is recorded as well as
  the store allows (a task left `running` is caught by the orchestrator's safety net);
- Telegram failures never stop the task: an unreachable worker chat means the answer goes to
  the master chat (the "blocked" event, as for a user who never opened the bot);
- Claude failures fail the task with a reason a person reads; a /cancel cancels it; the worker
  stopping interrupts it (the note goes to the chat, the store keeps it running for the
  restart to requeue).
Whatever happens, the worker's slot says idle at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from telegram.error import TelegramError

from fleetgram import metrics
from fleetgram.aio import being_cancelled
from fleetgram.claude.runner import UsageMeter
from fleetgram.domain import Task, TaskSource, TaskState
from fleetgram.engines.base import ApprovalChoice, ToolCall, TurnResult
from fleetgram.telegram.streaming import ChatUnavailable, StreamingReply
from fleetgram.worker.steps import (
    Ending,
    Phase,
    Step,
    StepFailed,
    cancelled_note,
    ending_for,
    failed_note,
    interrupted_note,
    limit_note,
    requeued_note,
    retry_delays,
    unrecorded_note,
)

if TYPE_CHECKING:
    from fleetgram.worker.bot import WorkerBot

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CANCEL_POLL_SECONDS = 0.25
FIRST_MESSAGE_ROUNDS = 2  # StreamingReply.start retries inside; whole rounds tried here
NOTE_TIMEOUT = 2.0  # seconds the interrupted note may take while the process stops
BOOKKEEPING_TIMEOUT = 1.0  # ... and the rest (the agent's work saved, the reply forgotten)
INTERRUPT_TIMEOUT = 1.0  # seconds the engine's polite interrupt may take before a cancel


def format_footer(task: Task, seconds: float) -> str:
    u = task.usage
    return (
        f"✅ {task.id} done in {seconds:.1f}s · {u.total_tokens:,} tokens"
        f" ({u.cache_read_tokens:,} cached) · ${u.cost_usd:.4f}"
    )


class TaskRun:
    """The run of `task` on `worker` (a WorkerBot); `await run.execute()` once."""

    def __init__(self, worker: WorkerBot, task: Task) -> None:
        self.worker = worker
        self.store = worker.store
        self.slot = worker.slot
        self.task = task
        self.meter = UsageMeter(task.id, worker.slot)
        self.reply: StreamingReply | None = None
        self.blocked = False  # the worker chat cannot be written to: answer via the master
        self.conversation: int | None = None
        self.cancelled_by_user = asyncio.Event()
        self.started = time.monotonic()
        self.phase = Phase.CLAIMED
        self._usage_recorded = False

    # ------------------------------------------------------------------ the state machine
    async def execute(self) -> Ending:
        try:
            ending = await self._run()
        except asyncio.CancelledError:
            await self._interrupted()
            raise
        except Exception as error:  # a bug: still end the task rather than leave it running
            log.exception("task run crashed", extra={"worker": self.slot, "task": self.task.id})
            ending = ending_for(error)
            await self._conclude(ending, None)
        finally:
            metrics.TASK_DURATION.observe(time.monotonic() - self.started)
            await self._back_to_idle()
        self.phase = ending.phase
        return ending

    async def _run(self) -> Ending:
        task, now = self.task, self.worker.clock()
        try:
            await self._persist(Step.SLOT, lambda: self.worker._set_slot(
                task.id, state_since=now, heartbeat_at=now))
            running = await self._persist(
                Step.MARK_RUNNING, lambda: self.store.mark_running(task.id, self.slot, now))
        except StepFailed as failed:
            return await self._conclude(ending_for(failed), None)
        if running is None:  # cancelled (or taken back) before it started
            return await self._conclude(Ending(Phase.CANCELLED), None)
        self.task, self.phase = running, Phase.RUNNING
        if running.source == TaskSource.MASTER:
            await self._persist_or_log(Step.ANNOUNCE, lambda: self.store.add_event(
                "started", self.worker.payload(running), task_id=running.id,
                chat_id=running.chat_id))
        try:
            await self._open_conversation()
        except StepFailed as failed:
            return await self._conclude(ending_for(failed), None)
        await self._open_chat()
        try:
            outcome = await self._ask_engine()
        except asyncio.CancelledError:
            if being_cancelled() or not self.cancelled_by_user.is_set():
                raise  # the worker is stopping: execute() leaves the interrupted note
            return await self._conclude(ending_for(None, cancelled_by_user=True), None)
        except Exception as error:
            return await self._conclude(ending_for(error), None)
        return await self._conclude(Ending(Phase.COMPLETED), outcome)

    # ------------------------------------------------------------------ steps
    async def _open_conversation(self) -> None:
        """Master tasks start a fresh conversation; a message in the worker chat continues
        the active one."""
        task = self.task
        if task.source == TaskSource.MASTER:
            opener = self.store.new_conversation
        else:
            opener = self.store.active_conversation
        self.conversation = await self._persist(
            Step.CONVERSATION, lambda: opener(self.slot, task.user_id))

    async def _open_chat(self) -> None:
        """Send the header message. 403: blocked. Telegram failing for longer than the
        retries: run on without the chat (the answer goes to the master chat)."""
        task = self.task
        unreachable = True  # False once Telegram says the user blocked or never opened us
        reply = StreamingReply(
            self.worker.app.bot, task.user_id, header=f"{task.id} · {task.title}",
            min_interval=self.worker.settings.stream_edit_interval,
            known_floor=self.worker.known_floor(task),
        )
        for attempt in range(1, FIRST_MESSAGE_ROUNDS + 1):
            try:
                await reply.start()
            except ChatUnavailable:
                unreachable = False
                break
            except TelegramError as error:
                log.warning("could not open the worker chat", extra={
                    "worker": self.slot, "task": task.id, "attempt": attempt,
                    "error": repr(error)})
                continue
            self.reply = reply
            first = reply.message_ids[0]
            await self._persist_or_log(
                Step.FIRST_MESSAGE,
                lambda first=first: self.store.remember_reply(  # type: ignore[misc]
                    self.slot, task.id, task.user_id, first))
            return
        self.blocked = True
        # "reason": "unreachable" lets the master say Telegram failed rather than "press Start"
        payload = self.worker.payload(task, reason="unreachable" if unreachable else None)
        await self._persist_or_log(Step.FIRST_MESSAGE, lambda: self.store.add_event(
            "blocked", payload, task_id=task.id, chat_id=task.chat_id))

    async def _ask_engine(self) -> TurnResult:
        """The engine answers; a /cancel interrupts it (the agent's running command too)."""
        engine = self.worker.engine
        turn = asyncio.create_task(engine.run(self.task.prompt, self))
        watcher = asyncio.create_task(self._watch_cancel(turn))
        try:
            return await turn
        finally:
            watcher.cancel()
            if not turn.done():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(engine.interrupt(), INTERRUPT_TIMEOUT)
                turn.cancel()
                await asyncio.wait({turn})

    async def _watch_cancel(self, turn: asyncio.Task[Any]) -> None:
        while not turn.done():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                current = await self.store.get_task(self.task.id)
            except Exception:  # the store is down: keep watching, the run goes on
                continue
            if current is None or current.cancel_requested:
                self.cancelled_by_user.set()
                break
        if not turn.done():
            # The polite stop first: the agent kills a running command and ends its turn.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.worker.engine.interrupt(), INTERRUPT_TIMEOUT)
        # Cancel until it is done: a cancellation can be swallowed by library code.
        while not turn.done():
            turn.cancel()
            await asyncio.sleep(CANCEL_POLL_SECONDS)

    # ------------------------------------------------------------------ the engine's view
    # TaskRun is the TurnContext an engine reports through (fleetgram.engines.base).
    @property
    def workspace(self) -> Path | None:
        return self.worker.workspace_dir

    @property
    def verbosity(self) -> int:
        return self.worker.verbosity_for(self.task.user_id)

    def text(self, delta: str) -> None:
        if self.reply is not None:
            self.reply.append(delta)

    def activity(self, line: str) -> None:
        reply = self.reply
        if reply is None:
            return
        current = reply.text
        reply.append(("\n" if current and not current.endswith("\n") else "") + line + "\n")

    async def note(self, text: str) -> None:
        await self.worker.say(self.task.user_id, text)

    async def persist(self, write: Callable[[], Awaitable[_T]]) -> _T:
        return await self._persist(Step.CLAUDE, write)

    async def approve(self, call: ToolCall) -> ApprovalChoice:
        return await self.worker.ask_approval(self, call)

    async def send_file(self, path: str, caption: str) -> str:
        return await self.worker.send_workspace_file(self, path, caption)

    # ------------------------------------------------------------------ endings
    async def _conclude(self, ending: Ending, outcome: TurnResult | None) -> Ending:
        await self._record_usage()
        if ending.phase == Phase.COMPLETED:
            assert outcome is not None
            return await self._completed(outcome)
        task, slot = self.task, self.slot
        if ending.phase == Phase.REQUEUED:
            reason = ending.reason or "the worker could not run it"
            await self._persist_or_log(Step.FINISH, lambda: self.store.requeue_task(
                task.id, slot, self.worker.clock(), max_attempts=self.worker.settings.max_attempts,
                reason=reason))
            metrics.TASKS.labels("requeued").inc()
            await self._close_reply(requeued_note(task.id, reason))
            return ending
        if ending.phase == Phase.CANCELLED:
            await self._persist_or_log(Step.FINISH, lambda: self.store.finish_task(
                task.id, slot, TaskState.CANCELLED, self.worker.clock(),
                event=("cancelled", self.worker.payload(task, by="user"))))
            metrics.TASKS.labels("cancelled").inc()
            await self._close_reply(cancelled_note(task.id))
            return ending
        reason = ending.reason or "unknown error"
        log.warning("task failed", extra={"worker": slot, "task": task.id, "reason": reason})
        await self._persist_or_log(Step.FINISH, lambda: self.store.finish_task(
            task.id, slot, TaskState.FAILED, self.worker.clock(), error=reason,
            event=("failed", self.worker.payload(task, error=reason))))
        metrics.TASKS.labels("failed").inc()
        await self._close_reply(failed_note(task.id, reason))
        return ending

    async def _completed(self, outcome: TurnResult) -> Ending:
        task, slot = self.task, self.slot
        seconds = time.monotonic() - self.started
        done = task.with_(usage=self.meter.total)
        via_master = outcome.text if self.blocked else None
        try:
            await self._persist(Step.FINISH, lambda: self.store.finish_task(
                task.id, slot, TaskState.COMPLETED, self.worker.clock(), result=outcome.text,
                event=("completed", self.worker.payload(
                    done, seconds=round(seconds, 2), result=via_master))))
        except StepFailed:
            # The answer is shown; the task stays running in the store and the safety net
            # requeues it. Say so rather than pretend it is done.
            await self._close_reply(unrecorded_note(task.id))
            return Ending(Phase.FAILED, "the outcome could not be recorded")
        metrics.TASKS.labels("completed").inc()
        footer = format_footer(done, seconds)
        if outcome.limit is not None:
            footer = limit_note(task.id, outcome.limit) + "\n" + footer
        if outcome.report:
            footer = outcome.report + "\n" + footer
        await self._close_reply(footer, final=True)
        return Ending(Phase.COMPLETED)

    async def _close_reply(self, note: str, *, final: bool = False) -> None:
        """Show the final text (and note) in the worker chat; then the reply is no longer a
        leftover to mark after a crash."""
        reply = self.reply
        if reply is None:
            return
        try:
            if final:
                await reply.finish(note)
            else:
                await reply.abort(note)
        except ChatUnavailable:
            pass
        except Exception:
            log.exception("could not show the final answer", extra={
                "worker": self.slot, "task": self.task.id})
        if reply.message_ids:
            self.worker.note_message(self.task.user_id, max(reply.message_ids))
        await self._persist_or_log(Step.FLUSH, lambda: self.store.forget_replies(
            self.slot, self.task.id))

    async def _interrupted(self) -> None:
        """The worker is stopping (Ctrl-C, scale-down): the note goes to the chat at once;
        the task stays running in the store and is requeued when the worker starts again.
        The process has about 5 s in all: the note first, then the bookkeeping, each bounded."""
        reply = self.reply
        save_progress = getattr(self.worker.engine, "save_progress", None)
        # The agent's work so far is committed to its branch while the note is sent.
        saving = None if save_progress is None else asyncio.create_task(
            save_progress(self.task.id))
        if reply is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reply.abort(interrupted_note(self.task.id)), NOTE_TIMEOUT)

        async def bookkeeping() -> None:
            if saving is not None:
                await saving
            if reply is not None:
                await self.store.forget_replies(self.slot, self.task.id)
            await self._record_usage(quick=True)

        with contextlib.suppress(Exception):
            await asyncio.wait_for(bookkeeping(), BOOKKEEPING_TIMEOUT)

    async def _back_to_idle(self) -> None:
        self.worker.current_task = None  # in memory at once: the heartbeat writes it too
        try:
            if being_cancelled():
                await asyncio.wait_for(self.worker._set_slot(
                    None, state_since=self.worker.clock()), 0.5)
            else:
                await self._persist(Step.SLOT, lambda: self.worker._set_slot(
                    None, state_since=self.worker.clock()))
        except Exception:
            log.warning("could not mark the worker idle; the heartbeat will",
                        extra={"worker": self.slot})

    async def _record_usage(self, *, quick: bool = False) -> None:
        if self._usage_recorded:
            return
        self._usage_recorded = True
        for call in self.meter.calls:
            if quick:
                await self.store.record_api_call(call)
            else:
                await self._persist_or_log(
                    Step.FINISH, lambda c=call: self.store.record_api_call(c))
            u = call.usage
            for kind, count in (("input", u.input_tokens), ("output", u.output_tokens),
                                ("cache_read", u.cache_read_tokens),
                                ("cache_write", u.cache_write_tokens)):
                metrics.CLAUDE_TOKENS.labels(kind).inc(count)
            metrics.CLAUDE_COST.inc(u.cost_usd)

    # ------------------------------------------------------------------ store writes
    async def _persist(self, step: Step, write: Callable[[], Awaitable[_T]]) -> _T:
        """`write()`, retried with backoff for the worker's store budget; StepFailed after."""
        delays = retry_delays(self.worker.store_retry_seconds)
        while True:
            try:
                return await write()
            except Exception as error:
                delay = next(delays, None)
                if delay is None:
                    log.error("store write gave up", extra={
                        "worker": self.slot, "task": self.task.id, "step": step.value,
                        "error": repr(error)})
                    raise StepFailed(step, error) from error
                log.warning("store write failed; retrying", extra={
                    "worker": self.slot, "task": self.task.id, "step": step.value,
                    "error": repr(error), "retry_in": delay})
                await asyncio.sleep(delay)

    async def _persist_or_log(self, step: Step, write: Callable[[], Awaitable[object]]) -> None:
        with contextlib.suppress(StepFailed):
            await self._persist(step, write)
