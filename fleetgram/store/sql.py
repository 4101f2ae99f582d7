"""The store's behaviour, written once in SQL that SQLite and Postgres share.

`SqlStore` holds every query and the rules around them; a subclass supplies only connections:
`_write()` (one writing transaction, serialized against other writers) and `_read()`. Each of
them yields a `Tx`, whose queries use `?` placeholders and the markers of `dialect.Dialect`.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from fleetgram.domain import (
    Attachment,
    Event,
    Task,
    TaskSource,
    TaskState,
    Usage,
    WorkerSlot,
    utcnow,
)
from fleetgram.store.base import (
    ApiCall,
    CancelOutcome,
    CancelResult,
    ManagedToken,
    UsageLine,
    check_storable,
    storable,
)
from fleetgram.store.dialect import Dialect
from fleetgram.store.migrate import load_migrations
from fleetgram.store.signals import Channel, Signals

Row = dict[str, Any]


class Tx(Protocol):
    """One connection inside `_write()` / `_read()`."""

    async def execute(self, sql: str, *params: Any) -> int:
        """Run a statement; the number of rows it changed."""

    async def fetchall(self, sql: str, *params: Any) -> list[Row]: ...

    async def fetchone(self, sql: str, *params: Any) -> Row | None: ...

    async def notify(self, channel: Channel) -> None:
        """Signal `channel` once this transaction commits (never before, never if it rolls
        back): in this process, and on Postgres in every process that listens."""


class DuplicateTaskError(ValueError):
    """create_task was given an id that is already taken (draw a new one and retry)."""


def to_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _dt(value: Any) -> datetime | None:
    """A stored time (Postgres: datetime; SQLite: ISO text) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return to_utc(value)


def _required_dt(value: Any) -> datetime:
    result = _dt(value)
    if result is None:
        raise ValueError("a required time is NULL")
    return result


_FINISHED = tuple(s.value for s in TaskState if s.finished)
_ACTIVE = tuple(s.value for s in TaskState if s.active)

_TASK_COLUMNS = (
    "task_id, user_id, chat_id, title, prompt, priority, status, assigned_worker_id, result, "
    "created_at, assigned_at, started_at, completed_at, source, pinned_worker, attempts, error, "
    "cancel_requested, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
    "cost_usd, message_id, waiting"
)
_QUEUE_ORDER = "ORDER BY priority, created_at, task_id"

# WorkerSlot field -> workers column, for update_slot.
_SLOT_COLUMNS = {
    "enabled": "enabled",
    "username": "telegram_username",
    "started_at": "started_at",
    "ready_at": "ready_at",
    "heartbeat_at": "last_heartbeat",
    "error": "error",
    "current_task": "current_task_id",
    "state_since": "state_since",
}
_SLOT_NUMBER = re.compile(r"^worker(\d+)$")


def _task(row: Row) -> Task:
    return Task(
        id=row["task_id"],
        user_id=row["user_id"],
        chat_id=row["chat_id"],
        prompt=row["prompt"],
        title=row["title"],
        priority=row["priority"],
        state=TaskState(row["status"]),
        source=TaskSource(row["source"]),
        pinned_worker=row["pinned_worker"],
        worker=row["assigned_worker_id"],
        attempts=row["attempts"],
        result=row["result"],
        error=row["error"],
        usage=Usage(
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"],
            cost_usd=round(float(row["cost_usd"]), 6),
        ),
        cancel_requested=bool(row["cancel_requested"]),
        message_id=row["message_id"],
        created_at=_required_dt(row["created_at"]),
        assigned_at=_dt(row["assigned_at"]),
        started_at=_dt(row["started_at"]),
        completed_at=_dt(row["completed_at"]),
        waiting=row["waiting"],
    )


def _task_values(task: Task) -> tuple[Any, ...]:
    """A task's values in the order of _TASK_COLUMNS."""
    u = task.usage
    return (
        task.id, task.user_id, task.chat_id, task.title, task.prompt, task.priority,
        task.state.value, task.worker, task.result, task.created_at, task.assigned_at,
        task.started_at, task.completed_at, task.source.value, task.pinned_worker,
        task.attempts, task.error, task.cancel_requested, u.input_tokens, u.output_tokens,
        u.cache_read_tokens, u.cache_write_tokens, u.cost_usd, task.message_id, task.waiting,
    )


def _slot(row: Row) -> WorkerSlot:
    return WorkerSlot(
        name=row["worker_id"],
        enabled=bool(row["enabled"]),
        username=row["telegram_username"],
        started_at=_dt(row["started_at"]),
        ready_at=_dt(row["ready_at"]),
        heartbeat_at=_dt(row["last_heartbeat"]),
        error=row["error"],
        current_task=row["current_task_id"],
        state_since=_dt(row["state_since"]),
    )


def _slot_order(slot: WorkerSlot) -> tuple[int, str]:
    """worker1, worker2, ..., worker10 (numeric, not text, order); other names after."""
    match = _SLOT_NUMBER.match(slot.name)
    return (int(match.group(1)) if match else 1 << 62, slot.name)


def _event(row: Row) -> Event:
    return Event(
        id=row["id"],
        kind=row["kind"],
        task_id=row["task_id"],
        chat_id=row["chat_id"],
        payload=json.loads(row["payload"]),
        created_at=_required_dt(row["created_at"]),
        ambiguous_sends=int(row["ambiguous_sends"]),
    )


def _pinned_clause(pinned: bool | None) -> str | None:
    if pinned is None:
        return None
    return "pinned_worker IS NOT NULL" if pinned else "pinned_worker IS NULL"


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _task_filter(
    states: Iterable[TaskState] | None,
    *,
    user_id: int | None = None,
    worker: str | None = None,
    pinned: bool | None = None,
) -> tuple[str | None, list[Any]]:
    """The WHERE clause (with a trailing space, or empty) and its parameters for the task
    filters of list_tasks and count_tasks; None as the clause when no task can match."""
    where: list[str] = []
    params: list[Any] = []
    if states is not None:
        wanted = [TaskState(s).value for s in states]
        if not wanted:
            return None, []
        where.append(f"status IN ({_marks(len(wanted))})")
        params.extend(wanted)
    if user_id is not None:
        where.append("user_id = ?")
        params.append(user_id)
    if worker is not None:
        where.append("assigned_worker_id = ?")
        params.append(worker)
    pinned_clause = _pinned_clause(pinned)
    if pinned_clause is not None:
        where.append(pinned_clause)
    return (f"WHERE {' AND '.join(where)} " if where else ""), params


_TASK_MARKS = _marks(_TASK_COLUMNS.count(",") + 1)


class SqlStore(ABC):
    """The `Store` over any engine that supplies `_write`, `_read`, `open` and `close`."""

    dialect: Dialect
    # Change signals (fleetgram.store.signals): set by each engine's __init__.
    signals: Signals

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def _write(self) -> AbstractAsyncContextManager[Tx]:
        """One writing transaction, committed on exit and rolled back on an exception."""

    @abstractmethod
    def _read(self) -> AbstractAsyncContextManager[Tx]:
        """A connection for reading."""

    # --- migrations ----------------------------------------------------------------------
    async def _migrate(self) -> list[int]:
        """Apply the migrations not yet recorded, each once and in its own transaction.
        Returns the versions applied now."""
        applied: list[int] = []
        for migration in load_migrations():
            async with self._write() as tx:
                if self.dialect.migration_lock:
                    await tx.execute(self.dialect.migration_lock)
                await tx.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
                )
                done = await tx.fetchone(
                    "SELECT version FROM schema_migrations WHERE version = ?", migration.version
                )
                if done is not None:
                    continue
                for statement in migration.statements(self.dialect):
                    await tx.execute(statement)
                await tx.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    migration.version,
                    utcnow(),
                )
                applied.append(migration.version)
        return applied

    async def applied_migrations(self) -> list[tuple[int, datetime]]:
        """(version, applied_at) of each migration recorded as applied, in version order."""
        async with self._read() as tx:
            rows = await tx.fetchall(
                "SELECT version, applied_at FROM schema_migrations ORDER BY version"
            )
        return [(row["version"], _required_dt(row["applied_at"])) for row in rows]

    # --- change signals ------------------------------------------------------------------
    async def signal(self, channel: Channel) -> None:
        """Signal `channel` to every listener (on Postgres, in every process) without a
        write of its own: for a change made outside this store, such as the operator's
        assignment of a BotTask in cluster mode, which the worker's claim then finds."""
        async with self._write() as tx:
            await tx.notify(channel)

    # --- task queue ----------------------------------------------------------------------
    async def create_task(
        self, task: Task, event: tuple[str, dict[str, Any]] | None = None
    ) -> Task:
        check_storable(prompt=task.prompt, title=task.title)
        async with self._write() as tx:
            taken = await tx.fetchone("SELECT task_id FROM tasks WHERE task_id = ?", task.id)
            if taken is not None:
                raise DuplicateTaskError(f"task id {task.id} is already taken")
            row = await tx.fetchone(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({_TASK_MARKS}) RETURNING *",
                *_task_values(task),
            )
            assert row is not None
            created = _task(row)
            await tx.notify(Channel.TASKS)
            if event is not None:
                await self._insert_event(tx, event, created, created.created_at)
        return created

    async def get_task(self, task_id: str) -> Task | None:
        async with self._read() as tx:
            row = await tx.fetchone("SELECT * FROM tasks WHERE task_id = ?", task_id)
        return _task(row) if row is not None else None

    async def list_tasks(
        self,
        states: Iterable[TaskState] | None = None,
        *,
        user_id: int | None = None,
        worker: str | None = None,
        limit: int = 100,
        pinned: bool | None = None,
    ) -> list[Task]:
        where, params = _task_filter(states, user_id=user_id, worker=worker, pinned=pinned)
        if where is None:
            return []
        async with self._read() as tx:
            rows = await tx.fetchall(
                f"SELECT * FROM tasks {where}{_QUEUE_ORDER} LIMIT ?", *params, limit
            )
        return [_task(row) for row in rows]

    async def count_tasks(
        self,
        states: Iterable[TaskState],
        *,
        user_id: int | None = None,
        pinned: bool | None = None,
    ) -> int:
        where, params = _task_filter(states, user_id=user_id, pinned=pinned)
        if where is None:
            return 0
        async with self._read() as tx:
            row = await tx.fetchone(f"SELECT COUNT(*) AS n FROM tasks {where}", *params)
        return 0 if row is None else int(row["n"])

    async def find_task_by_message(
        self, chat_id: int, message_id: int, *, made_in: str | None = None
    ) -> Task | None:
        where, params = "chat_id = ? AND message_id = ?", [chat_id, message_id]
        if made_in == TaskSource.MASTER.value:
            where += " AND source = 'master'"
        elif made_in is not None:
            where += " AND source = 'direct' AND pinned_worker = ?"
            params.append(made_in)
        async with self._read() as tx:
            row = await tx.fetchone(
                f"SELECT * FROM tasks WHERE {where} "
                "ORDER BY created_at DESC, task_id DESC LIMIT 1",
                *params,
            )
        return _task(row) if row is not None else None

    async def update_pending_prompt(self, task_id: str, prompt: str, title: str, *,
                                    priority: int | None = None) -> Task | None:
        check_storable(prompt=prompt, title=title)
        async with self._write() as tx:
            # A priority given only ever makes the task more urgent (a smaller number).
            row = await tx.fetchone(
                "UPDATE tasks SET prompt = ?, title = ?, "
                "priority = CASE WHEN CAST(? AS INTEGER) < priority THEN CAST(? AS INTEGER) "
                "ELSE priority END "
                "WHERE task_id = ? AND status = 'pending' RETURNING *",
                prompt,
                title,
                priority,
                priority,
                task_id,
            )
        return _task(row) if row is not None else None

    async def queue_position(self, task_id: str) -> int | None:
        async with self._read() as tx:
            row = await tx.fetchone(
                "SELECT (SELECT COUNT(*) FROM tasks AS other "
                "        WHERE other.status = 'pending' AND NOT other.cancel_requested "
                "        AND (other.priority, other.created_at, other.task_id) "
                "          < (mine.priority, mine.created_at, mine.task_id)) AS ahead "
                "FROM tasks AS mine WHERE mine.task_id = ? AND mine.status = 'pending'",
                task_id,
            )
        return None if row is None else int(row["ahead"]) + 1

    async def claim_next(self, worker: str, now: datetime) -> Task | None:
        async with self._write() as tx:
            row = await tx.fetchone(
                "UPDATE tasks SET status = 'assigned', assigned_worker_id = ?, "
                "attempts = attempts + 1, assigned_at = ? "
                "WHERE task_id = ("
                "  SELECT task_id FROM tasks WHERE status = 'pending' AND NOT cancel_requested "
                "  AND (pinned_worker IS NULL OR pinned_worker = ?) "
                f" {_QUEUE_ORDER} LIMIT 1{{skip_locked}}"
                ") AND status = 'pending' RETURNING *",
                worker,
                now,
                worker,
            )
        return _task(row) if row is not None else None

    async def mark_running(self, task_id: str, worker: str, now: datetime) -> Task | None:
        async with self._write() as tx:
            row = await tx.fetchone(
                "UPDATE tasks SET status = 'running', started_at = ? "
                "WHERE task_id = ? AND assigned_worker_id = ? AND status = 'assigned' "
                "AND NOT cancel_requested RETURNING *",
                now,
                task_id,
                worker,
            )
        return _task(row) if row is not None else None

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
        if not TaskState(state).finished:
            raise ValueError(f"finish_task needs a finished state, not {state!r}")
        async with self._write() as tx:
            row = await tx.fetchone(
                "UPDATE tasks SET status = ?, result = ?, error = ?, completed_at = ?, "
                "waiting = NULL "
                f"WHERE task_id = ? AND assigned_worker_id = ? AND status IN ({_marks(2)}) "
                "RETURNING *",
                TaskState(state).value,
                storable(result),
                storable(error),
                now,
                task_id,
                worker,
                *_ACTIVE,
            )
            if row is None:
                return None
            finished = _task(row)
            if event is not None:
                await self._insert_event(tx, event, finished, now)
        return finished

    async def request_cancel(
        self, task_id: str, user_id: int | None, now: datetime
    ) -> CancelResult:
        async with self._write() as tx:
            row = await tx.fetchone("SELECT * FROM tasks WHERE task_id = ?{for_update}", task_id)
            if row is None:
                return CancelResult(CancelOutcome.NOT_FOUND, None)
            task = _task(row)
            if user_id is not None and task.user_id != user_id:
                return CancelResult(CancelOutcome.NOT_YOURS, None)
            if task.state.finished:
                return CancelResult(CancelOutcome.ALREADY_FINISHED, task)
            if task.state is TaskState.PENDING:
                row = await tx.fetchone(
                    "UPDATE tasks SET status = 'cancelled', completed_at = ? "
                    "WHERE task_id = ? RETURNING *",
                    now,
                    task_id,
                )
                assert row is not None
                cancelled = _task(row)
                by = "user" if user_id is not None else "operator"
                payload = {"by": by, "title": cancelled.title}
                await self._insert_event(tx, ("cancelled", payload), cancelled, now)
                return CancelResult(CancelOutcome.CANCELLED, cancelled)
            row = await tx.fetchone(
                "UPDATE tasks SET cancel_requested = TRUE WHERE task_id = ? RETURNING *", task_id
            )
            assert row is not None
            return CancelResult(CancelOutcome.REQUESTED, _task(row))

    async def requeue_worker_tasks(
        self, worker: str, now: datetime, *, max_attempts: int, reason: str,
        keep_on_worker: bool = False,
    ) -> list[Task]:
        changed: list[Task] = []
        async with self._write() as tx:
            rows = await tx.fetchall(
                f"SELECT * FROM tasks WHERE assigned_worker_id = ? AND status IN ({_marks(2)}) "
                f"{_QUEUE_ORDER}{{for_update}}",
                worker,
                *_ACTIVE,
            )
            for task in map(_task, rows):
                changed.append(await self._requeue(
                    tx, task, worker, now, max_attempts, reason, keep_on_worker=keep_on_worker
                ))
        return changed

    async def requeue_task(
        self, task_id: str, worker: str, now: datetime, *, max_attempts: int, reason: str
    ) -> Task | None:
        async with self._write() as tx:
            row = await tx.fetchone(
                "SELECT * FROM tasks WHERE task_id = ? AND assigned_worker_id = ? "
                f"AND status IN ({_marks(2)}){{for_update}}",
                task_id,
                worker,
                *_ACTIVE,
            )
            if row is None:
                return None
            return await self._requeue(tx, _task(row), worker, now, max_attempts, reason)

    async def _requeue(
        self, tx: Tx, task: Task, worker: str, now: datetime, max_attempts: int, reason: str,
        *, keep_on_worker: bool = False,
    ) -> Task:
        """Put back one active task of `worker` (read under lock in `tx`), with its event:
        cancelled if its cancel was requested, failed once its attempts are used up, else
        pending with its attempts kept (the next claim counts the next one), pinned to
        `worker` with keep_on_worker. In every case it is no longer waiting."""
        payload: dict[str, Any]
        if task.cancel_requested:
            # The user asked to stop it: it is not run again.
            row = await tx.fetchone(
                "UPDATE tasks SET status = 'cancelled', completed_at = ?, waiting = NULL "
                "WHERE task_id = ? RETURNING *",
                now,
                task.id,
            )
            kind, payload = "cancelled", {"by": "user", "reason": reason}
        elif task.attempts >= max_attempts:
            error = storable(f"{reason}; gave up after {task.attempts} attempts")
            row = await tx.fetchone(
                "UPDATE tasks SET status = 'failed', error = ?, completed_at = ?, "
                "waiting = NULL WHERE task_id = ? RETURNING *",
                error,
                now,
                task.id,
            )
            kind = "failed"
            payload = {"error": error, "attempts": task.attempts, "reason": reason}
        else:
            row = await tx.fetchone(
                "UPDATE tasks SET status = 'pending', assigned_worker_id = NULL, "
                "assigned_at = NULL, started_at = NULL, waiting = NULL, "
                "pinned_worker = ? WHERE task_id = ? RETURNING *",
                worker if keep_on_worker else task.pinned_worker,
                task.id,
            )
            kind, payload = "requeued", {"attempts": task.attempts, "reason": reason}
            await tx.notify(Channel.TASKS)
        assert row is not None
        after = _task(row)
        payload = {**payload, "worker": worker, "title": after.title}
        await self._insert_event(tx, (kind, payload), after, now)
        return after

    async def set_waiting(self, task_id: str, what: str | None) -> None:
        async with self._write() as tx:
            if what is None:
                await tx.execute("UPDATE tasks SET waiting = NULL WHERE task_id = ?", task_id)
                return
            # Only an active task waits: a late call after the finish must not mark it.
            await tx.execute(
                f"UPDATE tasks SET waiting = ? WHERE task_id = ? AND status IN ({_marks(2)})",
                storable(what),
                task_id,
                *_ACTIVE,
            )

    async def record_api_call(self, call: ApiCall) -> None:
        usage = call.usage
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO api_calls (task_id, worker, model, input_tokens, output_tokens, "
                "cache_read_tokens, cache_write_tokens, cost_usd, stop_reason, duration_s, "
                f"created_at) VALUES ({_marks(11)})",
                call.task_id,
                call.worker,
                call.model,
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens,
                usage.cache_write_tokens,
                usage.cost_usd,
                call.stop_reason,
                call.duration_s,
                utcnow() if call.at is None else to_utc(call.at),
            )
            if call.task_id is not None:
                await tx.execute(
                    "UPDATE tasks SET input_tokens = input_tokens + ?, "
                    "output_tokens = output_tokens + ?, "
                    "cache_read_tokens = cache_read_tokens + ?, "
                    "cache_write_tokens = cache_write_tokens + ?, cost_usd = cost_usd + ? "
                    "WHERE task_id = ?",
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.cache_read_tokens,
                    usage.cache_write_tokens,
                    usage.cost_usd,
                    call.task_id,
                )

    async def api_calls(self, task_id: str) -> list[ApiCall]:
        """The ledger rows of a task, oldest first."""
        async with self._read() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM api_calls WHERE task_id = ? ORDER BY id", task_id
            )
        return [
            ApiCall(
                task_id=row["task_id"],
                worker=row["worker"],
                model=row["model"],
                usage=Usage(
                    row["input_tokens"],
                    row["output_tokens"],
                    row["cache_read_tokens"],
                    row["cache_write_tokens"],
                    round(float(row["cost_usd"]), 6),
                ),
                stop_reason=row["stop_reason"],
                duration_s=float(row["duration_s"]),
            )
            for row in rows
        ]

    async def usage_since(
        self, since: datetime, *, user_id: int | None = None, until: datetime | None = None
    ) -> list[UsageLine]:
        # The ledger has no user column: a call's user is its task's (LEFT JOIN keeps calls
        # whose task was purged, as user None, in the fleet's totals).
        where, params = ["c.created_at >= ?"], [to_utc(since)]
        if until is not None:
            where.append("c.created_at < ?")
            params.append(to_utc(until))
        if user_id is not None:
            where.append("t.user_id = ?")
            params.append(user_id)
        async with self._read() as tx:
            rows = await tx.fetchall(
                "SELECT t.user_id AS user_id, c.worker AS worker, "
                "SUM(c.input_tokens) AS input_tokens, SUM(c.output_tokens) AS output_tokens, "
                "SUM(c.cache_read_tokens) AS cache_read_tokens, "
                "SUM(c.cache_write_tokens) AS cache_write_tokens, SUM(c.cost_usd) AS cost_usd, "
                "COUNT(DISTINCT c.task_id) AS tasks "
                "FROM api_calls AS c LEFT JOIN tasks AS t ON t.task_id = c.task_id "
                f"WHERE {' AND '.join(where)} "
                "GROUP BY t.user_id, c.worker",
                *params,
            )
        lines = [
            UsageLine(
                user_id=None if row["user_id"] is None else int(row["user_id"]),
                worker=row["worker"],
                usage=Usage(
                    int(row["input_tokens"] or 0), int(row["output_tokens"] or 0),
                    int(row["cache_read_tokens"] or 0), int(row["cache_write_tokens"] or 0),
                    round(float(row["cost_usd"] or 0), 6),
                ),
                tasks=int(row["tasks"]),
            )
            for row in rows
        ]
        # In Python: the engines sort NULL (no user) differently; unknown users go last.
        return sorted(lines, key=lambda u: (u.user_id is None, u.user_id or 0, u.worker))

    async def purge_finished(self, before: datetime) -> int:
        """Delete finished tasks completed before `before` (with their attachments), delivered
        events created before it and usage-ledger rows created before it, worker replies left
        over since before it, and attachments added before it to a task never recorded
        (conversations are kept: a worker's current one is bounded by compaction). Returns the
        number of tasks deleted."""
        async with self._write() as tx:
            await tx.execute(
                "DELETE FROM attachments WHERE task_id IN (SELECT task_id FROM tasks "
                f"WHERE status IN ({_marks(3)}) AND completed_at < ?) "
                "OR (created_at < ? AND task_id NOT IN (SELECT task_id FROM tasks))",
                *_FINISHED,
                before,
                before,
            )
            deleted = await tx.execute(
                f"DELETE FROM tasks WHERE status IN ({_marks(3)}) AND completed_at < ?",
                *_FINISHED,
                before,
            )
            await tx.execute(
                "DELETE FROM events WHERE delivered_at IS NOT NULL AND created_at < ?", before
            )
            await tx.execute("DELETE FROM api_calls WHERE created_at < ?", before)
            # A reply left over that long belongs to a slot never started again: stale.
            await tx.execute("DELETE FROM worker_replies WHERE created_at < ?", before)
            for table in ("task_messages", "task_threads"):  # follow-ups: with their tasks
                await tx.execute(
                    f"DELETE FROM {table} WHERE created_at < ? "
                    "AND task_id NOT IN (SELECT task_id FROM tasks)", before)
        return deleted

    async def archive_task(self, task: Task) -> None:
        """Insert the task's full record, or overwrite every field of the one recorded. Text
        that cannot be stored is kept with U+FFFD in its place: a record is never refused
        (a BotTask made with kubectl was never checked by create_task)."""
        task = task.with_(
            prompt=storable(task.prompt), title=storable(task.title),
            result=storable(task.result), error=storable(task.error),
        )
        columns = [c.strip() for c in _TASK_COLUMNS.split(",")]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "task_id")
        async with self._write() as tx:
            await tx.execute(
                f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES ({_marks(len(columns))}) "
                f"ON CONFLICT (task_id) DO UPDATE SET {updates}",
                *_task_values(task),
            )

    # --- attachments ---------------------------------------------------------------------
    async def add_attachments(self, task_id: str, files: Sequence[Attachment]) -> None:
        for file in files:
            check_storable(name=file.name, mime=file.mime)
        if not files:
            return
        async with self._write() as tx:
            now = utcnow()
            for file in files:
                await tx.execute(
                    "INSERT INTO attachments (task_id, name, mime, data, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    task_id, file.name, file.mime, bytes(file.data), now,
                )

    async def load_attachments(self, task_id: str) -> list[Attachment]:
        async with self._read() as tx:
            rows = await tx.fetchall(
                "SELECT name, mime, data FROM attachments WHERE task_id = ? ORDER BY id", task_id
            )
        # Postgres gives bytes for BYTEA (memoryview for some adapters), SQLite bytes for BLOB.
        return [Attachment(row["name"], row["mime"], bytes(row["data"])) for row in rows]

    # --- worker slots --------------------------------------------------------------------
    async def ensure_slots(self, names: Sequence[str]) -> None:
        async with self._write() as tx:
            for name in names:
                await self._ensure_slot(tx, name)

    async def add_managed_token(self, slot: str, bot_id: int, username: str,
                                token_encrypted: bytes, *, chat_id: int | None = None) -> None:
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO managed_tokens (slot, bot_id, username, token_encrypted, created_at,"
                " chat_id) VALUES (?, ?, ?, ?, ?, ?)", slot, bot_id, username,
                bytes(token_encrypted), utcnow(), chat_id,
            )
            await tx.notify(Channel.WORKERS)

    async def managed_tokens(self) -> list[ManagedToken]:
        async with self._read() as tx:
            rows = await tx.fetchall("SELECT * FROM managed_tokens ORDER BY created_at, slot")
        return [ManagedToken(row["slot"], int(row["bot_id"]), row["username"],
                             bytes(row["token_encrypted"]), _required_dt(row["created_at"]),
                             None if row["chat_id"] is None else int(row["chat_id"]))
                for row in rows]

    async def get_slots(self) -> list[WorkerSlot]:
        async with self._read() as tx:
            rows = await tx.fetchall("SELECT * FROM workers")
        return sorted(map(_slot, rows), key=_slot_order)

    async def update_slot(self, name: str, **fields: Any) -> None:
        """Set the given WorkerSlot fields; a slot not yet known is created first."""
        unknown = set(fields) - set(_SLOT_COLUMNS)
        if unknown:
            raise TypeError(f"update_slot got unknown fields: {', '.join(sorted(unknown))}")
        # An error text may quote anything (an exception's message): recorded, never refused.
        fields = {k: storable(v) if isinstance(v, str) else v for k, v in fields.items()}
        async with self._write() as tx:
            await self._ensure_slot(tx, name)
            if fields:
                assignments = ", ".join(f"{_SLOT_COLUMNS[f]} = ?" for f in fields)
                await tx.execute(
                    f"UPDATE workers SET {assignments} WHERE worker_id = ?",
                    *fields.values(),
                    name,
                )

    @staticmethod
    async def _ensure_slot(tx: Tx, name: str) -> None:
        await tx.execute(
            "INSERT INTO workers (worker_id, display_name, enabled) VALUES (?, ?, FALSE) "
            "ON CONFLICT (worker_id) DO NOTHING",
            name,
            name,
        )

    # --- outbox --------------------------------------------------------------------------
    async def add_event(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        task_id: str | None = None,
        chat_id: int | None = None,
    ) -> int:
        async with self._write() as tx:
            return await self._insert(tx, kind, payload, task_id, chat_id, utcnow())

    async def pending_events(self, limit: int = 50) -> list[Event]:
        async with self._read() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM events WHERE delivered_at IS NULL ORDER BY id LIMIT ?", limit
            )
        return [_event(row) for row in rows]

    async def mark_event_delivered(self, event_id: int) -> None:
        async with self._write() as tx:
            await tx.execute(
                "UPDATE events SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                utcnow(),
                event_id,
            )

    async def record_ambiguous_send(self, event_id: int) -> int:
        async with self._write() as tx:
            row = await tx.fetchone(
                "UPDATE events SET ambiguous_sends = ambiguous_sends + 1 WHERE id = ? "
                "RETURNING ambiguous_sends",
                event_id,
            )
        return 0 if row is None else int(row["ambiguous_sends"])

    async def _insert_event(
        self, tx: Tx, event: tuple[str, dict[str, Any]], task: Task, now: datetime
    ) -> int:
        kind, payload = event
        return await self._insert(tx, kind, payload, task.id, task.chat_id, now)

    @staticmethod
    async def _insert(
        tx: Tx,
        kind: str,
        payload: dict[str, Any],
        task_id: str | None,
        chat_id: int | None,
        now: datetime,
    ) -> int:
        row = await tx.fetchone(
            "INSERT INTO events (kind, task_id, chat_id, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            kind,
            task_id,
            chat_id,
            json.dumps(payload),
            now,
        )
        assert row is not None
        await tx.notify(Channel.OUTBOX)
        return int(row["id"])

    # --- conversations -------------------------------------------------------------------
    async def active_conversation(self, worker: str, user_id: int) -> int:
        async with self._write() as tx:
            row = await tx.fetchone(
                "SELECT id FROM conversations WHERE worker = ? AND user_id = ? AND active",
                worker,
                user_id,
            )
            if row is None:
                # ON CONFLICT: another process may have just started one (unique while active).
                row = await tx.fetchone(
                    "INSERT INTO conversations (worker, user_id, active, created_at) "
                    "VALUES (?, ?, TRUE, ?) ON CONFLICT DO NOTHING RETURNING id",
                    worker,
                    user_id,
                    utcnow(),
                )
            if row is None:
                row = await tx.fetchone(
                    "SELECT id FROM conversations WHERE worker = ? AND user_id = ? AND active",
                    worker,
                    user_id,
                )
            assert row is not None
            return int(row["id"])

    async def new_conversation(self, worker: str, user_id: int) -> int:
        async with self._write() as tx:
            await tx.execute(
                "UPDATE conversations SET active = FALSE "
                "WHERE worker = ? AND user_id = ? AND active",
                worker,
                user_id,
            )
            row = await tx.fetchone(
                "INSERT INTO conversations (worker, user_id, active, created_at) "
                "VALUES (?, ?, TRUE, ?) RETURNING id",
                worker,
                user_id,
                utcnow(),
            )
            assert row is not None
            return int(row["id"])

    async def set_session(self, conversation_id: int, session_id: str | None) -> None:
        check_storable(session_id=session_id)
        async with self._write() as tx:
            changed = await tx.execute(
                "UPDATE conversations SET session_id = ? WHERE id = ?",
                session_id,
                conversation_id,
            )
        if changed == 0:
            raise KeyError(f"no conversation {conversation_id}")

    async def session_of(self, conversation_id: int) -> str | None:
        async with self._read() as tx:
            row = await tx.fetchone(
                "SELECT session_id FROM conversations WHERE id = ?", conversation_id
            )
        return None if row is None else row["session_id"]

    async def load_turns(self, conversation_id: int) -> list[dict[str, Any]]:
        async with self._read() as tx:
            rows = await tx.fetchall(
                "SELECT role, content FROM turns WHERE conversation_id = ? ORDER BY seq",
                conversation_id,
            )
        return [{"role": row["role"], "content": json.loads(row["content"])} for row in rows]

    async def append_turns(
        self, conversation_id: int, turns: Sequence[dict[str, Any]], task_id: str | None
    ) -> None:
        if not turns:
            return
        async with self._write() as tx:
            # Lock the conversation so that two appends cannot number their turns alike.
            owner = await tx.fetchone(
                "SELECT id FROM conversations WHERE id = ?{for_update}", conversation_id
            )
            if owner is None:
                raise KeyError(f"no conversation {conversation_id}")
            row = await tx.fetchone(
                "SELECT COALESCE(MAX(seq), 0) AS last FROM turns WHERE conversation_id = ?",
                conversation_id,
            )
            seq = int(row["last"]) if row is not None else 0
            now = utcnow()
            for offset, turn in enumerate(turns, start=1):
                await self._insert_turn(tx, conversation_id, seq + offset, turn, task_id, now)

    async def replace_turns(
        self, conversation_id: int, turns: Sequence[dict[str, Any]]
    ) -> None:
        async with self._write() as tx:
            owner = await tx.fetchone(
                "SELECT id FROM conversations WHERE id = ?{for_update}", conversation_id
            )
            if owner is None:
                raise KeyError(f"no conversation {conversation_id}")
            await tx.execute("DELETE FROM turns WHERE conversation_id = ?", conversation_id)
            now = utcnow()
            for seq, turn in enumerate(turns, start=1):
                await self._insert_turn(tx, conversation_id, seq, turn, None, now)

    @staticmethod
    async def _insert_turn(
        tx: Tx, conversation_id: int, seq: int, turn: dict[str, Any], task_id: str | None,
        now: datetime,
    ) -> None:
        await tx.execute(
            "INSERT INTO turns (conversation_id, seq, role, content, task_id, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            conversation_id, seq, turn["role"], json.dumps(turn["content"]), task_id, now,
        )

    # --- worker chat messages of running tasks -------------------------------------------
    async def remember_reply(
        self, worker: str, task_id: str, chat_id: int, message_id: int
    ) -> None:
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO worker_replies (worker, task_id, chat_id, message_id, created_at) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (worker, task_id, chat_id, message_id) DO NOTHING",
                worker,
                task_id,
                chat_id,
                message_id,
                utcnow(),
            )

    async def forget_replies(self, worker: str, task_id: str) -> None:
        async with self._write() as tx:
            await tx.execute(
                "DELETE FROM worker_replies WHERE worker = ? AND task_id = ?", worker, task_id
            )

    async def leftover_replies(self, worker: str) -> list[tuple[str, int, int]]:
        async with self._read() as tx:
            rows = await tx.fetchall(
                "SELECT task_id, chat_id, message_id FROM worker_replies WHERE worker = ? "
                "ORDER BY id",
                worker,
            )
        return [(row["task_id"], int(row["chat_id"]), int(row["message_id"])) for row in rows]

    # --- follow-ups by reply (issue 11) -------------------------------------------------
    async def record_messages(
        self, bot: str, chat_id: int, message_ids: Sequence[int], task_id: str, kind: str
    ) -> None:
        now = utcnow()
        async with self._write() as tx:
            for message_id in message_ids:
                await tx.execute(
                    "INSERT INTO task_messages (bot, chat_id, message_id, task_id, kind, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (bot, chat_id, message_id) DO NOTHING",
                    bot, chat_id, message_id, task_id, kind, now,
                )

    async def task_of_message(self, bot: str, chat_id: int, message_id: int) -> str | None:
        async with self._read() as tx:
            row = await tx.fetchone(
                "SELECT task_id FROM task_messages WHERE bot = ? AND chat_id = ? "
                "AND message_id = ?",
                bot, chat_id, message_id,
            )
        return None if row is None else str(row["task_id"])

    async def messages_of_task(self, task_id: str, kind: str) -> list[tuple[int, int]]:
        async with self._read() as tx:
            rows = await tx.fetchall(
                "SELECT chat_id, message_id FROM task_messages WHERE task_id = ? AND kind = ? "
                "ORDER BY message_id",
                task_id, kind,
            )
        return [(int(row["chat_id"]), int(row["message_id"])) for row in rows]

    async def link_follow_up(self, task_id: str, follow_up_of: str) -> None:
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO task_threads (task_id, follow_up_of, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (task_id) DO UPDATE SET follow_up_of = excluded.follow_up_of",
                task_id, follow_up_of, utcnow(),
            )

    async def follow_up_of(self, task_id: str) -> str | None:
        async with self._read() as tx:
            row = await tx.fetchone(
                "SELECT follow_up_of FROM task_threads WHERE task_id = ?", task_id
            )
        return None if row is None else row["follow_up_of"]

    async def link_conversation(self, task_id: str, conversation_id: int) -> None:
        async with self._write() as tx:
            await tx.execute(
                "INSERT INTO task_threads (task_id, conversation_id, created_at) "
                "VALUES (?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET "
                "conversation_id = excluded.conversation_id",
                task_id, conversation_id, utcnow(),
            )

    async def conversation_of_task(self, task_id: str) -> tuple[int, str] | None:
        async with self._read() as tx:
            row = await tx.fetchone(
                "SELECT c.id, c.worker FROM task_threads t "
                "JOIN conversations c ON c.id = t.conversation_id WHERE t.task_id = ?",
                task_id,
            )
        return None if row is None else (int(row["id"]), str(row["worker"]))

    async def activate_conversation(self, conversation_id: int) -> None:
        async with self._write() as tx:
            row = await tx.fetchone(
                "SELECT worker, user_id FROM conversations WHERE id = ?", conversation_id
            )
            if row is None:
                raise KeyError(f"no conversation {conversation_id}")
            await tx.execute(
                "UPDATE conversations SET active = FALSE "
                "WHERE worker = ? AND user_id = ? AND active AND id <> ?",
                row["worker"], row["user_id"], conversation_id,
            )
            await tx.execute(
                "UPDATE conversations SET active = TRUE WHERE id = ?", conversation_id
            )
