"""`fleetgram up` as a real process: killed mid-task and started again, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram.domain import TaskState
from fleetgram.store import open_store
from tests.e2e.harness import MASTER, World, fleet_env, task_id_in, wait_until

pytestmark = pytest.mark.e2e


class UpProcess:
    """`fleetgram up` in a child process, configured through a .env file as a user would."""

    def __init__(self, world: World, workdir: Path, **overrides: str) -> None:
        env = fleet_env(world.telegram, world.claude, world.database_url, 2,
                        MAX_WORKERS="2", **overrides)
        (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        self.workdir = workdir
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "CLAUDE"))}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fleetgram.cli", "up", cwd=self.workdir, env=clean,
            stdout=asyncio.subprocess.DEVNULL, stderr=open(self.workdir / "log.txt", "ab"),
        )

    async def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await asyncio.wait_for(self.proc.wait(), 15)


@pytest.fixture
async def up(world: World, tmp_path: Path) -> AsyncIterator[UpProcess]:
    process = UpProcess(world, tmp_path)
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.returncode is None:
            await process.kill()
        log = tmp_path / "log.txt"
        if log.exists():  # shown by pytest only when the test failed
            print("--- the child's log (last 60 lines) ---")
            print("\n".join(log.read_text(errors="replace").splitlines()[-60:]))


async def _task(world: World, task_id: str):  # type: ignore[no-untyped-def]
    store = open_store(world.database_url)
    await store.open()
    try:
        return await store.get_task(task_id)
    finally:
        await store.close()


async def _until_state(  # type: ignore[no-untyped-def]
    world: World, task_id: str, state: TaskState, timeout: float = 20, attempts: int | None = None
):
    async def check():  # type: ignore[no-untyped-def]
        task = await _task(world, task_id)
        if task is None or task.state != state:
            return None
        return task if attempts is None or task.attempts == attempts else None

    return await wait_until(check, timeout, f"{task_id} {state.value}")


async def test_killed_mid_task_the_task_runs_again_and_completes(
    world: World, up: UpProcess
) -> None:
    world.claude.tokens_per_second = 5
    await world.open_chats(world.ada, workers=2)
    await up.start()
    await world.ada.send(MASTER, "survive a crash")
    task_id = task_id_in((await world.ada.wait_for_text(MASTER, "survive a crash", 20)).text)
    await world.ada.send(MASTER, "queued behind it")
    queued = task_id_in((await world.ada.wait_for_text(MASTER, "queued behind it", 20)).text)
    await _until_state(world, task_id, TaskState.RUNNING)
    assert await up.kill() == -signal.SIGKILL

    world.claude.tokens_per_second = 2000
    await up.start()
    done = await _until_state(world, task_id, TaskState.COMPLETED, 30)
    assert done.attempts == 2
    assert (await _until_state(world, queued, TaskState.COMPLETED, 30)).state.finished
    await world.ada.wait_for_text(MASTER, f"{task_id} went back to the queue", 10)
    await world.ada.wait_for_text(MASTER, f"{task_id} done by", 10)
    await up.kill(signal.SIGINT)


async def test_a_task_whose_worker_dies_three_times_fails_and_the_user_is_told(
    world: World, up: UpProcess
) -> None:
    world.claude.tokens_per_second = 2
    await world.open_chats(world.ada, workers=2)
    await up.start()
    await world.ada.send(MASTER, "cursed task")
    task_id = task_id_in((await world.ada.wait_for_text(MASTER, "cursed task", 20)).text)
    for attempt in (1, 2, 3):
        await _until_state(world, task_id, TaskState.RUNNING, 30, attempts=attempt)
        await up.kill()
        await up.start()
    failed = await _until_state(world, task_id, TaskState.FAILED, 30)
    assert "gave up after 3 attempts" in (failed.error or "")
    await world.ada.wait_for_text(MASTER, f"{task_id} failed", 15)
    await up.kill(signal.SIGINT)


async def test_ctrl_c_keeps_queued_tasks_for_the_next_start(world: World, up: UpProcess) -> None:
    world.claude.tokens_per_second = 3
    await world.open_chats(world.ada, workers=2)
    await up.start()
    ids = []
    for prompt in ("one", "two", "three", "four", "five"):
        await world.ada.send(MASTER, f"job {prompt}")
        ids.append(task_id_in((await world.ada.wait_for_text(MASTER, f"job {prompt}", 20)).text))
    assert await up.kill(signal.SIGINT) == 0
    states = [(await _task(world, tid)).state for tid in ids]
    assert TaskState.PENDING in states
    world.claude.tokens_per_second = 2000
    await up.start()
    for tid in ids:
        await _until_state(world, tid, TaskState.COMPLETED, 40)
    await up.kill(signal.SIGINT)
