"""Time limits of one Claude API call, and the reasons a person reads when one is exceeded.

Two limits, because a stream can misbehave in two ways the HTTP client's read timeout does
not see: it can keep sending `ping` events (which the SDK swallows) but no text, forever; or
it can send text so slowly that it never ends. `CLAUDE_STALL_TIMEOUT` fails a stream that
sends no content for that long; `CLAUDE_TIMEOUT` bounds the wall time of the whole call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

_T = TypeVar("_T")


def seconds_text(seconds: float) -> str:
    """`60` -> "60 s", `2.5` -> "2.5 s"."""
    return f"{seconds:g} s"


class ClaudeStalled(Exception):
    """The stream sent no content (pings do not count) for `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"Claude stopped sending for {seconds_text(seconds)}")
        self.seconds = seconds


class ClaudeDeadline(Exception):
    """The call took longer than CLAUDE_TIMEOUT (`seconds`)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"Claude took longer than CLAUDE_TIMEOUT ({seconds_text(seconds)})")
        self.seconds = seconds


@dataclass(frozen=True)
class CallLimits:
    """`wall`: seconds the whole call may take; `stall`: seconds without content. None: none."""

    wall: float | None = None
    stall: float | None = None

    def next_wait(self, now: float, started: float, last_content: float) -> tuple[float, str]:
        """How long the next read may wait, and which limit ends it ("wall"/"stall"/"none")."""
        waits: list[tuple[float, str]] = []
        if self.wall is not None:
            waits.append((started + self.wall - now, "wall"))
        if self.stall is not None:
            waits.append((last_content + self.stall - now, "stall"))
        if not waits:
            return float("inf"), "none"
        return min(waits)

    def error(self, which: str) -> Exception:
        if which == "stall":
            assert self.stall is not None
            return ClaudeStalled(self.stall)
        assert self.wall is not None
        return ClaudeDeadline(self.wall)


async def within_limits(
    events: AsyncIterator[_T],
    limits: CallLimits,
    *,
    started: float,
    is_content: Callable[[_T], bool],
    clock: Callable[[], float],
) -> AsyncIterator[_T]:
    """Yield `events`, raising ClaudeStalled/ClaudeDeadline when a limit passes between two.

    `started` is when the call began (the wall limit counts the request and any retries the
    client made before the stream opened); the stall limit counts from the later of that and
    the last content event."""
    last_content = started
    iterator = events.__aiter__()
    while True:
        wait, which = limits.next_wait(clock(), started, last_content)
        if wait <= 0:
            raise limits.error(which)
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the awaited event completes (python/cpython#86296), and a /cancel
        # would then be lost while the stream runs on.
        deadline = asyncio.timeout(None if wait == float("inf") else wait)
        try:
            async with deadline:
                event = await iterator.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            if deadline.expired():
                raise limits.error(which) from None
            raise  # the client's own timeout, not ours
        if is_content(event):
            last_content = clock()
        yield event
