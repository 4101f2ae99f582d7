"""Suite-wide: if a test hangs, show what every asyncio task is waiting on.

pytest-timeout (pyproject: timeout) fails a hung test with the threads' stacks, but an async
test hangs inside the event loop, where only the tasks' own stacks tell where it waits. This
watchdog prints them shortly before the timeout fires.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Iterator

import pytest

# The fixtures behind tests.tools.requiring: a missing system tool fails, never skips.
pytest_plugins = ["tests.tools"]

WATCHDOG_SECONDS = 150.0


def _dump_tasks(nodeid: str) -> None:
    print(f"\n=== {nodeid}: still running after {WATCHDOG_SECONDS:g}s; asyncio tasks: ===",
          file=sys.stderr)
    loops = [o for o in gc.get_objects()
             if isinstance(o, asyncio.AbstractEventLoop) and o.is_running()]
    for loop in loops:
        try:
            tasks = list(asyncio.all_tasks(loop))
        except RuntimeError:
            continue
        for task in tasks:
            print(f"--- {task.get_name()}", file=sys.stderr)
            task.print_stack(limit=12, file=sys.stderr)


@pytest.fixture(autouse=True)
def _fresh_draft_refusals() -> Iterator[None]:
    """A bot whose drafts Telegram refused streams by edits for the rest of the process
    (fleetgram.telegram.streaming): every test's bots start with a clean record, as the
    tests reuse the same bot tokens."""
    from fleetgram.telegram.streaming import forget_draft_refusals

    forget_draft_refusals()
    yield
    forget_draft_refusals()


@pytest.fixture(autouse=True)
def _asyncio_watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    timer = threading.Timer(WATCHDOG_SECONDS, _dump_tasks, args=(request.node.nodeid,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
