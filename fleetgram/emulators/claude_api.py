"""A local emulator of the Anthropic Messages API (``POST /v1/messages``).

Tests point the real ``anthropic`` SDK at it::

    emulator = ClaudeEmulator()
    await emulator.start()
    client = anthropic.AsyncAnthropic(api_key="test-key", base_url=emulator.url)

It runs an ``aiohttp.web`` server in the caller's event loop on 127.0.0.1 (free port) and
speaks the wire format the SDK expects: JSON ``Message`` bodies, server-sent events with an
``event:`` line on every event, ``{"type": "error", "error": {...}}`` error bodies with the
``request-id`` header, ``retry-after`` on injected errors.

Behaviour in brief (details in the docstrings below):

* Authentication: the key is accepted from ``x-api-key`` or ``Authorization: Bearer <key>``
  (the installed SDK sends the latter for ``api_key=``); anything else is a 401.
* Validation: the request is checked like the real API (required fields, alternating roles,
  block types, ``tool_use``/``tool_result`` pairing, at most 4 ``cache_control`` blocks ...);
  failures are 400 ``invalid_request_error`` with messages shaped like the real ones.
* Answers: scripted with :meth:`ClaudeEmulator.script`, otherwise a deterministic default.
* Pace: text is cut into "tokens" (a word, or 4 characters of a longer word) and streamed at
  :attr:`ClaudeEmulator.tokens_per_second`; non-streaming answers take the same time.
* Token counting: ``count_tokens(text) == ceil(len(text) / 4)`` per input block.
* Prompt caching: breakpoints, prefix matching with a 20-block lookback, TTLs of 5 min / 1 h.
* Media: ``image`` and ``document`` blocks are checked against the documented limits (5 MB
  of base64 per image, 8000 px a side or 2000 px with more than 20 images, 100 images and
  documents per request, 100 PDF pages, a media_type the bytes contradict) with the real
  API's 400 messages; :meth:`ClaudeEmulator.media_blocks` shows what a request carried.
* Context window: a prompt of more than :attr:`ClaudeEmulator.context_window` input tokens is
  refused (400 ``prompt is too long: N tokens > M maximum``).
* Faults: :meth:`ClaudeEmulator.inject` (error statuses), :meth:`ClaudeEmulator.hang_next`,
  and streams that go wrong after they started: :meth:`ClaudeEmulator.trickle_next` (only
  ``ping`` events), :meth:`ClaudeEmulator.stall_next` (silence) and
  :meth:`ClaudeEmulator.error_midstream_next` (an ``event: error``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import math
import re
import secrets
import string
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# The header readers of the code under test: the emulator must read the same pixels and pages
# the API would (they are tested on their own in tests/unit/test_media.py).
from fleetgram.media import image_size, pdf_pages, sniff_image

__all__ = [
    "CACHE_LOOKBACK_BLOCKS",
    "IMAGE_TOKENS",
    "MAX_CACHE_BREAKPOINTS",
    "ClaudeEmulator",
    "Reply",
    "ReplySource",
    "count_tokens",
    "tokenize",
]

Reply = str | dict[str, Any]
"""A scripted answer: text, or ``{"text": "...", "tool_use": {"name": ..., "input": {...}}}``
(``tool_use`` may also be a list of such dicts; ``text`` is optional)."""

ReplySource = Reply | Callable[[dict[str, Any]], Reply]
"""A :data:`Reply` or a function of the request's JSON body returning one."""

MAX_CACHE_BREAKPOINTS = 4
OAUTH_TOKEN_PREFIX = "sk-ant-oat"
OAUTH_BETA = "oauth-2025-04-20"
CACHE_LOOKBACK_BLOCKS = 20
CACHE_TTLS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}
IMAGE_TOKENS = 1600
MAX_TOKENS_PER_DELTA = 8
MAX_REQUEST_BYTES = 32 * 1024 * 1024

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

ERROR_MESSAGES: dict[int, str] = {
    400: "Invalid request.",
    401: "invalid x-api-key",
    402: "Your credit balance is too low to access the Anthropic API.",
    403: "Your API key does not have permission to use the specified resource.",
    404: "The requested resource could not be found.",
    408: "Request timed out.",
    409: "Conflict.",
    413: "Request exceeds the maximum allowed number of bytes.",
    429: (
        "This request would exceed the rate limit for your organization of 50 requests per "
        "minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."
    ),
    500: "Internal server error",
    504: "Request timed out.",
    529: "Overloaded",
}

# The status each error type is answered with outside a stream (529 wins for overloaded).
_STATUS_OF_TYPE: dict[str, int] = {t: s for s, t in sorted(ERROR_TYPES.items(), reverse=True)}
_STATUS_OF_TYPE["overloaded_error"] = 529

_FILLER = (
    " This is a deterministic reply from the Claude API emulator."
    " It is long enough to be streamed in several chunks,"
    " so that clients can observe incremental output."
    " Nothing in it was written by a real model."
)

_TOKEN_RE = re.compile(r"\s*\S{1,4}|\s+")
_TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_ID_ALPHABET = string.ascii_letters + string.digits
_IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_USER_BLOCKS = ("text", "image", "document", "tool_result", "search_result")
_ASSISTANT_BLOCKS = ("text", "tool_use", "thinking", "redacted_thinking")


def count_tokens(text: str) -> int:
    """The emulator's input token estimate for a piece of text: ``ceil(len(text) / 4)``."""
    return math.ceil(len(text) / 4)


def tokenize(text: str) -> list[str]:
    """Cut generated text into output "tokens": a word (with its leading whitespace) of at
    most 4 characters, or 4-character pieces of a longer word. ``"".join(tokenize(t)) == t``."""
    return _TOKEN_RE.findall(text)


def _new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.message = message or ERROR_MESSAGES.get(status, "Error")
        self.error_type = error_type or ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        self.headers = headers or {}
        super().__init__(self.message)


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, message)


@dataclass
class _Script:
    reply: ReplySource
    when: str | None
    remaining: int | None  # None: forever


@dataclass
class _Fault:
    kind: str  # "error" | "hang" | "trickle" | "stall" | "error_midstream"
    status: int = 0
    retry_after: float | None = None
    should_retry: bool | None = None
    after_tokens: int = 0  # stream faults: answer tokens sent before the fault plays
    ping_every: float = 2.0  # trickle
    error_type: str = "overloaded_error"  # error_midstream


class _StreamErrored(Exception):
    """An ``event: error`` was written: the stream ends there (see error_midstream_next)."""


_STREAM_FAULTS = frozenset({"trickle", "stall", "error_midstream"})


@dataclass
class _Segment:
    """One cacheable unit of the prompt: a tool, a system block or a message content block."""

    key: str
    tokens: int
    cache_ttl: str | None  # set when the block carries cache_control (a breakpoint)


@dataclass
class _CacheEntry:
    expires: float
    ttl: float


@dataclass
class _Usage:
    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_5m: int
    cache_creation_1h: int
    output_tokens: int = 0

    def to_dict(self, *, output_tokens: int | None = None) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_5m + self.cache_creation_1h,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_5m,
                "ephemeral_1h_input_tokens": self.cache_creation_1h,
            },
            "output_tokens": self.output_tokens if output_tokens is None else output_tokens,
            "service_tier": "standard",
        }


@dataclass
class _Output:
    text_tokens: list[str]
    tool_uses: list[dict[str, Any]]  # complete tool_use content blocks
    tool_json: list[str]  # their `input`, serialized
    stop_reason: str
    stop_sequence: str | None
    output_tokens: int
    content: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------------------------


def _check_cache_control(value: Any, where: str) -> str:
    if not isinstance(value, dict):
        raise _invalid(f"{where}.cache_control: Input should be a valid dictionary")
    if value.get("type") != "ephemeral":
        raise _invalid(f"{where}.cache_control.type: Input should be 'ephemeral'")
    ttl = value.get("ttl", "5m")
    if ttl not in CACHE_TTLS:
        raise _invalid(f"{where}.cache_control.ttl: Input should be '5m' or '1h'")
    return str(ttl)


def _check_text_block(block: dict[str, Any], where: str) -> None:
    text = block.get("text")
    if text is None:
        raise _invalid(f"{where}.text: Field required")
    if not isinstance(text, str):
        raise _invalid(f"{where}.text: Input should be a valid string")
    if not text:
        raise _invalid("messages: text content blocks must be non-empty")


def _check_source(block: dict[str, Any], where: str, kind: str) -> None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: Field required")
    stype = source.get("type")
    if kind == "image":
        allowed = ("base64", "url", "file")
    else:
        allowed = ("base64", "text", "content", "url", "file")
    if stype not in allowed:
        tags = ", ".join(f"'{t}'" for t in allowed)
        raise _invalid(
            f"{where}.source: Input tag '{stype}' found using 'type' does not match any of "
            f"the expected tags: {tags}"
        )
    if stype == "base64":
        media = source.get("media_type")
        if kind == "image" and media not in _IMAGE_MEDIA_TYPES:
            raise _invalid(
                f"{where}.source.base64.media_type: Input should be 'image/jpeg', "
                "'image/png', 'image/gif' or 'image/webp'"
            )
        if kind == "document" and media != "application/pdf":
            raise _invalid(f"{where}.source.base64.media_type: Input should be 'application/pdf'")
        if not isinstance(source.get("data"), str):
            raise _invalid(f"{where}.source.base64.data: Field required")
    elif stype == "url" and not isinstance(source.get("url"), str):
        raise _invalid(f"{where}.source.url.url: Field required")
    elif stype == "file" and not isinstance(source.get("file_id"), str):
        raise _invalid(f"{where}.source.file.file_id: Field required")
    elif stype == "text" and not isinstance(source.get("data"), str):
        raise _invalid(f"{where}.source.text.data: Field required")


def _check_block(block: Any, where: str, role: str) -> int:
    """Validate one content block; return how many cache_control markers it carries."""
    if not isinstance(block, dict):
        raise _invalid(
            f"{where}: Input should be a valid dictionary or object to extract fields from"
        )
    btype = block.get("type")
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    if btype not in _USER_BLOCKS + _ASSISTANT_BLOCKS:
        tags = ", ".join(f"'{t}'" for t in dict.fromkeys(_USER_BLOCKS + _ASSISTANT_BLOCKS))
        raise _invalid(
            f"{where}: Input tag '{btype}' found using 'type' does not match any of the "
            f"expected tags: {tags}"
        )
    if btype not in allowed:
        raise _invalid(f"{where}: `{btype}` blocks are not allowed in `{role}` messages")
    markers = 0
    if "cache_control" in block and block["cache_control"] is not None:
        if btype in ("thinking", "redacted_thinking"):
            raise _invalid(f"{where}.{btype}.cache_control: Extra inputs are not permitted")
        _check_cache_control(block["cache_control"], where)
        markers += 1
    if btype == "text":
        _check_text_block(block, where)
    elif btype in ("image", "document"):
        _check_source(block, where, btype)
    elif btype == "tool_use":
        for name in ("id", "name"):
            if not isinstance(block.get(name), str):
                raise _invalid(f"{where}.tool_use.{name}: Field required")
        if not isinstance(block.get("input"), dict):
            raise _invalid(f"{where}.tool_use.input: Input should be a valid dictionary")
    elif btype == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            raise _invalid(f"{where}.tool_result.tool_use_id: Field required")
        content = block.get("content")
        if isinstance(content, list):
            for k, inner in enumerate(content):
                inner_where = f"{where}.tool_result.content.{k}"
                if not isinstance(inner, dict) or inner.get("type") not in (
                    "text",
                    "image",
                    "document",
                    "search_result",
                ):
                    raise _invalid(
                        f"{inner_where}: Input tag '{_get(inner, 'type')}' found using 'type' "
                        "does not match any of the expected tags: 'text', 'image', "
                        "'document', 'search_result'"
                    )
                if inner.get("type") == "text":
                    _check_text_block(inner, inner_where)
                elif inner.get("type") in ("image", "document"):
                    _check_source(inner, inner_where, str(inner["type"]))
                if inner.get("cache_control") is not None:
                    _check_cache_control(inner["cache_control"], inner_where)
                    markers += 1
        elif content is not None and not isinstance(content, str):
            raise _invalid(f"{where}.tool_result.content: Input should be a valid string or list")
        if "is_error" in block and not isinstance(block["is_error"], bool):
            raise _invalid(f"{where}.tool_result.is_error: Input should be a valid boolean")
    elif btype == "thinking":
        if not isinstance(block.get("thinking"), str):
            raise _invalid(f"{where}.thinking.thinking: Field required")
        if not isinstance(block.get("signature"), str):
            raise _invalid(f"{where}.thinking.signature: Field required")
    return markers


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate(body: dict[str, Any]) -> None:
    """Raise :class:`_ApiError` (400) where the real API would reject the request."""
    model = body.get("model")
    if model is None:
        raise _invalid("model: Field required")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Input should be a valid string")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens: Field required")
    if not _is_int(max_tokens):
        raise _invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _invalid("max_tokens: Input should be greater than or equal to 1")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _invalid("stream: Input should be a valid boolean")
    for name, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        if body.get(name) is not None:
            value = body[name]
            if not _is_number(value):
                raise _invalid(f"{name}: Input should be a valid number")
            if value < low:
                raise _invalid(f"{name}: Input should be greater than or equal to {low:g}")
            if value > high:
                raise _invalid(f"{name}: Input should be less than or equal to {high:g}")
    if body.get("top_k") is not None and (not _is_int(body["top_k"]) or body["top_k"] < 0):
        raise _invalid("top_k: Input should be greater than or equal to 0")
    stops = body.get("stop_sequences")
    if stops is not None and (
        not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)
    ):
        raise _invalid("stop_sequences: Input should be a valid list of strings")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid("metadata: Input should be a valid dictionary")

    markers = 0

    # tools
    tools = body.get("tools")
    tool_names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            raise _invalid("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            where = f"tools.{i}"
            if not isinstance(tool, dict):
                raise _invalid(f"{where}: Input should be a valid dictionary")
            name = tool.get("name")
            if tool.get("type") in (None, "custom"):
                if not isinstance(name, str):
                    raise _invalid(f"{where}.custom.name: Field required")
                if not _TOOL_NAME_RE.match(name):
                    raise _invalid(
                        f"{where}.custom.name: String should match pattern "
                        "'^[a-zA-Z0-9_-]{1,128}$'"
                    )
                schema = tool.get("input_schema")
                if schema is None:
                    raise _invalid(f"{where}.custom.input_schema: Field required")
                if not isinstance(schema, dict) or schema.get("type") != "object":
                    raise _invalid(f"{where}.custom.input_schema.type: Input should be 'object'")
            if isinstance(name, str):
                if name in tool_names:
                    raise _invalid("tools: Tool names must be unique.")
                tool_names.add(name)
            if tool.get("cache_control") is not None:
                _check_cache_control(tool["cache_control"], where)
                markers += 1
    tool_choice = body.get("tool_choice")
    if tool_choice is not None:
        ctype = _get(tool_choice, "type")
        if ctype not in ("auto", "any", "tool", "none"):
            raise _invalid(
                f"tool_choice: Input tag '{ctype}' found using 'type' does not match any of "
                "the expected tags: 'auto', 'any', 'tool', 'none'"
            )
        if ctype == "tool" and _get(tool_choice, "name") not in tool_names:
            raise _invalid(
                f"tool_choice: Tool '{_get(tool_choice, 'name')}' not found in the provided tools"
            )

    # system
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            raise _invalid("system: Input should be a valid string or list")
        for i, block in enumerate(system):
            where = f"system.{i}"
            if _get(block, "type") != "text":
                raise _invalid(f"{where}.type: Input should be 'text'")
            _check_text_block(block, where)
            if block.get("cache_control") is not None:
                _check_cache_control(block["cache_control"], where)
                markers += 1

    # messages
    messages = body.get("messages")
    if messages is None:
        raise _invalid("messages: Field required")
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    uses_tools = False
    previous_role: str | None = None
    previous_tool_use_ids: list[str] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise _invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        if i == 0 and role != "user":
            raise _invalid('messages: first message must use the "user" role')
        if role == previous_role:
            raise _invalid(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        if "content" not in message:
            raise _invalid(f"{where}.content: Field required")
        content = message["content"]
        is_last = i == len(messages) - 1
        if isinstance(content, str):
            blocks: list[Any] = []
            if not content and not (is_last and role == "assistant"):
                raise _invalid(
                    f"{where}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
        elif isinstance(content, list):
            blocks = content
            if not blocks and not (is_last and role == "assistant"):
                raise _invalid(
                    f"{where}: all messages must have non-empty content except for the "
                    "optional final assistant message"
                )
        else:
            raise _invalid(f"{where}.content: Input should be a valid string or list")
        for j, block in enumerate(blocks):
            markers += _check_block(block, f"{where}.content.{j}", str(role))
        # tool_use / tool_result pairing
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]
        if results or uses:
            uses_tools = True
        if previous_tool_use_ids:
            missing = [t for t in previous_tool_use_ids if t not in results]
            if missing:
                raise _invalid(
                    f"{where}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}. Each `tool_use` block must have "
                    "a corresponding `tool_result` block in the next message."
                )
        for j, block in enumerate(blocks):
            if block.get("type") == "tool_result" and (
                block["tool_use_id"] not in previous_tool_use_ids
            ):
                raise _invalid(
                    f"{where}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {block['tool_use_id']}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        if is_last and role == "assistant":
            tail = (
                content if isinstance(content, str) else _get(blocks[-1] if blocks else {}, "text")
            )
            if isinstance(tail, str) and tail != tail.rstrip():
                raise _invalid(
                    "messages: final assistant content cannot end with trailing whitespace"
                )
        previous_role = str(role)
        previous_tool_use_ids = uses
    if uses_tools and not tools:
        raise _invalid(
            "Requests which include `tool_use` or `tool_result` blocks must define tools."
        )
    if markers > MAX_CACHE_BREAKPOINTS:
        raise _invalid(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {markers}."
        )


# --------------------------------------------------------------------------------------------
# Token accounting
# --------------------------------------------------------------------------------------------


def _without_cache_control(block: dict[str, Any]) -> dict[str, Any]:
    stripped = {k: v for k, v in block.items() if k != "cache_control"}
    if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
        stripped["content"] = [
            {k: v for k, v in inner.items() if k != "cache_control"} for inner in block["content"]
        ]
    return stripped


def _block_ttl(block: dict[str, Any]) -> str | None:
    """The TTL of the breakpoint this block carries (its own or a nested one), if any."""
    marks = [block.get("cache_control")]
    if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
        marks += [inner.get("cache_control") for inner in block["content"]]
    ttls = [str(m.get("ttl", "5m")) for m in marks if isinstance(m, dict)]
    if not ttls:
        return None
    return "1h" if "1h" in ttls else "5m"


def _block_tokens(block: dict[str, Any]) -> int:
    btype = block.get("type")
    if btype == "text":
        return count_tokens(str(block.get("text", "")))
    if btype == "image":
        return IMAGE_TOKENS
    if btype == "document" and _get(block.get("source"), "type") == "base64":
        # "Each page typically uses 1,500-3,000 tokens" (PDF support guide): not the base64.
        return PDF_PAGE_TOKENS * (_pdf_pages_of(block) or 1)
    if btype == "tool_result" and isinstance(block.get("content"), list):
        total = count_tokens(_dumps({"tool_use_id": block.get("tool_use_id")}))
        for inner in block["content"]:
            total += _block_tokens(inner)
        return total
    return count_tokens(_dumps(_without_cache_control(block)))


# --- media limits ---------------------------------------------------------------------------
# Vision (https://docs.claude.com/en/docs/build-with-claude/vision, "Before you upload") and PDF
# support (https://docs.claude.com/en/docs/build-with-claude/pdf-support, "Check PDF
# requirements"). The messages are the real API's, as reported:
#   "messages.0.content.1.image.source.base64: image exceeds 5 MB maximum: 5327908 bytes >
#    5242880 bytes" (nraiden/cofounder#53, gptme/gptme#185),
#   "messages.7.content.2.image.source.base64.data: At least one of the image dimensions
#    exceed max allowed size: 8000 pixels" (anthropics/claude-code#4778, #5147),
#   "... exceed max allowed size for many-image requests: 2000 pixels" (claude-code#52220),
#   "too many images and documents: 104 + 1 > 100" (claude-code#23392),
#   "A maximum of 100 PDF pages may be provided." (claude-code#5707).
IMAGE_BASE64_MAX = 5 * 1024 * 1024
IMAGE_SIDE_MAX = 8000
MANY_IMAGES = 20
MANY_IMAGES_SIDE_MAX = 2000
MEDIA_PER_REQUEST = 100
PDF_PAGES_MAX = 100
PDF_PAGE_TOKENS = 1500


def _media_of(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, block) of every image and document block, tool results included."""
    found: list[tuple[str, dict[str, Any]]] = []
    for i, message in enumerate(body.get("messages") or []):
        content = _get(message, "content")
        for j, block in enumerate(content if isinstance(content, list) else []):
            where = f"messages.{i}.content.{j}"
            if _get(block, "type") in ("image", "document"):
                found.append((where, block))
            inner = _get(block, "content") if _get(block, "type") == "tool_result" else None
            for k, part in enumerate(inner if isinstance(inner, list) else []):
                if _get(part, "type") in ("image", "document"):
                    found.append((f"{where}.tool_result.content.{k}", part))
    return found


def _decoded(block: dict[str, Any]) -> bytes | None:
    source = block.get("source")
    if _get(source, "type") != "base64":
        return None
    try:
        return base64.b64decode(str(source.get("data", "")), validate=True)
    except (binascii.Error, ValueError):
        return None


def _pdf_pages_of(block: dict[str, Any]) -> int | None:
    data = _decoded(block)
    return None if data is None else pdf_pages(data)


def _check_media(body: dict[str, Any]) -> None:
    """Raise the API's 400 for media over the documented limits."""
    media = _media_of(body)
    images = [(w, b) for w, b in media if b.get("type") == "image"]
    documents = [(w, b) for w, b in media if b.get("type") == "document"]
    if len(images) + len(documents) > MEDIA_PER_REQUEST:
        raise _invalid(f"too many images and documents: {len(images)} + {len(documents)} > "
                       f"{MEDIA_PER_REQUEST}")
    side = MANY_IMAGES_SIDE_MAX if len(images) > MANY_IMAGES else IMAGE_SIDE_MAX
    for where, block in images:
        source = block["source"]
        if source.get("type") != "base64":
            continue
        size = len(str(source.get("data", "")))
        if size > IMAGE_BASE64_MAX:
            raise _invalid(f"{where}.image.source.base64: image exceeds 5 MB maximum: {size} "
                           f"bytes > {IMAGE_BASE64_MAX} bytes")
        data = _decoded(block)
        if data is None:
            raise _invalid(f"{where}.image.source.base64.data: Invalid base64 data")
        actual = sniff_image(data)
        declared = source.get("media_type")
        if actual is not None and actual != declared:
            raise _invalid(f"{where}.image.source.base64.data: The image was specified using "
                           f"the {declared} media type, but the image appears to be a "
                           f"{actual} image")
        dims = image_size(data)
        if dims is not None and max(dims) > side:
            many = " for many-image requests" if side < IMAGE_SIDE_MAX else ""
            raise _invalid(f"{where}.image.source.base64.data: At least one of the image "
                           f"dimensions exceed max allowed size{many}: {side} pixels")
    pages = 0
    for where, block in documents:
        if _get(block.get("source"), "media_type") != "application/pdf":
            continue
        data = _decoded(block)
        if data is None:
            raise _invalid(f"{where}.document.source.base64.data: Invalid base64 data")
        if not data.startswith(b"%PDF-"):
            raise _invalid("The PDF specified was not valid.")
        pages += pdf_pages(data) or 1
    if pages > PDF_PAGES_MAX:
        raise _invalid(f"A maximum of {PDF_PAGES_MAX} PDF pages may be provided.")


def _segments(body: dict[str, Any]) -> list[_Segment]:
    """The prompt in cache order (tools, system, messages), one segment per block."""
    segments: list[_Segment] = []
    for tool in body.get("tools") or []:
        key = _dumps(["tool", _without_cache_control(tool)])
        tokens = count_tokens(_dumps(_without_cache_control(tool)))
        segments.append(_Segment(key, tokens, _block_ttl(tool)))
    system = body.get("system")
    if isinstance(system, str):
        if system:
            segments.append(_Segment(_dumps(["system", system]), count_tokens(system), None))
    elif isinstance(system, list):
        for block in system:
            key = _dumps(["system", _without_cache_control(block)])
            segments.append(_Segment(key, _block_tokens(block), _block_ttl(block)))
    for message in body["messages"]:
        role = message["role"]
        content = message["content"]
        if isinstance(content, str):
            if content:
                key = _dumps([role, 0, content])
                segments.append(_Segment(key, count_tokens(content), None))
            continue
        for j, block in enumerate(content):
            key = _dumps([role, j, _without_cache_control(block)])
            segments.append(_Segment(key, _block_tokens(block), _block_ttl(block)))
    return segments


def _last_user_text(body: dict[str, Any]) -> str:
    """Text of the last user message: its text blocks and the text of its tool results."""
    for message in reversed(body.get("messages") or []):
        if _get(message, "role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        parts: list[str] = []
        for block in content if isinstance(content, list) else []:
            if _get(block, "type") == "text":
                parts.append(str(block.get("text", "")))
            elif _get(block, "type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, str):
                    parts.append(inner)
                elif isinstance(inner, list):
                    parts += [str(b.get("text", "")) for b in inner if _get(b, "type") == "text"]
        return "\n".join(parts)
    return ""


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------


class ClaudeEmulator:
    """Emulates ``POST /v1/messages`` of the Anthropic API for the real SDK.

    Scripts (:meth:`script`) -- how a reply is chosen for a request whose last user message
    text is ``T``: only scripts whose ``when`` is ``None`` or a substring of ``T`` match.
    Limited scripts (``times=N``) form a queue and are used first, oldest first; once a
    limited script has been used ``N`` times it is removed. Otherwise the most recently added
    matching unlimited script (``times=None``) answers. Otherwise the default answer,
    ``f"Answer to: {T[:200]}"`` followed by fixed filler sentences. Scripts are consumed only
    by requests that pass authentication and validation (not by injected faults).

    Faults (:meth:`inject`, :meth:`hang_next`, :meth:`trickle_next`, :meth:`stall_next`,
    :meth:`error_midstream_next`) form one FIFO queue: each request received on
    ``/v1/messages`` takes the first pending fault, in the order the faults were added,
    before authentication and validation. A stream fault plays only if the request is then
    accepted (it is spent on a refused request).

    Counters: ``requests``/``request_headers`` record every ``/v1/messages`` request
    (headers with lower-case names; a body that is not JSON is recorded as
    ``{"__raw__": text}``). ``active_streams``, ``completed_streams`` and
    ``cancelled_streams`` count only streaming (``"stream": true``) answers that started;
    a stream counts as cancelled when its client disconnects before ``message_stop`` has
    been written (or :meth:`stop` aborts it), and generation stops then;
    ``errored_streams`` counts streams ended by an ``event: error``.

    Pace: after ``first_token_latency`` seconds, tokens (see :func:`tokenize`) are emitted
    at ``tokens_per_second``, one per delta, or several (at most 8) when the server has
    fallen behind schedule. ``tokens_per_second`` may be changed at any time, taking effect
    immediately; ``0`` pauses every running generation until it is raised again;
    ``math.inf`` means no delay. A non-streaming answer is sent when its generation would
    have finished.
    Pacing and the prompt cache's TTLs use the event loop's clock (``loop.time()``).
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        tokens_per_second: float = 200.0,
        first_token_latency: float = 0.0,
        min_cacheable_tokens: int = 0,
        context_window: int = 200_000,
    ) -> None:
        self.api_key = api_key
        # Input tokens a prompt may have (tools + system + messages, as count_tokens counts
        # them); more is refused with the API's 400 "prompt is too long".
        self.context_window = context_window
        self._tokens_per_second = float(tokens_per_second)
        self.first_token_latency = first_token_latency
        self.min_cacheable_tokens = min_cacheable_tokens
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.completed_streams = 0
        self.cancelled_streams = 0
        self.errored_streams = 0  # ended by an ``event: error`` (error_midstream_next)
        self.active_streams = 0
        self._scripts: list[_Script] = []
        self._faults: deque[_Fault] = deque()
        self._cache: dict[str, _CacheEntry] = {}
        self._speed_changed = asyncio.Event()
        self._counters_changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on 127.0.0.1 on a free port; afterwards ``url`` is ``http://127.0.0.1:PORT``."""
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_post("/v1/messages", self._handle_messages)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        # handler_cancellation: a client disconnect cancels the handler (stops generating).
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.1, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        port = runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        """Stop listening; requests still running (hung or streaming) are cancelled."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await runner.cleanup()

    async def __aenter__(self) -> ClaudeEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- configuration -----------------------------------------------------------------------

    @property
    def tokens_per_second(self) -> float:
        return self._tokens_per_second

    @tokens_per_second.setter
    def tokens_per_second(self, value: float) -> None:
        self._tokens_per_second = float(value)
        event, self._speed_changed = self._speed_changed, asyncio.Event()
        event.set()

    def script(
        self, reply: ReplySource, *, when: str | None = None, times: int | None = None
    ) -> None:
        """Add an answer (see the class docstring for which script answers a request).

        ``reply``: text; or ``{"text": ..., "tool_use": {"name": ..., "input": {...}}}``
        (``tool_use`` may be a list; its ``name`` must be one of the request's ``tools``,
        otherwise the tool call is left out, as a model cannot call a tool it was not
        offered); or a function of the request body returning either.
        """
        if times is not None and times < 1:
            raise ValueError("times must be None or at least 1")
        self._scripts.append(_Script(reply, when, times))

    def inject(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """The next ``count`` requests fail with ``status`` and the API's error body.

        ``retry_after`` (seconds, may be fractional) is sent as the ``retry-after`` header;
        ``should_retry`` as ``x-should-retry`` (which overrides the SDK's own retry policy).
        """
        for _ in range(count):
            self._faults.append(_Fault("error", status, retry_after, should_retry))

    def hang_next(self, count: int = 1) -> None:
        """The next ``count`` requests never get a response, until their client disconnects."""
        for _ in range(count):
            self._faults.append(_Fault("hang"))

    def trickle_next(
        self, count: int = 1, *, ping_every: float = 2.0, text_tokens: int = 0
    ) -> None:
        """The next ``count`` streams send ``text_tokens`` tokens, then only pings, forever.

        "Event streams may also include any number of ``ping`` events"
        (https://docs.claude.com/en/docs/build-with-claude/streaming#ping-events); the SDK
        skips them (``anthropic/_streaming.py``: ``if sse.event == "ping": continue``).
        A stream that only pings never trips the HTTP client's read timeout, yet never
        progresses: only the caller's own watchdog ends it. The stream ends (counted in
        ``cancelled_streams``) when the client disconnects or on :meth:`stop`. A
        non-streaming request hangs instead (it has no way to ping).
        """
        for _ in range(count):
            self._faults.append(_Fault("trickle", after_tokens=text_tokens, ping_every=ping_every))

    def stall_next(self, count: int = 1, *, after_tokens: int = 5) -> None:
        """The next ``count`` streams send ``after_tokens`` tokens, then nothing, forever.

        The connection stays open; the client's read timeout fires unless it has none. Once
        a stream is open the SDK does not wrap transport errors: the caller iterating it gets
        the HTTP client's own ``httpx2.ReadTimeout`` (anthropic 2.x, ``_streaming.py``), not
        ``anthropic.APITimeoutError``. Ends like :meth:`trickle_next`.
        """
        for _ in range(count):
            self._faults.append(_Fault("stall", after_tokens=after_tokens))

    def error_midstream_next(
        self, count: int = 1, *, after_tokens: int = 5, error_type: str = "overloaded_error"
    ) -> None:
        """The next ``count`` streams send ``after_tokens`` tokens, then an SSE error event.

        The API documents that errors can arrive inside a 200 stream, e.g. ``event: error`` /
        ``{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}``,
        "which would normally correspond to an HTTP 529 in a non-streaming context"
        (https://docs.claude.com/en/docs/build-with-claude/streaming#error-events). The SDK
        (``_streaming.py``, ``if sse.event == "error"``) raises ``APIStatusError`` with
        ``status_code`` 200 and that ``body``; nothing is retried. The stream then ends
        (counted in ``errored_streams``). A non-streaming request gets the error as its
        status instead (529 for ``overloaded_error``).
        """
        if error_type not in _STATUS_OF_TYPE:
            raise ValueError(f"unknown error type {error_type!r}")
        for _ in range(count):
            self._faults.append(
                _Fault("error_midstream", after_tokens=after_tokens, error_type=error_type)
            )

    def user_blocks(self, request: int = -1) -> list[dict[str, Any]]:
        """The content blocks of the last user message of request number `request` (as
        received: base64 data included); a string content is one text block."""
        for message in reversed(self.requests[request].get("messages") or []):
            if _get(message, "role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return [{"type": "text", "text": content}]
                return list(content) if isinstance(content, list) else []
        return []

    def media_blocks(self, request: int = -1) -> list[dict[str, Any]]:
        """The image and document blocks anywhere in request number `request`, with their
        data decoded into ``"bytes"`` (a copy: the recorded request is unchanged)."""
        out = []
        for _, block in _media_of(self.requests[request]):
            seen = {**block, "bytes": _decoded(block)}
            out.append(seen)
        return out

    def clear_cache(self) -> None:
        """Forget every cached prompt prefix."""
        self._cache.clear()

    async def wait_cancelled(self, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` streams were cancelled in total; TimeoutError otherwise."""
        try:
            async with asyncio.timeout(timeout):
                while self.cancelled_streams < n:
                    await self._counters_changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"expected {n} cancelled stream(s) within {timeout}s, got {self.cancelled_streams}"
            ) from None

    async def wait_streaming(self, n: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``n`` streams are open at once; TimeoutError otherwise."""
        try:
            async with asyncio.timeout(timeout):
                while self.active_streams < n:
                    await self._counters_changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"expected {n} open stream(s) within {timeout}s, got {self.active_streams}"
            ) from None

    # -- internals ---------------------------------------------------------------------------

    def _notify_counters(self) -> None:
        event, self._counters_changed = self._counters_changed, asyncio.Event()
        event.set()

    async def _wait_speed_change(self, delay: float | None) -> bool:
        """Wait up to ``delay`` seconds (None: forever) for a change of tokens_per_second."""
        event = self._speed_changed
        if delay is None:
            await event.wait()
            return True
        try:
            async with asyncio.timeout(delay):
                await event.wait()
        except TimeoutError:
            return False
        return True

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        return self._error_response(_ApiError(404, "Not found"), _new_id("req_011C"))

    def _error_response(self, error: _ApiError, request_id: str) -> web.Response:
        body = {
            "type": "error",
            "error": {"type": error.error_type, "message": error.message},
            "request_id": request_id,
        }
        headers = {"request-id": request_id, **error.headers}
        return web.json_response(body, status=error.status, headers=headers, dumps=_dumps)

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._answer(request)
        finally:
            self._handlers.discard(task)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        request_id = _new_id("req_011C")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._error_response(_ApiError(413), request_id)
        body: dict[str, Any]
        parse_error: str | None = None
        try:
            parsed = json.loads(raw or b"null")
        except ValueError as exc:
            parsed, parse_error = None, f"There was an error parsing the body: {exc}"
        if isinstance(parsed, dict):
            body = parsed
        else:
            body = {"__raw__": raw.decode("utf-8", "replace")}
            parse_error = parse_error or "Request body must be a JSON object"
        self.requests.append(body)
        self.request_headers.append({k.lower(): v for k, v in request.headers.items()})

        stream_fault: _Fault | None = None
        try:
            if self._faults and self._faults[0].kind in _STREAM_FAULTS:
                stream_fault = self._faults.popleft()  # plays once the answer is under way
            elif self._faults:
                fault = self._faults.popleft()
                if fault.kind == "hang":
                    await asyncio.Event().wait()  # cancelled when the client disconnects
                headers: dict[str, str] = {}
                if fault.retry_after is not None:
                    headers["retry-after"] = f"{fault.retry_after:g}"
                if fault.should_retry is not None:
                    headers["x-should-retry"] = "true" if fault.should_retry else "false"
                raise _ApiError(fault.status, headers=headers)
            self._authenticate(request)
            if "anthropic-version" not in request.headers:
                raise _invalid("anthropic-version: header is required")
            if parse_error is not None:
                raise _invalid(parse_error)
            _validate(body)
            _check_media(body)
            self._check_context_window(body)
        except _ApiError as error:
            return self._error_response(error, request_id)

        usage = self._account_input(body)
        output = self._generate(body)
        usage.output_tokens = output.output_tokens
        message = {
            "id": _new_id("msg_01"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": output.content,
            "stop_reason": output.stop_reason,
            "stop_sequence": output.stop_sequence,
            "usage": usage.to_dict(),
        }
        if body.get("stream"):
            return await self._stream(request, request_id, message, output, usage, stream_fault)
        if stream_fault is not None and stream_fault.kind == "error_midstream":
            error_type = stream_fault.error_type
            status = _STATUS_OF_TYPE[error_type]
            return self._error_response(_ApiError(status, error_type=error_type), request_id)
        if stream_fault is not None:  # trickle / stall: a JSON answer that never comes
            await asyncio.Event().wait()  # cancelled when the client disconnects
        pacer = _Pacer(self)
        await asyncio.sleep(self.first_token_latency)
        remaining = len(output.text_tokens) + sum(len(tokenize(j)) for j in output.tool_json)
        while remaining > 0:
            remaining -= await pacer.take(remaining)
        return web.json_response(message, headers={"request-id": request_id}, dumps=_dumps)

    def _authenticate(self, request: web.Request) -> None:
        api_key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization")
        if authorization == f"Bearer {self.api_key}" and self.api_key.startswith(
                OAUTH_TOKEN_PREFIX):
            # A Claude subscription's OAuth token (CLAUDE_CODE_OAUTH_TOKEN) is accepted only
            # with the `oauth-2025-04-20` beta, as Claude Code sends it; without it the API
            # answers 401 "OAuth authentication is currently not supported." (reported in
            # anthropics/claude-code#5983, #6131, anthropics/anthropic-sdk-python#988).
            betas = request.headers.get("anthropic-beta", "")
            if OAUTH_BETA not in [b.strip() for b in betas.split(",")]:
                raise _ApiError(401, "OAuth authentication is currently not supported.")
            return
        if api_key == self.api_key or authorization == f"Bearer {self.api_key}":
            return
        if api_key is not None:
            raise _ApiError(401, "invalid x-api-key")
        if authorization is not None:
            raise _ApiError(401, "Invalid bearer token")
        raise _ApiError(401, "x-api-key header is required")

    def _check_context_window(self, body: dict[str, Any]) -> None:
        """Refuse a prompt longer than the context window, with the real API's 400.

        The message is the API's, e.g. "prompt is too long: 208656 tokens > 200000 maximum"
        (quoted from anthropic.BadRequestError reports: sojohnnysaid/project-guide#2,
        boldsoftware/exe.dev#62). Checked before the prompt cache is touched.
        """
        tokens = sum(segment.tokens for segment in _segments(body))
        if tokens > self.context_window:
            raise _invalid(f"prompt is too long: {tokens} tokens > {self.context_window} maximum")

    def _account_input(self, body: dict[str, Any]) -> _Usage:
        """Split the prompt's tokens into uncached input, cache reads and cache writes."""
        now = asyncio.get_running_loop().time()
        self._cache = {h: e for h, e in self._cache.items() if e.expires > now}
        segments = _segments(body)
        cumulative = list(itertools.accumulate(s.tokens for s in segments))
        hashes: list[str] = []
        digest = hashlib.sha256(str(body["model"]).encode()).hexdigest()
        for segment in segments:
            digest = hashlib.sha256(f"{digest}\0{segment.key}".encode()).hexdigest()
            hashes.append(digest)
        breakpoints = [i for i, s in enumerate(segments) if s.cache_ttl is not None]

        def upto(index: int) -> int:
            return cumulative[index] if index >= 0 else 0

        # Read: the longest cached prefix ending at a breakpoint or up to 20 blocks before one.
        read_index = -1
        for b in breakpoints:
            for j in range(b, max(-1, b - CACHE_LOOKBACK_BLOCKS), -1):
                if j <= read_index:
                    break
                if hashes[j] in self._cache:
                    read_index = j
                    break
        if read_index >= 0:
            entry = self._cache[hashes[read_index]]
            entry.expires = now + entry.ttl
        # Write: every breakpoint prefix beyond the read part, if long enough.
        created = {"5m": 0, "1h": 0}
        written_upto = read_index
        for b in breakpoints:
            if b <= read_index or cumulative[b] < self.min_cacheable_tokens:
                continue
            ttl_name = segments[b].cache_ttl or "5m"
            created[ttl_name] += upto(b) - upto(written_upto)
            written_upto = b
            ttl = CACHE_TTLS[ttl_name]
            self._cache[hashes[b]] = _CacheEntry(expires=now + ttl, ttl=ttl)
        total = upto(len(segments) - 1)
        read = upto(read_index)
        return _Usage(
            input_tokens=total - read - created["5m"] - created["1h"],
            cache_read_input_tokens=read,
            cache_creation_5m=created["5m"],
            cache_creation_1h=created["1h"],
        )

    def _pick_reply(self, body: dict[str, Any], last_text: str) -> Reply | None:
        def matches(script: _Script) -> bool:
            return script.when is None or script.when in last_text

        chosen = next(
            (s for s in self._scripts if s.remaining is not None and matches(s)), None
        ) or next((s for s in reversed(self._scripts) if s.remaining is None and matches(s)), None)
        if chosen is None:
            return None
        if chosen.remaining is not None:
            chosen.remaining -= 1
            if chosen.remaining == 0:
                self._scripts.remove(chosen)
        return chosen.reply(body) if callable(chosen.reply) else chosen.reply

    def _generate(self, body: dict[str, Any]) -> _Output:
        last_text = _last_user_text(body)
        reply = self._pick_reply(body, last_text)
        if reply is None:
            reply = f"Answer to: {last_text[:200]}" + _FILLER
        text: str
        calls: list[Any]
        if isinstance(reply, dict):
            text = str(reply.get("text") or "")
            raw_calls = reply.get("tool_use") or []
            calls = raw_calls if isinstance(raw_calls, list) else [raw_calls]
        else:
            text, calls = str(reply), []
        offered = {t.get("name") for t in body.get("tools") or [] if isinstance(t, dict)}
        tool_uses = [
            {
                "type": "tool_use",
                "id": str(call.get("id") or _new_id("toolu_01")),
                "name": call["name"],
                "input": dict(call.get("input") or {}),
            }
            for call in calls
            if isinstance(call, dict) and call.get("name") in offered
        ]
        if not text and not tool_uses and calls:
            text = f"Answer to: {last_text[:200]}" + _FILLER

        stop_reason = "tool_use" if tool_uses else "end_turn"
        stop_sequence: str | None = None
        hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text]
        if hits:
            position, stop_sequence = min(hits)
            text, tool_uses, stop_reason = text[:position], [], "stop_sequence"
        text_tokens = tokenize(text)
        if len(text_tokens) > body["max_tokens"]:
            text_tokens = text_tokens[: body["max_tokens"]]
            tool_uses, stop_reason, stop_sequence = [], "max_tokens", None
        tool_json = [_dumps(t["input"]) for t in tool_uses]
        output_tokens = len(text_tokens) + sum(len(tokenize(j)) for j in tool_json)
        content: list[dict[str, Any]] = []
        if text_tokens or not tool_uses:
            content.append({"type": "text", "text": "".join(text_tokens)})
        content += tool_uses
        return _Output(
            text_tokens=text_tokens,
            tool_uses=tool_uses,
            tool_json=tool_json,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            output_tokens=max(output_tokens, 1),
            content=content,
        )

    async def _stream(
        self,
        request: web.Request,
        request_id: str,
        message: dict[str, Any],
        output: _Output,
        usage: _Usage,
        fault: _Fault | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": request_id,
            },
        )
        self.active_streams += 1
        self._notify_counters()
        finished = False
        try:
            await response.prepare(request)

            async def send(event: str, data: dict[str, Any]) -> None:
                await response.write(f"event: {event}\ndata: {_dumps(data)}\n\n".encode())

            start = {
                **message,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage.to_dict(output_tokens=1),
            }
            await send("message_start", {"type": "message_start", "message": start})
            pacer = _Pacer(self)
            blocks: list[tuple[dict[str, Any], list[str], str]] = []
            if output.text_tokens or not output.tool_uses:
                blocks.append(({"type": "text", "text": ""}, output.text_tokens, "text_delta"))
            for tool_use, arguments in zip(output.tool_uses, output.tool_json, strict=True):
                blocks.append(({**tool_use, "input": {}}, tokenize(arguments), "input_json_delta"))
            emitted = 0  # answer tokens sent so far (a fault plays once its share is out)
            for index, (block, pieces, delta_type) in enumerate(blocks):
                await send(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": block},
                )
                if index == 0:
                    await send("ping", {"type": "ping"})
                    await asyncio.sleep(self.first_token_latency)
                if delta_type == "input_json_delta":
                    await send(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "input_json_delta", "partial_json": ""},
                        },
                    )
                position = 0
                while position < len(pieces):
                    if fault is not None and emitted >= fault.after_tokens:
                        await self._play(fault, send)
                    n = await pacer.take(len(pieces) - position)
                    if fault is not None:
                        n = min(n, fault.after_tokens - emitted)
                    chunk = "".join(pieces[position : position + n])
                    position += n
                    emitted += n
                    key = "text" if delta_type == "text_delta" else "partial_json"
                    delta = {"type": delta_type, key: chunk}
                    await send(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                await send("content_block_stop", {"type": "content_block_stop", "index": index})
            if fault is not None:  # the answer was shorter than the tokens before the fault
                await self._play(fault, send)
            final_usage = usage.to_dict()
            final_usage.pop("cache_creation")
            final_usage.pop("service_tier")
            await send(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": output.stop_reason,
                        "stop_sequence": output.stop_sequence,
                    },
                    "usage": final_usage,
                },
            )
            await send("message_stop", {"type": "message_stop"})
            finished = True
            self.completed_streams += 1
            await response.write_eof()
        except _StreamErrored:
            finished = True
            self.errored_streams += 1
            try:
                await response.write_eof()
            except ConnectionError:
                pass
        except asyncio.CancelledError:  # the client disconnected (or the server stops)
            if not finished:
                self.cancelled_streams += 1
            raise
        except ConnectionError:  # a write found the connection closed
            if not finished:
                self.cancelled_streams += 1
        finally:
            self.active_streams -= 1
            self._notify_counters()
        return response

    @staticmethod
    async def _play(fault: _Fault, send: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
        """Play a stream fault; returns never (trickle, stall) or by raising _StreamErrored."""
        if fault.kind == "error_midstream":
            error = _ApiError(_STATUS_OF_TYPE[fault.error_type], error_type=fault.error_type)
            await send(
                "error",
                {"type": "error", "error": {"type": error.error_type, "message": error.message}},
            )
            raise _StreamErrored
        if fault.kind == "trickle":
            while True:  # ended by cancellation: the client went away or the server stops
                await asyncio.sleep(fault.ping_every)
                await send("ping", {"type": "ping"})
        await asyncio.Event().wait()  # stall: silence until cancelled


class _Pacer:
    """Hands out tokens at the emulator's current ``tokens_per_second``."""

    def __init__(self, emulator: ClaudeEmulator) -> None:
        self._emulator = emulator
        self._mark: float | None = None  # scheduled time of the last token handed out

    async def take(self, remaining: int) -> int:
        """Wait until a token is due; return how many (1..remaining) may be emitted now."""
        loop = asyncio.get_running_loop()
        limit = min(remaining, MAX_TOKENS_PER_DELTA)
        while True:
            rate = self._emulator.tokens_per_second
            if rate <= 0:
                await self._emulator._wait_speed_change(None)
                self._mark = None
                continue
            if math.isinf(rate):
                return limit
            now = loop.time()
            if self._mark is None:
                self._mark = now
            due = self._mark + 1.0 / rate
            if now < due:
                await self._emulator._wait_speed_change(due - now)
                continue
            n = max(1, min(limit, int((now - self._mark) * rate)))
            self._mark += n / rate
            return n
