"""Pure pieces of taking prompts in: cleaning text, ordering stamps, per-user rate windows and
re-joining a paste that a Telegram app split into several messages.

No I/O here: the master bot feeds these with what arrives and acts on what they return.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# Telegram apps split a long paste into messages of at most 4096 UTF-16 code units, cutting at
# a line break or a space near the end; every part but the last is therefore "near 4096".
PASTE_PART_MIN = 3500


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units): astral characters count twice."""
    return sum(2 if ord(c) > 0xFFFF else 1 for c in text)


@dataclass(frozen=True)
class Cleaned:
    text: str
    nuls_dropped: int = 0
    surrogates_replaced: int = 0

    @property
    def note(self) -> str:
        """One line for the receipt saying what was changed, or ''."""
        parts = []
        if self.nuls_dropped:
            parts.append(f"dropped {self.nuls_dropped} NUL character(s)")
        if self.surrogates_replaced:
            parts.append(f"replaced {self.surrogates_replaced} invalid character(s) with �")
        return ("Cleaned your text: " + " and ".join(parts) + ".") if parts else ""


def clean_text(text: str) -> Cleaned:
    """Make user text storable rather than refuse it: NUL characters (which Postgres cannot keep
    in text and which carry no meaning in a prompt) are dropped; lone surrogates (not Unicode,
    so not encodable) become U+FFFD. The receipt says so (Cleaned.note)."""
    nuls = text.count("\x00")
    text = text.replace("\x00", "")
    surrogates = sum(1 for c in text if 0xD800 <= ord(c) <= 0xDFFF)
    if surrogates:
        text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return Cleaned(text, nuls, surrogates)


class Stamper:
    """Creation times that follow arrival order: strictly increasing within the process, taken
    synchronously when a handler starts (before anything is awaited), so prompts handled
    concurrently still sort in the order Telegram delivered them."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._last: datetime | None = None

    def __call__(self) -> datetime:
        now = self._clock()
        if self._last is not None and now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


class SlidingWindow:
    """At most `limit` events per `period` seconds per key (an allowed user), in memory.

    `take` checks and records in one synchronous step, so prompts handled concurrently cannot
    all slip through. Keys are allowed users only, so the structure is bounded by the
    allowlist."""

    def __init__(self, limit: int, period: float = 60.0) -> None:
        self.limit, self.period = limit, period
        self._times: dict[int, collections.deque[float]] = {}

    def _recent(self, key: int, now: float) -> collections.deque[float]:
        times = self._times.setdefault(key, collections.deque())
        while times and now - times[0] >= self.period:
            times.popleft()
        return times

    def take(self, key: int, now: float) -> float:
        """Record one event and return 0 if it is allowed now; otherwise record nothing and
        return the seconds until one more will be allowed."""
        times = self._recent(key, now)
        if len(times) < self.limit:
            times.append(now)
            return 0.0
        return max(0.0, times[len(times) - self.limit] + self.period - now)


@dataclass(frozen=True)
class Part:
    """One text message that may be part of a split paste."""

    text: str
    message_id: int
    at: float  # monotonic arrival time, seconds
    stamp: datetime  # the creation stamp taken on arrival


def may_continue(part: Part) -> bool:
    """A message this long may be followed by the rest of a split paste."""
    return utf16_len(part.text) >= PASTE_PART_MIN


def continues(previous: Part, part: Part, window: float) -> bool:
    """`part` (same user and chat) is the next piece of the paste `previous` belongs to."""
    return may_continue(previous) and 0 <= part.at - previous.at <= window


def join_parts(parts: Sequence[Part]) -> str:
    """The paste as it was before the app split it. Apps cut at a line break or a space and
    drop it; put a line break back where neither side kept whitespace."""
    out = parts[0].text
    for part in parts[1:]:
        if out[-1:].isspace() or part.text[:1].isspace():
            out += part.text
        else:
            out += "\n" + part.text
    return out
