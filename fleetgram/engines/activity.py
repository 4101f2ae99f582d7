"""What the worker chat shows while the agent works: one compact line per tool call.

"🔧 `pytest -q`", "✏️ src/app.py +12 −3", "📖 README.md". `/verbose` picks how much: 0 shows
nothing, 1 a line per tool call, 2 also a line per result ("   ↳ 3 passed").

The lines are Markdown: the chat renders them with fleetgram.telegram.formatting, so anything
taken from the model (commands, paths, patterns, output) is either put in a code span whose
backtick fence is longer than any run inside it, or has its Markdown punctuation escaped with
a backslash, so that `__init__.py` stays a file name and a command with backticks stays code.
Pure functions, no I/O.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from fleetgram.engines.base import ToolCall

__all__ = ["code_span", "md_text", "result_line", "shown_path", "tool_line"]

COMMAND_CHARS = 120  # a Bash line shows at most this much of the command's first line
RESULT_CHARS = 100  # a result line shows at most this much of the output's line

EDIT_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
LISTING_TOOLS = frozenset({"Read", "NotebookRead", "Glob", "Grep", "LS"})

# Characters the chat's Markdown reads as markup inside a line (emphasis, code, links,
# escapes); a backslash before any of them shows the character itself.
_MARKUP = re.compile(r"([\\`*_~\[\]])")
_BACKTICKS = re.compile(r"`+")
# A URL without markup characters is shown as is (Telegram links it); others go in code.
_PLAIN_URL = re.compile(r"^https?://[^\s`*_~\[\]\\<>]+$", re.IGNORECASE)


# ----------------------------------------------------------------------------- Markdown
def md_text(text: str) -> str:
    """``text`` on one line, its Markdown punctuation escaped: it renders as itself."""
    return _MARKUP.sub(r"\\\1", _one_line(text))


def code_span(text: str) -> str:
    """``text`` on one line as a Markdown code span that renders exactly ``text``.

    The fence is one backtick longer than the longest run inside, so no run closes it. A
    space pads both sides when the text starts or ends with a backtick or a space (the
    renderer strips one space from each side, as CommonMark does) or ends with a backslash
    (the renderer would read it as escaping the closing backtick)."""
    text = _one_line(text)
    if not text:
        return ""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text[0] in "` " or text[-1] in "` \\" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(text: str) -> tuple[str, bool]:
    """The first non-empty line, and whether more lines follow it."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[0].strip(), len(lines) > 1) if lines else ("", False)


def _line_count(text: str) -> int:
    return len(text.splitlines())


# ----------------------------------------------------------------------------- paths
def shown_path(path: str, cwd: Path | None) -> str:
    """``path`` relative to ``cwd`` when it lies inside it, otherwise as given."""
    if not path or cwd is None or not os.path.isabs(path):
        return path
    norm, root = os.path.normpath(path), os.path.normpath(str(cwd))
    if norm == root:
        return "."
    if norm.startswith(root.rstrip(os.sep) + os.sep):
        return os.path.relpath(norm, root)
    return path


def _path_of(call: ToolCall) -> str:
    for key in ("file_path", "notebook_path", "path"):
        value = call.input.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _str(inp: dict[str, Any], key: str) -> str:
    value = inp.get(key)
    return value if isinstance(value, str) else ""


# ----------------------------------------------------------------------------- lines
def tool_line(call: ToolCall, verbosity: int, cwd: Path | None) -> str | None:
    """The line shown when the agent makes ``call``; None at verbosity 0."""
    if verbosity <= 0:
        return None
    name, inp = call.name, call.input
    path = md_text(shown_path(_path_of(call), cwd))
    if name == "Bash":
        return _bash_line(_str(inp, "command"))
    if name == "Write":
        return f"✏️ {path} +{_line_count(_str(inp, 'content'))}"
    if name == "Edit":
        added, removed = _edit_counts([inp])
        note = " (every match)" if inp.get("replace_all") else ""
        return f"✏️ {path} +{added} −{removed}{note}"
    if name == "MultiEdit":
        edits = [e for e in inp.get("edits") or [] if isinstance(e, dict)]
        added, removed = _edit_counts(edits)
        return f"✏️ {path} +{added} −{removed} ({len(edits)} edits)"
    if name == "NotebookEdit":
        if inp.get("edit_mode") == "delete":
            return f"✏️ {path} (cell deleted)"
        return f"✏️ {path} +{_line_count(_str(inp, 'new_source'))}"
    if name in ("Read", "NotebookRead", "LS"):
        return f"📖 {path}"
    if name in ("Glob", "Grep"):
        pattern = _clip(_str(inp, "pattern"), COMMAND_CHARS)
        return f"🔎 {code_span(pattern)}" if pattern else f"🔎 {name}"
    if name == "WebFetch":
        return f"🌐 {_url(_clip(_str(inp, 'url'), COMMAND_CHARS))}"
    if name == "WebSearch":
        return f"🌐 {md_text(_clip(_str(inp, 'query'), COMMAND_CHARS))}"
    if name == "mcp__fleet__send_file":
        return f"📎 {path}"
    if name == "TodoWrite":
        todos = inp.get("todos")
        count = len(todos) if isinstance(todos, list) else 0
        return f"📝 plan updated ({count} items)"
    if name in ("Task", "Agent"):
        description = _clip(_str(inp, "description") or name, COMMAND_CHARS)
        return f"🤖 {md_text(description)}"
    return f"🧰 {md_text(name)}"


def _bash_line(command: str) -> str:
    first, more = _first_line(command)
    if not first:
        return "🔧 Bash"
    if more:
        first += " …"
    return f"🔧 {code_span(_clip(first, COMMAND_CHARS))}"


def _edit_counts(edits: list[dict[str, Any]]) -> tuple[int, int]:
    added = sum(_line_count(_str(e, "new_string")) for e in edits)
    removed = sum(_line_count(_str(e, "old_string")) for e in edits)
    return added, removed


def _url(url: str) -> str:
    return url if _PLAIN_URL.match(url) else code_span(url)


def result_line(call: ToolCall, output: str, is_error: bool, verbosity: int) -> str | None:
    """The line shown under a tool call when its result arrives; only at verbosity 2."""
    if verbosity < 2:
        return None
    if is_error:
        first, _ = _first_line(output)
        return f"   ↳ ❌ {md_text(_clip(first, RESULT_CHARS))}" if first else "   ↳ ❌"
    if call.name in LISTING_TOOLS:
        count = len([line for line in output.splitlines() if line.strip()])
        return f"   ↳ {count} line" + ("" if count == 1 else "s")
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        return "   ↳ (no output)"
    return f"   ↳ {md_text(_clip(lines[-1], RESULT_CHARS))}"
