"""Kubernetes mode end to end, continued: pinning, direct messages, the queue commands,
cancelling, scaling with the real bots, an operator restart mid-scale, kubectl-style YAML."""

from __future__ import annotations

import kubernetes
import pytest
import yaml

from fleetgram.kube.objects import BOTTASKS, GROUP, VERSION
from tests.cluster.harness import NS, Cluster
from tests.e2e.harness import ADA, MASTER, World, wait_until, worker_bot
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import assignments_per_task, deployments_created, double_bookings

pytestmark = [pytest.mark.k8s, pytest.mark.postgres, pytest.mark.e2e]


async def test_pinned_prompt_starts_its_stopped_worker_and_runs_only_there(
    kube_emulator: KubeEmulator, world: World
) -> None:
    cluster = Cluster(kube_emulator, world, minWorkers=1, maxWorkers=3, leaseSeconds=10)
    async with cluster.running():
        await world.open_chats(world.ada, workers=3)
        await wait_until(lambda: cluster.deployments() == ["fleetgram-worker1"], 20, "worker1")
        task_id = await world.prompt("@worker2 write the tests")
        await wait_until(lambda: cluster.phase(task_id) == "Completed", 30, "completed")
        assert cluster.status(task_id)["worker"] == "worker2"
        assert "fleetgram-worker2" in cluster.deployments()
        await world.ada.wait_for_text(worker_bot(2), f"✅ {task_id} done", 10)
        assert not any(task_id in t for t in world.ada.bot_texts(worker_bot(1)))


async def test_writing_to_a_worker_directly_creates_a_bottask_shown_by_queue_and_workers(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 15
    cluster = Cluster(kube_emulator, world, minWorkers=1, maxWorkers=3, leaseSeconds=10)
    async with cluster.running():
        await world.open_chats(world.ada, workers=3)
        await wait_until(lambda: cluster.kubelet.pods, 20, "a worker pod")
        await world.ada.send(worker_bot(1), "explain the build system")

        def running_task() -> str | None:
            for obj in kube_emulator.objects(BOTTASKS, NS):
                if (obj.get("status") or {}).get("phase") == "Running":
                    return str(obj["metadata"]["name"])
            return None

        task_id = await wait_until(running_task, 20, "the direct task running")
        assert cluster.task(task_id)["spec"]["source"] == "direct"
        await world.ada.send(MASTER, "/queue")
        queue = await world.ada.wait_for_text(MASTER, "Queue:")
        assert task_id in queue.text and "on worker1" in queue.text
        await world.ada.send(MASTER, "/workers")
        workers = await world.ada.wait_for_text(MASTER, "Workers:")
        assert f"worker1 @fleet_worker1_bot — busy on {task_id}" in workers.text
        assert "worker3 — stopped" in workers.text
        world.claude.tokens_per_second = 2000
        await wait_until(lambda: cluster.phase(task_id) == "Completed", 30, "completed")
        await world.ada.wait_for_text(worker_bot(1), f"✅ {task_id} done", 10)


async def test_cancelled_pending_cluster_task_is_never_assigned(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 15
    cluster = Cluster(kube_emulator, world, minWorkers=1, maxWorkers=1, leaseSeconds=10)
    async with cluster.running():
        await world.open_chats(world.ada, workers=3)
        busy = await world.prompt("keep the only worker busy")
        await wait_until(lambda: cluster.phase(busy) == "Running", 20, "running")
        waiting = await world.prompt("never run me")
        await world.ada.send(MASTER, f"/cancel {waiting}")
        await world.ada.wait_for_text(MASTER, "cancelled before it started")
        assert cluster.phase(waiting) == "Cancelled"
        world.claude.tokens_per_second = 2000
        await wait_until(lambda: cluster.phase(busy) == "Completed", 30, "busy done")
        assert assignments_per_task(kube_emulator)[waiting] == 0
        assert cluster.phase(waiting) == "Cancelled"


async def test_cluster_scales_up_past_the_threshold_and_down_after_the_delay(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 25
    cluster = Cluster(kube_emulator, world, tokens=5, minWorkers=1, maxWorkers=5,
                      scaleUpThreshold=3, scaleDownDelaySeconds=1, leaseSeconds=10)
    async with cluster.running():
        await world.open_chats(world.ada, workers=5)
        await wait_until(lambda: cluster.deployments() == ["fleetgram-worker1"], 20, "min 1")
        ids = [await world.prompt(f"job number {i}") for i in range(8)]
        await wait_until(lambda: len(cluster.deployments()) >= 4, 30, "scale up to 4+")
        assert len(cluster.deployments()) <= 5
        await wait_until(lambda: all(cluster.phase(i) == "Completed" for i in ids), 60,
                         "all eight done")
        await wait_until(lambda: len(cluster.deployments()) <= 2, 30, "scale down")
        status = (kube_emulator.get("workerpools", "fleetgram", NS) or {})["status"]
        assert status["lastScale"]["action"] == "stop"
        assert not double_bookings(kube_emulator)


async def test_operator_restarted_mid_scale_duplicates_nothing(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.tokens_per_second = 25
    cluster = Cluster(kube_emulator, world, tokens=5, minWorkers=1, maxWorkers=5,
                      scaleUpThreshold=3, scaleDownDelaySeconds=60, leaseSeconds=10)
    async with cluster.bots():
        await world.open_chats(world.ada, workers=5)
        with cluster.operator():
            await wait_until(lambda: cluster.deployments(), 20, "worker1")
            ids = [await world.prompt(f"job number {i}") for i in range(8)]
            await wait_until(lambda: len(cluster.deployments()) >= 2, 30, "scaling begun")
        # The operator is gone mid-scale; a new one takes over.
        with cluster.operator():
            await wait_until(lambda: all(cluster.phase(i) == "Completed" for i in ids), 60,
                             "all eight done")
    assert all(count == 1 for count in deployments_created(kube_emulator).values())
    assert all(assignments_per_task(kube_emulator)[i] == 1 for i in ids)
    assert not double_bookings(kube_emulator)


BOTTASK_YAML = """
apiVersion: fleetgram.dev/v1alpha1
kind: BotTask
metadata:
  name: t-kubec
  namespace: fleetgram
spec:
  prompt: summarise the release notes
  title: release notes
  priority: {priority}
  userId: {user}
  chatId: {user}
"""


async def test_a_bottask_applied_as_yaml_runs_and_a_bad_one_is_refused(
    kube_emulator: KubeEmulator, world: World
) -> None:
    world.claude.script("The release adds cluster mode.", when="release notes")
    cluster = Cluster(kube_emulator, world, minWorkers=1, maxWorkers=3, leaseSeconds=10)
    api = kubernetes.client.CustomObjectsApi()
    async with cluster.running():
        await world.open_chats(world.ada, workers=3)
        bad = yaml.safe_load(BOTTASK_YAML.format(priority=11, user=ADA))
        with pytest.raises(kubernetes.client.ApiException) as refused:
            api.create_namespaced_custom_object(GROUP, VERSION, NS, BOTTASKS, bad)
        assert refused.value.status == 422 and "spec.priority" in str(refused.value.body)

        good = yaml.safe_load(BOTTASK_YAML.format(priority=2, user=ADA))
        api.create_namespaced_custom_object(GROUP, VERSION, NS, BOTTASKS, good)
        await wait_until(lambda: cluster.phase("t-kubec") == "Completed", 30, "completed")
        assert cluster.status("t-kubec")["summary"] == "The release adds cluster mode."
        await world.ada.wait_for_text(worker_bot(1), "The release adds cluster mode.", 10)
        await world.ada.wait_for_text(MASTER, "t-kubec done by", 10)
