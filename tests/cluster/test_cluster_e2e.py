"""Kubernetes mode end to end: the real kopf operator, the master in cluster mode and worker
"pods" started by a fake kubelet from the operator's Deployments, against the emulated API
server, the emulated Telegram and Claude, and the real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.main import build_registry
from fleetgram.operator.outbox import StoreOutbox
from fleetgram.operator.reconcile import OperatorConfig

from fleetgram.config import load_settings
from fleetgram.domain import TaskState
from fleetgram.fleet import Fleet
from fleetgram.kube.objects import API_VERSION
from tests.cluster.kubelet import FakeKubelet
from tests.e2e.harness import ADA, MALLORY, World, add_bots, fleet_env, wait_until, worker_bot
from tests.e2e.harness import worker_token as token_of
from tests.emulators import kube_api
from tests.emulators.claude_api import ClaudeEmulator
from tests.emulators.kube_api import KubeEmulator
from tests.emulators.telegram_api import TelegramEmulator
from tests.operator.harness import OperatorThread
from tests.pg import create_database_or_fail, drop_database

pytestmark = [pytest.mark.k8s, pytest.mark.postgres, pytest.mark.e2e]
kube_emulator = kube_api.kube_emulator  # the fixture
NS = "fleetgram"


@pytest.fixture
async def world() -> AsyncIterator[World]:
    telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = ClaudeEmulator(api_key="sk-ant-test-key-0001", tokens_per_second=400.0)
    await telegram.start()
    await claude.start()
    add_bots(telegram, 3)
    url = await create_database_or_fail("fg_cluster")
    world = World(telegram, claude, url, telegram.add_user(ADA, "Ada", "ada"),
                  telegram.add_user(MALLORY, "Mallory"))
    try:
        yield world
    finally:
        await claude.stop()
        await telegram.stop()
        await drop_database(url)


def cluster_env(world: World) -> dict[str, str]:
    env = fleet_env(world.telegram, world.claude, world.database_url, 3)
    env.update(FLEETGRAM_MODE="kubernetes", FLEETGRAM_NAMESPACE=NS, FLEETGRAM_POOL="fleetgram")
    return env


def make_pool(emu: KubeEmulator, **spec: Any) -> None:
    for n in (1, 2, 3):
        emu.create({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": f"worker{n}-token", "namespace": NS},
                    "stringData": {"token": token_of(n)}})
    body = {
        "tokenSecrets": [{"name": f"worker{n}-token"} for n in (1, 2, 3)],
        "template": {"image": "fleetgram-worker:test", "model": "claude-sonnet-5-5",
                     "maxTokens": 1024},
        **spec,
    }
    emu.create({"apiVersion": API_VERSION, "kind": "WorkerPool",
                "metadata": {"name": "fleetgram", "namespace": NS}, "spec": body})


async def test_three_prompts_run_in_parallel_on_three_worker_deployments(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 60
    make_pool(kube_emulator, minWorkers=3, maxWorkers=3, leaseSeconds=10)
    env = cluster_env(world)
    registry, _ = build_registry(KubernetesApi(), outbox=StoreOutbox(world.database_url),
                                 config=OperatorConfig(interval=0.3))
    kubelet = FakeKubelet(kube_emulator, NS, {k: v for k, v in env.items()
                                              if k != "WORKER_TOKEN_POOL"})
    with OperatorThread(registry):
        await kubelet.start()
        master = Fleet(load_settings(env, dotenv=None))
        await master.start()
        try:
            await world.open_chats(world.ada, workers=3)
            ids = [await world.prompt(p) for p in
                   ("write the code", "write the tests", "write the docs")]

            def phases() -> list[str]:
                objs = {o["metadata"]["name"]: o for o in kube_emulator.objects("bottasks", NS)}
                return [(objs[i].get("status") or {}).get("phase", "") for i in ids]

            await wait_until(lambda: phases() == ["Completed"] * 3, 40, "three completed")
            tasks = [await master.store.get_task(i) for i in ids]
            assert sorted(t.worker or "" for t in tasks if t) == ["worker1", "worker2",
                                                                  "worker3"]
            first_done = min(t.completed_at for t in tasks if t and t.completed_at)
            assert all(t and t.started_at and t.started_at < first_done for t in tasks)
            deployments = kube_emulator.objects("deployments", NS)
            assert sorted(d["metadata"]["name"] for d in deployments) == [
                "fleetgram-worker1", "fleetgram-worker2", "fleetgram-worker3"]
            for n in (1, 2, 3):
                await world.ada.wait_for_text(worker_bot(n), "✅", timeout=15)
            await world.ada.wait_for_text("fleet_master_bot", "done by", timeout=15)
            assert all(t and t.state == TaskState.COMPLETED for t in tasks)
        finally:
            await master.stop()
            await kubelet.stop()


class Cluster:
    def __init__(self, emu: KubeEmulator, world: World, **pool: Any) -> None:
        make_pool(emu, **pool)
        self.emu, self.world = emu, world
        self.env = cluster_env(world)
        self.registry, _ = build_registry(KubernetesApi(),
                                          outbox=StoreOutbox(world.database_url),
                                          config=OperatorConfig(interval=0.3))
        self.kubelet = FakeKubelet(emu, NS, {k: v for k, v in self.env.items()
                                             if k != "WORKER_TOKEN_POOL"})
        self.master = Fleet(load_settings(self.env, dotenv=None))

    def phase(self, task_id: str) -> str:
        obj = self.emu.get("bottasks", task_id, NS) or {}
        return (obj.get("status") or {}).get("phase", "")

    def status(self, task_id: str) -> dict[str, Any]:
        return (self.emu.get("bottasks", task_id, NS) or {}).get("status") or {}


async def test_cancel_of_a_running_cluster_task_stops_its_stream(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 10
    cluster = Cluster(kube_emulator, world, minWorkers=1, maxWorkers=3, leaseSeconds=10)
    with OperatorThread(cluster.registry):
        await cluster.kubelet.start()
        await cluster.master.start()
        try:
            await world.open_chats(world.ada, workers=3)
            task_id = await world.prompt("a very slow essay")
            await wait_until(lambda: cluster.phase(task_id) == "Running", 20, "running")
            await world.ada.send("fleet_master_bot", f"/cancel {task_id}")
            await world.claude.wait_cancelled(1, timeout=3.0)
            await wait_until(lambda: cluster.phase(task_id) == "Cancelled", 10, "cancelled")
            await world.ada.wait_for_text(worker_bot(1), f"{task_id} cancelled")
            spec = (kube_emulator.get("bottasks", task_id, NS) or {})["spec"]
            assert spec["cancel"] is True
        finally:
            await cluster.master.stop()
            await cluster.kubelet.stop()


async def test_worker_killed_mid_task_lease_expires_and_another_worker_finishes_it(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 8
    cluster = Cluster(kube_emulator, world, minWorkers=2, maxWorkers=3, leaseSeconds=5)
    with OperatorThread(cluster.registry):
        await cluster.kubelet.start()
        await cluster.master.start()
        try:
            await world.open_chats(world.ada, workers=3)
            await wait_until(lambda: len(cluster.kubelet.pods) >= 2, 20, "two workers")
            task_id = await world.prompt("@worker1 survive the crash")
            await wait_until(lambda: cluster.phase(task_id) == "Running", 20, "running")
            # Unpin it so that any worker may take it over: the user's pin was to worker1.
            kube_emulator.patch("bottasks", task_id, {"spec": {"pinnedWorker": None}}, NS)
            await cluster.kubelet.kill("fleetgram-worker1")
            world.claude.tokens_per_second = 2000
            await wait_until(lambda: cluster.phase(task_id) == "Completed", 40, "completed")
            status = cluster.status(task_id)
            assert status["attempts"] == 2 and status["worker"] != "worker1"
            await world.ada.wait_for_text("fleet_master_bot", f"{task_id} went back", 15)
        finally:
            await cluster.master.stop()
            await cluster.kubelet.stop()
