"""Agent mode, `fleetgram up` killed with SIGKILL mid-task: the task is requeued on the same
worker, the rerun starts from the task's branch with what the killed run left in the
workspace, and the user is told."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram.domain import TaskState
from tests.e2e.agent_world import agent_overrides, make_origin, show
from tests.e2e.harness import World, wait_until, worker_bot
from tests.e2e.test_restart import UpProcess, _until_state
from tests.emulators.agent_script import AgentStory, bash, install, say, write

pytestmark = pytest.mark.e2e


@pytest.fixture
async def agent_up(world: World, tmp_path: Path) -> AsyncIterator[UpProcess]:
    origin = make_origin(tmp_path)
    overrides = {k: str(v) for k, v in agent_overrides(tmp_path, origin).items()}
    process = UpProcess(world, tmp_path, MIN_WORKERS="1", **overrides)
    process.origin = origin  # type: ignore[attr-defined]
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.returncode is None:
            await process.kill()
        # The killed fleet's CLI and its command were orphaned: end them.
        killer = await asyncio.create_subprocess_exec("pkill", "-f", str(tmp_path))
        await killer.wait()
        log = tmp_path / "log.txt"
        if log.exists():
            print("\n".join(log.read_text(errors="replace").splitlines()[-60:]))


async def test_a_killed_fleet_reruns_the_agent_task_from_what_it_left(
    world: World, agent_up: UpProcess, tmp_path: Path
) -> None:
    once = tmp_path / "slept-once"
    install(world.claude, AgentStory("build the thing", [
        write("part1.txt", "written before the crash\n"),
        bash(f"python3 -c \"import os, time; os.path.exists('{once}') or "
             f"(open('{once}', 'w').close(), time.sleep(20))\""),
        say("Built."),
    ]))
    await world.open_chats(world.ada, 2)
    await agent_up.start()
    task_id = await world.prompt("build the thing", timeout=20)
    await wait_until(once.exists, 40, "the long command to start")
    assert await agent_up.kill() == -signal.SIGKILL

    await agent_up.start()
    await world.ada.wait_for(worker_bot(1), lambda m: "continues on" in m.text
                             and task_id in m.text, 40)
    task = await _until_state(world, task_id, TaskState.COMPLETED, timeout=40)
    assert task.attempts == 2 and task.worker == "worker1"
    origin = agent_up.origin  # type: ignore[attr-defined]
    assert show(origin, f"fleetgram/{task_id}", "part1.txt") == "written before the crash\n"
    await agent_up.kill(signal.SIGINT)
