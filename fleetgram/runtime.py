"""The worker runtime seam, single-host flavour: worker bots started and stopped in-process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from fleetgram.aio import wait_ended
from fleetgram.claude.runner import ClaudeRunner
from fleetgram.config import Settings
from fleetgram.intake import SlidingWindow
from fleetgram.store.base import Store
from fleetgram.worker.bot import WorkerBot

log = logging.getLogger(__name__)


class WorkerRuntime(Protocol):
    async def start(self, slot: str) -> None:
        """Begin starting the slot's worker; returns without waiting for it to be ready."""

    async def stop(self, slot: str) -> None: ...

    async def restart(self, slot: str) -> None: ...

    def wake_all(self) -> None: ...

    async def close(self) -> None: ...


START_RETRY_FIRST = 0.5  # seconds before a failed worker start is tried again, doubled
START_RETRY_MAX = 10.0


async def _quietly(step: Awaitable[object]) -> None:
    """Clean-up after a failed start: its own failure is logged, never raised."""
    try:
        await step
    except Exception:
        log.debug("clean-up after a failed start failed", exc_info=True)


class InProcessRuntime:
    def __init__(
        self, settings: Settings, store: Store, runner_factory: Callable[[], ClaudeRunner]
    ) -> None:
        self.settings = settings
        self.store = store
        self.runner_factory = runner_factory
        self.workers: dict[str, WorkerBot] = {}
        # One PROMPTS_PER_MINUTE window for every worker chat of this process: the limit is
        # per user across the fleet, not per worker.
        self.prompt_window = SlidingWindow(settings.prompts_per_minute, 60.0)
        self._starting: dict[str, asyncio.Task[None]] = {}

    async def start(self, slot: str) -> None:
        if slot in self.workers or slot in self._starting:
            return
        self._starting[slot] = asyncio.create_task(self._start(slot), name=f"start-{slot}")

    def _new_bot(self, slot: str) -> WorkerBot:
        return WorkerBot(
            slot, self.settings.token_for(slot), self.settings, self.store, self.runner_factory(),
            prompt_window=self.prompt_window,
        )

    async def _start(self, slot: str) -> None:
        """Start the slot's worker. A refused token ends it (the bot marks its slot error);
        any other failure (Telegram or the store out for a while) is retried with backoff
        until it starts or the slot is stopped: a slot left "starting" would never run."""
        delay = START_RETRY_FIRST
        try:
            while True:
                bot = self._new_bot(slot)
                try:
                    if await bot.start():
                        self.workers[slot] = bot
                    return
                except asyncio.CancelledError:
                    await _quietly(bot.stop(drain=False))
                    raise
                except Exception as exc:
                    log.warning("worker failed to start; trying again", extra={
                        "worker": slot, "error": type(exc).__name__, "retry_in": delay})
                    await _quietly(bot.stop(drain=False))
                await asyncio.sleep(delay)
                delay = min(delay * 2, START_RETRY_MAX)
        finally:
            self._starting.pop(slot, None)

    async def stop(self, slot: str, *, drain: bool = True) -> None:
        starting = self._starting.pop(slot, None)
        if starting is not None:
            starting.cancel()
            await wait_ended([starting])
        bot = self.workers.pop(slot, None)
        if bot is not None:
            await bot.stop(drain=drain)

    async def restart(self, slot: str) -> None:
        await self.stop(slot, drain=False)
        await self.start(slot)

    def wake_all(self) -> None:
        for bot in self.workers.values():
            bot.wake()

    async def close(self) -> None:
        slots = list(self.workers) + list(self._starting)
        await asyncio.gather(
            *(self.stop(slot, drain=False) for slot in slots), return_exceptions=True
        )


class ExternalRuntime:
    """Workers run as their own processes (`fleetgram worker --slot workerN`): the master can
    only record what it wants; scaling them is the operator's or the admin's job."""

    async def start(self, slot: str) -> None:
        log.info("worker wanted; start it with `fleetgram worker --slot %s`", slot)

    async def stop(self, slot: str) -> None:
        log.info("worker no longer wanted", extra={"worker": slot})

    async def restart(self, slot: str) -> None:
        return None

    def wake_all(self) -> None:
        return None

    async def close(self) -> None:
        return None
