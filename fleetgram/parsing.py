"""Pure parsing of what users type: prompts with priority and pinning, task ids, titles."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleetgram.domain import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN

TITLE_MAX = 60
# A split paste is joined back into one prompt (fleetgram/intake.py): 50,000 characters is a
# long paste but an ordinary prompt for Claude's context window.
PROMPT_MAX = 100_000
# Arguments longer than this are not echoed back (an answer must stay one short line).
ECHO_MAX = 40

# "!-1" and "!0" are priorities too (refused with the range), not text starting with "!".
_PRIORITY = re.compile(r"^!([+-]?\d{1,12})$")
_MENTION = re.compile(r"^@([A-Za-z0-9_]+)$")
_TASK_ID = re.compile(r"^t-[a-z0-9]{5}$")


class ParseError(ValueError):
    """The user's input is wrong; the message is one line to show them."""


@dataclass(frozen=True)
class PromptRequest:
    prompt: str
    priority: int = PRIORITY_DEFAULT
    pinned_worker: str | None = None
    # Said by the user (!P, a word, /urgent), not the default; not part of what is asked.
    priority_given: bool = field(default=False, compare=False)


def make_title(prompt: str, limit: int = TITLE_MAX) -> str:
    line = next((ln.strip() for ln in prompt.splitlines() if ln.strip()), "")
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def parse_priority(token: str) -> int:
    match = _PRIORITY.match(token)
    if not match:
        raise ParseError(f"{token!r} is not a priority; write !1 (most urgent) to !10")
    value = int(match.group(1))
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ParseError(
            f"Priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}, not {value}."
        )
    return value


def parse_prompt(
    text: str,
    slots: Sequence[str],
    usernames: Mapping[str, str] | None = None,
    *,
    priority: int | None = None,
) -> PromptRequest:
    """Parse `[@workerN] [!P] prompt` (either order). `usernames` maps a bot's @username
    (lower-case, without @) to its slot, so `@my_worker2_bot` works like `@worker2`."""
    words = text.strip().split(maxsplit=1)
    pinned: str | None = None
    seen_priority = priority
    rest = text.strip()
    for _ in range(2):
        if not words:
            break
        head = words[0]
        if head.startswith("!") and seen_priority is None and _PRIORITY.match(head):
            seen_priority = parse_priority(head)
        elif head.startswith("!") and _PRIORITY.match(head):
            raise ParseError("Give the priority once.")
        elif head.startswith("@") and pinned is None and _MENTION.match(head):
            pinned = _resolve_worker(head[1:], slots, usernames or {})
        else:
            break
        rest = words[1] if len(words) > 1 else ""
        words = rest.split(maxsplit=1)
    prompt = rest.strip()
    if not prompt:
        if pinned:
            raise ParseError(f"Write the prompt after @{pinned}, e.g. @{pinned} write the tests.")
        raise ParseError("Write the prompt after the priority, e.g. !1 fix the build.")
    if len(prompt) > PROMPT_MAX:
        raise ParseError(f"That prompt is {len(prompt)} characters; the limit is {PROMPT_MAX}.")
    return PromptRequest(prompt, seen_priority or PRIORITY_DEFAULT, pinned,
                         priority_given=seen_priority is not None)


def _resolve_worker(name: str, slots: Sequence[str], usernames: Mapping[str, str]) -> str:
    lowered = name.lower()
    if lowered in slots:
        return lowered
    if lowered in usernames:
        return usernames[lowered]
    if re.fullmatch(r"worker\d+", lowered):
        span = f"{slots[0]}..{slots[-1]}" if slots else "none"
        raise ParseError(f"There is no {lowered}: the worker slots are {span}.")
    raise ParseError(f"@{name} is not one of the workers; see /workers.")


def parse_task_id(args: Sequence[str], command: str = "/cancel") -> str:
    if not args:
        raise ParseError(f"Usage: {command} <task id>, e.g. {command} t-7k2qf (see /queue).")
    task_id = args[0].strip().lower()
    if not _TASK_ID.fullmatch(task_id):
        shown = repr(args[0]) if len(args[0]) <= ECHO_MAX else "That"
        raise ParseError(f"{shown} is not a task id; ids look like t-7k2qf (see /queue).")
    return task_id


def parse_cancel_data(data: str) -> str | None:
    """The task id of a Cancel button's callback data ("cancel:t-7k2qf"), None if the data is
    not one we made (buttons can be crafted: callback data is whatever a client sends)."""
    task_id = data.removeprefix("cancel:")
    return task_id if data.startswith("cancel:") and _TASK_ID.fullmatch(task_id) else None
