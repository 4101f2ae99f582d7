"""`fleetgram_scale_events_total` counts each scaling decision that was applied, once: a
Deployment created for a start, deleted for a stop; never a create that was refused."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from fleetgram.domain import utcnow
from fleetgram.operator.executor import Reconciler
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.reconcile import OperatorConfig
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import NS, make_pool, make_secrets, write_lease

pytestmark = pytest.mark.k8s
kube_emulator = kube_api.kube_emulator  # the fixture


def scale_events(action: str) -> float:
    return REGISTRY.get_sample_value("fleetgram_scale_events_total", {"action": action}) or 0.0


def reconciler() -> Reconciler:
    return Reconciler(KubernetesApi(), None, OperatorConfig())


async def test_a_start_is_counted_once(kube_emulator: KubeEmulator) -> None:
    make_secrets(kube_emulator, 3)
    make_pool(kube_emulator, 3, minWorkers=1)
    before = scale_events("start")
    out = await reconciler().reconcile(NS, "fleetgram")
    assert out is not None and out.created == ["fleetgram-worker1"]
    assert scale_events("start") - before == 1


async def test_a_refused_start_is_not_counted(kube_emulator: KubeEmulator) -> None:
    make_secrets(kube_emulator, 3, skip=[1])  # worker1's token Secret is missing
    make_pool(kube_emulator, 3, minWorkers=1)
    before = scale_events("start")
    out = await reconciler().reconcile(NS, "fleetgram")
    assert out is not None and out.created == [] and out.errors
    assert scale_events("start") == before


async def test_a_stop_is_counted_once(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 3)
    make_pool(emu, 3, minWorkers=3, maxWorkers=3, scaleDownDelaySeconds=0)
    r = reconciler()
    for _ in range(3):  # one start per round
        await r.reconcile(NS, "fleetgram")
        for dep in emu.objects("deployments", NS):
            slot = dep["metadata"]["labels"]["fleetgram.dev/slot"]
            write_lease(emu, "fleetgram", slot, renewed=utcnow(), ready=utcnow())
    assert len(emu.objects("deployments", NS)) == 3
    emu.patch("workerpools", "fleetgram", {"spec": {"minWorkers": 1}}, NS)  # 3 idle: too many
    before = scale_events("stop")
    stopped = []
    for _ in range(3):
        out = await r.reconcile(NS, "fleetgram")
        assert out is not None
        stopped += out.deleted
        for dep in emu.objects("deployments", NS):
            slot = dep["metadata"]["labels"]["fleetgram.dev/slot"]
            write_lease(emu, "fleetgram", slot, renewed=utcnow(), ready=utcnow())
    assert len(stopped) == scale_events("stop") - before >= 1
