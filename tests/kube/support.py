"""Helpers of the cluster tests: the operator's part, done by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetgram.kube.objects import (
    LABEL_PHASE,
    LABEL_POOL,
    LABEL_SLOT,
    LABEL_WORKER,
    assignment_status,
    deployment_name,
    task_of,
)
from tests.emulators.kube_api import KubeEmulator

NS = "fleetgram"
POOL = "fleetgram"


def bottask(emu: KubeEmulator, task_id: str) -> dict[str, Any]:
    obj = emu.get("bottasks", task_id, NS)
    assert obj is not None, f"no BotTask {task_id}"
    return obj


def labels(emu: KubeEmulator, task_id: str) -> dict[str, str]:
    return dict(bottask(emu, task_id)["metadata"].get("labels") or {})


def assign(emu: KubeEmulator, task_id: str, worker: str, now: datetime) -> None:
    """What the operator does: the status first (attempts + 1, conditional on the version it
    read), then the labels."""
    obj = bottask(emu, task_id)
    status = assignment_status(task_of(obj), worker, now)
    emu.patch("bottasks", task_id, {
        "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": status,
    }, namespace=NS, subresource="status")
    emu.patch("bottasks", task_id, {"metadata": {"labels": {
        LABEL_WORKER: worker, LABEL_PHASE: "assigned"}}}, namespace=NS)


def create_pool(emu: KubeEmulator, slots: int) -> None:
    emu.create({
        "apiVersion": "fleetgram.dev/v1alpha1", "kind": "WorkerPool",
        "metadata": {"name": POOL, "namespace": NS},
        "spec": {
            "tokenSecrets": [{"name": f"token-{n}"} for n in range(1, slots + 1)],
            "template": {"image": "fleetgram-worker:test"},
        },
    })


def create_deployment(emu: KubeEmulator, slot: str) -> dict[str, Any]:
    """A worker Deployment as the operator makes it (the parts get_slots reads)."""
    labels = {LABEL_POOL: POOL, LABEL_SLOT: slot}
    return emu.create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment_name(POOL, slot), "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "worker", "image": "fleetgram-worker:test",
                    "env": [{"name": "WORKER_SLOT", "value": slot}],
                }]},
            },
        },
    })
