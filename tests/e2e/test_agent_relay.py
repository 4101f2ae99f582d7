"""Agent mode through the agent relay (Kubernetes: the pod's `agent` container): the CLI and
every command it runs are started by the relay, not by the worker, and behave the same."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram.domain import TaskState
from fleetgram.engines.launcher import bundled_cli
from fleetgram.engines.relay import Relay
from tests.e2e.agent_world import agent_overrides, make_origin, show
from tests.e2e.harness import MASTER, MASTER_TOKEN, World, wait_task, wait_until, worker_bot
from tests.emulators.agent_script import AgentStory, bash, install, say, tool_results, write

pytestmark = pytest.mark.e2e

W1 = worker_bot(1)


@pytest.fixture
async def relay() -> AsyncIterator[tuple[Relay, str]]:
    relay = Relay(str(bundled_cli()))
    server = await relay.serve("127.0.0.1", 0)
    try:
        yield relay, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_task_runs_through_the_relay_and_lands_on_its_branch(
    world: World, tmp_path: Path, relay: tuple[Relay, str]
) -> None:
    instance, address = relay
    origin = make_origin(tmp_path)
    install(world.claude, AgentStory("relay hello", [
        write("hello.py", "print('relayed')\n"), bash("python3 hello.py; env"), say("Done."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, origin, AGENT_RELAY=address)) as fleet:
        task_id = await world.prompt("relay hello")
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=30)
    assert instance.started == 1 and instance.running == 0
    assert show(origin, f"fleetgram/{task_id}", "hello.py") == "print('relayed')\n"
    seen = json.dumps(tool_results(world.claude.requests[-1], "relay hello"))
    assert "relayed" in seen and "AGENT_RELAY" not in seen and MASTER_TOKEN not in seen


async def test_cancel_through_the_relay_stops_the_command_within_two_seconds(
    world: World, tmp_path: Path, relay: tuple[Relay, str]
) -> None:
    import time

    instance, address = relay
    marker = tmp_path / "slept-through.txt"
    started = tmp_path / "sleeping"
    install(world.claude, AgentStory("relay sleep", [
        bash(f"touch {started} && python3 -c 'import time; time.sleep(60)' && touch {marker}"),
        say("Slept."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None, AGENT_RELAY=address)) as fleet:
        task_id = await world.prompt("relay sleep")
        await wait_until(started.exists, 30, "the command to start")
        asked = time.monotonic()
        await world.ada.send(MASTER, f"/cancel {task_id}")
        await wait_task(fleet, task_id, TaskState.CANCELLED, timeout=10)
        stopped = time.monotonic() - asked
        await wait_until(lambda: instance.running == 0, 10, "the relay's CLI to end")
    assert stopped < 2.0, f"the task took {stopped:.2f}s to stop"
    assert not marker.exists()
