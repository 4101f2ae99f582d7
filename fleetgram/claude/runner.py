"""The one place that calls Claude: build the request, stream it, sum the usage.

A turn is a loop so agent mode is an extension, not a rewrite: while Claude answers with
`tool_use` and tools are configured, run them, send back `tool_result`, and call again.
Every call lands in the meter (also when cancelled mid-stream), so a task's usage is complete.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anthropic

from fleetgram import metrics
from fleetgram.budget import BudgetReached, Cap
from fleetgram.claude.deadline import CallLimits, ClaudeDeadline, ClaudeStalled, within_limits
from fleetgram.claude.pricing import Price, price_for, with_cost
from fleetgram.domain import Usage
from fleetgram.store.base import ApiCall

_CACHE = {"type": "ephemeral"}


class Tool(Protocol):
    name: str
    description: str
    input_schema: dict[str, Any]

    async def run(self, tool_input: dict[str, Any]) -> str: ...


@dataclass
class UsageMeter:
    """Collects the API calls of one task as they finish (or are cut short)."""

    task_id: str | None
    worker: str
    calls: list[ApiCall] = field(default_factory=list)
    # The task's share of its user's daily budget (fleetgram.budget), set by the engine when
    # the task starts; None: no budget. check() stops the turn once it is reached.
    cap: Cap | None = None

    def check(self, running: Usage | None = None) -> None:
        """Raise BudgetReached if the calls so far, with `running` (the call in progress, as
        far as it got), cost the cap or more."""
        cap = self.cap
        if cap is None:
            return
        cost = self.total.cost_usd + (running.cost_usd if running is not None else 0.0)
        if cap.reached(cost):
            raise BudgetReached(cap.budget)

    @property
    def total(self) -> Usage:
        total = Usage()
        for call in self.calls:
            total = total + call.usage
        return total


@dataclass(frozen=True)
class TurnOutcome:
    text: str
    turns: list[dict[str, Any]]  # to append to the conversation: user, assistant (, tool rounds)
    stop_reason: str | None


def user_turn(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def with_cache_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark the end of the history so the next call reads it from the prompt cache.

    The breakpoint goes on the last block of the message before the newest user turn; with
    the system prompt's breakpoint that makes two of the API's four.
    """
    if len(messages) < 2:
        return messages
    marked = copy.deepcopy(messages)
    blocks = marked[-2]["content"]
    if isinstance(blocks, str):
        marked[-2]["content"] = [{"type": "text", "text": blocks, "cache_control": _CACHE}]
    elif blocks:
        blocks[-1]["cache_control"] = _CACHE
    return marked


def _usage_of(raw: Any) -> Usage:
    if raw is None:
        return Usage()
    return Usage(
        input_tokens=getattr(raw, "input_tokens", 0) or 0,
        output_tokens=getattr(raw, "output_tokens", 0) or 0,
        cache_read_tokens=getattr(raw, "cache_read_input_tokens", 0) or 0,
        cache_write_tokens=getattr(raw, "cache_creation_input_tokens", 0) or 0,
    )


def streamed_tokens(chars: int) -> int:
    """Output tokens of `chars` characters of streamed text: about 4 characters a token
    (the API reports the exact count only when the answer ends)."""
    return -(-chars // 4)


def _ignore(_delta: str) -> None:
    pass


def _is_content(event: Any) -> bool:
    """Events that show the model is producing something (the SDK drops `ping`s itself)."""
    return getattr(event, "type", None) not in ("message_start", "content_block_start")


def _content_blocks(message: Any) -> list[dict[str, Any]]:
    blocks = []
    for block in message.content:
        blocks.append(block.model_dump(exclude_none=True))
    return blocks


class ClaudeRunner:
    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        *,
        model: str,
        max_tokens: int,
        system_prompt: str,
        price: Price | None = None,
        tools: Sequence[Tool] = (),
        max_tool_rounds: int = 20,
        limits: CallLimits | None = None,
    ) -> None:
        self._client = client
        self.model = model
        self._max_tokens = max_tokens
        self._system = [{"type": "text", "text": system_prompt, "cache_control": _CACHE}]
        self._price = price_for(model, price)
        self._tools = {tool.name: tool for tool in tools}
        self._max_tool_rounds = max_tool_rounds
        # Per call: CLAUDE_TIMEOUT (wall) and CLAUDE_STALL_TIMEOUT; see fleetgram.claude.deadline.
        self.limits = limits or CallLimits()

    async def run(
        self,
        history: Sequence[dict[str, Any]],
        prompt: str,
        *,
        on_text: Callable[[str], None],
        meter: UsageMeter,
        content: Sequence[dict[str, Any]] | None = None,
    ) -> TurnOutcome:
        """One turn. `content`, when given, is the user turn's blocks (images, documents and
        the prompt's text: fleetgram.media.request_blocks) instead of the prompt alone."""
        first = {"role": "user", "content": list(content)} if content else user_turn(prompt)
        new_turns: list[dict[str, Any]] = [first]
        texts: list[str] = []
        stop_reason: str | None = None
        for _ in range(self._max_tool_rounds + 1):
            message = await self._call(list(history) + new_turns, on_text, meter)
            blocks = _content_blocks(message)
            new_turns.append({"role": "assistant", "content": blocks})
            texts.extend(b["text"] for b in blocks if b.get("type") == "text")
            stop_reason = message.stop_reason
            if stop_reason != "tool_use" or not self._tools:
                break
            new_turns.append({"role": "user", "content": await self._run_tools(blocks)})
        return TurnOutcome("".join(texts), new_turns, stop_reason)

    async def summarise(
        self, turns: Sequence[dict[str, Any]], instruction: str, *, meter: UsageMeter
    ) -> str:
        """One call that answers `instruction` about `turns` (used to compact a conversation);
        nothing is streamed to a chat."""
        message = await self._call([*turns, user_turn(instruction)], _ignore, meter)
        return "".join(b["text"] for b in _content_blocks(message) if b.get("type") == "text")

    async def _call(
        self, messages: list[dict[str, Any]], on_text: Callable[[str], None], meter: UsageMeter
    ) -> Any:
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self._max_tokens,
            "system": self._system,
            "messages": with_cache_breakpoint(messages),
        }
        if self._tools:
            request["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                for t in self._tools.values()
            ]
        meter.check()  # no new call (a tool round, the answer after a summary) past the cap
        started = time.monotonic()
        stream_ref: list[Any] = []
        wall = asyncio.timeout(self.limits.wall)  # also bounds opening the stream (retries)
        try:
            try:
                async with wall:
                    message = await self._stream(request, on_text, stream_ref, started,
                                                 meter)
            except TimeoutError:
                if wall.expired() and self.limits.wall is not None:
                    raise ClaudeDeadline(self.limits.wall) from None
                raise
        except BaseException as exc:
            metrics.claude_request(*call_outcome(exc), time.monotonic() - started)
            # Cut short (cancelled or failed mid-stream): bill what the API reported so far.
            snapshot = stream_ref[0]._current_snapshot_or_none() if stream_ref else None
            if snapshot is not None:
                # The API reports output tokens at the end only: count what was streamed.
                self._record(meter, snapshot.usage, None, started,
                             min_output=stream_ref[1] if len(stream_ref) > 1 else 0)
            raise
        metrics.claude_request("ok", 200, time.monotonic() - started)
        self._record(meter, message.usage, message.stop_reason, started)
        return message

    async def _stream(
        self, request: dict[str, Any], on_text: Callable[[str], None], stream_ref: list[Any],
        started: float, meter: UsageMeter,
    ) -> Any:
        async with self._client.messages.stream(**request) as stream:
            stream_ref[:] = [stream, 0]  # the stream, and the output tokens streamed so far
            events = within_limits(
                stream, self.limits, started=started, is_content=_is_content,
                clock=time.monotonic,
            )
            chars = 0
            async for event in events:
                if event.type == "text":
                    on_text(event.text)
                    chars += len(event.text)
                    stream_ref[1] = streamed_tokens(chars)
                    if meter.cap is not None:  # the running cost against the budget
                        meter.check(self._running_usage(stream, stream_ref[1]))
            return await stream.get_final_message()

    def _running_usage(self, stream: Any, output_tokens: int) -> Usage:
        """The cost so far of the call `stream` is answering: its input as the API reported
        it at the start, and the output streamed (estimated: reported only at the end)."""
        snapshot = stream._current_snapshot_or_none()
        usage = _usage_of(snapshot.usage if snapshot is not None else None)
        usage = Usage(usage.input_tokens, max(usage.output_tokens, output_tokens),
                      usage.cache_read_tokens, usage.cache_write_tokens)
        return with_cost(usage, self._price)

    def _record(self, meter: UsageMeter, raw: Any, stop_reason: str | None, started: float,
                *, min_output: int = 0) -> None:
        usage = _usage_of(raw)
        if min_output > usage.output_tokens:
            usage = Usage(usage.input_tokens, min_output, usage.cache_read_tokens,
                          usage.cache_write_tokens)
        usage = with_cost(usage, self._price)
        meter.calls.append(
            ApiCall(meter.task_id, meter.worker, self.model, usage, stop_reason,
                    round(time.monotonic() - started, 3))
        )

    async def _run_tools(self, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = []
        for block in blocks:
            if block.get("type") != "tool_use":
                continue
            tool = self._tools.get(block["name"])
            if tool is None:
                content, is_error = f"unknown tool {block['name']}", True
            else:
                try:
                    content, is_error = await tool.run(block.get("input", {})), False
                except Exception as exc:  # a failing tool is Claude's to handle, not ours
                    content, is_error = f"{type(exc).__name__}: {exc}", True
            results.append(
                {"type": "tool_result", "tool_use_id": block["id"], "content": content,
                 "is_error": is_error}
            )
        return results


def make_client(
    api_key: str, base_url: str | None, *, timeout: float, max_retries: int
) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
    )


# An SSE `event: error` arrives after HTTP 200: its type stands for the status it would have had.
_STATUS_OF_ERROR_TYPE = {"overloaded_error": 529, "rate_limit_error": 429, "api_error": 500,
                         "invalid_request_error": 400, "authentication_error": 401,
                         "permission_error": 403, "not_found_error": 404,
                         "request_too_large": 413}


def call_outcome(exc: BaseException) -> tuple[str, int | None]:
    """How a failed call is counted (fleetgram_claude_requests_total): outcome and status."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled", None
    if isinstance(exc, ClaudeStalled | ClaudeDeadline | anthropic.APITimeoutError | TimeoutError):
        return "timeout", None
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status == 200:
            error_type, _ = _api_error_of(exc)
            status = _STATUS_OF_ERROR_TYPE.get(error_type or "", 200)
        return "error", status
    return "error", None


def describe_error(exc: BaseException) -> str:
    """A one-line reason for the chats, without secrets; never empty."""
    if isinstance(exc, ClaudeStalled | ClaudeDeadline | BudgetReached):
        return str(exc)
    if isinstance(exc, anthropic.APIStatusError):
        error_type, message = _api_error_of(exc)
        if exc.status_code == 200 or exc.response is None:
            # An SSE `event: error` after the stream began (the HTTP status was 200).
            kind = _ERROR_TYPES.get(error_type or "", error_type or "an error")
            return f"Claude's stream broke off: {kind}"
        if error_type == "invalid_request_error" and message and "too long" in message:
            return "the conversation is too long for the model"
        kind = {429: "rate limited", 529: "overloaded", 401: "API key refused"}.get(
            exc.status_code, f"HTTP {exc.status_code}"
        )
        return f"Claude API error: {kind} (after retries)"
    if isinstance(exc, anthropic.APITimeoutError):
        return "Claude API timed out (after retries)"
    if isinstance(exc, anthropic.APIConnectionError):
        return "Claude API unreachable (after retries)"
    detail = " ".join(str(exc).split())[:200]
    name = type(exc).__name__
    if not detail:
        return {
            "TimeoutError": "timed out",
            "ReadTimeout": "the connection timed out (no data)",
            "CancelledError": "cancelled",
        }.get(name, f"{name} (no details)")
    return f"{name}: {detail}"


_ERROR_TYPES = {
    "overloaded_error": "Claude is overloaded",
    "api_error": "an internal error at Anthropic",
    "rate_limit_error": "rate limited",
}


def _api_error_of(exc: anthropic.APIStatusError) -> tuple[str | None, str | None]:
    """The API's `error.type` and `error.message` from an error body, when there is one."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            kind, message = error.get("type"), error.get("message")
            return (str(kind) if kind else None, str(message) if message else None)
    return None, None


def is_prompt_too_long(exc: BaseException) -> bool:
    """The API refused the request because the prompt exceeds the model's context window."""
    if not isinstance(exc, anthropic.BadRequestError):
        return False
    _, message = _api_error_of(exc)
    return bool(message and "prompt is too long" in message)
