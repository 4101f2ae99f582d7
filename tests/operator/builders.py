"""Plain-dict objects as the API server returns them, for the operator's pure tests."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetgram.kube.objects import (
    ANNOTATION_CREATED,
    ANNOTATION_CURRENT_TASK,
    ANNOTATION_ERROR,
    ANNOTATION_READY_AT,
    ANNOTATION_RESERVED_AT,
    ANNOTATION_RESERVED_TASK,
    ANNOTATION_STARTED_AT,
    ANNOTATION_USERNAME,
    API_VERSION,
    LABEL_PHASE,
    LABEL_POOL,
    LABEL_WORKER,
    iso,
    lease_name,
)
from fleetgram.operator.manifests import deployment_manifest

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NS = "fleetgram"
POOL = "fleetgram"
POOL_UID = "0c7b9d1e-0000-4000-8000-000000000001"


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def pool(tokens: int = 3, *, name: str = POOL, status: dict[str, Any] | None = None,
         template: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "minWorkers": 1, "maxWorkers": 5, "scaleUpThreshold": 3, "scaleDownDelaySeconds": 60,
        "leaseSeconds": 30, "maxAttempts": 3, "finishedTaskTTLSeconds": 3600,
        "tokenSecrets": [{"name": f"token-{i + 1}", "key": "token"} for i in range(tokens)],
        "template": template or {"image": "ghcr.io/fleetgram/worker:1", "model": "claude-x",
                                 "maxTokens": 2048},
    }
    body.update(spec)
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION, "kind": "WorkerPool",
        "metadata": {"name": name, "namespace": NS, "uid": POOL_UID, "generation": 2,
                     "resourceVersion": "5", "creationTimestamp": iso(ago(3600))},
        "spec": body,
    }
    if status is not None:
        obj["status"] = status
    return obj


_rv = iter(range(100, 1_000_000))


def task(name: str, phase: str = "Pending", *, worker: str | None = None, priority: int = 5,
         age: float = 60, attempts: int = 0, pinned: str | None = None, cancel: bool = False,
         completed_ago: float | None = None, pool_label: str | None = None,
         labels: dict[str, str] | None = None, rv: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"prompt": f"do {name}", "title": f"title {name}", "priority": priority,
                            "userId": 7, "chatId": 7, "source": "master", "cancel": cancel}
    if pinned:
        spec["pinnedWorker"] = pinned
    status: dict[str, Any] = {"phase": phase, "attempts": attempts}
    if worker:
        status["worker"] = worker
        status["assignedAt"] = iso(ago(max(age - 1, 0)))
    if completed_ago is not None:
        status["completedAt"] = iso(ago(completed_ago))
    all_labels = {LABEL_PHASE: phase.lower()}
    if worker and phase in ("Assigned", "Running"):
        all_labels[LABEL_WORKER] = worker
        all_labels[LABEL_POOL] = pool_label or POOL
    elif pool_label:
        all_labels[LABEL_POOL] = pool_label
    all_labels.update(labels or {})
    return {
        "apiVersion": API_VERSION, "kind": "BotTask",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                     "resourceVersion": rv or str(next(_rv)),
                     "creationTimestamp": ago(age).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "labels": all_labels,
                     "annotations": {ANNOTATION_CREATED: iso(ago(age))}},
        "spec": spec,
        "status": status,
    }


def deployment(slot: str, *, started_ago: float = 120, rv: str = "50",
               terminating: bool = False, reserved: str | None = None,
               reserved_ago: float = 0, the_pool: dict[str, Any] | None = None) -> dict[str, Any]:
    owner = the_pool or pool(max(3, int(slot.removeprefix("worker"))))
    index = int(slot.removeprefix("worker")) - 1
    obj = copy.deepcopy(deployment_manifest(owner, slot, index, ago(started_ago)))
    meta = obj["metadata"]
    meta.update({"uid": f"uid-dep-{slot}", "resourceVersion": rv, "generation": 1,
                 "creationTimestamp": iso(ago(started_ago))})
    if terminating:
        meta["deletionTimestamp"] = iso(ago(1))
    if reserved:
        meta["annotations"][ANNOTATION_RESERVED_TASK] = reserved
        meta["annotations"][ANNOTATION_RESERVED_AT] = iso(ago(reserved_ago))
    return obj


def lease(slot: str, *, renewed_ago: float = 2, ready_ago: float | None = 100,
          started_ago: float | None = None, username: str | None = None,
          current: str | None = None, error: str | None = None) -> dict[str, Any]:
    ann: dict[str, str] = {}
    if ready_ago is not None:
        ann[ANNOTATION_READY_AT] = iso(ago(ready_ago)) or ""
    if started_ago is not None:
        ann[ANNOTATION_STARTED_AT] = iso(ago(started_ago)) or ""
    if username:
        ann[ANNOTATION_USERNAME] = username
    if current:
        ann[ANNOTATION_CURRENT_TASK] = current
    if error:
        ann[ANNOTATION_ERROR] = error
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(POOL, slot), "namespace": NS, "annotations": ann,
                     "resourceVersion": "9"},
        "spec": {"holderIdentity": f"{slot}-pod", "leaseDurationSeconds": 30,
                 "renewTime": iso(ago(renewed_ago))},
    }


def ready_worker(slot: str, **lease_kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A worker that started 120 s ago, became ready 100 s ago and renewed 2 s ago."""
    lease_kw.setdefault("username", f"{slot}_bot")
    return deployment(slot), lease(slot, **lease_kw)
