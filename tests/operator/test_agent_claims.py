"""The executor keeps agent workers' workspace claims (one PVC per slot) against the emulated
API server: created before the Deployment that mounts it, never changed or recreated."""

from __future__ import annotations

from typing import Any

import pytest

from fleetgram.operator.executor import Reconciler
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.reconcile import OperatorConfig
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import NS, make_pool, make_secrets, must

pytestmark = pytest.mark.k8s
kube_emulator = kube_api.kube_emulator  # the fixture

CLAIM = {"type": "persistentVolumeClaim", "size": "20Gi", "storageClassName": "standard"}


def reconciler() -> Reconciler:
    return Reconciler(KubernetesApi(), None, OperatorConfig())


def claims(emu: KubeEmulator) -> list[str]:
    return sorted(c["metadata"]["name"] for c in emu.objects("persistentvolumeclaims", NS))


def writes(emu: KubeEmulator, plural: str) -> list[str]:
    return [f"{c.type} {c.name}" for c in emu.changes(plural)]


async def test_a_round_creates_the_slots_claim_then_its_deployment(
        kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 2)
    pool = make_pool(emu, 2, minWorkers=1, engine="agent", workspace=CLAIM)
    out = await reconciler().reconcile(NS, "fleetgram")
    assert out is not None and not out.errors
    assert out.claims == ["fleetgram-worker1-workspace"]
    claim = must(emu, "persistentvolumeclaims", "fleetgram-worker1-workspace")
    assert claim["metadata"]["ownerReferences"][0]["uid"] == pool["metadata"]["uid"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert claim["spec"]["storageClassName"] == "standard"
    claim_rv = int(claim["metadata"]["resourceVersion"])
    deployment = must(emu, "deployments", "fleetgram-worker1")
    assert claim_rv < int(deployment["metadata"]["resourceVersion"])  # the claim came first


async def test_an_existing_claim_is_never_changed_nor_recreated(
        kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 1)
    make_pool(emu, 1, minWorkers=1, engine="agent", workspace=CLAIM)
    kept = emu.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "fleetgram-worker1-workspace", "namespace": NS},
                       "spec": {"accessModes": ["ReadWriteOnce"],
                                "resources": {"requests": {"storage": "50Gi"}}}})
    out = await reconciler().reconcile(NS, "fleetgram")
    assert out is not None and out.created == ["fleetgram-worker1"] and out.claims == []
    claim = must(emu, "persistentvolumeclaims", "fleetgram-worker1-workspace")
    assert claim["metadata"]["uid"] == kept["metadata"]["uid"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "50Gi"  # not shrunk to 20Gi
    assert writes(emu, "persistentvolumeclaims") == ["ADDED fleetgram-worker1-workspace"]


async def test_a_pool_switched_to_claims_gets_them_when_its_workers_are_replaced(
        kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 1)
    make_pool(emu, 1, minWorkers=1, engine="agent")  # emptyDir
    r = reconciler()
    assert (await r.reconcile(NS, "fleetgram")).created == [  # type: ignore[union-attr]
        "fleetgram-worker1"]
    assert claims(emu) == []
    emu.patch("workerpools", "fleetgram", {"spec": {"workspace": CLAIM}}, NS)
    out: Any = await r.reconcile(NS, "fleetgram")
    assert out.replaced == ["fleetgram-worker1"] and out.claims == [
        "fleetgram-worker1-workspace"]
    volumes = must(emu, "deployments", "fleetgram-worker1")["spec"]["template"]["spec"][
        "volumes"]
    assert {"name": "workspace", "persistentVolumeClaim": {
        "claimName": "fleetgram-worker1-workspace"}} in volumes


async def test_emptydir_and_chat_pools_make_no_claims(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 2)
    make_pool(emu, 2, minWorkers=2, scaleUpThreshold=0, engine="agent",
              workspace={"type": "emptyDir"})
    make_pool(emu, 2, name="chatty", minWorkers=1, workspace=CLAIM)  # chat: no workspace
    for name in ("fleetgram", "chatty", "fleetgram"):
        out = await reconciler().reconcile(NS, name)
        assert out is not None and not out.errors
    assert len(emu.objects("deployments", NS)) == 3
    assert claims(emu) == []
    assert not emu.requests(plural="persistentvolumeclaims")
