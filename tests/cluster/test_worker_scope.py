"""A worker may write only its own tasks and its own Lease, on the chart as installed: each slot
runs as its own ServiceAccount, the worker Role grants the verbs, and the chart's
ValidatingAdmissionPolicy (evaluated by the emulated API server with a real CEL interpreter)
narrows every write to the worker's own objects. Here worker2's credentials try to touch
worker1's things, as a compromised worker pod would."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest

from fleetgram.kube.objects import lease_manifest
from tests.cluster.harness import NS, POOL, Cluster
from tests.e2e.harness import World
from tests.emulators.kube_api import KubeEmulator

pytestmark = [pytest.mark.k8s, pytest.mark.postgres]

GROUP, VERSION = "fleetgram.dev", "v1alpha1"


def slot_account(cluster: Cluster, slot: int) -> str:
    (pool,) = [o for o in cluster.objects if o["kind"] == "WorkerPool"]
    return pool["spec"]["tokenSecrets"][slot - 1]["serviceAccountName"]


def as_worker(cluster: Cluster, slot: int) -> Any:
    path = cluster.kubeconfig_for(slot_account(cluster, slot))
    return kubernetes.config.new_client_from_config(config_file=path)


def bottask(name: str, *, pinned: str | None = None, worker: str | None = None) -> dict:
    spec: dict[str, Any] = {"prompt": "p", "title": "p", "userId": 1111, "chatId": 1111,
                            "source": "master", "priority": 5}
    if pinned:
        spec["pinnedWorker"] = pinned
    obj: dict[str, Any] = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "BotTask",
                           "metadata": {"name": name, "namespace": NS}, "spec": spec}
    return obj


def assigned(emu: KubeEmulator, name: str, worker: str) -> None:
    """A task the operator assigned to `worker` (written as the cluster admin)."""
    emu.create(bottask(name), namespace=NS)
    emu.patch("bottasks", name, {"status": {"phase": "Assigned", "worker": worker}}, NS,
              subresource="status")
    emu.patch("bottasks", name, {"metadata": {"labels": {"fleetgram.dev/worker": worker}}}, NS)


def refused(call: Any) -> str:
    with pytest.raises(kubernetes.client.ApiException) as denied:
        call()
    assert denied.value.status == 403
    return json.loads(denied.value.body)["message"]


@pytest.fixture
def cluster(kube_emulator: KubeEmulator, world: World) -> Cluster:
    return Cluster(kube_emulator, world, tokens=2, minWorkers=0, maxWorkers=2)


def test_a_worker_may_change_its_own_task_but_not_another_workers(
        kube_emulator: KubeEmulator, cluster: Cluster) -> None:
    assigned(kube_emulator, "t-one", "worker1")
    assigned(kube_emulator, "t-two", "worker2")
    tasks = kubernetes.client.CustomObjectsApi(as_worker(cluster, 2))
    running = {"status": {"phase": "Running", "worker": "worker2"}}
    tasks.patch_namespaced_custom_object_status(GROUP, VERSION, NS, "bottasks", "t-two", running)
    message = refused(lambda: tasks.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, "bottasks", "t-one", running))
    assert "a worker may change only its own tasks" in message
    refused(lambda: tasks.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "bottasks", "t-one", {"spec": {"cancel": True}}))
    assert cluster.status("t-one")["phase"] == "Assigned"
    assert cluster.status("t-two")["phase"] == "Running"
    assert len(kube_emulator.take_admission_denials()) == 2  # the refusals above, no others


def test_a_worker_may_create_only_tasks_pinned_to_itself(
        kube_emulator: KubeEmulator, cluster: Cluster) -> None:
    tasks = kubernetes.client.CustomObjectsApi(as_worker(cluster, 2))
    tasks.create_namespaced_custom_object(GROUP, VERSION, NS, "bottasks",
                                          bottask("t-mine", pinned="worker2"))
    message = refused(lambda: tasks.create_namespaced_custom_object(
        GROUP, VERSION, NS, "bottasks", bottask("t-theirs", pinned="worker1")))
    assert "a worker may create only tasks pinned to itself" in message
    refused(lambda: tasks.create_namespaced_custom_object(
        GROUP, VERSION, NS, "bottasks", bottask("t-anyone")))
    assert cluster.task("t-mine") and not cluster.task("t-theirs")
    assert len(kube_emulator.take_admission_denials()) == 2


def test_a_worker_may_renew_only_its_own_lease(
        kube_emulator: KubeEmulator, cluster: Cluster) -> None:
    leases = kubernetes.client.CoordinationV1Api(as_worker(cluster, 2))
    leases.create_namespaced_lease(NS, lease_manifest(POOL, "worker2", NS, 10))
    message = refused(lambda: leases.create_namespaced_lease(
        NS, lease_manifest(POOL, "worker1", NS, 10)))
    assert "a worker may write only its own Lease" in message
    kube_emulator.create(lease_manifest(POOL, "worker1", NS, 10), namespace=NS)
    renew = {"spec": {"holderIdentity": "worker2"}}
    leases.patch_namespaced_lease(f"{POOL}-worker2", NS, renew)
    refused(lambda: leases.patch_namespaced_lease(f"{POOL}-worker1", NS, renew))
    assert kube_emulator.get("leases", f"{POOL}-worker1", NS)["spec"]["holderIdentity"] == \
        "worker1"
    assert len(kube_emulator.take_admission_denials()) == 2


def test_the_policy_does_not_judge_the_master_or_the_operator(
        kube_emulator: KubeEmulator, cluster: Cluster) -> None:
    master = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(
        config_file=cluster.kubeconfig_for(cluster.service_accounts["master"])))
    master.create_namespaced_custom_object(GROUP, VERSION, NS, "bottasks", bottask("t-master"))
    assert cluster.task("t-master")
