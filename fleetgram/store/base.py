"""The store's contract: the task queue seam, worker slots, the outbox and conversations.

Two implementations keep the same behaviour: SQLite (the embedded default) and Postgres.
Every state change that the user will hear about is written together with its outbox event
in one transaction, so a crash can neither lose a task nor announce something untrue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, overload

from fleetgram.domain import Attachment, Event, Task, TaskState, Usage, WorkerSlot


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"  # was pending: it will never run
    REQUESTED = "requested"  # is running: the worker stops it and reports
    ALREADY_FINISHED = "already_finished"
    NOT_FOUND = "not_found"
    NOT_YOURS = "not_yours"


class UnstorableText(ValueError):
    """Text that no store can keep: a NUL character (Postgres refuses it in text) or a lone
    surrogate (not valid Unicode, so not encodable as UTF-8 for either engine). Raised before
    the database is touched; `field` is the offending argument, `problem` says what is wrong
    in words a user may be shown ("a NUL character (U+0000)")."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"the {field} cannot be stored: it contains {problem}")
        self.field = field
        self.problem = problem


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored, or None if it can."""
    if "\x00" in text:
        return "a NUL character (U+0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(text[error.start])
        return f"a lone surrogate (U+{code:04X}), which is not valid Unicode"
    return None


def check_storable(**fields: str | None) -> None:
    """Raise UnstorableText for the first of `fields` (name=text) that cannot be stored."""
    for name, text in fields.items():
        if text is None:
            continue
        problem = text_problem(text)
        if problem is not None:
            raise UnstorableText(name, problem)


@overload
def storable(text: str) -> str: ...


@overload
def storable(text: None) -> None: ...


def storable(text: str | None) -> str | None:
    """`text` with what cannot be stored replaced by U+FFFD (for text the fleet produced
    itself, such as an answer or an error message, which must be recorded rather than
    refused)."""
    if text is None or text_problem(text) is None:
        return text
    return "".join(
        "\ufffd" if c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF else c for c in text
    )


@dataclass(frozen=True)
class CancelResult:
    outcome: CancelOutcome
    task: Task | None


@dataclass(frozen=True)
class ApiCall:
    """One Claude API call of a task; agent mode makes many per task."""

    task_id: str | None
    worker: str
    model: str
    usage: Usage
    stop_reason: str | None = None
    duration_s: float = 0.0
    at: datetime | None = None  # when the call was recorded; None: now (set for tests/imports)


@dataclass(frozen=True)
class ManagedToken:
    """A worker bot token added with /addworker, encrypted (fleetgram/tokens.py)."""

    slot: str  # the slot it got when added
    bot_id: int
    username: str
    token_encrypted: bytes
    created_at: datetime
    chat_id: int | None = None  # where it was added from (migration 0009)


@dataclass(frozen=True)
class UsageLine:
    """The usage ledger summed for one user on one worker over a period (see usage_since).
    `user_id` is None for calls whose task is no longer recorded (or had none)."""

    user_id: int | None
    worker: str
    usage: Usage
    tasks: int  # distinct tasks with calls in the period


class Store(Protocol):
    # --- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    # --- task queue ----------------------------------------------------------------------
    async def create_task(
        self, task: Task, event: tuple[str, dict[str, Any]] | None = None
    ) -> Task:
        """Insert a pending task (and optionally an outbox event for it, same transaction).
        Raises UnstorableText (before touching the database) if the prompt or title holds a
        NUL or a lone surrogate, and DuplicateTaskError if the id is taken."""

    async def get_task(self, task_id: str) -> Task | None: ...

    async def list_tasks(
        self,
        states: Iterable[TaskState] | None = None,
        *,
        user_id: int | None = None,
        worker: str | None = None,
        limit: int = 100,
        pinned: bool | None = None,
    ) -> list[Task]:
        """Tasks in queue order: priority, then age (created_at), then id. `pinned` True: only
        tasks pinned to a worker; False: only unpinned ones; None: both."""

    async def count_tasks(
        self, states: Iterable[TaskState], *, user_id: int | None = None,
        pinned: bool | None = None,
    ) -> int:
        """How many tasks are in `states` (of `user_id` if given): a count query, no rows."""

    async def find_task_by_message(
        self, chat_id: int, message_id: int, *, made_in: str | None = None
    ) -> Task | None:
        """The task made from Telegram message `message_id` in `chat_id`, if any (the newest
        one, should several carry it). A private chat's id is the user's id in every bot's
        chat, and message ids restart in each: `made_in` ("master", or a worker slot for
        tasks written directly in that worker's chat) says which bot's chat is meant."""

    async def update_pending_prompt(self, task_id: str, prompt: str, title: str, *,
                                    priority: int | None = None) -> Task | None:
        """Replace a still-pending task's prompt and title (an edited message). None, and no
        change, if the task is no longer pending. Raises UnstorableText as create_task."""

    async def queue_position(self, task_id: str) -> int | None:
        """1-based position among pending tasks in queue order; None if not pending."""

    async def claim_next(self, worker: str, now: datetime) -> Task | None:
        """Atomically take the first pending task in queue order that is unpinned or pinned to
        `worker`: state -> assigned, worker set, attempts + 1, assigned_at = now.
        Never gives one task to two claimers (Postgres FOR UPDATE SKIP LOCKED; SQLite one
        writing transaction)."""

    async def mark_running(self, task_id: str, worker: str, now: datetime) -> Task | None:
        """assigned -> running if still assigned to `worker` and not cancel-requested."""

    async def finish_task(
        self,
        task_id: str,
        worker: str,
        state: TaskState,
        now: datetime,
        *,
        result: str | None = None,
        error: str | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> Task | None:
        """running/assigned -> completed|failed|cancelled, with the event, in one transaction.
        Returns None (and changes nothing) if the task is no longer this worker's. A NUL or
        lone surrogate in `result`/`error` is stored as U+FFFD (never refused: the outcome
        must be recorded). The finished task is no longer waiting (see set_waiting)."""

    async def request_cancel(
        self, task_id: str, user_id: int | None, now: datetime
    ) -> CancelResult:
        """Pending: cancelled at once (with a 'cancelled' event, payload {"by": "user" or
        "operator", "title": ...}). Assigned/running: sets
        cancel_requested for the worker to act on. user_id None means an operator (no owner
        check)."""

    async def requeue_worker_tasks(
        self, worker: str, now: datetime, *, max_attempts: int, reason: str,
        keep_on_worker: bool = False,
    ) -> list[Task]:
        """The worker died: each of its assigned/running tasks goes back to pending, or to
        failed if it has used max_attempts attempts; each with a 'requeued'/'failed' event.
        With keep_on_worker, the tasks going back to pending are pinned to `worker`: a
        restarted agent worker reruns its interrupted task in its own workspace, where the
        task's branch was left. Requeued tasks are no longer waiting (see set_waiting)."""

    async def requeue_task(
        self, task_id: str, worker: str, now: datetime, *, max_attempts: int, reason: str
    ) -> Task | None:
        """One task that is assigned/running on `worker` goes back to pending (or to failed at
        max_attempts), with a 'requeued'/'failed' event carrying its title; as in
        requeue_worker_tasks, a task whose cancel was requested is cancelled instead (a
        'cancelled' event). Attempts are kept. None, and no change, if it is no longer
        assigned/running on that worker. The task is no longer waiting (see set_waiting)."""

    async def set_waiting(self, task_id: str, what: str | None) -> None:
        """The running task waits for its user (`what`, e.g. "approval: Bash `rm -rf build`",
        shown by /queue and /workers), or no longer does (None). Setting is ignored unless
        the task is assigned/running; finish_task and the requeues clear it. Text that cannot
        be stored is kept with U+FFFD in its place (never refused)."""

    async def record_api_call(self, call: ApiCall) -> None:
        """Append the call to the usage ledger and add it to the task's totals."""

    async def usage_since(
        self, since: datetime, *, user_id: int | None = None, until: datetime | None = None
    ) -> list[UsageLine]:
        """The ledger's calls recorded at or after `since` (and before `until`, if given),
        summed per (user, worker) through the calls' tasks; of `user_id` only if given.
        Ordered by user, then worker. Budgets and /usage read it."""

    async def purge_finished(self, before: datetime) -> int:
        """Delete finished tasks completed before `before`, delivered events created before it
        and usage-ledger rows created before it (and worker replies left over since before
        it: stale), with the attachments of the tasks deleted (and attachments of tasks never
        recorded, added before it). Returns the number of tasks deleted."""

    async def archive_task(self, task: Task) -> None:
        """Upsert the full record of `task` (every field, as given) into the SQL `tasks` table,
        without an event. Cluster mode keeps its queue in BotTask objects and records each
        task's full record (the whole result, the usage totals) in SQL through this."""

    # --- attachments (files sent with a prompt, for the worker's workspace) ----------------
    async def add_attachments(self, task_id: str, files: Sequence[Attachment]) -> None:
        """Keep `files` for the task, after any it has. The task need not be recorded yet:
        adding them before create_task means no worker can claim the task without them.
        Raises UnstorableText (before touching the database) for a name or mime type holding
        a NUL or a lone surrogate."""

    async def load_attachments(self, task_id: str) -> list[Attachment]:
        """The task's files in the order they were added ([] if none)."""

    # --- worker slots --------------------------------------------------------------------
    async def ensure_slots(self, names: Sequence[str]) -> None:
        """Create missing slot rows (all disabled)."""

    async def get_slots(self) -> list[WorkerSlot]: ...

    async def add_managed_token(self, slot: str, bot_id: int, username: str,
                                token_encrypted: bytes, *, chat_id: int | None = None) -> None:
        """Keep an encrypted worker token added with /addworker (migration 0008), and the chat
        it was added from (0009)."""

    async def managed_tokens(self) -> list[ManagedToken]:
        """The tokens added with /addworker, oldest first."""

    async def update_slot(self, name: str, **fields: Any) -> None:
        """Set the given WorkerSlot fields (enabled, username, started_at, ready_at,
        heartbeat_at, error, current_task, state_since)."""

    # --- outbox --------------------------------------------------------------------------
    async def add_event(
        self, kind: str, payload: dict[str, Any], *, task_id: str | None = None,
        chat_id: int | None = None,
    ) -> int: ...

    async def pending_events(self, limit: int = 50) -> list[Event]:
        """Undelivered events, oldest first."""

    async def mark_event_delivered(self, event_id: int) -> None: ...

    async def record_ambiguous_send(self, event_id: int) -> int:
        """A send of the event failed in a way that Telegram may still have shown it (a lost
        reply, a timeout). Returns the event's ambiguous sends so far, this one included
        (0 if there is no such event, e.g. purged meanwhile)."""

    # --- worker chat messages of running tasks (for the "interrupted" note after a crash) ---
    async def remember_reply(
        self, worker: str, task_id: str, chat_id: int, message_id: int
    ) -> None:
        """The worker began showing `task_id` in message `message_id` of `chat_id`."""

    async def forget_replies(self, worker: str, task_id: str) -> None:
        """The task's reply in the worker chat is final (finished, cancelled or noted)."""

    async def leftover_replies(self, worker: str) -> list[tuple[str, int, int]]:
        """(task_id, chat_id, message_id) of replies the worker never finished: it died."""

    # --- conversations (Messages API content blocks, kept as JSON) ----------------------
    async def active_conversation(self, worker: str, user_id: int) -> int:
        """The id of the worker's current conversation with the user, created if none."""

    async def new_conversation(self, worker: str, user_id: int) -> int:
        """Start a fresh conversation (the old one is kept, no longer active)."""

    async def set_session(self, conversation_id: int, session_id: str | None) -> None:
        """Record the Claude Code session of the conversation (agent mode resumes it for the
        next task, also after a restart); None forgets it. Raises KeyError if there is no such
        conversation."""

    async def session_of(self, conversation_id: int) -> str | None:
        """The conversation's Claude Code session; None for a new conversation (or an
        unknown one)."""

    async def load_turns(self, conversation_id: int) -> list[dict[str, Any]]:
        """[{"role": "user"|"assistant", "content": [content blocks]}] in order."""

    async def append_turns(
        self, conversation_id: int, turns: Sequence[dict[str, Any]], task_id: str | None
    ) -> None: ...

    async def replace_turns(
        self, conversation_id: int, turns: Sequence[dict[str, Any]]
    ) -> None:
        """Replace every turn of the conversation (after compaction), in one transaction."""

    # --- follow-ups by reply (issue 11) -------------------------------------------------
    async def record_messages(
        self, bot: str, chat_id: int, message_ids: Sequence[int], task_id: str, kind: str
    ) -> None:
        """Messages `bot` ("master" or a worker slot) sent about `task_id` in `chat_id` (kind:
        "receipt", "notice", "answer"); a message already recorded keeps its task."""

    async def task_of_message(self, bot: str, chat_id: int, message_id: int) -> str | None:
        """The task a recorded message of `bot`'s chat is about (None: not one of ours)."""

    async def messages_of_task(self, task_id: str, kind: str) -> list[tuple[int, int]]:
        """(chat_id, message_id) of the task's recorded messages of `kind`."""

    async def link_follow_up(self, task_id: str, follow_up_of: str) -> None:
        """`task_id` continues `follow_up_of`'s conversation (written before the task)."""

    async def follow_up_of(self, task_id: str) -> str | None: ...

    async def link_conversation(self, task_id: str, conversation_id: int) -> None:
        """The task runs in this conversation (so a follow-up can find it)."""

    async def conversation_of_task(self, task_id: str) -> tuple[int, str] | None:
        """(conversation id, worker) the task ran in; None if it never started."""

    async def activate_conversation(self, conversation_id: int) -> None:
        """Make the conversation its worker's active one with its user again."""
