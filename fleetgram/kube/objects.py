"""The cluster contract: how tasks, workers and leases look as Kubernetes objects.

Pure conversions and names, shared by the master and workers (the BotTask-backed queue) and
the kopf operator, so both sides agree by construction.

Attempts: `status.attempts` counts assignments. The operator adds one when it assigns a task to
a worker (phase Pending -> Assigned, written to /status with the task's resourceVersion, so a
task is never assigned twice); nobody else changes it. When a worker's Lease expires, each of
its Assigned/Running tasks goes back to Pending (worker cleared), or to Failed once attempts >=
the pool's spec.maxAttempts, or to Cancelled if spec.cancel was set.

Worker liveness (the Lease `lease_name(pool, slot)`, written by the worker itself):
spec.renewTime is the heartbeat (spec.holderIdentity the pod), and these annotations on it:
ANNOTATION_READY_AT (the bot answered getMe and polls), ANNOTATION_STARTED_AT (this process
started), ANNOTATION_USERNAME (@username from getMe), ANNOTATION_CURRENT_TASK (the task it runs,
absent when idle), ANNOTATION_ERROR (why it cannot start, e.g. a bad token; removed when it
starts well). Times are `iso()` strings.

Worker Deployments (`deployment_name(pool, slot)`, created and owned by the operator): labels
LABEL_POOL and LABEL_SLOT, ANNOTATION_STARTED_AT (when the operator created or last restarted
it), ANNOTATION_TEMPLATE_HASH (the pool template it was built from), and ANNOTATION_RESERVED_TASK
/ ANNOTATION_RESERVED_AT: the operator reserves the worker with a resourceVersion-guarded write
on its Deployment before it assigns a task, so two operator replicas never give one worker two
tasks at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fleetgram.domain import Task, TaskSource, TaskState, Usage, WorkerSlot
from fleetgram.kube.added_slots import token_slot_names

GROUP = "fleetgram.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
BOTTASKS = "bottasks"
WORKERPOOLS = "workerpools"

LABEL_WORKER = f"{GROUP}/worker"  # set when assigned: a worker watches only its own tasks
LABEL_PHASE = f"{GROUP}/phase"  # lower-case phase, for label selectors
LABEL_POOL = f"{GROUP}/pool"
LABEL_SLOT = f"{GROUP}/slot"
ANNOTATION_CREATED = f"{GROUP}/created-at"  # microsecond creation time: queue order by age
ANNOTATION_USERNAME = f"{GROUP}/username"
ANNOTATION_CURRENT_TASK = f"{GROUP}/current-task"
ANNOTATION_READY_AT = f"{GROUP}/ready-at"
ANNOTATION_STARTED_AT = f"{GROUP}/started-at"
ANNOTATION_ERROR = f"{GROUP}/error"
ANNOTATION_RESERVED_TASK = f"{GROUP}/reserved-task"  # on a worker Deployment: see the docstring
ANNOTATION_RESERVED_AT = f"{GROUP}/reserved-at"
ANNOTATION_TEMPLATE_HASH = f"{GROUP}/template-hash"

BOTTASK_KIND = "BotTask"
WORKERPOOL_KIND = "WorkerPool"
FINISHED_PHASES = frozenset({"Completed", "Failed", "Cancelled"})
ACTIVE_PHASES = frozenset({"Assigned", "Running"})

SUMMARY_MAX = 1000
PROMPT_MAX = 32000  # the CRD's spec.prompt maxLength
TITLE_MAX = 200  # the CRD's spec.title maxLength (longer titles are cut)

PHASE_OF = {
    TaskState.PENDING: "Pending",
    TaskState.ASSIGNED: "Assigned",
    TaskState.RUNNING: "Running",
    TaskState.COMPLETED: "Completed",
    TaskState.FAILED: "Failed",
    TaskState.CANCELLED: "Cancelled",
}
STATE_OF = {phase: state for state, phase in PHASE_OF.items()}


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def summary_of(result: str | None) -> str | None:
    if result is None:
        return None
    return result if len(result) <= SUMMARY_MAX else result[: SUMMARY_MAX - 1] + "…"


def deployment_name(pool: str, slot: str) -> str:
    return f"{pool}-{slot}"


def lease_name(pool: str, slot: str) -> str:
    return f"{pool}-{slot}"


def bottask_manifest(task: Task, namespace: str) -> dict[str, Any]:
    """A new BotTask for a pending task (the master creates it)."""
    spec: dict[str, Any] = {
        "prompt": task.prompt,
        "title": task.title[:TITLE_MAX],
        "priority": task.priority,
        "userId": task.user_id,
        "chatId": task.chat_id,
        "source": task.source.value,
        "cancel": task.cancel_requested,
    }
    if task.pinned_worker:
        spec["pinnedWorker"] = task.pinned_worker
    if task.message_id is not None:
        spec["messageId"] = task.message_id
    return {
        "apiVersion": API_VERSION,
        "kind": "BotTask",
        "metadata": {
            "name": task.id,
            "namespace": namespace,
            "labels": {LABEL_PHASE: "pending"},
            "annotations": {ANNOTATION_CREATED: iso(task.created_at)},
        },
        "spec": spec,
    }


def status_of(task: Task) -> dict[str, Any]:
    """The BotTask status for a task's current state (a short summary, never the full result)."""
    u = task.usage
    status: dict[str, Any] = {
        "phase": PHASE_OF[task.state],
        "attempts": task.attempts,
        "usage": {
            "inputTokens": u.input_tokens,
            "outputTokens": u.output_tokens,
            "cacheReadTokens": u.cache_read_tokens,
            "cacheWriteTokens": u.cache_write_tokens,
            "costUsd": u.cost_usd,
        },
    }
    optional = {
        "worker": task.worker,
        "assignedAt": iso(task.assigned_at),
        "startedAt": iso(task.started_at),
        "completedAt": iso(task.completed_at),
        "summary": summary_of(task.result),
        "error": task.error,
    }
    status.update({k: v for k, v in optional.items() if v is not None})
    return status


def task_of(obj: dict[str, Any]) -> Task:
    """A Task from a BotTask object (as the API returns it)."""
    meta = obj.get("metadata", {})
    spec = obj.get("spec", {})
    status = obj.get("status") or {}
    usage = status.get("usage") or {}
    created = parse_time((meta.get("annotations") or {}).get(ANNOTATION_CREATED)) or parse_time(
        meta.get("creationTimestamp")
    )
    return Task(
        id=meta["name"],
        user_id=int(spec["userId"]),
        chat_id=int(spec["chatId"]),
        prompt=spec["prompt"],
        title=spec.get("title", ""),
        priority=int(spec.get("priority", 5)),
        state=STATE_OF.get(status.get("phase", "Pending"), TaskState.PENDING),
        source=TaskSource(spec.get("source", "master")),
        pinned_worker=spec.get("pinnedWorker"),
        worker=status.get("worker"),
        attempts=int(status.get("attempts", 0)),
        result=status.get("summary"),
        error=status.get("error"),
        usage=Usage(
            int(usage.get("inputTokens", 0)),
            int(usage.get("outputTokens", 0)),
            int(usage.get("cacheReadTokens", 0)),
            int(usage.get("cacheWriteTokens", 0)),
            float(usage.get("costUsd", 0.0)),
        ),
        cancel_requested=bool(spec.get("cancel", False)),
        message_id=_optional_int(spec.get("messageId")),
        created_at=created or datetime.now(UTC),
        assigned_at=parse_time(status.get("assignedAt")),
        started_at=parse_time(status.get("startedAt")),
        completed_at=parse_time(status.get("completedAt")),
    )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def phase_label(state: TaskState) -> str:
    return state.value


# --- additions: the queue over BotTasks and the worker Leases (fleetgram/kube/queue.py) -----

ANNOTATION_STATE_SINCE = f"{GROUP}/state-since"  # on a worker's Lease: WorkerSlot.state_since

# The attempts rule: ONE place counts attempts, and it is the assignment.
#
# status.attempts is the number of times the task has been handed to a worker. The operator
# counts it: its assignment (Pending -> Assigned) writes attempts + 1 in the same status write as
# phase, worker and assignedAt, conditional on the resourceVersion it read (`assignment_status`).
# Nothing else changes it. A worker's claim_next only picks up what the operator assigned to it;
# a requeue (a worker restarting and putting back its own tasks, or the operator finding a
# Lease expired) leaves attempts as they are and fails the task instead once attempts has
# reached max attempts (`requeue_of`). This is the SQL store's count, where the claim is the
# assignment: a task assigned and lost three times fails at MAX_ATTEMPTS=3 in both modes.


def assignment_status(task: Task, worker: str, now: datetime) -> dict[str, Any]:
    """The status merge patch by which the operator assigns a pending task to `worker`: send it
    with the object's metadata.resourceVersion, and label it with `labels_for` afterwards."""
    return {
        "phase": PHASE_OF[TaskState.ASSIGNED],
        "worker": worker,
        "attempts": task.attempts + 1,
        "assignedAt": iso(now),
        "startedAt": None,
        "completedAt": None,
    }


def labels_for(obj: dict[str, Any]) -> dict[str, str | None]:
    """The labels a BotTask should carry for its status (a merge patch of metadata.labels):
    the lower-case phase, and the worker while status.worker is set (None removes it)."""
    status = obj.get("status") or {}
    state = STATE_OF.get(status.get("phase", "Pending"), TaskState.PENDING)
    return {LABEL_PHASE: phase_label(state), LABEL_WORKER: status.get("worker") or None}


def labels_in_step(obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in labels_for(obj).items())


def usage_status(usage: Usage) -> dict[str, Any]:
    return {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "cacheReadTokens": usage.cache_read_tokens,
        "cacheWriteTokens": usage.cache_write_tokens,
        "costUsd": usage.cost_usd,
    }


@dataclass(frozen=True)
class Requeue:
    """What becomes of an assigned/running task whose worker went away."""

    state: TaskState  # pending, failed (attempts used up) or cancelled (cancel was requested)
    status: dict[str, Any]  # the status merge patch (send with the resourceVersion read)
    event: tuple[str, dict[str, Any]]  # the outbox event announcing it


def requeue_of(
    task: Task, now: datetime, *, max_attempts: int, reason: str, worker: str
) -> Requeue:
    """The SQL store's requeue rule, for BotTasks: cancelled if its cancel was requested;
    failed once attempts >= max_attempts; else back to pending with attempts unchanged. Each
    event carries the task's title, as the SQL store's do."""
    if task.cancel_requested:
        return Requeue(
            TaskState.CANCELLED,
            {"phase": PHASE_OF[TaskState.CANCELLED], "completedAt": iso(now)},
            ("cancelled", {"by": "user", "reason": reason, "worker": worker,
                           "title": task.title}),
        )
    if task.attempts >= max_attempts:
        error = f"{reason}; gave up after {task.attempts} attempts"
        return Requeue(
            TaskState.FAILED,
            {"phase": PHASE_OF[TaskState.FAILED], "error": error, "completedAt": iso(now)},
            ("failed", {"error": error, "attempts": task.attempts, "reason": reason,
                        "worker": worker, "title": task.title}),
        )
    return Requeue(
        TaskState.PENDING,
        {"phase": PHASE_OF[TaskState.PENDING], "worker": None, "assignedAt": None,
         "startedAt": None},
        ("requeued", {"attempts": task.attempts, "reason": reason, "worker": worker,
                      "title": task.title}),
    )


# --- worker slots: the WorkerPool, the worker Deployments and the workers' Leases -----------

# WorkerSlot fields a worker records on its Lease as annotations (times as ISO text).
SLOT_ANNOTATIONS = {
    "username": ANNOTATION_USERNAME,
    "ready_at": ANNOTATION_READY_AT,
    "current_task": ANNOTATION_CURRENT_TASK,
    "error": ANNOTATION_ERROR,
    "state_since": ANNOTATION_STATE_SINCE,
    "started_at": ANNOTATION_STARTED_AT,  # this process started (the Deployment's may be older)
}
_SLOT_TIMES = {"ready_at", "state_since", "started_at"}
# WorkerSlot fields the cluster derives from the operator's Deployments, not from the worker:
# enabled (the slot's Deployment exists). started_at is the later of the Deployment's
# (ANNOTATION_STARTED_AT on it, else its creation) and the Lease's.
DEPLOYMENT_SLOT_FIELDS = {"enabled"}


def micro_time(value: datetime) -> str:
    """A Kubernetes MicroTime (Lease renewTime/acquireTime): exactly six fraction digits."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_duration_seconds(lease_seconds: float) -> int:
    """leaseDurationSeconds is a whole number of seconds (at least 1)."""
    return max(1, math.ceil(lease_seconds))


def lease_manifest(pool: str, slot: str, namespace: str, lease_seconds: float) -> dict[str, Any]:
    """A new worker Lease, without times (set them with `lease_patch`)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(pool, slot),
            "namespace": namespace,
            "labels": {LABEL_POOL: pool, LABEL_SLOT: slot},
        },
        "spec": {
            "holderIdentity": slot,
            "leaseDurationSeconds": lease_duration_seconds(lease_seconds),
        },
    }


def lease_patch(slot: str, lease_seconds: float, fields: dict[str, Any]) -> dict[str, Any]:
    """The merge patch of a worker's Lease for `Store.update_slot` fields: heartbeat_at renews
    it (spec.renewTime) and ready_at acquires it (spec.acquireTime); username, ready_at,
    current_task, error, state_since and started_at are annotations (None removes one).
    enabled is not the worker's to say (see DEPLOYMENT_SLOT_FIELDS)."""
    spec: dict[str, Any] = {
        "holderIdentity": slot,
        "leaseDurationSeconds": lease_duration_seconds(lease_seconds),
    }
    if fields.get("heartbeat_at") is not None:
        spec["renewTime"] = micro_time(fields["heartbeat_at"])
    if fields.get("ready_at") is not None:
        spec["acquireTime"] = micro_time(fields["ready_at"])  # this run of the worker holds it
    annotations: dict[str, str | None] = {}
    for field_name, annotation in SLOT_ANNOTATIONS.items():
        if field_name not in fields:
            continue
        value = fields[field_name]
        if value is None or value == "":
            annotations[annotation] = None
        elif field_name in _SLOT_TIMES:
            annotations[annotation] = iso(value)
        else:
            annotations[annotation] = str(value)
    patch: dict[str, Any] = {"spec": spec}
    if annotations:
        patch["metadata"] = {"annotations": annotations}
    return patch


def slot_names_of(pool: dict[str, Any]) -> list[str]:
    """worker1..workerN: slot i+1 holds the token of spec.tokenSecrets[i] (then the slots
    added with /addworker, when `pool` is `added_slots.with_added_slots`'s)."""
    return token_slot_names(pool)


def worker_slot_of(
    name: str, deployment: dict[str, Any] | None, lease: dict[str, Any] | None
) -> WorkerSlot:
    """A WorkerSlot from its Deployment (enabled, started_at) and its Lease (the rest;
    started_at too when the Lease's is later)."""
    enabled = False
    started_at = None
    if deployment is not None:
        dmeta = deployment.get("metadata") or {}
        enabled = not dmeta.get("deletionTimestamp")
        started_at = parse_time((dmeta.get("annotations") or {}).get(ANNOTATION_STARTED_AT))
        started_at = started_at or parse_time(dmeta.get("creationTimestamp"))
    heartbeat_at = None
    notes: dict[str, str] = {}
    if lease is not None:
        heartbeat_at = parse_time((lease.get("spec") or {}).get("renewTime"))
        notes = (lease.get("metadata") or {}).get("annotations") or {}
        lease_started = parse_time(notes.get(ANNOTATION_STARTED_AT))
        if deployment is not None and lease_started is not None:
            started_at = max(started_at, lease_started) if started_at else lease_started
    return WorkerSlot(
        name=name,
        enabled=enabled,
        username=notes.get(ANNOTATION_USERNAME) or None,
        started_at=started_at,
        ready_at=parse_time(notes.get(ANNOTATION_READY_AT)),
        heartbeat_at=heartbeat_at,
        error=notes.get(ANNOTATION_ERROR) or None,
        current_task=notes.get(ANNOTATION_CURRENT_TASK) or None,
        state_since=parse_time(notes.get(ANNOTATION_STATE_SINCE)),
    )


def worker_labels(pool: str, slot: str) -> dict[str, str]:
    """The labels of a worker Deployment and its pods (also its selector)."""
    return {LABEL_POOL: pool, LABEL_SLOT: slot}


def task_pool(obj: dict[str, Any]) -> str | None:
    """The WorkerPool a BotTask is labelled for (set at assignment), if any."""
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_POOL)
