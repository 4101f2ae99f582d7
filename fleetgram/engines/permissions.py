"""PERMISSION_MODE as decisions: what the agent may do without asking the task's user.

* ``ask`` (default): every edit, command and network call is asked with buttons.
* ``edits``: file edits are allowed; commands and network calls are asked.
* ``all``: nothing is asked.
* ``plan``: read only; anything that could change something is denied without asking.

Tools that only read the workspace (and ``mcp__fleet__send_file``, which sends a workspace
file to the task's own chat) are allowed in every mode. WebFetch and WebSearch only read, but
they reach the network (a URL can carry what the agent read), so they are asked in ``ask``,
``edits`` and ``plan``. A tool the user allowed "for this task" is not asked again, except in
``plan``, where only the network tools can be allowed that way: nothing lifts read-only.

``ExitPlanMode`` is denied in ``plan``: leaving read-only mode is the operator's choice
(PERMISSION_MODE), not the model's; the model is told, and its plan is in the call's
``input["plan"]``. Outside plan mode it changes nothing and is allowed.

Pure functions, no I/O; the texts are plain text (the approval message is not parsed as HTML).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

from fleetgram.config import PermissionMode
from fleetgram.engines.activity import shown_path
from fleetgram.engines.base import ApprovalChoice, ToolCall

__all__ = [
    "EDIT_TOOLS",
    "NETWORK_TOOLS",
    "READ_ONLY_TOOLS",
    "Verdict",
    "approval_outcome",
    "approval_text",
    "decide",
    "denial_message",
    "plan_denial_message",
    "sdk_permission_mode",
]

COMMAND_CHARS = 1000  # an approval shows at most this much of a command
PREVIEW_CHARS = 600  # ... of a file's content, an edit, or another tool's input


class Verdict(StrEnum):
    ALLOW = "allow"
    ASK = "ask"
    DENY = "deny"


READ_ONLY_TOOLS: frozenset[str] = frozenset(
    {
        "Read",
        "Glob",
        "Grep",
        "LS",
        "NotebookRead",
        "TodoWrite",  # the agent's own plan, kept by the CLI
        "ToolSearch",  # loads a deferred tool's schema
        "mcp__fleet__send_file",  # a workspace file to the task's own chat
    }
)
NETWORK_TOOLS: frozenset[str] = frozenset({"WebFetch", "WebSearch"})
EDIT_TOOLS: frozenset[str] = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
EXIT_PLAN = "ExitPlanMode"


def decide(mode: PermissionMode, call: ToolCall, allowed_for_task: frozenset[str]) -> Verdict:
    """Whether ``call`` runs, is asked, or is refused, in ``mode``."""
    name = call.name
    if name in READ_ONLY_TOOLS:
        return Verdict.ALLOW
    if mode is PermissionMode.PLAN:
        if name in NETWORK_TOOLS:
            return Verdict.ALLOW if name in allowed_for_task else Verdict.ASK
        return Verdict.DENY
    if mode is PermissionMode.ALL or name == EXIT_PLAN or name in allowed_for_task:
        return Verdict.ALLOW
    if mode is PermissionMode.EDITS and name in EDIT_TOOLS:
        return Verdict.ALLOW
    return Verdict.ASK


def sdk_permission_mode(mode: PermissionMode) -> str:
    """The SDK's ``permission_mode`` for ``mode``.

    ``all`` runs in "default" with a callback that allows every call: "bypassPermissions"
    refuses to start as root unless IS_SANDBOX=1, which must not become a production default.
    """
    return {
        PermissionMode.ASK: "default",
        PermissionMode.ALL: "default",
        PermissionMode.EDITS: "acceptEdits",
        PermissionMode.PLAN: "plan",
    }[mode]


# ----------------------------------------------------------------------------- texts
def approval_text(call: ToolCall, cwd: Path | None, *, task_id: str | None = None) -> str:
    """The text above the Allow/Deny buttons: what the agent wants to do, for which task."""
    inp = call.input
    where = f" (task {task_id})" if task_id else ""
    if call.name == "Bash":
        command = _clip(_str(inp.get("command")).strip(), COMMAND_CHARS)
        description = _str(inp.get("description")).strip()
        text = f"🔐 Allow this command?{where}\n{command}"
        return f"{text}\n({description})" if description else text
    if call.name in EDIT_TOOLS:
        path = _str(inp.get("file_path") or inp.get("notebook_path"))
        head = f"🔐 Allow writing {shown_path(path, cwd) or '?'}?{where}"
        preview = _clip(_edit_preview(call), PREVIEW_CHARS)
        return f"{head}\n{preview}" if preview else head
    payload = json.dumps(inp, ensure_ascii=False, separators=(",", ":"), default=str)
    return f"🔐 Allow {call.name}?{where}\n{_clip(payload, PREVIEW_CHARS)}"


def _edit_preview(call: ToolCall) -> str:
    inp = call.input
    if call.name == "Write":
        return _str(inp.get("content"))
    if call.name == "NotebookEdit":
        if inp.get("edit_mode") == "delete":
            return "(delete a cell)"
        return _str(inp.get("new_source"))
    edits = inp.get("edits") if call.name == "MultiEdit" else [inp]
    parts = [
        _diff(_str(e.get("old_string")), _str(e.get("new_string")), bool(e.get("replace_all")))
        for e in edits or []
        if isinstance(e, dict)
    ]
    return "\n".join(parts)


def _diff(old: str, new: str, replace_all: bool) -> str:
    lines = [f"- {line}" for line in old.splitlines()]
    lines += [f"+ {line}" for line in new.splitlines()]
    if replace_all:
        lines.append("(every match)")
    return "\n".join(lines)


def approval_outcome(choice: ApprovalChoice, timeout_minutes: float) -> str:
    """What the approval message says once it is answered (its buttons removed)."""
    if choice is ApprovalChoice.ONCE:
        return "✅ Allowed once"
    if choice is ApprovalChoice.TASK:
        return "✅ Allowed for the rest of this task"
    if choice is ApprovalChoice.DENY:
        return "⛔ Denied"
    return f"⌛ No answer in {_duration(timeout_minutes)}: denied"


def denial_message(choice: ApprovalChoice) -> str:
    """What the agent is told when a call is not allowed (it goes on without it)."""
    if choice is ApprovalChoice.TIMEOUT:
        return (
            "No answer from the user in time: denied. Continue without this tool call, "
            "or explain what you need it for."
        )
    if choice.allowed:
        raise ValueError(f"{choice} is not a denial")
    return (
        "The user denied this tool call. Continue without it, "
        "or explain what you need it for."
    )


def plan_denial_message(call: ToolCall) -> str:
    """What the agent is told when ``plan`` mode refuses ``call`` (nobody was asked)."""
    if call.name == EXIT_PLAN:
        return "This task runs in plan mode (read only): present the plan as your answer."
    return f"This task runs in plan mode (read only): {call.name} is not allowed."


def _duration(minutes: float) -> str:
    if minutes < 1:
        return f"{max(1, round(minutes * 60))} s"
    return f"{minutes:g} min"


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
