"""The operator's wake signal (a NOTIFY through Postgres after it assigns a BotTask) when
Postgres is down, hangs or breaks the connection: the assignment stands, the round is held up
for `wake_wait` at most, the failure is logged once (not once a round, with no traceback), and
the signal reaches the workers again once Postgres is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import psycopg
import pytest

from fleetgram.operator.executor import Reconciler
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.outbox import StoreOutbox
from fleetgram.operator.reconcile import OperatorConfig
from fleetgram.store.postgres import PostgresStore
from fleetgram.store.signals import Channel
from tests.e2e.harness import wait_until
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import NS, make_pool, make_secrets, make_task, phase
from tests.operator.test_executor import complete, ready
from tests.pg import admin_url, pg_session_database, pg_url  # noqa: F401  (fixtures)
from tests.store.test_signals import listening

pytestmark = [pytest.mark.k8s, pytest.mark.postgres]
kube_emulator = kube_api.kube_emulator  # the fixture

WAKE_WAIT = 0.5  # the round's bound in these tests
GIVE_UP = 1.0  # a signal still under way is given up after this long
EXECUTOR_LOG = "fleetgram.operator.executor"


class Switchable:
    """A TCP proxy to the test's Postgres server that can be switched off (every connection
    through it cut, new ones refused) and on again on the same port: Postgres going down and
    coming back, as the operator sees it."""

    def __init__(self) -> None:
        target = urlsplit(admin_url())
        self.target = (target.hostname or "127.0.0.1", target.port or 5432)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def url(self, database_url: str) -> str:
        parts = urlsplit(database_url)
        user = parts.netloc.rpartition("@")[0]
        return parts._replace(netloc=f"{user}@127.0.0.1:{self.port}").geturl()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, upstream}
        try:
            await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
        finally:
            self._open -= {writer, upstream}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()


class Silent:
    """A server that accepts connections and never answers: a database host that hangs."""

    def __init__(self) -> None:
        self.accepted: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"postgresql://postgres@127.0.0.1:{port}/fleetgram"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(writer)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.accepted:
            writer.transport.abort()
        await self._server.wait_closed()


@pytest.fixture()
def emu(kube_emulator: KubeEmulator) -> Iterator[KubeEmulator]:
    make_secrets(kube_emulator, 1)
    make_pool(kube_emulator, 1, minWorkers=1)
    yield kube_emulator


@pytest.fixture()
async def proxy() -> AsyncIterator[Switchable]:
    switchable = Switchable()
    await switchable.up()
    yield switchable
    if switchable._server is not None:
        await switchable.down()


@pytest.fixture()
async def worker_store(pg_url: str) -> AsyncIterator[PostgresStore]:  # noqa: F811
    """A worker's store on the shared database: it LISTENs for the operator's signal."""
    store = PostgresStore(pg_url)
    await store.open()
    yield store
    await store.close()


def reconciler(outbox: StoreOutbox) -> Reconciler:
    r = Reconciler(KubernetesApi(), outbox, OperatorConfig())
    r.wake_wait, r.wake_give_up = WAKE_WAIT, GIVE_UP
    return r


async def started(emu: KubeEmulator, r: Reconciler) -> None:
    """worker1 is up and free."""
    await r.reconcile(NS, "fleetgram")
    ready(emu, "worker1")


async def assign(emu: KubeEmulator, r: Reconciler, task: str) -> float:
    """A new task is assigned to worker1 (free again); the round's duration in seconds."""
    for other in emu.objects("bottasks", NS):
        if (other.get("status") or {}).get("phase") == "Assigned":
            complete(emu, other["metadata"]["name"])
    ready(emu, "worker1")
    make_task(emu, task)
    began = time.monotonic()
    out = await r.reconcile(NS, "fleetgram")
    took = time.monotonic() - began
    assert out is not None and out.assigned == [(task, "worker1")] and out.errors == []
    assert phase(emu, task) == "Assigned"
    return took


def wake_logs(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == EXECUTOR_LOG and r.levelno == level
            and "wake" in r.getMessage()]


def failed_signals(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The level each failed wake signal was logged at (whatever the level, it names the
    error)."""
    return [r.levelname for r in caplog.records
            if r.name == EXECUTOR_LOG and getattr(r, "error", None)]


async def test_with_postgres_down_the_assignment_stands_and_the_round_is_not_held_up(
    emu: KubeEmulator, proxy: Switchable, pg_url: str,  # noqa: F811
) -> None:
    r = reconciler(StoreOutbox(proxy.url(pg_url)))
    try:
        await started(emu, r)
        await assign(emu, r, "t-before")
        await proxy.down()

        took = await assign(emu, r, "t-during")

        assert took < WAKE_WAIT + 0.5
    finally:
        await r.close()


async def test_a_wake_signal_failing_round_after_round_is_logged_once_without_a_traceback(
    emu: KubeEmulator, proxy: Switchable, pg_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=EXECUTOR_LOG)
    r = reconciler(StoreOutbox(proxy.url(pg_url)))
    try:
        await started(emu, r)
        await assign(emu, r, "t-before")
        await proxy.down()

        for n, task in enumerate(("t-first", "t-second", "t-third"), start=1):
            await assign(emu, r, task)
            await wait_until(lambda n=n: len(failed_signals(caplog)) >= n, 10,
                             f"signal {n} to fail")

        assert failed_signals(caplog) == ["WARNING", "DEBUG", "DEBUG"]
        [warning] = wake_logs(caplog, logging.WARNING)
        assert warning.exc_info is None
        assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    finally:
        await r.close()


async def test_the_wake_signal_reaches_the_workers_again_once_postgres_is_back(
    emu: KubeEmulator, proxy: Switchable, pg_url: str,  # noqa: F811
    worker_store: PostgresStore, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=EXECUTOR_LOG)
    heard = await listening(worker_store)
    r = reconciler(StoreOutbox(proxy.url(pg_url)))
    try:
        await started(emu, r)
        await proxy.down()
        await assign(emu, r, "t-during")
        await wait_until(lambda: wake_logs(caplog, logging.WARNING), 10, "the failure's log")
        assert heard[Channel.TASKS] == 0
        await proxy.up()

        await assign(emu, r, "t-after")

        await wait_until(lambda: heard[Channel.TASKS] >= 1, 10, "the worker to hear the signal")
        assert [rec.getMessage() for rec in wake_logs(caplog, logging.INFO)] == [
            "the workers' wake signal works again"]
    finally:
        await r.close()


async def test_a_connection_postgres_broke_is_made_anew_and_the_signal_arrives(
    emu: KubeEmulator, pg_url: str, worker_store: PostgresStore,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=EXECUTOR_LOG)
    heard = await listening(worker_store)
    r = reconciler(StoreOutbox(pg_url))
    try:
        await started(emu, r)
        await assign(emu, r, "t-before")
        await wait_until(lambda: heard[Channel.TASKS] >= 1, 10, "the first signal")
        # Every connection to the database but the worker's LISTEN one is killed, as a
        # restart or a failover of Postgres does.
        with psycopg.connect(admin_url(), autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid NOT IN (pg_backend_pid(), %s)",
                (urlsplit(pg_url).path.lstrip("/"), worker_store.listener.backend_pid),
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        heard.clear()

        await assign(emu, r, "t-after")

        await wait_until(lambda: heard[Channel.TASKS] >= 1, 10, "the worker to hear the signal")
        assert not wake_logs(caplog, logging.WARNING)
    finally:
        await r.close()


async def test_a_database_that_accepts_and_never_answers_holds_no_round_up(
    emu: KubeEmulator,
) -> None:
    silent = Silent()
    r = reconciler(StoreOutbox(await silent.start()))
    r.wake_give_up = 60.0  # still hanging when the next round comes
    try:
        await started(emu, r)

        first = await assign(emu, r, "t-first")
        second = await assign(emu, r, "t-second")  # the first signal still hangs

        assert silent.accepted  # it did try
        assert WAKE_WAIT <= first < WAKE_WAIT + 0.5
        assert second < WAKE_WAIT
    finally:
        await silent.stop()
        await r.close()
