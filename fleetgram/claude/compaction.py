"""Keep a worker's conversation inside the model's context window.

When a conversation approaches `CLAUDE_CONTEXT_WINDOW * COMPACT_AT` tokens, its older turns
are replaced by a summary Claude writes (one call), and the recent exchanges are kept as they
are. Cuts are made only where an exchange begins (a user turn with text, not a tool result),
so a `tool_use` is never separated from its `tool_result`. If summarising fails, or the part
to summarise would itself not fit, the oldest exchanges are dropped instead (trimming).

The pure functions here decide; `compact` does the one Claude call through the runner.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

Turn = dict[str, Any]

SUMMARY_INSTRUCTION = (
    "Our conversation is getting too long to continue in full. Summarise everything above "
    "for yourself: the facts, names, decisions, files and open questions you will need to "
    "carry on. Write only the summary, in plain prose or short lists."
)
SUMMARY_INTRO = "(Summary of our earlier conversation, written to save room.)\n\n"
SUMMARY_ACK = "Understood. I have the summary and will carry on from there."

# Share of the window kept verbatim (the most recent exchanges) when compacting.
KEEP_SHARE = 0.25
# The part to summarise must leave this share of the window for the instruction and answer.
SUMMARY_ROOM = 0.85


def estimate_text_tokens(text: str) -> int:
    """A cautious token estimate: English averages about 4 characters a token, code and other
    scripts fewer; 3 keeps us on the safe side of the real tokenizer."""
    return math.ceil(len(text) / 3)


def estimate_tokens(turns: Sequence[Turn]) -> int:
    total = 0
    for turn in turns:
        content = turn.get("content")
        if isinstance(content, str):
            total += estimate_text_tokens(content)
            continue
        for block in content or []:
            if block.get("type") == "text":
                total += estimate_text_tokens(str(block.get("text", "")))
            else:
                total += estimate_text_tokens(json.dumps(block, ensure_ascii=False))
    return total


def _is_exchange_start(turn: Turn) -> bool:
    """A user turn that is not (only) tool results: a cut may be made before it."""
    if turn.get("role") != "user":
        return False
    content = turn.get("content")
    if isinstance(content, str):
        return True
    return not any(block.get("type") == "tool_result" for block in content or [])


def exchange_starts(turns: Sequence[Turn]) -> list[int]:
    return [i for i, turn in enumerate(turns) if _is_exchange_start(turn)]


def needs_compaction(tokens: int, window: int, compact_at: float) -> bool:
    return tokens >= window * compact_at


def split_old_recent(turns: Sequence[Turn], keep_tokens: int) -> tuple[list[Turn], list[Turn]]:
    """(older turns to summarise, recent turns kept): `recent` is the longest tail that starts
    an exchange and fits `keep_tokens`; it may be empty (the last exchange alone is too big)."""
    for start in exchange_starts(turns):
        if start == 0:
            continue  # keeping everything is not compacting
        if estimate_tokens(turns[start:]) <= keep_tokens:
            return list(turns[:start]), list(turns[start:])
    return list(turns), []


def trim(turns: Sequence[Turn], keep_tokens: int) -> list[Turn]:
    """The longest tail starting an exchange that fits `keep_tokens` (possibly empty)."""
    _, recent = split_old_recent(turns, keep_tokens)
    return recent


def summary_turns(summary: str) -> list[Turn]:
    """The summary as a user turn and an acknowledgement, so roles keep alternating and the
    kept turns (which start with a user turn) follow an assistant turn."""
    return [
        {"role": "user", "content": [{"type": "text", "text": SUMMARY_INTRO + summary.strip()}]},
        {"role": "assistant", "content": [{"type": "text", "text": SUMMARY_ACK}]},
    ]


@dataclass(frozen=True)
class Compaction:
    turns: list[Turn]
    summarised: int  # turns replaced by the summary (0 if trimmed)
    dropped: int  # turns dropped without a summary (0 if summarised)

    @property
    def note(self) -> str:
        """The one line the user sees in the worker chat."""
        if self.summarised:
            return (
                f"🗜 Our conversation was getting long: I summarised the older part "
                f"({self.summarised} messages) to make room."
            )
        return (
            f"🗜 Our conversation was getting long: I let go of the oldest part "
            f"({self.dropped} messages) to make room."
        )


Summariser = Callable[[list[Turn]], Awaitable[str]]


async def compact(
    turns: Sequence[Turn], *, window: int, summarise: Summariser | None
) -> Compaction:
    """Summarise (or, failing that, trim) the older turns so the rest fits comfortably."""
    keep = int(window * KEEP_SHARE)
    old, recent = split_old_recent(turns, keep)
    if summarise is not None and old and estimate_tokens(old) <= window * SUMMARY_ROOM:
        try:
            summary = (await summarise(old)).strip()
        except Exception:  # the summary is a nicety: trimming still saves the conversation
            summary = ""
        if summary:
            kept = summary_turns(summary) + recent
            if estimate_tokens(kept) <= window * KEEP_SHARE * 2:
                return Compaction(kept, summarised=len(old), dropped=0)
    kept = trim(turns, keep)
    return Compaction(kept, summarised=0, dropped=len(turns) - len(kept))
