"""The master and a worker bot, unchanged, on the cluster queue: the master pod's Fleet in
Kubernetes mode and a worker pod's WorkerBot, each with its own ClusterStore, against emulated
Telegram, Claude and Kubernetes API. The test plays the operator: it assigns pending BotTasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleetgram.config import Settings
from fleetgram.domain import TaskState, WorkerSlot
from fleetgram.emulators.claude_api import ClaudeEmulator
from fleetgram.emulators.telegram_api import TelegramEmulator
from fleetgram.fleet import Fleet, runner_factory
from fleetgram.kube.objects import LABEL_PHASE, LABEL_WORKER, lease_name, task_of
from fleetgram.kube.queue import ClusterStore
from fleetgram.store import open_store
from fleetgram.worker.bot import WorkerBot
from tests.e2e.harness import ADA, MALLORY, MASTER, World, add_bots, worker_bot
from tests.emulators.kube_api import KubeEmulator
from tests.kube.support import NS, POOL, assign, bottask, create_pool

pytestmark = [pytest.mark.k8s, pytest.mark.e2e]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = ClaudeEmulator(api_key="sk-ant-test-key-0001", tokens_per_second=400.0)
    await telegram.start()
    await claude.start()
    add_bots(telegram, workers=2)
    world = World(
        telegram, claude, f"sqlite:///{tmp_path / 'fleet.sqlite3'}",
        telegram.add_user(ADA, "Ada", "ada"), telegram.add_user(MALLORY, "Mallory", "mallory"),
    )
    try:
        yield world
    finally:
        await claude.stop()
        await telegram.stop()


async def play_operator(emu: KubeEmulator, workers: list[str]) -> None:
    """Assign each pending BotTask to a worker that has none (the operator's job)."""
    while True:
        tasks = [task_of(o) for o in emu.objects("bottasks", NS)]
        busy = {t.worker for t in tasks if t.state.active}
        free = [w for w in workers if w not in busy]
        for task in sorted((t for t in tasks if t.state is TaskState.PENDING),
                           key=lambda t: (t.priority, t.created_at)):
            if not free:
                break
            assign(emu, task.id, free.pop(0), datetime.now(UTC))
        await asyncio.sleep(0.05)


async def idle_slots(store: ClusterStore, timeout: float = 10.0) -> list[WorkerSlot]:
    """The slots once none of them is on a task (or as they are when `timeout` runs out)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        slots = await store.get_slots()
        if all(s.current_task is None for s in slots):
            return slots
        if asyncio.get_running_loop().time() > deadline:
            return slots
        await asyncio.sleep(0.05)


def cluster_settings(world: World) -> Settings:
    return world.settings(
        workers=2, FLEETGRAM_MODE="kubernetes", FLEETGRAM_NAMESPACE=NS, FLEETGRAM_POOL=POOL,
    )


async def test_a_prompt_runs_through_bottasks_from_master_to_worker(
    world: World, kube_emulator: KubeEmulator
) -> None:
    emu = kube_emulator
    create_pool(emu, slots=2)
    world.claude.script("Ship **it**.", when="release")
    settings = cluster_settings(world)
    fleet = Fleet(settings)  # the master pod
    assert isinstance(fleet.store, ClusterStore) and fleet.orchestrator is None
    worker_store = ClusterStore(settings, open_store(settings.database_url))  # a worker pod
    worker = WorkerBot("worker1", settings.token_for("worker1"), settings, worker_store,
                       runner_factory(settings)())
    operator = asyncio.create_task(play_operator(emu, ["worker1"]))
    await fleet.start()
    await worker_store.open()
    try:
        assert await worker.start()
        await world.open_chats(world.ada, workers=2)
        task_id = await world.prompt("plan the release")

        done = await world.ada.wait_for_text(MASTER, f"{task_id} done by worker1", timeout=15)
        assert "@fleet_worker1_bot" in done.text
        final = await world.ada.wait_for_text(worker_bot(1), f"✅ {task_id} done")
        assert "Ship it." in final.text

        obj = bottask(emu, task_id)
        assert obj["status"]["phase"] == "Completed" and obj["status"]["attempts"] == 1
        assert obj["status"]["summary"].startswith("Ship **it**.")
        assert obj["status"]["usage"]["outputTokens"] > 0
        assert obj["metadata"]["labels"] == {LABEL_PHASE: "completed", LABEL_WORKER: "worker1"}
        record = await fleet.store.get_task(task_id)
        assert record is not None and record.state is TaskState.COMPLETED
        assert record.result is not None and record.result.startswith("Ship **it**.")
        assert record.usage.output_tokens > 0

        lease = emu.get("leases", lease_name(POOL, "worker1"), NS)
        assert lease is not None and lease["spec"]["holderIdentity"] == "worker1"
        # The worker records itself idle once the answer is out (right after the last message).
        w1, w2 = await idle_slots(fleet.store)
        assert (w1.name, w1.username, w1.current_task) == ("worker1", "fleet_worker1_bot", None)
        assert w2.heartbeat_at is None

        # The user cancels a running task from the master; the worker stops it.
        # Slow enough (64 tokens: 16 s) that the cancel lands mid-stream on a loaded machine.
        world.claude.tokens_per_second = 4
        long_id = await world.prompt("write a long essay")
        await world.ada.wait_for_text(MASTER, f"{long_id} started", timeout=10)
        await world.ada.send(MASTER, f"/cancel {long_id}")
        await world.ada.wait_for_text(MASTER, f"Stopping {long_id}", timeout=10)
        await world.ada.wait_for_text(worker_bot(1), f"{long_id} cancelled", timeout=10)
        assert bottask(emu, long_id)["status"]["phase"] == "Cancelled"
    finally:
        operator.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await operator
        await worker.stop(drain=False)
        await worker_store.close()
        await fleet.stop()
