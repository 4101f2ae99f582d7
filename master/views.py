"""Pure rendering of what the master says: receipts, /queue, /workers, help, notices."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

from fleetgram.domain import Event, Task, TaskState, WorkerSlot, WorkerState

HELP = """<b>fleetgram</b> — a fleet of Claude workers.

Send me a prompt and the next free worker takes it; watch it work in that worker's own chat.

<b>Prompts</b>
<code>write the docs</code> — priority 5 (default)
<code>!1 fix the build</code> — priority 1 (most urgent) … <code>!10</code> (least)
<code>/urgent fix the build</code> — same as !1
<code>@worker2 write the tests</code> — only worker2 does it
(it waits if worker2 is busy and starts it if stopped)
You can also write to a worker bot directly: it does the task there.

<b>Commands</b>
/queue — pending and running tasks, in order
/workers — every worker: state, current task, since when
/cancel &lt;id&gt; — cancel a task (pending: never runs; running: stops within 2 s)
/help — this message

In a worker's chat: /new starts a fresh conversation, /stop cancels what it is doing."""

MASTER_COMMANDS = [
    ("queue", "Pending and running tasks"),
    ("workers", "Worker states"),
    ("cancel", "Cancel a task: /cancel <id>"),
    ("urgent", "Queue a prompt at priority 1"),
    ("help", "How to use fleetgram"),
]

_STATE_ICON = {
    WorkerState.IDLE: "🟢",
    WorkerState.BUSY: "🔵",
    WorkerState.STARTING: "🟡",
    WorkerState.OFFLINE: "🟠",
    WorkerState.ERROR: "🔴",
    WorkerState.STOPPED: "⚪",
}


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def receipt(task: Task, position: int | None, pending_total: int, note: str = "") -> str:
    where = f"position {position} of {pending_total}" if position else "queued"
    pin = f" · for {task.pinned_worker}" if task.pinned_worker else ""
    text = f"🆕 <b>{task.id}</b> · priority {task.priority} · {where}{pin}\n{escape(task.title)}"
    return text + (f"\n{note}" if note else "")


def queue_view(tasks: Sequence[Task], now: datetime) -> str:
    running = [t for t in tasks if t.state.active]
    pending = [t for t in tasks if t.state == TaskState.PENDING]
    if not running and not pending:
        return "The queue is empty."
    lines = [f"<b>Queue</b>: {len(running)} running, {len(pending)} pending"]
    for t in running:
        lines.append(
            f"▶️ <code>{t.id}</code> p{t.priority} on {t.worker}"
            f" · {ago(t.started_at or t.assigned_at, now)}"
            f" — {escape(t.title)}"
        )
    for i, t in enumerate(pending, 1):
        pin = f" → {t.pinned_worker}" if t.pinned_worker else ""
        retry = f" (attempt {t.attempts + 1})" if t.attempts else ""
        lines.append(
            f"{i}. <code>{t.id}</code> p{t.priority}{pin} · waiting {ago(t.created_at, now)}"
            f"{retry} — {escape(t.title)}"
        )
    return "\n".join(lines)


def workers_view(
    slots: Sequence[WorkerSlot], states: dict[str, WorkerState], now: datetime
) -> str:
    if not slots:
        return "No worker slots: set WORKER_TOKEN_POOL."
    running = sum(1 for s in states.values() if s not in (WorkerState.STOPPED, WorkerState.ERROR))
    lines = [f"<b>Workers</b>: {running} running of {len(slots)} slots"]
    for slot in slots:
        state = states[slot.name]
        who = f" @{escape(slot.username)}" if slot.username else ""
        since = slot.heartbeat_at if state == WorkerState.OFFLINE else slot.state_since
        detail = f"{state.value} for {ago(since, now)}"
        if state == WorkerState.BUSY and slot.current_task:
            detail = f"busy on <code>{slot.current_task}</code> for {ago(slot.state_since, now)}"
        if state == WorkerState.ERROR and slot.error:
            detail = f"error: {escape(slot.error)}"
        if state == WorkerState.STOPPED:
            detail = "stopped" + (f" for {ago(slot.state_since, now)}" if slot.state_since else "")
        lines.append(f"{_STATE_ICON[state]} {slot.name}{who} — {detail}")
    return "\n".join(lines)


def _usage_line(payload: dict[str, Any]) -> str:
    u = payload.get("usage") or {}
    total = sum(int(u.get(k, 0)) for k in
                ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"))
    return (
        f"{total:,} tokens (in {u.get('input_tokens', 0):,}, out {u.get('output_tokens', 0):,},"
        f" cached {u.get('cache_read_tokens', 0):,}) · ${float(u.get('cost_usd', 0)):.4f}"
    )


def _who(payload: dict[str, Any]) -> str:
    name = payload.get("worker", "a worker")
    username = payload.get("username")
    return f"{name} (@{escape(username)})" if username else str(name)


def render_event(event: Event) -> str | None:
    """The master chat's text for an outbox event; None for events it does not announce."""
    p, tid = event.payload, event.task_id
    title = escape(str(p.get("title", "")))
    if event.kind == "started":
        return f"▶️ <b>{tid}</b> started on {_who(p)} — {title}"
    if event.kind == "completed":
        text = (
            f"✅ <b>{tid}</b> done by {_who(p)} in {float(p.get('seconds', 0)):.1f}s · "
            f"{_usage_line(p)}\n{title}"
        )
        if p.get("result"):
            text += "\nIts answer follows."
        return text
    if event.kind == "failed":
        return f"❌ <b>{tid}</b> failed: {escape(str(p.get('error', 'unknown error')))}\n{title}"
    if event.kind == "cancelled":
        return f"⏹ <b>{tid}</b> cancelled. {title}"
    if event.kind == "requeued":
        return (
            f"🔁 <b>{tid}</b> went back to the queue: {escape(str(p.get('reason', '')))} "
            f"(attempt {p.get('attempts', '?')} lost). {title}"
        )
    if event.kind == "blocked":
        username = p.get("username")
        bot = (f"@{escape(str(username))} (https://t.me/{escape(str(username))})"
               if username else f"{p.get('worker')}'s bot")
        return (
            f"⚠️ {p.get('worker')} can't message you: open {bot} and press Start. "
            f"<b>{tid}</b> goes on; its answer will come here when done."
        )
    return None
