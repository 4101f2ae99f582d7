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

No tail: the outcome is recorded (store) before the slot goes idle, but the reply's last
Telegram calls (StreamingReply.finish/abort, then forgetting the reply) run in the background
(`Deliveries`), so the worker claims its next task at once. Order in a chat is kept: the next
task's first message in the same chat waits until the previous reply's delivery has ended,
while its Claude call starts at once (the text that arrives meanwhile is held and shown when
the chat is open). A crash mid-delivery loses nothing: the reply is forgotten only after its
delivery, so the restart still finds it and adds a note (WorkerBot._mark_leftover_replies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from telegram.error import TelegramError

from fleetgram import metrics
from fleetgram.aio import being_cancelled
from fleetgram.claude.runner import UsageMeter
from fleetgram.config import EngineKind
from fleetgram.domain import Task, TaskSource, TaskState
from fleetgram.engines.base import ApprovalChoice, ToolCall, TurnResult
from fleetgram.master.followups import ANSWER, Opened, open_follow_up
from fleetgram.telegram.replies import reply_for
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
NO_MESSAGE = 0  # a remembered reply with no message of its own yet (Telegram ids start at 1)


class Deliveries:
    """A worker's replies still being delivered, in the background, one chain per chat: a
    delivery starts after the previous one of its chat has ended. Failures are logged and
    counted (`failures`), never lost silently."""

    def __init__(self, slot: str) -> None:
        self.slot = slot
        self.failures = 0
        self.delivered = 0
        self._last: dict[int, asyncio.Task[None]] = {}  # chat id -> its newest delivery
        self._pending: set[asyncio.Task[None]] = set()

    def add(
        self, chat_id: int, task_id: str, delivery: Coroutine[Any, Any, None]
    ) -> asyncio.Task[None]:
        previous = self._last.get(chat_id)

        async def in_order() -> None:
            try:
                if previous is not None:
                    await asyncio.wait({previous})
            except BaseException:
                delivery.close()  # cancelled before it began
                raise
            await delivery

        job = asyncio.create_task(in_order(), name=f"{self.slot}-deliver-{task_id}")
        self._last[chat_id] = job
        self._pending.add(job)
        job.add_done_callback(lambda done: self._ended(done, chat_id, task_id))
        return job

    def _ended(self, job: asyncio.Task[None], chat_id: int, task_id: str) -> None:
        self._pending.discard(job)
        if self._last.get(chat_id) is job:
            del self._last[chat_id]
        if job.cancelled():
            return
        error = job.exception()
        if error is None:
            self.delivered += 1
            return
        self.failures += 1
        log.error("could not deliver a final answer", exc_info=error,
                  extra={"worker": self.slot, "task": task_id, "failures": self.failures})

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait_chat(self, chat_id: int) -> None:
        """Until the replies being delivered in `chat_id` have ended (however they ended)."""
        job = self._last.get(chat_id)
        if job is not None:
            await asyncio.wait({job})

    async def drain(self, seconds: float) -> bool:
        """Wait (at most `seconds`) for every delivery; True if all ended."""
        if not self._pending:
            return True
        _, left = await asyncio.wait(set(self._pending), timeout=seconds)
        return not left

    async def cancel(self) -> None:
        """Cut the deliveries still running short (their replies stay remembered: the restart
        marks them interrupted)."""
        jobs = list(self._pending)
        for job in jobs:
            job.cancel()
        if jobs:
            await asyncio.wait(jobs)


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
        # Text the engine streamed before the chat was open (None: not held any more).
        self._early: list[str] | None = []
        self._opening: asyncio.Task[None] | None = None
        self.blocked = False  # the worker chat cannot be written to: answer via the master
        self.conversation: int | None = None
        self.follow_up: Opened | None = None  # set when the task continues an earlier one
        self.cancelled_by_user = asyncio.Event()
        self.started = time.monotonic()
        self.phase = Phase.CLAIMED
        self._usage_recorded = False

    # ------------------------------------------------------------------ the state machine
    async def execute(self) -> Ending:
        try:
            ending = await self._run()
        except asyncio.CancelledError:
            await self._stop_opening()
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
        # The chat opens while Claude already works: in a chat still showing the previous
        # answer, the header waits for that answer's last message.
        self._opening = asyncio.create_task(self._open_chat(), name=f"open-chat-{task.id}")
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
        # A reply to an earlier task continues that task's conversation (master/followups.py).
        agent = self.worker.settings.worker_engine == EngineKind.AGENT
        self.follow_up = await self._persist(Step.CONVERSATION, lambda: open_follow_up(
            self.store, self.slot, task, agent=agent))
        if self.follow_up is not None:
            self.conversation = self.follow_up.conversation
            if self.follow_up.context:  # agent mode, carried: the earlier text goes first
                self.task = task.with_(prompt=self.follow_up.context + task.prompt)
        else:
            self.conversation = await self._persist(
                Step.CONVERSATION, lambda: opener(self.slot, task.user_id))
        conversation = self.conversation
        await self._persist_or_log(Step.CONVERSATION, lambda: self.store.link_conversation(
            task.id, conversation))

    async def _open_chat(self) -> None:
        """Send the header message once the chat's previous reply is delivered. 403:
        blocked. Telegram failing for longer than the retries: run on without the chat (the
        answer goes to the master chat)."""
        task = self.task
        await self.worker.deliveries.wait_chat(task.user_id)
        unreachable = True  # False once Telegram says the user blocked or never opened us
        # Made only now: the floor must count the previous reply's last message.
        reply = reply_for(self.worker.app.bot, task.user_id, self.worker.settings,
                          header=f"{task.id} · {task.title}" + (
                              f"\n{self.follow_up.header}" if self.follow_up else ""),
                          known_floor=self.worker.known_floor(task))
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
            early, self._early = "".join(self._early or ()), None
            if early:
                reply.append(early)
            self.reply = reply
            # A draft (private chats) has no message yet: NO_MESSAGE still marks the reply
            # as begun, so a crash before its final message gets the interrupted note.
            first = reply.message_ids[0] if reply.message_ids else NO_MESSAGE
            await self._persist_or_log(
                Step.FIRST_MESSAGE,
                lambda first=first: self.store.remember_reply(  # type: ignore[misc]
                    self.slot, task.id, task.user_id, first))
            return
        self._early = None
        self.blocked = True
        # "reason": "unreachable" lets the master say Telegram failed rather than "press Start"
        payload = self.worker.payload(task, reason="unreachable" if unreachable else None)
        await self._persist_or_log(Step.FIRST_MESSAGE, lambda: self.store.add_event(
            "blocked", payload, task_id=task.id, chat_id=task.chat_id))

    async def _chat_opened(self) -> None:
        """Wait for the chat to be open (or given up on): the reply, `blocked` and the order
        of messages in the chat are settled after this."""
        opening = self._opening
        if opening is None:
            return
        await asyncio.wait({opening})
        if not opening.cancelled() and (error := opening.exception()) is not None:
            log.error("opening the worker chat crashed", exc_info=error,
                      extra={"worker": self.slot, "task": self.task.id})

    async def _stop_opening(self) -> None:
        opening = self._opening
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.wait({opening})

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
        elif self._early is not None and delta:
            self._early.append(delta)

    def activity(self, line: str) -> None:
        if self.reply is not None:
            current = self.reply.text
        elif self._early is not None:
            current = "".join(self._early)
        else:
            return
        self.text(("\n" if current and not current.endswith("\n") else "") + line + "\n")

    async def note(self, text: str) -> None:
        await self._chat_opened()  # never before the task's own header
        await self.worker.say(self.task.user_id, text)

    async def persist(self, write: Callable[[], Awaitable[_T]]) -> _T:
        return await self._persist(Step.CLAUDE, write)

    async def approve(self, call: ToolCall) -> ApprovalChoice:
        await self._chat_opened()
        return await self.worker.ask_approval(self, call)

    async def send_file(self, path: str, caption: str) -> str:
        await self._chat_opened()
        return await self.worker.send_workspace_file(self, path, caption)

    # ------------------------------------------------------------------ endings
    async def _conclude(self, ending: Ending, outcome: TurnResult | None) -> Ending:
        await self._chat_opened()
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
        """Hand the final text (and note) to the worker's background deliveries: the task's
        outcome is already recorded, and the worker may take its next task meanwhile."""
        reply = self.reply
        if reply is None:
            return
        self.worker.deliveries.add(
            self.task.user_id, self.task.id, self._deliver_final(reply, note, final=final))

    async def _deliver_final(self, reply: StreamingReply, note: str, *, final: bool) -> None:
        """Show the final text in the worker chat; then (and only then) the reply is no
        longer a leftover to mark after a crash. A failure is raised after the bookkeeping,
        for Deliveries to log and count."""
        failure: Exception | None = None
        unreachable = False
        try:
            if final:
                await reply.finish(note)
            else:
                await reply.abort(note)
        except ChatUnavailable:
            unreachable = True
        except Exception as error:
            failure = error
        if reply.message_ids:
            self.worker.note_message(self.task.user_id, max(reply.message_ids))
            # A reply to any of them continues this task (master/followups.py).
            ids, task = list(reply.message_ids), self.task
            await self._persist_or_log(Step.FLUSH, lambda: self.store.record_messages(
                self.slot, task.user_id, ids, task.id, ANSWER))
        if final and (unreachable or failure is not None):
            # The answer was streamed as a draft and its message never arrived (the chat
            # became unreachable, or Telegram kept failing): the master chat gets it instead.
            task, text = self.task, reply.text
            await self._persist_or_log(Step.FLUSH, lambda: self.store.add_event(
                "undelivered", self.worker.payload(task, result=text),
                task_id=task.id, chat_id=task.chat_id))
        await self._persist_or_log(Step.FLUSH, lambda: self.store.forget_replies(
            self.slot, self.task.id))
        if failure is not None:
            raise failure

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
