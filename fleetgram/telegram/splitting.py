"""Split a long Markdown answer into Telegram-sized messages.

Pure. Two guarantees matter to the streaming reply:

* every chunk, converted with ``markdown_to_html``, shows at most ``limit`` (<= 4096) UTF-16
  code units: the chunk's Markdown is at most ``limit`` units long and the conversion never
  makes text longer (see ``formatting``); a code fence cut in two is closed at the end of its
  chunk and reopened, with the same marker and language, at the start of the next;
* PREFIX-STABLE: a chunk that is not the last never changes when text is appended. A cut is
  made only when the remaining text is longer than ``limit``, and where it is made depends only
  on the first ``limit`` units of the remaining text, so more text can only add chunks after it.
  A message that is full is therefore never rewritten while the answer streams.

Where to cut, best first (never in the first half of the window, so chunks stay large): after a
blank line outside code, after a newline outside code, after a blank line or newline inside a
code block, after a space, anywhere (a hard cut).
"""

from __future__ import annotations

from .formatting import FenceState, closes_fence, fence_opening, open_fence

__all__ = ["DEFAULT_LIMIT", "MIN_LIMIT", "TELEGRAM_LIMIT", "split_for_telegram"]

TELEGRAM_LIMIT = 4096
DEFAULT_LIMIT = 3800
MIN_LIMIT = 64


def split_for_telegram(md: str, limit: int = DEFAULT_LIMIT) -> list[str]:
    """Split ``md`` into chunks of at most ``limit`` UTF-16 units (plus an invisible closing
    fence). An empty text gives no chunks."""
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}, got {limit}")
    limit = min(limit, TELEGRAM_LIMIT)
    chunks: list[str] = []
    rest = md
    floor = 0  # length of the reopened fence line at the start of ``rest``
    while rest:
        m = _fit(rest, limit)
        if m == len(rest):
            chunks.append(rest)
            break
        p = _cut(rest, m, floor)
        chunk, rest = rest[:p], rest[p:]
        floor = 0
        state = open_fence(chunk)
        if state is not None:
            chunk += ("" if chunk.endswith("\n") else "\n") + state.marker
            reopen = _reopen(state, limit)
            if reopen:
                rest = reopen + rest
                floor = len(reopen)
        chunks.append(chunk)
    return chunks


def _reopen(state: FenceState, limit: int) -> str:
    line = f"{state.marker}{state.lang}\n"
    if len(line) > limit // 4:
        line = f"{state.marker}\n"
    return line if len(line) <= limit // 4 else ""


def _fit(text: str, limit: int) -> int:
    """The largest m such that text[:m] is at most ``limit`` UTF-16 code units."""
    if len(text) <= limit and text.isascii():
        return len(text)
    units = 0
    for index, ch in enumerate(text):
        units += 2 if ord(ch) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut(rest: str, m: int, floor: int) -> int:
    """Where to end the chunk ``rest[:p]``; depends only on ``rest[:m]`` and ``floor``."""
    window = rest[:m]
    lo = min(max(m // 2, floor + 1), m)
    blank = newline = blank_code = newline_code = 0
    state: FenceState | None = None
    pos = 0
    lines = window.split("\n")
    for line in lines[:-1]:  # the lines ended by a newline inside the window
        end = pos + len(line) + 1
        if state is None:
            opening = fence_opening(line)
            if opening is not None:
                state = opening[0]
        elif closes_fence(line, state.marker):
            state = None
        if end >= lo:
            is_blank = not line.strip()
            if state is None:
                newline = end
                if is_blank:
                    blank = end
            else:
                newline_code = end
                if is_blank:
                    blank_code = end
        pos = end
    for candidate in (blank, newline, blank_code, newline_code):
        if candidate:
            return candidate
    space = window.rfind(" ", lo - 1)
    if space >= 0:
        return space + 1
    return m
