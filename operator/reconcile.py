"""One reconciliation round of a WorkerPool, as a pure function: snapshot in, Plan out.

`plan(pool, tasks, deployments, leases, now, memory)` takes the objects as the API returns them
(plain dicts) and decides, with the same policy functions as the single-host orchestrator
(`worker_state`, `dead_workers`, `quiet_since`, `decide_scaling`, `plan_assignments`):

- each slot's facts (`WorkerSlot`): enabled = its Deployment exists (and is not being deleted);
  started = the Deployment's started-at annotation (or a later one on the worker's Lease);
  ready, username, current task and error from the Lease's annotations, heartbeat = the Lease's
  renewTime; the current task is also whatever Assigned/Running task names the slot, or a task
  it is reserved for (see below). A worker still starting after `start_timeout` is in error.
- lease expiry: a worker holding Assigned/Running tasks whose Lease is older than
  spec.leaseSeconds (`dead_workers`) loses them: each goes back to Pending (worker cleared), or
  to Failed at spec.maxAttempts, or to Cancelled if cancel was asked; an outbox event says so.
  Its Deployment is deleted and created again in the same round: the pod may be hung rather
  than crashed (Kubernetes restarts a crashed container by itself, not a hung one), and a fresh
  Deployment gives the slot a new started-at, so it shows `starting` until the new process
  reports ready. An enabled worker that is simply offline (no tasks) is restarted the same way.
- orphans (`orphaned_tasks`, the safety net that does not rely on heartbeats: a worker stuck
  around one task keeps renewing its Lease): an Assigned/Running task whose worker's Lease has
  not named it (ANNOTATION_CURRENT_TASK, written by the worker as it takes a task) for
  spec.leaseSeconds goes back to Pending the same way, without a restart. `Memory.orphans_seen`
  times each mismatch between rounds.
- scaling: one `decide_scaling` decision per round; start = create the Deployment, stop =
  delete an idle one (guarded by its resourceVersion, so it cannot race an assignment).
  `Memory.wanted` holds the stopped slots someone wrote to (see `operator/wakeup.py`): they
  start like the worker of a pinned task.
- assignment: `plan_assignments` over idle workers. Each assignment is executed as (1) reserve
  the worker: write ANNOTATION_RESERVED_TASK/AT on its Deployment with the Deployment's
  resourceVersion, (2) write the task's status (phase Assigned, worker, assignedAt, attempts + 1)
  with the task's resourceVersion, (3) label the task. A 409 at (1) or (2) skips it this round.
  A reservation younger than `reservation_ttl` for a still-Pending task keeps the worker busy, so
  a second operator replica reading a task list older than the reservation cannot hand the same
  worker another task; the task's own resourceVersion keeps it from being assigned twice.
- label repair: an Assigned task whose labels do not name its worker (a write lost between
  steps 2 and 3) is labelled again; a Pending one loses a leftover worker label.
- garbage collection of finished tasks older than spec.finishedTaskTTLSeconds.
- Deployments built from an older pool template are replaced while their worker is not busy;
  Deployments of slots no longer in the token pool are deleted once they hold no task.
- the pool's status: slots, counts, lastScale, conditions, observedGeneration; written with
  the pool's resourceVersion, so a replica never overwrites a newer status with an older view.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from fleetgram.domain import (
    Task,
    TaskState,
    WorkerSlot,
    WorkerState,
    event_payload,
)
from fleetgram.kube.added_slots import token_slot_names
from fleetgram.kube.objects import (
    ANNOTATION_CURRENT_TASK,
    ANNOTATION_RESERVED_AT,
    ANNOTATION_RESERVED_TASK,
    ANNOTATION_STARTED_AT,
    ANNOTATION_TEMPLATE_HASH,
    LABEL_POOL,
    LABEL_SLOT,
    PHASE_OF,
    assignment_status,
    deployment_name,
    iso,
    labels_for,
    labels_in_step,
    lease_name,
    parse_time,
    requeue_of,
    task_of,
    task_pool,
    worker_slot_of,
)
from fleetgram.operator.manifests import deployment_manifest, token_secret, updated_deployment
from fleetgram.policy import (
    FleetView,
    OrphanKey,
    ScaleAction,
    ScaleDecision,
    ScalingSettings,
    dead_workers,
    decide_scaling,
    orphaned_tasks,
    plan_assignments,
    quiet_since,
    split_pending,
    worker_state,
)

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class OperatorConfig:
    # The safety net: a round at least this often (seconds) even when no watch event and no
    # deadline (`next_deadline`) asked for one. Rounds plan from the watched view, so they cost
    # no API request unless they change something.
    interval: float = 20.0
    settle_timeout: float = 3.0  # how long a round waits for the echo of the last one's writes
    reservation_ttl: float = 10.0  # how long a worker reservation holds for a Pending task
    start_timeout: float = 300.0  # a worker not ready this long after its start is in error
    secret_retry: float = 30.0  # how long a missing token Secret keeps its slot in error
    default_pool: str = "fleetgram"  # the pool that takes BotTasks without a pool label

    @classmethod
    def from_env(cls, env: Mapping[str, str], default_pool: str = "fleetgram") -> OperatorConfig:
        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            return float(raw) if raw else default

        return cls(
            interval=number("OPERATOR_INTERVAL", 20.0),
            reservation_ttl=number("OPERATOR_RESERVATION_TTL", 10.0),
            start_timeout=number("OPERATOR_START_TIMEOUT", 300.0),
            secret_retry=number("OPERATOR_SECRET_RETRY", 30.0),
            default_pool=default_pool,
        )


@dataclass
class Memory:
    """What one operator process remembers about a pool between rounds (lost on restart, which
    only delays a scale-down by one quiet period and retries a missing Secret)."""

    quiet_since: datetime | None = None
    secret_errors: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    # The last scaling action of this process: kept until the pool's status shows it (a guarded
    # status write may lose to another replica's, and the action must still be reported).
    last_scale: dict[str, Any] | None = None
    # Since when each Assigned/Running task has been missing from its worker's Lease.
    orphans_seen: dict[OrphanKey, datetime] = field(default_factory=dict)
    # Stopped slots with an allowed user's message waiting at Telegram (the wake-up watcher's).
    wanted: set[str] = field(default_factory=set)
    # Slots added with /addworker whose Secret was just written: started if there is room.
    fresh: set[str] = field(default_factory=set)

    def secret_error(self, slot: str, now: datetime, retry: float) -> str | None:
        entry = self.secret_errors.get(slot)
        if entry is None:
            return None
        message, at = entry
        if (now - at).total_seconds() >= retry:
            return None
        return message


# --------------------------------------------------------------------------------------------
# The plan.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    slot: str
    manifest: JsonDict
    secret: tuple[str, str]  # (name, key) checked before creating
    reason: str


@dataclass(frozen=True)
class Delete:
    slot: str
    name: str
    uid: str  # precondition: this very Deployment, not a newer one of the same name
    resource_version: str | None  # precondition too, when not None (a stop of an idle worker)
    reason: str


@dataclass(frozen=True)
class Replace:
    slot: str
    name: str
    body: JsonDict  # carries metadata.resourceVersion


@dataclass(frozen=True)
class Assignment:
    task: str
    worker: str
    resource_version: str
    attempts: int
    deployment: str
    deployment_version: str
    at: datetime
    status: JsonDict  # `objects.assignment_status`: phase, worker, attempts + 1, assignedAt

    def status_patch(self) -> JsonDict:
        return {"metadata": {"resourceVersion": self.resource_version}, "status": self.status}

    def reservation_patch(self) -> JsonDict:
        return {"metadata": {
            "resourceVersion": self.deployment_version,
            "annotations": {ANNOTATION_RESERVED_TASK: self.task,
                            ANNOTATION_RESERVED_AT: iso(self.at)},
        }}


@dataclass(frozen=True)
class Event:
    """An outbox announcement (kind, payload like the worker's), written after the state."""

    kind: str
    task_id: str
    chat_id: int
    payload: JsonDict


@dataclass(frozen=True)
class Requeue:
    task: str
    worker: str
    resource_version: str
    phase: str  # Pending, Failed or Cancelled
    status: JsonDict  # the merge patch of .status
    labels: JsonDict  # the merge patch of .metadata.labels (None removes)
    event: Event

    def status_patch(self) -> JsonDict:
        return {"metadata": {"resourceVersion": self.resource_version}, "status": self.status}


@dataclass(frozen=True)
class Relabel:
    task: str
    resource_version: str
    labels: JsonDict


@dataclass(frozen=True)
class Collect:
    task: str
    uid: str


@dataclass(frozen=True)
class Notice:
    """A Kubernetes Event on the WorkerPool (kubectl describe wp)."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Plan:
    pool: str
    namespace: str
    decision: ScaleDecision
    quiet_since: datetime | None
    states: dict[str, WorkerState]
    pending: int
    requeues: list[Requeue] = field(default_factory=list)
    deletes: list[Delete] = field(default_factory=list)
    creates: list[Create] = field(default_factory=list)
    replaces: list[Replace] = field(default_factory=list)
    assignments: list[Assignment] = field(default_factory=list)
    relabels: list[Relabel] = field(default_factory=list)
    gc: list[Collect] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    status: JsonDict = field(default_factory=dict)
    pool_version: str = ""  # the pool's resourceVersion the status was computed from
    last_scale: JsonDict | None = None  # a scaling action of this very round, if any
    orphans_seen: dict[OrphanKey, datetime] = field(default_factory=dict)  # for Memory

    def status_patch(self) -> JsonDict:
        """Guarded: a status computed from an older pool (another replica wrote since) is
        dropped rather than written over a newer one; the next round writes a fresh one."""
        return {"metadata": {"resourceVersion": self.pool_version}, "status": self.status}


# --------------------------------------------------------------------------------------------
# Reading the snapshot.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolSpec:
    name: str
    namespace: str
    uid: str
    generation: int
    min_workers: int
    max_workers: int
    scale_up_threshold: int
    scale_down_delay: float
    lease_seconds: float
    max_attempts: int
    finished_ttl: float
    slots: tuple[str, ...]

    @classmethod
    def of(cls, pool: Mapping[str, Any]) -> PoolSpec:
        meta, spec = pool["metadata"], pool.get("spec") or {}
        return cls(
            name=meta["name"],
            namespace=meta.get("namespace") or "default",
            uid=meta.get("uid", ""),
            generation=int(meta.get("generation", 0)),
            min_workers=int(spec.get("minWorkers", 1)),
            max_workers=int(spec.get("maxWorkers", 5)),
            scale_up_threshold=int(spec.get("scaleUpThreshold", 3)),
            scale_down_delay=float(spec.get("scaleDownDelaySeconds", 60)),
            lease_seconds=float(spec.get("leaseSeconds", 30)),
            max_attempts=int(spec.get("maxAttempts", 3)),
            finished_ttl=float(spec.get("finishedTaskTTLSeconds", 86400)),
            slots=tuple(token_slot_names(pool)),
        )

    @property
    def scaling(self) -> ScalingSettings:
        return ScalingSettings(self.min_workers, self.max_workers, self.scale_up_threshold,
                               self.scale_down_delay)


@dataclass(frozen=True)
class TaskRecord:
    obj: Mapping[str, Any]
    task: Task

    @property
    def name(self) -> str:
        return self.task.id

    @property
    def rv(self) -> str:
        return str(self.obj["metadata"].get("resourceVersion", ""))

    @property
    def uid(self) -> str:
        return str(self.obj["metadata"].get("uid", ""))

    @property
    def labels(self) -> Mapping[str, str]:
        return self.obj["metadata"].get("labels") or {}


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def _time(value: Any) -> datetime | None:
    try:
        return parse_time(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _latest(*times: datetime | None) -> datetime | None:
    known = [t for t in times if t is not None]
    return max(known) if known else None


def read_tasks(
    tasks: Iterable[Mapping[str, Any]], pool: str, claim_unlabelled: bool
) -> list[TaskRecord]:
    """The pool's BotTasks: labelled for it, or unlabelled when this pool takes those."""
    records = []
    for obj in tasks:
        owner = task_pool(dict(obj))
        if owner != pool and not (owner is None and claim_unlabelled):
            continue
        try:
            task = task_of(dict(obj))
        except (KeyError, TypeError, ValueError):
            continue  # not a BotTask the schema would admit; nothing to schedule
        records.append(TaskRecord(obj, task))
    return records


def _newest(*entries: Any) -> JsonDict | None:
    """The lastScale entry with the latest `at` (entries may be None or malformed)."""
    best: tuple[datetime, JsonDict] | None = None
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        at = _time(entry.get("at"))
        if at is not None and (best is None or at > best[0]):
            best = (at, entry)
    return dict(best[1]) if best else None


def _finished_at(record: TaskRecord) -> datetime:
    t = record.task
    return t.completed_at or _latest(t.created_at, t.assigned_at, t.started_at) or t.created_at


def _payload(task: Task, worker: str, username: str | None, **extra: object) -> JsonDict:
    return event_payload(task, worker, username, **extra)


REQUEUE_REASON = "worker died"  # failed: "worker died; gave up after N attempts"


def requeue_for(record: TaskRecord, worker: str, username: str | None, max_attempts: int,
                now: datetime, reason: str = REQUEUE_REASON) -> Requeue:
    """What becomes of an Assigned/Running task whose worker's Lease expired (or that its
    worker no longer runs): the shared rule (`objects.requeue_of`, as the workers' store
    requeues), announced with the worker's payload fields (title, username, usage) besides
    the rule's own."""
    task = record.task
    rule = requeue_of(task, now, max_attempts=max_attempts, reason=reason, worker=worker)
    kind, extra = rule.event
    event = Event(kind, task.id, task.chat_id, {**_payload(task, worker, username), **extra})
    status = {**(record.obj.get("status") or {}), **rule.status}
    labels = labels_for({"status": {k: v for k, v in status.items() if v is not None}})
    return Requeue(task.id, worker, record.rv, PHASE_OF[rule.state], rule.status,
                   dict(labels), event)


@dataclass
class _Slot:
    name: str
    index: int
    deployment: Mapping[str, Any] | None  # live (not being deleted)
    terminating: Mapping[str, Any] | None
    lease: Mapping[str, Any] | None
    facts: WorkerSlot
    state: WorkerState
    error: str | None = None
    reported_task: str | None = None  # what the worker itself last wrote on its Lease


def _deployments_by_slot(
    deployments: Iterable[Mapping[str, Any]], pool: str
) -> dict[str, Mapping[str, Any]]:
    """The pool's worker Deployments (by its labels and the name rule), by slot."""
    found: dict[str, Mapping[str, Any]] = {}
    for dep in deployments:
        labels = _meta(dep).get("labels") or {}
        slot = labels.get(LABEL_SLOT)
        if labels.get(LABEL_POOL) != pool or not slot:
            continue
        if _meta(dep).get("name") != deployment_name(pool, slot):
            continue
        found[slot] = dep
    return found


def _reported_task(lease: Mapping[str, Any] | None) -> str | None:
    """The task the worker says it runs (its Lease's annotation), nothing added."""
    return _annotations(lease).get(ANNOTATION_CURRENT_TASK) or None


def _slot_facts(
    name: str,
    dep: Mapping[str, Any] | None,
    lease: Mapping[str, Any] | None,
    held: str | None,
    reserved: str | None,
    finished: set[str],
    secret_error: str | None,
) -> WorkerSlot:
    """`objects.worker_slot_of` (the reading the workers' store shares), and on top: the task
    the slot holds or is reserved for, and only an error this Deployment's worker reported."""
    try:
        base = worker_slot_of(name, dict(dep) if dep else None, dict(lease) if lease else None)
    except (TypeError, ValueError):  # an unreadable time on the Lease: treat it as silent
        base = WorkerSlot(name=name, enabled=dep is not None,
                          started_at=_time(_annotations(dep).get(ANNOTATION_STARTED_AT)))
    error = secret_error
    if error is None and dep is not None and base.error:
        # An error from an earlier run of the slot is forgotten when it is started again:
        # it counts when reported (with a heartbeat) since this Deployment was created.
        dep_started = _time(_annotations(dep).get(ANNOTATION_STARTED_AT)) or _time(
            _meta(dep).get("creationTimestamp"))
        beat = base.heartbeat_at
        if beat is not None and dep_started is not None and beat >= dep_started:
            error = base.error
    lease_task = base.current_task if base.current_task not in finished else None
    return replace(base, error=error, current_task=held or reserved or lease_task)


# --------------------------------------------------------------------------------------------
# The round.
# --------------------------------------------------------------------------------------------


def plan(
    pool: Mapping[str, Any],
    tasks: Iterable[Mapping[str, Any]],
    deployments: Iterable[Mapping[str, Any]],
    leases: Iterable[Mapping[str, Any]],
    now: datetime,
    memory: Memory | None = None,
    config: OperatorConfig | None = None,
    *,
    claim_unlabelled: bool = True,
) -> Plan:
    memory = memory or Memory()
    config = config or OperatorConfig()
    spec = PoolSpec.of(pool)
    records = read_tasks(tasks, spec.name, claim_unlabelled)
    by_name = {r.name: r for r in records}
    active = [r for r in records if r.task.state.active]
    finished_ids = {r.name for r in records if r.task.state.finished}
    leases_by_name = {str(_meta(x).get("name")): x for x in leases}
    deps = _deployments_by_slot(deployments, spec.name)

    held: dict[str, str] = {}
    for r in sorted(active, key=lambda r: (r.task.assigned_at or r.task.created_at, r.name)):
        if r.task.worker:
            held.setdefault(r.task.worker, r.name)

    # ---- each slot's facts and state
    slots: dict[str, _Slot] = {}
    for index, name in enumerate(spec.slots):
        dep = deps.get(name)
        terminating = dep if dep is not None and _meta(dep).get("deletionTimestamp") else None
        live = None if terminating is not None else dep
        reserved = None
        if live is not None:
            ann = _annotations(live)
            reserved_task = ann.get(ANNOTATION_RESERVED_TASK)
            reserved_at = _time(ann.get(ANNOTATION_RESERVED_AT))
            record = by_name.get(reserved_task or "")
            if (record is not None and record.task.state == TaskState.PENDING
                    and not record.task.cancel_requested and reserved_at is not None
                    and (now - reserved_at).total_seconds() < config.reservation_ttl):
                reserved = record.name
        lease = leases_by_name.get(lease_name(spec.name, name))
        facts = _slot_facts(name, live, lease, held.get(name), reserved, finished_ids,
                            memory.secret_error(name, now, config.secret_retry))
        state = worker_state(facts, now, spec.lease_seconds)
        error = facts.error
        if (state == WorkerState.STARTING and facts.started_at is not None
                and (now - facts.started_at).total_seconds() > config.start_timeout):
            state = WorkerState.ERROR
            error = f"not ready {config.start_timeout:g}s after it was started"
        slots[name] = _Slot(name, index, live, terminating, lease, facts, state, error,
                            _reported_task(lease))

    orphans = [dep for slot, dep in sorted(deps.items()) if slot not in slots]
    return _Builder(spec, pool, now, slots, records, memory, orphans,
                    leases_by_name).build(held)


class _Builder:
    """The decisions of one round, in order; kept in a class only to share the snapshot."""

    def __init__(self, spec: PoolSpec, pool: Mapping[str, Any], now: datetime,
                 slots: dict[str, _Slot], records: list[TaskRecord], memory: Memory,
                 orphans: Sequence[Mapping[str, Any]],
                 leases: Mapping[str, Mapping[str, Any]]) -> None:
        self.spec = spec
        self.pool = pool
        self.now = now
        self.slots = slots
        self.records = records
        self.memory = memory
        self.orphans = orphans
        self.leases = leases
        self.requeues: list[Requeue] = []
        self.deletes: list[Delete] = []
        self.creates: list[Create] = []
        self.replaces: list[Replace] = []
        self.assignments: list[Assignment] = []
        self.relabels: list[Relabel] = []
        self.gc: list[Collect] = []
        self.notices: list[Notice] = []
        self.touched_tasks: set[str] = set()
        self.touched_slots: set[str] = set()
        self.restarted: list[str] = []
        self.new_last_scale: JsonDict | None = None

    # -- helpers
    def create(self, slot: _Slot, reason: str) -> None:
        manifest = deployment_manifest(self.pool, slot.name, slot.index, self.now)
        self.creates.append(
            Create(slot.name, manifest, token_secret(self.pool, slot.index), reason))
        self.touched_slots.add(slot.name)

    def delete(self, slot: str, dep: Mapping[str, Any], reason: str, *, guarded: bool) -> None:
        meta = _meta(dep)
        rv = str(meta.get("resourceVersion")) if guarded else None
        self.deletes.append(Delete(slot, meta["name"], str(meta.get("uid", "")), rv, reason))
        self.touched_slots.add(slot)

    # -- the round
    def build(self, held: dict[str, str]) -> Plan:
        spec, now = self.spec, self.now
        self.expire_leases()
        orphans_seen = self.requeue_orphans()
        self.restart_offline()
        states = {name: s.state for name, s in self.slots.items()}

        requeued = {q.task for q in self.requeues if q.phase == "Pending"}
        pending_tasks = [
            r.task.with_(state=TaskState.PENDING, worker=None) if r.name in requeued else r.task
            for r in self.records
            if r.name in requeued
            or (r.task.state == TaskState.PENDING and not r.task.cancel_requested)
        ]
        quiet = quiet_since(self.memory.quiet_since, len(pending_tasks), now)
        if quiet is not None:
            # A stop by anyone (another replica, this operator before a restart) starts a new
            # quiet period too: the pool's status remembers it when our memory does not.
            last = _newest((self.pool.get("status") or {}).get("lastScale"),
                           self.memory.last_scale)
            stopped_at = _time(last.get("at")) if last and last.get("action") == "stop" else None
            if stopped_at is not None and stopped_at > quiet:
                quiet = min(stopped_at, now)
        open_count, pinned = split_pending(pending_tasks)
        wanted = frozenset(self.memory.wanted)
        decision = decide_scaling(FleetView(states, open_count, pinned, quiet, now, wanted,
                                            frozenset(self.memory.fresh)), spec.scaling)
        self.apply_scaling(decision)
        if decision.action == ScaleAction.STOP and decision.slot is not None:
            quiet = now  # each stop needs a quiet period of its own
        self.assign()
        self.replace_outdated()
        self.remove_orphans(held)
        self.repair_labels()
        self.collect()
        states = {name: s.state for name, s in self.slots.items()}
        pending = len([t for t in pending_tasks
                       if t.id not in {a.task for a in self.assignments}])
        status = self.status(decision, pending)
        return Plan(
            pool=spec.name, namespace=spec.namespace, decision=decision, quiet_since=quiet,
            states=states, pending=pending, requeues=self.requeues, deletes=self.deletes,
            creates=self.creates, replaces=self.replaces, assignments=self.assignments,
            relabels=self.relabels, gc=self.gc, notices=self.notices, status=status,
            pool_version=str(_meta(self.pool).get("resourceVersion", "")),
            last_scale=self.new_last_scale, orphans_seen=orphans_seen,
        )

    def expire_leases(self) -> None:
        spec = self.spec
        active = [r for r in self.records if r.task.state.active]
        facts = [s.facts for s in self.slots.values()]
        # Tasks held by a worker name outside the token pool (the pool shrank): its Lease, if
        # any, decides like any other.
        known = set(self.slots)
        for name in sorted({r.task.worker for r in active if r.task.worker} - known):
            lease = self.leases.get(lease_name(spec.name, name))
            facts.append(_slot_facts(name, None, lease, None, None, set(), None))
        dead = dead_workers(facts, [r.task for r in active], self.now, spec.lease_seconds)
        for worker in dead:
            slot = self.slots.get(worker)
            username = slot.facts.username if slot else None
            for r in active:
                if r.task.worker != worker:
                    continue
                requeue = requeue_for(r, worker, username, spec.max_attempts, self.now)
                self.requeues.append(requeue)
                self.touched_tasks.add(r.name)
            if slot is not None:
                slot.facts = replace(slot.facts, current_task=None)
                self.restart(slot, f"{worker} stopped responding (its Lease expired)")

    def requeue_orphans(self) -> dict[OrphanKey, datetime]:
        """Active tasks (of workers not found dead this round) that their worker's own Lease
        has not named for spec.leaseSeconds go back to the queue; the worker lives on."""
        spec = self.spec
        active = [r for r in self.records
                  if r.task.state.active and r.name not in self.touched_tasks]
        reported = [replace(s.facts, current_task=s.reported_task)
                    for s in self.slots.values()]
        for name in sorted({r.task.worker for r in active if r.task.worker} - set(self.slots)):
            lease = self.leases.get(lease_name(spec.name, name))
            reported.append(WorkerSlot(name=name, current_task=_reported_task(lease)))
        found = orphaned_tasks(reported, [r.task for r in active], self.memory.orphans_seen,
                               self.now, spec.lease_seconds)
        by_name = {r.name: r for r in active}
        for task in found.tasks:
            assert task.worker is not None
            slot = self.slots.get(task.worker)
            username = slot.facts.username if slot else None
            self.requeues.append(requeue_for(
                by_name[task.id], task.worker, username, spec.max_attempts, self.now,
                reason=f"{task.worker} stopped working on it"))
            self.touched_tasks.add(task.id)
            self.notices.append(Notice(
                "TaskRequeued", f"{task.id}: {task.worker} no longer reports running it",
                warning=True))
        return found.first_seen

    def restart_offline(self) -> None:
        for slot in self.slots.values():
            if slot.state == WorkerState.OFFLINE and slot.name not in self.touched_slots:
                self.restart(slot, f"{slot.name} is offline (its Lease expired)")

    def restart(self, slot: _Slot, reason: str) -> None:
        if slot.deployment is None:
            return  # not running: scaling decides whether it starts again
        self.delete(slot.name, slot.deployment, reason, guarded=False)
        self.create(slot, reason)
        slot.state = WorkerState.STARTING
        slot.facts = replace(slot.facts, current_task=None, started_at=self.now)
        self.restarted.append(slot.name)
        self.notices.append(Notice("WorkerRestarted", f"restarting {slot.name}: {reason}",
                                   warning=True))

    def apply_scaling(self, decision: ScaleDecision) -> None:
        if decision.action == ScaleAction.NONE or decision.slot is None:
            return
        slot = self.slots[decision.slot]
        if decision.action == ScaleAction.START:
            if slot.terminating is not None:
                # The old Deployment is still going away: start it once it is gone.
                return
            self.create(slot, decision.reason)
            slot.state = WorkerState.STARTING
            self.notices.append(Notice("ScaledUp", f"starting {slot.name}: {decision.reason}"))
        else:
            if slot.deployment is None or slot.state != WorkerState.IDLE:
                return
            self.delete(slot.name, slot.deployment, decision.reason, guarded=True)
            slot.state = WorkerState.STOPPED
            self.notices.append(Notice("ScaledDown", f"stopping {slot.name}: {decision.reason}"))

    def assign(self) -> None:
        idle = [s.name for s in self.slots.values()
                if s.state == WorkerState.IDLE and s.name not in self.touched_slots
                and s.deployment is not None]
        pending = [r.task for r in self.records
                   if r.task.state == TaskState.PENDING and r.name not in self.touched_tasks]
        by_name = {r.name: r for r in self.records}
        for task_id, worker in plan_assignments(pending, idle):
            record = by_name[task_id]
            slot = self.slots[worker]
            assert slot.deployment is not None
            self.assignments.append(Assignment(
                task=task_id, worker=worker, resource_version=record.rv,
                attempts=record.task.attempts + 1, deployment=_meta(slot.deployment)["name"],
                deployment_version=str(_meta(slot.deployment).get("resourceVersion", "")),
                at=self.now, status=assignment_status(record.task, worker, self.now),
            ))
            self.touched_tasks.add(task_id)
            self.touched_slots.add(worker)
            slot.state = WorkerState.BUSY
            slot.facts = replace(slot.facts, current_task=task_id)

    def replace_outdated(self) -> None:
        for slot in self.slots.values():
            dep = slot.deployment
            if dep is None or slot.name in self.touched_slots:
                continue
            if slot.facts.current_task is not None or slot.state == WorkerState.BUSY:
                continue  # it restarts the pod: wait until the worker is free
            desired = deployment_manifest(self.pool, slot.name, slot.index, self.now)
            want = desired["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
            if _annotations(dep).get(ANNOTATION_TEMPLATE_HASH) == want:
                continue
            self.replaces.append(Replace(slot.name, _meta(dep)["name"],
                                         updated_deployment(dep, desired)))
            self.touched_slots.add(slot.name)
            slot.state = WorkerState.STARTING  # a new pod, with a new started-at
            self.notices.append(Notice("WorkerUpdated",
                                       f"updating {slot.name} to the pool's template"))

    def remove_orphans(self, held: dict[str, str]) -> None:
        """Deployments of this pool for slots no longer in its token pool, once free."""
        for dep in self.orphans:
            slot = (_meta(dep).get("labels") or {}).get(LABEL_SLOT, "")
            if slot in held or _meta(dep).get("deletionTimestamp"):
                continue
            self.delete(slot, dep, f"{slot} is no longer in the token pool", guarded=True)

    def repair_labels(self) -> None:
        """Labels out of step with the status (`objects.labels_in_step`): a label write lost
        after a status write, by us or by anyone. Active tasks also carry the pool's label."""
        for r in self.records:
            if r.name in self.touched_tasks:
                continue
            obj = dict(r.obj)
            want: JsonDict = {}
            if not labels_in_step(obj):
                want.update(labels_for(obj))
            if r.task.state.active and r.labels.get(LABEL_POOL) != self.spec.name:
                want[LABEL_POOL] = self.spec.name
            if want:
                self.relabels.append(Relabel(r.name, r.rv, want))

    def collect(self) -> None:
        ttl = self.spec.finished_ttl
        for r in self.records:
            if r.task.state.finished and r.name not in self.touched_tasks:
                if (self.now - _finished_at(r)).total_seconds() >= ttl:
                    self.gc.append(Collect(r.name, r.uid))

    # -- status
    def status(self, decision: ScaleDecision, pending: int) -> JsonDict:
        now = self.now
        previous = self.pool.get("status") or {}
        before = {s.get("name"): s for s in previous.get("slots") or [] if isinstance(s, dict)}
        entries = []
        counts = dict.fromkeys(WorkerState, 0)
        for slot in self.slots.values():
            state = slot.state
            counts[state] += 1
            old = before.get(slot.name) or {}
            since = old.get("since") if old.get("state") == state.value else None
            entry: JsonDict = {"name": slot.name, "state": state.value,
                               "since": since or iso(now)}
            task = slot.facts.current_task if state == WorkerState.BUSY else None
            if task:
                entry["task"] = task
            if slot.facts.username:
                entry["username"] = slot.facts.username
            if slot.deployment is not None or slot.name in {c.slot for c in self.creates}:
                entry["deployment"] = deployment_name(self.spec.name, slot.name)
            entries.append(entry)
        idle, busy = counts[WorkerState.IDLE], counts[WorkerState.BUSY]
        status: JsonDict = {
            "slots": entries,
            "ready": idle + busy,
            "idle": idle,
            "busy": busy,
            "pending": pending,
            "observedGeneration": self.spec.generation,
        }
        last = _newest(previous.get("lastScale"), self.memory.last_scale)
        if decision.action != ScaleAction.NONE and (self.creates or self.deletes):
            last = {"action": decision.action.value, "reason": decision.reason, "at": iso(now)}
            self.new_last_scale = last
        elif self.restarted:
            last = {"action": "restart", "reason": ", ".join(
                f"{s} stopped responding" for s in self.restarted), "at": iso(now)}
            self.new_last_scale = last
        if last:
            status["lastScale"] = last
        status["conditions"] = self.conditions(previous, idle + busy)
        return status

    def conditions(self, previous: Mapping[str, Any], ready: int) -> list[JsonDict]:
        usable = sum(1 for s in self.slots.values() if s.state != WorkerState.ERROR)
        wanted = min(self.spec.min_workers, usable)
        errors = [f"{s.name}: {s.error}" for s in self.slots.values()
                  if s.state == WorkerState.ERROR and s.error]
        if ready >= max(wanted, 1 if self.spec.min_workers else 0):
            ready_cond = ("True", "WorkersReady", f"{ready} worker(s) ready")
        else:
            ready_cond = ("False", "WaitingForWorkers",
                          f"{ready} of {max(wanted, 1)} worker(s) ready")
        degraded = (("True", "WorkerErrors", "; ".join(errors)) if errors
                    else ("False", "NoErrors", "no worker in error"))
        old = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, dict)}
        result = []
        for type_, (status, reason, message) in (("Ready", ready_cond),
                                                 ("Degraded", degraded)):
            before = old.get(type_) or {}
            since = before.get("lastTransitionTime") if before.get("status") == status else None
            result.append({"type": type_, "status": status, "reason": reason,
                           "message": message[:1000],
                           "lastTransitionTime": since or iso(self.now)})
        return result


# --------------------------------------------------------------------------------------------
# When the plan may change with nothing else changing: time alone.
# --------------------------------------------------------------------------------------------


def next_deadline(
    pool: Mapping[str, Any],
    tasks: Iterable[Mapping[str, Any]],
    deployments: Iterable[Mapping[str, Any]],
    leases: Iterable[Mapping[str, Any]],
    now: datetime,
    memory: Memory | None = None,
    config: OperatorConfig | None = None,
    *,
    claim_unlabelled: bool = True,
) -> datetime | None:
    """The earliest moment after `now` at which `plan` over the same objects could decide
    differently because time passed: a worker's Lease going stale (offline, dead: requeue), a
    reservation expiring, a quiet period ending (scale-down), an orphan's grace ending, a start
    timing out, a missing Secret's retry, a finished task's TTL. None when nothing is timed.
    Event-driven rounds sleep until then (or until a watch event), not every second."""
    memory = memory or Memory()
    config = config or OperatorConfig()
    spec = PoolSpec.of(pool)
    records = read_tasks(tasks, spec.name, claim_unlabelled)
    leases_by_name = {str(_meta(x).get("name")): x for x in leases}
    deps = _deployments_by_slot(deployments, spec.name)
    times: list[datetime] = []

    def after(at: datetime | None, seconds: float) -> None:
        if at is not None:
            times.append(at + timedelta(seconds=seconds))

    workers = set(spec.slots) | {r.task.worker for r in records
                                 if r.task.state.active and r.task.worker}
    for name in workers:
        dep = deps.get(name)
        lease = leases_by_name.get(lease_name(spec.name, name))
        try:
            facts = worker_slot_of(name, dict(dep) if dep else None,
                                   dict(lease) if lease else None)
        except (TypeError, ValueError):
            continue
        after(facts.heartbeat_at, spec.lease_seconds)
        if dep is not None:
            after(facts.started_at, config.start_timeout)
            after(_time(_annotations(dep).get(ANNOTATION_RESERVED_AT)), config.reservation_ttl)
    after(memory.quiet_since, spec.scale_down_delay)
    for seen in memory.orphans_seen.values():
        after(seen, spec.lease_seconds)
    for _, at in memory.secret_errors.values():
        after(at, config.secret_retry)
    for r in records:
        if r.task.state.finished:
            after(_finished_at(r), spec.finished_ttl)
    future = [t for t in times if t > now]
    return min(future) if future else None
