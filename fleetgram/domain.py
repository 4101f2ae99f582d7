"""The domain model shared by every part: tasks, worker slots, usage, events.

Plain dataclasses with no I/O, so policies and tests can build them from literals.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

PRIORITY_MIN = 1
PRIORITY_MAX = 10
PRIORITY_DEFAULT = 5

# Lower-case letters and digits without look-alikes (0/o, 1/l), so ids read well on a phone.
_ID_ALPHABET = "23456789abcdefghijkmnpqrstuvwxyz"


def new_task_id() -> str:
    return "t-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(5))


def utcnow() -> datetime:
    return datetime.now(UTC)


class TaskState(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)

    @property
    def active(self) -> bool:
        return self in (TaskState.ASSIGNED, TaskState.RUNNING)


class TaskSource(StrEnum):
    MASTER = "master"
    DIRECT = "direct"


@dataclass(frozen=True)
class Usage:
    """Token usage of one or more Claude API calls; adds up across the calls of a task."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            round(self.cost_usd + other.cost_usd, 6),
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


@dataclass(frozen=True)
class Task:
    id: str
    user_id: int
    chat_id: int
    prompt: str
    title: str
    priority: int = PRIORITY_DEFAULT
    state: TaskState = TaskState.PENDING
    source: TaskSource = TaskSource.MASTER
    pinned_worker: str | None = None
    worker: str | None = None
    attempts: int = 0
    result: str | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    cancel_requested: bool = False
    # The Telegram message (in chat_id) the task was made from: an edit of it edits the task.
    message_id: int | None = None
    created_at: datetime = field(default_factory=utcnow)
    assigned_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    # What a running task waits for from its user (agent mode), e.g. "approval: Bash `ls`";
    # None while it is not waiting. A finished or requeued task is never waiting.
    waiting: str | None = None

    def with_(self, **changes: Any) -> Task:
        return replace(self, **changes)


@dataclass(frozen=True)
class Attachment:
    """A file the user sent with a prompt; the worker writes it into its workspace."""

    name: str
    mime: str | None
    data: bytes = field(repr=False)  # may be megabytes: kept out of logs and test output


class WorkerState(StrEnum):
    """What /workers shows. Derived from facts (see policy.worker_state), never stored."""

    STOPPED = "stopped"
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    OFFLINE = "offline"
    ERROR = "error"


@dataclass(frozen=True)
class WorkerSlot:
    """One token slot. `name` is what users type (worker1..workerN)."""

    name: str
    enabled: bool = False  # the orchestrator wants it running
    username: str | None = None  # the bot's @username, from getMe
    started_at: datetime | None = None  # when the orchestrator last started it
    ready_at: datetime | None = None  # when its bot answered getMe and began polling
    heartbeat_at: datetime | None = None
    error: str | None = None  # why it cannot start (e.g. bad token)
    current_task: str | None = None
    state_since: datetime | None = None


@dataclass(frozen=True)
class Event:
    """An announcement waiting in the outbox: written with the state change, sent after."""

    id: int
    kind: str
    task_id: str | None
    chat_id: int | None
    payload: dict[str, Any]
    created_at: datetime
    # Sends that failed ambiguously (Telegram may have shown the notice): at most two are made.
    ambiguous_sends: int = 0


def slot_name(index: int) -> str:
    """Slot names are 1-based: the first token in the pool is worker1."""
    return f"worker{index + 1}"


def slot_index(name: str) -> int:
    return int(name.removeprefix("worker")) - 1


def event_payload(
    task: Task, worker: str | None, username: str | None, **extra: object
) -> dict[str, Any]:
    """What an outbox event about `task` carries (master/views.py renders it)."""
    u = task.usage
    payload: dict[str, Any] = {
        "worker": worker,
        "username": username,
        "title": task.title,
        "attempts": task.attempts,
        "usage": {
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "cache_read_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "cost_usd": u.cost_usd,
        },
    }
    payload.update({k: v for k, v in extra.items() if v is not None})
    return payload
