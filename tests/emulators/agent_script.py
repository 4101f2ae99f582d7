"""Scripted Claude Code stories for the Claude emulator (fleetgram/emulators/claude_api.py).

The real Claude Code CLI (bundled in claude-agent-sdk) is pointed at the emulator; a story
answers its requests one step at a time: a tool call to make, or the final text::

    story = AgentStory("create hello.py", [
        write("hello.py", "print('hello')\\n", text="Writing it."),
        bash("python3 hello.py"),
        say("Done: hello.py prints hello."),
    ])
    install(emulator, story)

How a request finds its step: the story's ``marker`` must appear in the text of a user
prompt. The step is the number of ``tool_result`` blocks sent after the *last* prompt that
carries a marker (each finished step is answered with one result). Counting results, not
reading the last text, matters: the CLI merges its own text into tool-result turns
("[Request interrupted by user for tool use]" after a denial), and one conversation may hold
several prompts.

Why :func:`install` and not ``emulator.script(story.reply, when=marker)``: the emulator's
``when`` is matched against the *last* user message only, which after the first step is a
tool result without the marker, so such a script answers the first request and nothing
after it. :func:`install` registers one dispatcher per emulator (``when=None``) that picks the
story from the whole conversation; a request of no story gets a short fixed text. Scripts
added to the emulator *after* it (unlimited, ``when=None``) would take precedence, as the
emulator's rules say.

Paths given to :func:`write`, :func:`edit` and :func:`read` may be relative: they are made
absolute with the request's working directory (the CLI's Write/Edit/Read want absolute
paths), which the CLI states as "Primary working directory: ..." in its system prompt or in
a ``role: "system"`` entry.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetgram.emulators.claude_api import ClaudeEmulator, Reply

__all__ = [
    "AgentStory",
    "Step",
    "bash",
    "cwd_of",
    "edit",
    "install",
    "marked_prompt_index",
    "read",
    "result_text",
    "say",
    "send_file",
    "tool_results",
    "write",
]

_CWD = re.compile(r"Primary working directory:\s*(\S[^\n]*)")


@dataclass(frozen=True)
class Step:
    """One answer of a story: a tool call (``tool`` set) or the final text."""

    text: str = ""
    tool: str | None = None
    # the tool's input, built from the request's working directory (None when unknown)
    make_input: Callable[[str | None], dict[str, Any]] = field(default=lambda cwd: {})

    def reply(self, body: dict[str, Any]) -> Reply:
        if self.tool is None:
            return self.text
        reply: dict[str, Any] = {
            "tool_use": {"name": self.tool, "input": self.make_input(cwd_of(body))}
        }
        if self.text:
            reply["text"] = self.text
        return reply


@dataclass
class AgentStory:
    marker: str  # text in the user's prompt that selects this story
    steps: list[Step]  # tool calls to make, then (usually) the final text

    def reply(self, body: dict[str, Any]) -> Reply:
        """The answer to ``body``: the step after as many as the conversation has results
        for since the marked prompt; once the steps run out, a short final text."""
        done = len(tool_results(body, self.marker))
        if done < len(self.steps):
            return self.steps[done].reply(body)
        return f"Story {self.marker!r} is over."


# ----------------------------------------------------------------------------- steps
def _absolute(path: str, cwd: str | None) -> str:
    if os.path.isabs(path) or cwd is None:
        return path
    return os.path.join(cwd, path)


def write(path: str, content: str, text: str = "") -> Step:
    """Write ``content`` to ``path`` (relative to the working directory)."""
    return Step(
        text, "Write", lambda cwd: {"file_path": _absolute(path, cwd), "content": content}
    )


def edit(path: str, old: str, new: str) -> Step:
    """Replace ``old`` by ``new`` in ``path`` (the CLI wants the file read first)."""
    return Step(
        "",
        "Edit",
        lambda cwd: {"file_path": _absolute(path, cwd), "old_string": old, "new_string": new},
    )


def bash(command: str, text: str = "") -> Step:
    return Step(text, "Bash", lambda cwd: {"command": command, "description": command[:60]})


def read(path: str) -> Step:
    return Step("", "Read", lambda cwd: {"file_path": _absolute(path, cwd)})


def send_file(path: str, caption: str = "") -> Step:
    """Call fleetgram's in-process tool (the SDK MCP server "fleet")."""
    return Step("", "mcp__fleet__send_file", lambda cwd: {"path": path, "caption": caption})


def say(text: str) -> Step:
    """The final answer (ends the story)."""
    return Step(text)


# ----------------------------------------------------------------------------- reading a body
def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(b.get("text", "")) for b in value if isinstance(b, dict)]
    return []


def cwd_of(body: dict[str, Any]) -> str | None:
    """The working directory the CLI states in the request (system prompt or messages)."""
    texts = _texts(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            texts += [str(b.get("text", "")) for b in _blocks(message) if b.get("type") == "text"]
    for text in texts:
        match = _CWD.search(text)
        if match:
            return match.group(1).strip()
    return None


def marked_prompt_index(body: dict[str, Any], marker: str) -> int | None:
    """Index in ``messages`` of the last user message whose own text (not a tool result)
    contains ``marker``."""
    messages = body.get("messages") or []
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        texts = [str(b.get("text", "")) for b in _blocks(message) if b.get("type") == "text"]
        if any(marker in text for text in texts):
            return index
    return None


def tool_results(body: dict[str, Any], marker: str) -> list[dict[str, Any]]:
    """The ``tool_result`` blocks sent after the last prompt containing ``marker``, oldest
    first ([] when no prompt has it)."""
    start = marked_prompt_index(body, marker)
    if start is None:
        return []
    return [
        block
        for message in body["messages"][start:]
        if isinstance(message, dict) and message.get("role") == "user"
        for block in _blocks(message)
        if block.get("type") == "tool_result"
    ]


def result_text(block: dict[str, Any]) -> str:
    """The text of a ``tool_result`` block."""
    return "\n".join(_texts(block.get("content")))


# ----------------------------------------------------------------------------- installing
_STORIES: weakref.WeakKeyDictionary[ClaudeEmulator, list[AgentStory]] = (
    weakref.WeakKeyDictionary()
)


def install(emulator: ClaudeEmulator, *stories: AgentStory) -> None:
    """Let ``stories`` answer the CLI's requests on ``emulator`` (see the module docstring).

    The story of a request is the one whose marker is in the latest marked prompt (the
    longest marker wins when a prompt holds several)."""
    known = _STORIES.get(emulator)
    if known is None:
        known = _STORIES[emulator] = []
        emulator.script(lambda body: _dispatch(known, body))
    known.extend(stories)


def _dispatch(stories: list[AgentStory], body: dict[str, Any]) -> Reply:
    best: tuple[int, int, AgentStory] | None = None  # (prompt index, marker length, story)
    for story in stories:
        index = marked_prompt_index(body, story.marker)
        if index is not None:
            key = (index, len(story.marker), story)
            if best is None or key[:2] > best[:2]:
                best = key
    if best is None:
        return "No story for this prompt."
    return best[2].reply(body)
