"""Small asyncio helpers the shutdown paths share."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


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


def being_cancelled() -> bool:
    """True when the running task itself has been asked to stop."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
