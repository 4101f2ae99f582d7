"""The agent engine: Claude Code through the Claude Agent SDK (WORKER_ENGINE=agent).

Each task runs the bundled Claude Code CLI in the worker's workspace (fleetgram.workspace):
on its own git branch when WORKSPACE_REPO is set, resuming the conversation's Claude Code
session, with the fleet's `send_file` tool and a permission callback that asks the task's
user by button (fleetgram.engines.permissions decides what needs asking).

One CLI process per task, not one per worker for its lifetime: a task's limits
(TASK_MAX_TURNS, TASK_BUDGET_USD) are options of the process, a crashed CLI cannot poison
the next task, and only one process per worker is alive at a time either way (~230-275 MB).
The price is the CLI's start, about 0.4-0.7 s per task (shared/notes/claude-agent-sdk.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    PermissionResultAllow,
    PermissionResultDeny,
    ResultError,
    ResultMessage,
    TextBlock,
    ToolPermissionContext,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
    create_sdk_mcp_server,
    tool,
)
from claude_agent_sdk.types import StreamEvent

from fleetgram import metrics
from fleetgram.budget import BudgetReached, agent_budget, daily_cap_binds
from fleetgram.claude.pricing import price_for, with_cost
from fleetgram.config import PermissionMode, Settings
from fleetgram.domain import Usage, utcnow
from fleetgram.engines.activity import result_line, tool_line
from fleetgram.engines.base import ApprovalChoice, Limit, ToolCall, TurnContext, TurnResult
from fleetgram.engines.launcher import REAL_CLI, RELAY, bundled_cli
from fleetgram.engines.permissions import Verdict, decide, denial_message, sdk_permission_mode
from fleetgram.spend import task_cap
from fleetgram.store.base import ApiCall, Store
from fleetgram.telegram.files import prompt_with_files, save_files
from fleetgram.workspace import Workspace

log = logging.getLogger(__name__)

LAUNCHER = "fleetgram-agent-cli"
SEND_FILE_TOOL = "mcp__fleet__send_file"
SHORT_PATH = 60  # bytes of a TMPDIR that leaves room for the sandbox's socket names
INTERRUPT_TIMEOUT = 1.0  # seconds the CLI gets to stop a turn when the task is cancelled
APPEND_SYSTEM = (
    "You are one of several parallel workers of fleetgram; the user follows your work in a "
    "Telegram chat on a phone. Keep the final answer short and say what you changed. Files "
    "the user sends are saved under .fleetgram/uploads/ in the working directory. To give "
    "the user a file (a report, a chart, a build), call the send_file tool with its path."
)
# Paths whose reading gives an agent more than its task needs (tokens, other workers).
SECRET_PATHS = ("/var/run/secrets/**", "/run/secrets/**", "/etc/fleetgram/**")


class AgentFailed(Exception):
    """Claude Code ended the task with an error; the message is fit for the chat."""


def launcher_path() -> str:
    """The console script that starts the CLI with a filtered environment."""
    beside = Path(sys.executable).parent / LAUNCHER
    if beside.exists():
        return str(beside)
    found = shutil.which(LAUNCHER)
    if found is None:
        raise AgentFailed(f"{LAUNCHER} is not installed: pip install 'fleetgram[agent]'")
    return found


def cli_tmpdir(workspace: Workspace) -> Path:
    """The CLI's TMPDIR: in the workspace, unless that path is too long for the Unix sockets
    AGENT_SANDBOX makes there (at most 107 bytes in all); then a short one under /tmp."""
    inside = workspace.root / "tmp"
    if len(str(inside).encode()) <= SHORT_PATH:
        return inside
    digest = hashlib.sha256(str(workspace.root).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"fleetgram-{digest}"


def cli_environment(settings: Settings, workspace: Workspace) -> dict[str, str]:
    """What the CLI is given on top of the launcher's kept variables (see launcher.py)."""
    env = {
        "HOME": str(workspace.home),
        # The CLI's sessions and settings live with the workspace, so a restart resumes them.
        "CLAUDE_CONFIG_DIR": str(workspace.home / ".claude"),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": str(settings.claude_max_retries),
        # MCP tool schemas in the first request, not behind ToolSearch (one call less).
        "ENABLE_TOOL_SEARCH": "false",
        "TMPDIR": str(cli_tmpdir(workspace)),
        REAL_CLI: settings.agent_cli_path or str(bundled_cli()),
    }
    # Empty blanks one the worker may have inherited: the launcher drops empty values.
    env["ANTHROPIC_API_KEY"] = settings.anthropic_api_key
    if settings.claude_code_oauth_token:
        env["CLAUDE_CODE_OAUTH_TOKEN"] = settings.claude_code_oauth_token
    if settings.anthropic_base_url:
        env["ANTHROPIC_BASE_URL"] = settings.anthropic_base_url
    if settings.agent_relay:
        env[RELAY] = settings.agent_relay
    return env


def permission_rules(settings: Settings, slot: str) -> dict[str, Any]:
    """Claude Code settings: never read tokens or other workers' workspaces. The CLI applies
    them to its file tools, and to Bash too when AGENT_SANDBOX=1 (its bubblewrap sandbox)."""
    # `//abs/path` is the CLI's spelling of an absolute path in a rule.
    deny = [f"Read(/{p})" for p in SECRET_PATHS]
    root = settings.workspace_root.resolve()
    for other in settings.slot_names:
        if other != slot:
            deny += [f"Read(/{root / other}/**)", f"Edit(/{root / other}/**)"]
    database = settings.database_url
    if database.startswith("sqlite:///"):
        path = Path(database.removeprefix("sqlite:///")).resolve()
        deny += [f"Read(/{path})", f"Edit(/{path})"]
    return {"permissions": {"deny": deny}}


def usage_of(raw: dict[str, Any] | None, cost: float | None, model: str) -> Usage:
    raw = raw or {}
    usage = Usage(
        input_tokens=int(raw.get("input_tokens") or 0),
        output_tokens=int(raw.get("output_tokens") or 0),
        cache_read_tokens=int(raw.get("cache_read_input_tokens") or 0),
        cache_write_tokens=int(raw.get("cache_creation_input_tokens") or 0),
    )
    if cost is not None:  # Claude Code's own figure
        return Usage(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
                     usage.cache_write_tokens, round(float(cost), 6))
    return with_cost(usage, price_for(model, None))


def limit_of(result: ResultMessage) -> Limit | None:
    if result.subtype == "error_max_turns":
        return Limit.TURNS
    if result.subtype == "error_max_budget_usd":
        return Limit.BUDGET
    return None


def failure_of(result: ResultMessage) -> str | None:
    """Why a result is a failure, in one line; None for success or a limit."""
    if not result.is_error or limit_of(result) is not None:
        return None
    if result.api_error_status:
        kind = {429: "rate limited", 529: "overloaded", 401: "API key refused"}.get(
            result.api_error_status, f"HTTP {result.api_error_status}")
        return f"Claude API error: {kind} (after retries)"
    detail = "; ".join(result.errors or []) or (result.result or "") or result.subtype
    return "Claude Code failed: " + " ".join(str(detail).split())[:200]


def result_outcome(result: ResultMessage | None, stop: str | None) -> tuple[str, int | None]:
    """How a task's Claude Code run is counted (fleetgram_claude_requests_total): a result
    that reached a limit (turns, budget) is a successful call; an API error carries its
    status; no result at all is an error without one (or cancelled)."""
    if result is None:
        return ("cancelled", None) if stop == "cancelled" else ("error", None)
    if result.is_error and limit_of(result) is None:
        return "error", result.api_error_status
    return "ok", 200


class _Turn:
    """The state of one task's conversation with the CLI, as its messages arrive."""

    def __init__(self, ctx: TurnContext, cwd: Path, model: str) -> None:
        self.ctx = ctx
        self.cwd = cwd
        self.model = model
        self.texts: list[str] = []
        self.calls: dict[str, ToolCall] = {}
        self.streamed_block = False  # a text block is being streamed
        self.result: ResultMessage | None = None
        self.session_id: str | None = None
        self.seen_usage = Usage()  # summed from assistant messages: billed if cut short

    def on_message(self, message: Any) -> None:
        if isinstance(message, StreamEvent):
            self._on_stream_event(message)
        elif isinstance(message, AssistantMessage):
            self._on_assistant(message)
        elif isinstance(message, UserMessage):
            self._on_tool_results(message)
        elif isinstance(message, ResultMessage):
            self.result = message
            self.session_id = message.session_id
        else:
            session = getattr(message, "data", {}).get("session_id") if hasattr(
                message, "data") else None
            if session:
                self.session_id = session

    def _on_stream_event(self, message: StreamEvent) -> None:
        if message.parent_tool_use_id is not None:
            return  # a subagent's own chatter
        event = message.event
        kind = event.get("type")
        if kind == "content_block_start" and event.get("content_block", {}).get("type") == "text":
            if self.texts or self.calls:
                self.ctx.text("\n")
            self.streamed_block = True
        elif kind == "content_block_delta":
            delta = event.get("delta", {})
            if delta.get("type") == "text_delta" and delta.get("text"):
                self.ctx.text(delta["text"])

    def _on_assistant(self, message: AssistantMessage) -> None:
        if message.parent_tool_use_id is not None:
            return
        if message.usage:
            self.seen_usage = self.seen_usage + usage_of(message.usage, None, self.model)
        for block in message.content:
            if isinstance(block, TextBlock):
                self.texts.append(block.text)
                if not self.streamed_block:  # partial messages off or lost: show it whole
                    self.ctx.text(block.text)
                self.streamed_block = False
            elif isinstance(block, ToolUseBlock):
                call = ToolCall(block.name, dict(block.input or {}), block.id)
                self.calls[block.id] = call
                line = tool_line(call, self.ctx.verbosity, self.cwd)
                if line:
                    self.ctx.activity(line)

    def _on_tool_results(self, message: UserMessage) -> None:
        if message.parent_tool_use_id is not None or isinstance(message.content, str):
            return
        for block in message.content:
            if not isinstance(block, ToolResultBlock):
                continue
            call = self.calls.get(block.tool_use_id)
            if call is None:
                continue
            output = block.content if isinstance(block.content, str) else "\n".join(
                str(part.get("text", "")) for part in block.content or []
                if isinstance(part, dict))
            line = result_line(call, output, bool(block.is_error), self.ctx.verbosity)
            if line:
                self.ctx.activity(line)

    @property
    def text(self) -> str:
        return "\n\n".join(t.strip() for t in self.texts if t.strip())


class AgentEngine:
    kind = "agent"

    def __init__(self, settings: Settings, slot: str, store: Store,
                 workspace: Workspace | None = None) -> None:
        self.settings = settings
        self.slot = slot
        self.store = store
        # Absolute: the CLI's HOME and TMPDIR must not depend on its working directory.
        self.workspace = workspace or Workspace(
            settings.workspace_for(slot).resolve(), settings.workspace_repo, slot=slot,
            git_credentials=settings.workspace_git_credentials)
        self._prepared = False
        self._client: ClaudeSDKClient | None = None

    @property
    def workspace_dir(self) -> Path:
        return self.workspace.repo_dir

    async def prepare(self) -> None:
        """Create the workspace (clone the repo) once; a failure is retried next task."""
        if not self._prepared:
            await self.workspace.prepare()
            cli_tmpdir(self.workspace).mkdir(mode=0o700, parents=True, exist_ok=True)
            self._prepared = True

    async def run(self, prompt: str, ctx: TurnContext) -> TurnResult:
        task = ctx.task
        # The user's daily budget: the CLI's max_budget_usd is at most what is left of it.
        ctx.meter.cap = await task_cap(self.store, self.settings, task.user_id, utcnow())
        ctx.meter.check()
        await self.prepare()
        branch = await self.workspace.begin(task.id)
        if branch is not None and branch.resumed:
            await ctx.note(f"🔁 {task.id} continues on {branch.branch} as the earlier run "
                           "left it.")
        prompt = await self._with_attachments(prompt, ctx)
        session = await ctx.persist(lambda: self.store.session_of(ctx.conversation))
        turn = await self._converse(prompt, ctx, session)
        if turn.session_id:
            sid, conversation = turn.session_id, ctx.conversation
            await ctx.persist(lambda: self.store.set_session(conversation, sid))
        report = ""
        if branch is not None:
            changes = await self.workspace.finish(task.id, task.title)
            report = changes.summary() if changes is not None else ""
        assert turn.result is not None
        limit = limit_of(turn.result)
        cap = ctx.meter.cap
        if limit == Limit.BUDGET and cap is not None and daily_cap_binds(
                self.settings.task_budget_usd, cap):
            raise BudgetReached(cap.budget)  # what it did is kept on its branch
        return TurnResult(turn.text, limit, report)

    async def interrupt(self) -> None:
        client = self._client
        if client is not None:
            await client.interrupt()

    async def close(self) -> None:
        self._client = None

    async def save_progress(self, task_id: str) -> None:
        """The worker is stopping mid-task: keep what the agent did on the task's branch."""
        await self.workspace.save_progress(task_id)

    # ------------------------------------------------------------------ steps
    async def _with_attachments(self, prompt: str, ctx: TurnContext) -> str:
        task_id = ctx.task.id
        files = await ctx.persist(lambda: self.store.load_attachments(task_id))
        if not files:
            return prompt
        saved = await save_files(self.workspace.uploads(task_id),
                                 [(f.name, f.mime, f.data) for f in files])
        cwd = self.workspace.repo_dir
        return prompt_with_files(prompt, [str(p.relative_to(cwd)) for p in saved])

    async def _converse(self, prompt: str, ctx: TurnContext, session: str | None) -> _Turn:
        try:
            return await self._query(prompt, ctx, session)
        except _ResumeFailed:
            await ctx.note("🧹 The earlier Claude Code session could not be resumed (its "
                           "files are gone); this task starts a fresh one.")
            return await self._query(prompt, ctx, None)

    async def _query(self, prompt: str, ctx: TurnContext, session: str | None) -> _Turn:
        turn = _Turn(ctx, self.workspace.repo_dir, self.settings.claude_model)
        started = time.monotonic()
        options = self._options(ctx, session)
        try:
            async with ClaudeSDKClient(options) as client:
                self._client = client
                try:
                    await client.query(prompt)
                    async for message in client.receive_response():
                        turn.on_message(message)
                except asyncio.CancelledError:
                    # Stop the running command first: leaving the client closes the CLI's
                    # stdin and waits up to 5 s for it to exit, which a command in progress
                    # would hold up (a stopping worker has ~3 s in all).
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.interrupt(), INTERRUPT_TIMEOUT)
                    raise
        except asyncio.CancelledError:
            self._bill(ctx, turn, started, "cancelled")
            raise
        except ResultError as error:  # the CLI exited on an error before a result reached us
            detail = " ".join([*(error.errors or []), str(error)])
            if session and "No conversation found" in detail:
                raise _ResumeFailed from error
            self._bill(ctx, turn, started, error.subtype)
            raise AgentFailed("Claude Code failed: " + " ".join(detail.split())[:200]) from error
        finally:
            self._client = None
        result = turn.result
        if result is None:
            raise AgentFailed("Claude Code ended without a result")
        if session and result.is_error and _no_conversation(result):
            raise _ResumeFailed
        self._bill(ctx, turn, started, result.stop_reason)
        failure = failure_of(result)
        if failure is not None:
            raise AgentFailed(failure)
        return turn

    def _bill(self, ctx: TurnContext, turn: _Turn, started: float, stop: str | None) -> None:
        result = turn.result
        metrics.claude_request(*result_outcome(result, stop), time.monotonic() - started)
        if result is not None:
            usage = usage_of(result.usage, result.total_cost_usd, self.settings.claude_model)
        else:
            usage = turn.seen_usage
        ctx.meter.calls.append(ApiCall(ctx.meter.task_id, ctx.meter.worker,
                                       self.settings.claude_model, usage, stop,
                                       round(time.monotonic() - started, 3)))

    def _options(self, ctx: TurnContext, session: str | None) -> ClaudeAgentOptions:
        settings = self.settings
        allowed_for_task: set[str] = set()
        mode = settings.permission_mode

        async def can_use_tool(name: str, tool_input: dict[str, Any],
                               context: ToolPermissionContext) -> Any:
            call = ToolCall(name, dict(tool_input), context.tool_use_id)
            verdict = decide(mode, call, frozenset(allowed_for_task))
            if verdict == Verdict.ALLOW:
                return PermissionResultAllow()
            if verdict == Verdict.DENY:
                return PermissionResultDeny(
                    message=f"PERMISSION_MODE={mode.value}: this worker may only read.")
            choice = await ctx.approve(call)
            if choice == ApprovalChoice.TASK:
                allowed_for_task.add(name)
            if choice.allowed:
                return PermissionResultAllow()
            return PermissionResultDeny(message=denial_message(choice))

        @tool("send_file", "Send a file from the working directory to the user's Telegram "
              "chat (as a photo for images, else as a document). Use it for reports, charts, "
              "builds or anything the user should download.",
              {"path": str, "caption": str})
        async def send_file(args: dict[str, Any]) -> dict[str, Any]:
            line = await ctx.send_file(str(args.get("path", "")), str(args.get("caption", "")))
            return {"content": [{"type": "text", "text": line}]}

        options = ClaudeAgentOptions(
            cwd=str(self.workspace.repo_dir),
            model=settings.claude_model,
            resume=session,
            permission_mode=sdk_permission_mode(mode),  # type: ignore[arg-type]
            can_use_tool=can_use_tool,
            include_partial_messages=True,
            mcp_servers={"fleet": create_sdk_mcp_server("fleet", tools=[send_file])},
            system_prompt={"type": "preset", "preset": "claude_code", "append": APPEND_SYSTEM},
            max_turns=settings.task_max_turns,
            max_budget_usd=agent_budget(settings.task_budget_usd, ctx.meter.cap),
            env=cli_environment(settings, self.workspace),
            cli_path=launcher_path(),
            settings=json.dumps(permission_rules(settings, self.slot)),
            stderr=lambda line: log.debug("claude code: %s", line[:300],
                                          extra={"worker": self.slot}),
        )
        if mode == PermissionMode.PLAN:
            options.disallowed_tools = ["Write", "Edit", "MultiEdit", "NotebookEdit"]
        if settings.agent_sandbox:
            options.sandbox = {"enabled": True, "autoAllowBashIfSandboxed": False,
                               "allowUnsandboxedCommands": False}
        return options


class _ResumeFailed(Exception):
    """The conversation's session is gone (a new HOME, an emptied volume)."""


def _no_conversation(result: ResultMessage) -> bool:
    text = " ".join([*(result.errors or []), result.result or ""])
    return "No conversation found" in text
