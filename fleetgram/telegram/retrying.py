"""One short message sent as every send of the fleet is decided (fleetgram.telegram.delivery):
a 429 or 5xx is waited out a few times, an ambiguous failure resent once at most. For the
one-off messages of a chat (a worker's notes, an approval question), not for streams."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram.error import TelegramError

from fleetgram.telegram.delivery import MAX_AMBIGUOUS_SENDS, Action, Decision, decide

_T = TypeVar("_T")

ATTEMPTS = 4  # sends of one message at most (an ambiguous one is resent once only)
MAX_WAIT = 5.0  # seconds waited between them at most


async def send_retrying(
    send: Callable[[], Awaitable[_T]],
    *,
    on_failure: Callable[[Decision], None] = lambda _d: None,
    attempts: int = ATTEMPTS,
    max_wait: float = MAX_WAIT,
) -> _T | None:
    """`await send()` until Telegram takes it; None when it would not (each failed try is
    reported to `on_failure`, e.g. to log it)."""
    failures = ambiguous = 0
    loop = asyncio.get_running_loop()
    for _ in range(attempts):
        error: TelegramError | None = None
        try:
            result = await send()
        except TelegramError as exc:
            error, failures = exc, failures + 1
        verdict = decide(error, failures=failures, html=False, now=loop.time())
        if verdict.action == Action.DELIVERED:
            return result
        on_failure(verdict)
        if verdict.action == Action.AMBIGUOUS:
            ambiguous += 1
            if ambiguous >= MAX_AMBIGUOUS_SENDS:
                return None
        elif verdict.action != Action.WAIT:
            return None
        await asyncio.sleep(min(max_wait, max(0.0, verdict.until - loop.time())))
    return None


async def read_retrying(
    read: Callable[[], Awaitable[_T]],
    *,
    attempts: int = ATTEMPTS,
    max_wait: float = MAX_WAIT,
) -> _T:
    """`await read()` (a call that changes nothing, such as getFile and the file's download)
    until it succeeds: a 429 or 5xx is waited out and a lost or malformed answer simply read
    again, as `send_retrying` decides for sends; any other error, or the last one, is raised."""
    failures = 0
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await read()
        except TelegramError as error:
            failures += 1
            verdict = decide(error, failures=failures, html=False, now=loop.time())
            if failures >= attempts or verdict.action not in (Action.WAIT, Action.AMBIGUOUS):
                raise
            await asyncio.sleep(min(max_wait, max(0.0, verdict.until - loop.time())))
