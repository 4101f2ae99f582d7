"""Pure rendering of what the master says: receipts, /queue, /workers, help, notices."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from fleetgram.domain import Event, Task, WorkerSlot, WorkerState

HELP = """<b>fleetgram</b> — a fleet of Claude workers.

Send me a prompt and the next free worker takes it; watch it work in that worker's own chat.

<b>Prompts</b>
<code>write the docs</code> — priority 5, normal (the default)
<code>!1 fix the build</code> — priority 1 (most urgent) … <code>!10</code> (least)
Priorities read as words: 1–2 urgent, 3–4 high, 5–7 normal, 8–10 low.
<code>/urgent fix the build</code> — same as !1
<code>@worker2 write the tests</code> — only worker2 does it
(it waits if worker2 is busy and starts it if stopped)
You can also write to a worker bot directly: it does the task there.

<b>Commands</b>
/queue — pending and running tasks, in order, with Cancel buttons for yours
/workers — every worker: state, current task, since when
/cancel &lt;id&gt; — cancel a task (pending: never runs; running: stops within 2 s)
/usage — your tokens and cost today and this month, per worker
/addworker — add a worker bot in one tap (Telegram creates it for you)
/help — this message

In a worker's chat: /new starts a fresh conversation, /stop cancels what it is doing.

<b>Good to know</b>
Reply to a task's answer, receipt or notice to follow it up: the same conversation goes on
(on the same worker when it is free, otherwise another one takes the conversation over).
A message that is not a reply starts a fresh conversation.
Edit a prompt while it waits and the task changes with it.
A long paste that Telegram splits into several messages becomes one task.
Photos, images, PDFs and text files go with the prompt in their caption; an album is one
task; voice notes are transcribed when transcription is configured.
I answer in private chats only.
You see your own tasks; other users' work is only counted."""

MASTER_COMMANDS = [
    ("queue", "Pending and running tasks"),
    ("workers", "Worker states"),
    ("cancel", "Cancel a task: /cancel <id>"),
    ("urgent", "Queue a prompt at priority 1"),
    ("usage", "Your tokens and cost today and this month"),
    ("addworker", "Add a worker bot in one tap"),
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


def priority_word(priority: int) -> str:
    """One word for a priority (1 most urgent … 10 least), the same everywhere."""
    if priority <= 2:
        return "urgent"
    if priority <= 4:
        return "high"
    if priority <= 7:
        return "normal"
    return "low"


def priority_label(priority: object) -> str:
    """"priority 5 (normal)": the number the user typed, and what it means."""
    try:
        number = int(str(priority))
    except ValueError:
        return "priority ?"
    return f"priority {number} ({priority_word(number)})"


def waiting_note(what: str) -> str:
    """The line that says a task waits for its user (an approval in agent mode)."""
    return f"⏳ waiting for you: {escape(what)}"


def ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "?"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


# Telegram refuses a message longer than 4096 characters (after entity parsing); the HTML we
# measure is longer than what Telegram counts, so staying under this keeps one message.
MESSAGE_BUDGET = 4000
QUEUE_LINES = 25  # at most this many of the viewer's tasks are listed (and loaded) by /queue


def receipt_payload(
    task: Task, note: str = "", *, joined: int = 1, cleaned: str = "",
    follow_up_of: str | None = None,
) -> dict[str, Any]:
    """What a 'receipt' outbox event carries: enough to render it after a restart."""
    payload: dict[str, Any] = {"title": task.title, "priority": task.priority}
    if task.pinned_worker:
        payload["pinned_worker"] = task.pinned_worker
    if follow_up_of:
        payload["follow_up_of"] = follow_up_of
    if note:
        payload["note"] = note
    if joined > 1:
        payload["joined"] = joined
    if cleaned:
        payload["cleaned"] = cleaned
    return payload


def receipt(
    task_id: str, payload: dict[str, Any], position: int | None, pending_total: int
) -> str:
    where = f"position {position} of {max(pending_total, position)}" if position else "queued"
    pinned = payload.get("pinned_worker")
    pin = f" · for {escape(str(pinned))}" if pinned else ""
    text = (
        f"🆕 <b>{task_id}</b> · {priority_label(payload.get('priority', '?'))} · {where}{pin}\n"
        f"{escape(str(payload.get('title', '')))}"
    )
    if payload.get("follow_up_of"):
        text += f"\n↪️ follow-up of {escape(str(payload['follow_up_of']))}"
    joined = int(payload.get("joined", 1))
    if joined > 1:
        text += f"\n📎 Joined {joined} messages of one paste into this task."
    for key in ("cleaned", "note"):
        if payload.get(key):
            text += f"\n{escape(str(payload[key]))}"
    return text


@dataclass(frozen=True)
class QueueCounts:
    """Exact totals from count queries; `mine_*` are the viewer's own."""

    running: int
    pending: int
    mine_running: int
    mine_pending: int


def _fit(head: str, lines: Sequence[str], tail: Callable[[int], str]) -> str:
    """`head`, then as many `lines` as fit in one message, then `tail(left_out)`."""
    out = [head]
    size = len(head)
    for i, line in enumerate(lines):
        rest = tail(len(lines) - i - 1)
        if size + 1 + len(line) + 1 + len(rest) > MESSAGE_BUDGET:
            left = tail(len(lines) - i)
            return "\n".join([*out, left] if left else out)
        out.append(line)
        size += 1 + len(line)
    last = tail(0)
    return "\n".join([*out, last] if last else out)


def queue_view(
    running: Sequence[Task], pending: Sequence[Task], counts: QueueCounts, now: datetime
) -> str:
    """The viewer's own running and pending tasks (at most QUEUE_LINES, loaded in queue order)
    with exact totals; other users' work is only counted, never described."""
    if counts.running == 0 and counts.pending == 0:
        return "The queue is empty."
    head = f"<b>Queue</b>: {counts.running} running, {counts.pending} pending"
    lines = []
    for t in running:
        lines.append(
            f"▶️ <code>{t.id}</code> {priority_word(t.priority)} on {t.worker}"
            f" · {ago(t.started_at or t.assigned_at, now)}"
            f" — {escape(t.title)}"
            + (f"\n    {waiting_note(t.waiting)}" if t.waiting else "")
        )
    for i, t in enumerate(pending, 1):
        pin = f" → {t.pinned_worker}" if t.pinned_worker else ""
        retry = f" (attempt {t.attempts + 1})" if t.attempts else ""
        lines.append(
            f"{i}. <code>{t.id}</code> {priority_word(t.priority)}{pin}"
            f" · waiting {ago(t.created_at, now)}"
            f"{retry} — {escape(t.title)}"
        )
    unlisted = counts.mine_running + counts.mine_pending - len(running) - len(pending)
    others_running = max(0, counts.running - counts.mine_running)
    others_pending = max(0, counts.pending - counts.mine_pending)

    def tail(left_out: int) -> str:
        more = []
        if unlisted + left_out > 0:
            more.append(f"… and {unlisted + left_out} more of yours")
        if others_running or others_pending:
            more.append(
                f"+{others_running} running and {others_pending} pending tasks of other users"
            )
        return "\n".join(more)

    return _fit(head, lines, tail)


QUEUE_BUTTONS = 10  # Cancel buttons under /queue: the viewer's first tasks in queue order


def queue_buttons(
    running: Sequence[Task], pending: Sequence[Task], more: int = 0
) -> tuple[list[tuple[str, str]], str]:
    """(label, callback data) of the Cancel buttons for the viewer's own tasks (`running` and
    `pending` are theirs only: others' tasks never get one), and the line that says how to
    cancel the ones without a button (`more`: the viewer's tasks /queue did not load)."""
    tasks = [*running, *pending]
    buttons = [(f"Cancel {t.id}", f"cancel:{t.id}") for t in tasks[:QUEUE_BUTTONS]]
    rest = len(tasks) - len(buttons) + max(0, more)
    note = (f"Buttons cancel your first {len(buttons)} tasks; /cancel &lt;id&gt; cancels "
            f"any of the other {rest}." if rest > 0 and buttons else "")
    return buttons, note


def workers_view(
    slots: Sequence[WorkerSlot],
    states: dict[str, WorkerState],
    now: datetime,
    viewer_tasks: Collection[str] = (),
    waiting: Mapping[str, str] | None = None,
) -> str:
    """Every slot; a busy worker names its task only if it is one of `viewer_tasks` (the
    viewer's own), otherwise it says "busy on another user's task". `waiting` (task id ->
    Task.waiting) adds what the viewer's own task waits for from them."""
    waiting = waiting or {}
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
            what = (
                f"<code>{escape(slot.current_task)}</code>"
                if slot.current_task in viewer_tasks else "another user's task"
            )
            detail = f"busy on {what} for {ago(slot.state_since, now)}"
            asked = waiting.get(slot.current_task)
            if asked and slot.current_task in viewer_tasks:  # another user's question is theirs
                detail += f" · {waiting_note(asked)}"
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
        if p.get("worker") is None:  # the store cancelled it while it was still pending
            return f"⏹ <b>{tid}</b> cancelled before it started; it will not run.\n{title}"
        return f"⏹ <b>{tid}</b> cancelled on {_who(p)}.\n{title}"
    if event.kind == "requeued":
        return (
            f"🔁 <b>{tid}</b> went back to the queue: {escape(str(p.get('reason', '')))} "
            f"(attempt {p.get('attempts', '?')} lost).\n{title}"
        )
    if event.kind == "undelivered":
        return (f"⚠️ <b>{tid}</b>'s answer could not be shown in {p.get('worker')}'s chat "
                f"(Telegram kept failing); here it is.\n{title}")
    if event.kind == "worker_added":  # Kubernetes: the operator wrote its Secret
        return (f"🤖 {escape(str(p.get('worker')))} (@{escape(str(p.get('username')))}) joined "
                "the fleet: its worker is starting.")
    if event.kind == "worker_not_added":
        return (f"⚠️ {escape(str(p.get('worker')))} (@{escape(str(p.get('username')))}) could "
                f"not join the fleet: {escape(str(p.get('reason', '')))}")
    if event.kind == "blocked" and p.get("reason") == "unreachable":
        return (
            f"⚠️ {p.get('worker')}'s chat is unreachable (Telegram keeps failing). "
            f"<b>{tid}</b> goes on; its answer will come here when done.\n{title}"
        )
    if event.kind == "blocked":
        username = p.get("username")
        bot = (f"@{escape(str(username))} (https://t.me/{escape(str(username))})"
               if username else f"{p.get('worker')}'s bot")
        return (
            f"⚠️ {p.get('worker')} can't message you: open {bot} and press Start. "
            f"<b>{tid}</b> goes on; its answer will come here when done.\n{title}"
        )
    return None
