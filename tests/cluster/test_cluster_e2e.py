"""Kubernetes mode end to end: the seed's user stories with every part running (see
tests/cluster/harness.py)."""

from __future__ import annotations

import time

import pytest

from fleetgram.domain import TaskState
from tests.cluster.harness import NS, Cluster
from tests.e2e.harness import MASTER, World, wait_until, worker_bot
from tests.emulators.kube_api import KubeEmulator

pytestmark = [pytest.mark.k8s, pytest.mark.postgres, pytest.mark.e2e]


async def test_three_prompts_run_in_parallel_on_three_worker_deployments(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 60
    cluster = Cluster(kube_emulator, world, minWorkers=3, maxWorkers=3, leaseSeconds=10)
    async with cluster.running():
        await world.open_chats(world.ada, workers=3)
        ids = [await world.prompt(p) for p in
               ("write the code", "write the tests", "write the docs")]
        await wait_until(lambda: [cluster.phase(i) for i in ids] == ["Completed"] * 3, 40,
                         "three completed")
        tasks = [await cluster.master.store.get_task(i) for i in ids]
        assert sorted(t.worker or "" for t in tasks if t) == ["worker1", "worker2", "worker3"]
        first_done = min(t.completed_at for t in tasks if t and t.completed_at)
        assert all(t and t.started_at and t.started_at < first_done for t in tasks)
        assert cluster.deployments() == [
            "fleetgram-worker1", "fleetgram-worker2", "fleetgram-worker3"]
        for n in (1, 2, 3):
            await world.ada.wait_for_text(worker_bot(n), "✅", timeout=15)
        await world.ada.wait_for_text(MASTER, "done by", timeout=15)
        assert all(t and t.state == TaskState.COMPLETED for t in tasks)


async def test_cancel_of_a_running_cluster_task_stops_its_stream(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 10
    cluster = Cluster(kube_emulator, world, minWorkers=1, maxWorkers=3, leaseSeconds=10)
    async with cluster.running():
        await world.open_chats(world.ada, workers=3)
        task_id = await world.prompt("a very slow essay")
        await wait_until(lambda: cluster.phase(task_id) == "Running", 20, "running")
        asked = time.monotonic()
        await world.ada.send(MASTER, f"/cancel {task_id}")
        await world.claude.wait_cancelled(1, timeout=2.0)
        assert time.monotonic() - asked < 2.0
        await wait_until(lambda: cluster.phase(task_id) == "Cancelled", 10, "cancelled")
        await world.ada.wait_for_text(worker_bot(1), f"{task_id} cancelled")
        assert cluster.task(task_id)["spec"]["cancel"] is True


async def test_worker_killed_mid_task_lease_expires_and_another_worker_finishes_it(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 8
    cluster = Cluster(kube_emulator, world, minWorkers=2, maxWorkers=3, leaseSeconds=5)
    async with cluster.running():
        await world.open_chats(world.ada, workers=3)
        await wait_until(lambda: len(cluster.kubelet.pods) >= 2, 20, "two workers")
        task_id = await world.prompt("@worker1 survive the crash")
        await wait_until(lambda: cluster.phase(task_id) == "Running", 20, "running")
        # The user pinned it to worker1; unpin it so that any worker may take it over.
        kube_emulator.patch("bottasks", task_id, {"spec": {"pinnedWorker": None}}, NS)
        await cluster.kubelet.kill("fleetgram-worker1")
        world.claude.tokens_per_second = 2000
        await wait_until(lambda: cluster.phase(task_id) == "Completed", 40, "completed")
        status = cluster.status(task_id)
        assert status["attempts"] == 2 and status["worker"] != "worker1"
        await world.ada.wait_for_text(MASTER, f"{task_id} went back", 15)
