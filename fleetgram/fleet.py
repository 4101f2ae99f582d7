"""Assembling the parts for each way to run: all in one (`up`), master only, worker only."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fleetgram.aio import wait_ended
from fleetgram.claude.runner import ClaudeRunner, make_client
from fleetgram.config import Mode, Settings
from fleetgram.master.bot import MasterBot
from fleetgram.orchestrator import Orchestrator
from fleetgram.runtime import ExternalRuntime, InProcessRuntime, WorkerRuntime
from fleetgram.store import open_store
from fleetgram.store.base import Store
from fleetgram.worker.bot import WorkerBot

log = logging.getLogger(__name__)


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
        self.master = MasterBot(settings, self.store, on_new_task=self.runtime.wake_all)
        self._loop: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.store.open()
        if self.orchestrator is not None:
            await self.orchestrator.boot()
        await self.master.start()
        if self.orchestrator is not None:
            self._loop = asyncio.create_task(self.orchestrator.run(), name="orchestrator")

    async def stop(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await wait_ended([self._loop])
        with contextlib.suppress(Exception):
            await self.runtime.close()
        with contextlib.suppress(Exception):
            await self.master.stop()
        await self.store.close()


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

    async def start(self) -> None:
        await self.store.open()
        await self.store.ensure_slots(self.settings.slot_names)
        await self.store.update_slot(self.bot.slot, enabled=True)
        if not await self.bot.start():
            raise SystemExit(f"{self.bot.slot}: Telegram refused the token")

    async def stop(self) -> None:
        await self.bot.stop(drain=False)
        await self.store.close()
