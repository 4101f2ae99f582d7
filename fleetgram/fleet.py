"""Assembling the parts for each way to run: all in one (`up`), master only, worker only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from fleetgram.aio import bounded, wait_ended
from fleetgram.checks import TELEGRAM_TIMEOUT, StartupError, open_store_within, telegram_failure
from fleetgram.claude.runner import ClaudeRunner, make_client
from fleetgram.config import Mode, Settings
from fleetgram.health import Check, polling
from fleetgram.housekeeping import Housekeeper
from fleetgram.master.bot import MasterBot
from fleetgram.orchestrator import Orchestrator
from fleetgram.runtime import ExternalRuntime, InProcessRuntime, WorkerRuntime
from fleetgram.store import open_store
from fleetgram.store.base import Store
from fleetgram.tokens import load_into_pool
from fleetgram.worker.bot import WorkerBot

log = logging.getLogger(__name__)

# Stopping takes at most STOP_BUDGET seconds in all (SIGTERM/Ctrl-C must end the process
# within 5 s); each step also has its own bound so one stuck part cannot starve the rest.
STOP_BUDGET = 4.0
STEP_FLOOR = 0.3  # even past the budget, a step (closing the store) gets this long


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.end = asyncio.get_running_loop().time() + seconds

    def allow(self, seconds: float) -> float:
        left = self.end - asyncio.get_running_loop().time()
        return max(STEP_FLOOR, min(seconds, left))


async def start_bot(start: Awaitable[object], setting: str, settings: Settings,
                    who: str = "") -> object:
    """Start a bot (getMe first), bounded; what Telegram says becomes a StartupError."""
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result of a start
        # that ends just as the caller is cancelled, and the cancellation is lost.
        async with asyncio.timeout(TELEGRAM_TIMEOUT):
            return await start
    except StartupError:
        raise
    except Exception as exc:
        from telegram.error import TelegramError

        if isinstance(exc, TelegramError | OSError | TimeoutError):
            raise telegram_failure(exc, setting, settings, who) from None
        raise


def make_store(settings: Settings) -> Store:
    """The SQL store of DATABASE_URL; in Kubernetes mode wrapped by the BotTask/Lease queue
    (conversations, the ledger, the outbox and the task records stay in SQL)."""
    sql = open_store(settings.database_url)
    if settings.mode == Mode.KUBERNETES:
        from fleetgram.kube.queue import ClusterStore

        return ClusterStore(settings, sql)
    return sql


def runner_factory(settings: Settings):  # type: ignore[no-untyped-def]
    client = make_client(
        settings.anthropic_api_key, settings.anthropic_base_url,
        timeout=settings.claude_timeout, max_retries=settings.claude_max_retries,
    )

    def make() -> ClaudeRunner:
        return ClaudeRunner(
            client, model=settings.claude_model, max_tokens=settings.claude_max_tokens,
            system_prompt=settings.claude_system_prompt,
        )

    return make


class Fleet:
    """`fleetgram up`: master, orchestrator and in-process workers sharing one store.

    In Kubernetes mode only the master runs here: the kopf operator assigns, scales and
    requeues, and the workers are its Deployments."""

    def __init__(self, settings: Settings, store: Store | None = None,
                 runtime: WorkerRuntime | None = None) -> None:
        self.settings = settings
        cluster = settings.mode == Mode.KUBERNETES
        self.store = store or make_store(settings)
        if cluster and runtime is None:
            runtime = ExternalRuntime()
        self.runtime = runtime or InProcessRuntime(settings, self.store, runner_factory(settings))
        self.orchestrator: Orchestrator | None = None
        if not cluster:
            self.orchestrator = Orchestrator(
                settings, self.store, self.runtime,
                owns_workers=not isinstance(self.runtime, ExternalRuntime),
            )
        self.master = MasterBot(settings, self.store, on_new_task=self.runtime.wake_all,
                                prompt_window=getattr(self.runtime, "prompt_window", None))
        if not cluster:  # /addworker: a new worker bot's slot starts here (master/addworker.py)
            self.master.onboarding.start_worker = self.runtime.start
        self.housekeeper = Housekeeper(settings, self.store)
        self._loop: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start everything, or fail within seconds with a StartupError naming the setting
        (what was started is stopped again)."""
        try:
            # The SQL store first, so that its failure names DATABASE_URL; in Kubernetes mode
            # the cluster store's open then only connects to the API server (SQL opens once).
            await open_store_within(getattr(self.store, "inner", self.store),
                                    self.settings.database_url)
            await self.store.open()
            if self.orchestrator is not None:
                # Tokens added with /addworker join the pool before the slots are made.
                await load_into_pool(self.settings, self.store)
                await self.orchestrator.boot()
            await start_bot(self.master.start(), "MASTER_BOT_TOKEN", self.settings)
            if self.orchestrator is not None:
                self._loop = asyncio.create_task(self.orchestrator.run(), name="orchestrator")
            self._housekeeping = asyncio.create_task(self.housekeeper.run(), name="housekeeping")
        except BaseException:
            await self.stop()
            raise

    def health_checks(self) -> dict[str, Check]:
        """What /healthz checks besides the event loop: the master's Telegram polling, the
        orchestrator's loop, and each in-process worker's polling (those running now)."""
        checks: dict[str, Check] = {"master": polling(self.master.app)}
        if self._loop is not None:
            loop = self._loop
            checks["orchestrator"] = lambda: "stopped" if loop.done() else None
        workers = getattr(self.runtime, "workers", None)
        if workers is not None:
            def each_worker() -> str | None:
                for slot, bot in list(workers.items()):
                    reason = polling(bot.app)()
                    if reason:
                        return f"{slot}: {reason}"
                return None

            checks["workers"] = each_worker
        return checks

    async def stop(self) -> None:
        """Stop in dependency order, each step bounded: the orchestrator first (it must not
        start workers meanwhile), then the workers (a task cut short still writes its
        "interrupted" note and usage, so the store and Telegram must still be there), then
        the master, and the store last."""
        budget = _Budget(STOP_BUDGET)
        if self._loop is not None:
            self._loop.cancel()
            await bounded("orchestrator", wait_ended([self._loop]), budget.allow(1.0))
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await bounded("housekeeping", wait_ended([self._housekeeping]), budget.allow(0.5))
        await bounded("workers", self.runtime.close(), budget.allow(3.0))
        await bounded("master", self.master.stop(), budget.allow(1.0))
        await bounded("store", self.store.close(), budget.allow(1.0))


class MasterOnly(Fleet):
    """`fleetgram master`: workers run elsewhere against the same Postgres."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, runtime=ExternalRuntime())


class WorkerOnly:
    """`fleetgram worker --slot workerN`: one worker bot against a shared store."""

    def __init__(self, settings: Settings, slot: str) -> None:
        self.settings = settings
        self.store = make_store(settings)
        self.bot = WorkerBot(slot, settings.token_for(slot), settings, self.store,
                             runner_factory(settings)())

    @property
    def _token_setting(self) -> str:
        if self.settings.worker_token:
            return "WORKER_TOKEN"
        return f"WORKER_TOKEN_POOL (entry {self.settings.slot_names.index(self.bot.slot) + 1})"

    async def start(self) -> None:
        try:
            await open_store_within(getattr(self.store, "inner", self.store),
                                    self.settings.database_url)
            await self.store.open()
            await self.store.ensure_slots(self.settings.slot_names)
            await self.store.update_slot(self.bot.slot, enabled=True)
            started = await start_bot(self.bot.start(), self._token_setting, self.settings,
                                      self.bot.slot)
            if not started:
                raise StartupError(self._token_setting, f"{self.bot.slot}: Telegram refused "
                                                        "the token (getMe: Unauthorized)")
        except BaseException:
            await self.stop()
            raise

    def health_checks(self) -> dict[str, Check]:
        """What /healthz checks besides the event loop: this worker's Telegram polling."""
        return {self.bot.slot: polling(self.bot.app)}

    async def stop(self) -> None:
        budget = _Budget(STOP_BUDGET)
        await bounded("worker", self.bot.stop(drain=False), budget.allow(3.0))
        await bounded("store", self.store.close(), budget.allow(1.0))
