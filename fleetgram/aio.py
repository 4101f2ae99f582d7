"""Small asyncio helpers the shutdown paths share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable

log = logging.getLogger(__name__)


async def wait_ended(tasks: Iterable[asyncio.Future[object]]) -> None:
    """Wait until the tasks have ended, however they end (result, error, cancellation).

    Unlike `with suppress(CancelledError): await task`, this never swallows a cancellation of
    the *caller*: that mistake once left the orchestrator running after Fleet.stop had
    cancelled it, so stop waited forever.
    """
    pending = {t for t in tasks if t is not None}
    if not pending:
        return
    await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled():
            task.exception()  # retrieved: no "exception was never retrieved" noise


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; True if it is set.

    Not asyncio.wait_for: on Python 3.11 it returns normally when a cancellation of the caller
    meets the event being set (https://github.com/python/cpython/issues/86296), and the loop
    around it then never stops (a shutdown waiting for it waits forever). asyncio.timeout
    tells its own cancellation from the caller's."""
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


def being_cancelled() -> bool:
    """True when the running task itself has been asked to stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def bounded(name: str, step: Awaitable[object], seconds: float) -> bool:
    """Run a shutdown step for at most `seconds`; False (logged) if it failed or overran.

    An overrunning step is cancelled and not waited for. A cancellation of the caller is
    passed on, never swallowed."""
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        log.warning("shutdown step overran; going on", extra={"step": name, "seconds": seconds})
        return False
    if task.cancelled():
        return False
    error = task.exception()
    if error is not None:
        log.warning("shutdown step failed", extra={"step": name, "error": type(error).__name__},
                    exc_info=error)
        return False
    return True
