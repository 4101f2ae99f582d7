"""The demo under test: `fleetgram demo` in this event loop (HTTP tests) or in a thread of its
own (browser tests: selenium blocks, and the page must keep being served meanwhile)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import aiohttp
import pytest

from fleetgram.demo.run import Demo
from fleetgram.demo.world import ClaudeChoice


def make_demo(claude: ClaudeChoice | None = None, **options: float) -> Demo:
    options.setdefault("tokens_per_second", 200.0)
    options.setdefault("stream_edit_interval", 0.2)
    return Demo("127.0.0.1", 0, 3, claude or ClaudeChoice(), out=io.StringIO(), **options)


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    demo = make_demo()
    await demo.start()
    try:
        yield demo
    finally:
        await demo.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def page_state(http: aiohttp.ClientSession, demo: Demo) -> dict[str, Any]:
    async with http.get(f"{demo.url}/api/state") as response:
        assert response.status == 200
        return await response.json()


async def wait_state(http: aiohttp.ClientSession, demo: Demo,
                     predicate: Callable[[dict[str, Any]], Any], what: str,
                     timeout: float = 10.0) -> Any:
    """Poll /api/state as the page does until `predicate` returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        state = await page_state(http, demo)
        found = predicate(state)
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                 f"last state: {state}")
        await asyncio.sleep(0.05)


def chat_of(state: dict[str, Any], bot: str) -> dict[str, Any]:
    return next(chat for chat in state["chats"] if chat["bot"] == bot)


class DemoThread:
    """A demo served from its own thread and event loop, for tests whose client blocks."""

    def __init__(self, **options: float) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="demo", daemon=True)
        self.demo: Demo | None = None

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> Demo:
        self.thread.start()

        async def start() -> Demo:  # built inside its loop: the emulators' events bind there
            demo = make_demo(**self.options)
            await demo.start()
            return demo

        self.demo = self.run(start())
        return self.demo

    def __exit__(self, *exc: object) -> None:
        try:
            if self.demo is not None:
                self.run(self.demo.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@pytest.fixture
def demo_thread() -> Iterator[DemoThread]:
    """A demo streaming slowly enough to watch (about 30 words a second)."""
    runner = DemoThread(tokens_per_second=30.0, stream_edit_interval=0.3)
    with runner:
        yield runner
