"""/healthz and /readyz (HEALTH_PORT): liveness that sees a hung event loop and stopped
Telegram polling, readiness once started; with metrics off."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram import cli
from fleetgram.config import ConfigErrors, load_settings
from fleetgram.health import Health
from tests.e2e.harness import World, emulated_world, fleet_env


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode().strip()


async def aget(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(get, port, path)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with emulated_world(f"sqlite:///{tmp_path / 'fleet.sqlite3'}") as world:
        yield world


@pytest.fixture
async def health() -> AsyncIterator[tuple[Health, int]]:
    watcher = Health()
    watcher.attach(asyncio.get_running_loop())
    port = watcher.serve(0, host="127.0.0.1")
    try:
        yield watcher, port
    finally:
        watcher.close()


def test_health_port_defaults_to_8081_and_0_turns_it_off(world: World) -> None:
    env = fleet_env(world.telegram, world.claude, world.database_url)
    del env["HEALTH_PORT"]  # the tests' own environment turns it off
    assert load_settings(env, dotenv=None).health_port == 8081
    assert load_settings({**env, "HEALTH_PORT": "0"}, dotenv=None).health_port == 0
    with pytest.raises(ConfigErrors, match="HEALTH_PORT"):
        load_settings({**env, "HEALTH_PORT": "70000"}, dotenv=None)


async def test_healthz_is_200_while_a_fleet_runs_with_metrics_off(
        world: World, health: tuple[Health, int]) -> None:
    watcher, port = health
    async with world.fleet(workers=2, METRICS_PORT="0") as fleet:
        watcher.add_checks(fleet.health_checks())
        assert await aget(port, "/healthz") == (200, "ok")


async def test_healthz_is_503_when_the_event_loop_is_blocked(
        health: tuple[Health, int]) -> None:
    _, port = health
    answers: list[tuple[int, str]] = []

    def probe() -> None:
        time.sleep(0.2)  # the loop is blocked by then
        started = time.monotonic()
        answers.append(get(port, "/healthz"))
        answers.append((round(time.monotonic() - started), ""))

    prober = threading.Thread(target=probe)
    prober.start()

    async def blocking() -> None:
        time.sleep(2)  # noqa: ASYNC251 (the point: a sync call blocks the loop)

    await blocking()
    await asyncio.to_thread(prober.join)
    assert answers[0] == (503, "event loop blocked: no answer within 1 s")
    assert answers[1][0] <= 1  # the probe gets its answer after the 1 s, not the 2 s block
    assert await aget(port, "/healthz") == (200, "ok")  # and recovers with the loop


async def test_healthz_is_503_when_the_masters_polling_stopped(
        world: World, health: tuple[Health, int]) -> None:
    watcher, port = health
    async with world.fleet(workers=2) as fleet:
        watcher.add_checks(fleet.health_checks())
        assert fleet.master.app.updater is not None
        await fleet.master.app.updater.stop()
        assert await aget(port, "/healthz") == (503, "master: Telegram polling stopped")


async def test_healthz_is_503_when_an_in_process_workers_polling_stopped(
        world: World, health: tuple[Health, int]) -> None:
    watcher, port = health
    async with world.fleet(workers=2) as fleet:
        watcher.add_checks(fleet.health_checks())
        runtime = fleet.runtime
        deadline = time.monotonic() + 10
        while "worker1" not in runtime.workers:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "worker1 never started"
            await asyncio.sleep(0.05)
        updater = runtime.workers["worker1"].app.updater  # type: ignore[attr-defined]
        await updater.stop()
        assert await aget(port, "/healthz") == (
            503, "workers: worker1: Telegram polling stopped")


class _Component:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.stopped = False

    async def start(self) -> None:
        await self.release.wait()

    def health_checks(self) -> dict[str, object]:
        return {}

    async def stop(self) -> None:
        self.stopped = True


async def test_readyz_is_503_until_the_component_has_started_then_200(
        health: tuple[Health, int]) -> None:
    watcher, port = health
    component = _Component()
    serving = asyncio.create_task(cli._serve(component, watcher))
    await asyncio.sleep(0.1)
    assert await aget(port, "/readyz") == (503, "not ready: starting or stopping")
    assert (await aget(port, "/healthz"))[0] == 200  # alive while starting
    component.release.set()
    await asyncio.sleep(0.1)
    assert await aget(port, "/readyz") == (200, "ready")
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    assert component.stopped
    assert (await aget(port, "/readyz"))[0] == 503


def test_the_cli_runs_on_with_a_logged_warning_when_the_health_port_is_taken(
        caplog: pytest.LogCaptureFixture) -> None:
    first = Health()
    port = first.serve(0, host="0.0.0.0")
    try:
        assert cli._health(port) is None
        assert f"HEALTH_PORT: cannot listen on port {port}" in caplog.text
    finally:
        first.close()
