"""The seam between a worker's task run and what answers the task.

Two engines implement it: `chat` (the Messages API, talk only; fleetgram.engines.chat) and
`agent` (Claude Code through the Claude Agent SDK, with tools in the worker's workspace;
fleetgram.engines.agent). The run (fleetgram.worker.run) owns the task's state machine and
the chats; the engine owns the conversation with Claude and reports through a TurnContext.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fleetgram.claude.runner import UsageMeter
from fleetgram.domain import Task

_T = TypeVar("_T")


class ApprovalChoice(StrEnum):
    """The user's answer to a tool call that needs permission."""

    ONCE = "once"  # allow this call
    TASK = "task"  # allow this tool for the rest of the task
    DENY = "deny"
    TIMEOUT = "timeout"  # no answer within APPROVAL_TIMEOUT: denied

    @property
    def allowed(self) -> bool:
        return self in (ApprovalChoice.ONCE, ApprovalChoice.TASK)


@dataclass(frozen=True)
class ToolCall:
    """A tool call the agent wants to make, as the user is shown it."""

    name: str  # the CLI's tool name: Bash, Write, Edit, Read, mcp__fleet__send_file ...
    input: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # the tool_use id


class Limit(StrEnum):
    """A per-task limit that stopped the agent (what it did so far is kept)."""

    TURNS = "TASK_MAX_TURNS"
    BUDGET = "TASK_BUDGET_USD"


@dataclass(frozen=True)
class TurnResult:
    text: str  # the answer shown to the user (the master gets it too)
    limit: Limit | None = None  # set when a per-task limit stopped the turn
    report: str = ""  # lines shown under the answer (agent: the branch and the files changed)


class TurnContext(Protocol):
    """What the run offers an engine for one task."""

    task: Task
    conversation: int  # the store's conversation id (worker, user)
    meter: UsageMeter  # every API call (or the agent's result) goes here
    workspace: Path | None  # the agent's working directory, None for chat
    verbosity: int  # /verbose of the task's chat: 0 answer only, 1 a line per tool, 2 results

    def text(self, delta: str) -> None:
        """Stream a piece of the answer into the worker chat."""

    def activity(self, line: str) -> None:
        """Show one line of what the agent does ("🔧 `pytest -q`"), at the chat's verbosity."""

    async def note(self, text: str) -> None:
        """A one-line note in the worker chat (e.g. the conversation was compacted)."""

    async def persist(self, write: Callable[[], Awaitable[_T]]) -> _T:
        """A store write retried as the run's writes are; raises StepFailed when it gives up."""

    async def approve(self, call: ToolCall) -> ApprovalChoice:
        """Ask the task's user (buttons in the worker chat); TIMEOUT after APPROVAL_TIMEOUT."""

    async def send_file(self, path: str, caption: str) -> str:
        """Deliver a workspace file to the worker chat; the line returned goes to the model."""


class Engine(Protocol):
    kind: str  # "chat" or "agent"

    async def run(self, prompt: str, ctx: TurnContext) -> TurnResult:
        """Answer `prompt` in the conversation `ctx.conversation`. Cancelling the asyncio task
        running it must stop the turn; `interrupt` is the polite way (agent: kills a running
        command too). Raises on failure (the run turns the error into a reason)."""

    async def interrupt(self) -> None:
        """Stop the turn in progress, if any, within about a second."""

    async def close(self) -> None:
        """Release what the engine holds (the agent's CLI process)."""
