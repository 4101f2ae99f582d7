"""The thin executor: read a pool's snapshot, `plan` it, apply the plan through the API.

Every write that could race another actor (a worker, the master, a second operator replica)
carries a precondition; a 409 skips that one action for this round and the next round decides
again from fresh reads. Nothing here decides anything the plan did not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleetgram import metrics
from fleetgram.domain import utcnow
from fleetgram.kube.objects import (
    ANNOTATION_RESERVED_AT,
    ANNOTATION_RESERVED_TASK,
    LABEL_POOL,
    labels_for,
)
from fleetgram.operator.kubeapi import (
    Conflict,
    Forbidden,
    KubeApi,
    KubeError,
    NotFound,
    bottasks_path,
    deployments_path,
    leases_path,
    persistentvolumeclaims_path,
    secrets_path,
    workerpools_path,
)
from fleetgram.operator.manifests import workspace_claim
from fleetgram.operator.outbox import NullOutbox, Outbox
from fleetgram.operator.reconcile import (
    Assignment,
    Create,
    Memory,
    Notice,
    OperatorConfig,
    Plan,
    Requeue,
    plan,
)
from fleetgram.operator.wakeup import PoolWakeup
from fleetgram.policy import ScaleAction

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]
NotifyFn = Callable[[Mapping[str, Any], Notice], None]


@dataclass(frozen=True)
class Snapshot:
    pool: JsonDict
    tasks: list[JsonDict]
    deployments: list[JsonDict]
    leases: list[JsonDict]
    claim_unlabelled: bool


@dataclass
class Outcome:
    """What a round actually did (for logs and tests)."""

    plan: Plan
    assigned: list[tuple[str, str]] = field(default_factory=list)
    requeued: list[tuple[str, str]] = field(default_factory=list)  # (task, new phase)
    created: list[str] = field(default_factory=list)
    claims: list[str] = field(default_factory=list)  # workspace PVCs created
    deleted: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    relabelled: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Reconciler:
    """Reconciles WorkerPools: one round at a time per pool (timer and change handlers share
    a lock), each round from fresh reads."""

    def __init__(
        self,
        api: KubeApi,
        outbox: Outbox | None = None,
        config: OperatorConfig | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        notify: NotifyFn | None = None,
        wakeup: PoolWakeup | None = None,
    ) -> None:
        self.api = api
        self.wakeup = wakeup
        self.outbox: Outbox = outbox or NullOutbox()
        self.config = config or OperatorConfig()
        self.clock = clock
        self.notify = notify
        self.memories: dict[tuple[str, str], Memory] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def close(self) -> None:
        close = getattr(self.outbox, "close", None)
        if close is not None:
            await close()
        if self.wakeup is not None:
            await self.wakeup.close()

    def memory(self, namespace: str, name: str) -> Memory:
        return self.memories.setdefault((namespace, name), Memory())

    def forget(self, namespace: str, name: str) -> None:
        self.memories.pop((namespace, name), None)
        self._locks.pop((namespace, name), None)

    async def snapshot(self, namespace: str, name: str) -> Snapshot | None:
        pools = await self.api.list(workerpools_path(namespace))
        pool = next((p for p in pools if p["metadata"]["name"] == name), None)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            return None  # gone or going: its Deployments go with it (owner references)
        tasks, deployments, leases = await asyncio.gather(
            self.api.list(bottasks_path(namespace)),
            self.api.list(deployments_path(namespace), label_selector=f"{LABEL_POOL}={name}"),
            self.api.list(leases_path(namespace)),
        )
        claim = name == self.config.default_pool or len(pools) == 1
        return Snapshot(pool, tasks, deployments, leases, claim)

    async def reconcile(self, namespace: str, name: str) -> Outcome | None:
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            snap = await self.snapshot(namespace, name)
            if snap is None:
                return None
            memory = self.memory(namespace, name)
            the_plan = plan(snap.pool, snap.tasks, snap.deployments, snap.leases, self.clock(),
                            memory, self.config, claim_unlabelled=snap.claim_unlabelled)
            # The operator sees the whole fleet: it feeds the fleet gauges Grafana shows.
            metrics.observe_fleet(the_plan.states, the_plan.pending)
            if the_plan.last_scale:
                metrics.SCALE_EVENTS.labels(str(the_plan.last_scale.get("action"))).inc()
            out = await self.execute(the_plan, snap.pool, memory)
            if self.wakeup is not None and self.wakeup.due(namespace, name):
                # Under the pool's lock: no round starts a worker while its chat is peeked at.
                try:
                    memory.wanted = await self.wakeup.waiting(
                        namespace, snap.pool, the_plan.states, snap.deployments)
                except Exception:
                    log.exception("checking stopped workers' chats failed")
            return out

    # ----------------------------------------------------------------------------------------
    async def execute(self, the_plan: Plan, pool: Mapping[str, Any], memory: Memory) -> Outcome:
        out = Outcome(the_plan)
        ns = the_plan.namespace
        for requeue in the_plan.requeues:
            await self._guarded(out, f"requeue {requeue.task}", self._requeue(ns, requeue, out))
        failed_deletes: set[str] = set()
        for delete in the_plan.deletes:
            preconditions = {"uid": delete.uid}
            if delete.resource_version:
                preconditions["resourceVersion"] = delete.resource_version
            try:
                await self.api.delete(deployments_path(ns, delete.name),
                                      preconditions=preconditions)
            except NotFound:
                pass
            except KubeError as exc:
                failed_deletes.add(delete.slot)
                self._note(out, f"delete {delete.name}", exc)
                continue
            out.deleted.append(delete.name)
            log.info("worker stopped", extra={"worker": delete.slot, "reason": delete.reason})
        for create in the_plan.creates:
            if create.slot in failed_deletes:
                continue  # a restart whose delete did not happen: the next round retries
            await self._guarded(out, f"create {create.slot}",
                                self._create(ns, create, memory, out))
        for rep in the_plan.replaces:
            try:
                # The new template may be the first to mount a workspace claim.
                await self._ensure_claim(ns, pool, rep.slot, out)
                await self.api.replace(deployments_path(ns, rep.name), rep.body)
                out.replaced.append(rep.name)
            except KubeError as exc:
                self._note(out, f"replace {rep.name}", exc)
        for assignment in the_plan.assignments:
            await self._guarded(out, f"assign {assignment.task}",
                                self._assign(ns, the_plan.pool, assignment, out))
        for relabel in the_plan.relabels:
            try:
                await self.api.merge_patch(bottasks_path(ns, relabel.task), {"metadata": {
                    "resourceVersion": relabel.resource_version, "labels": relabel.labels}})
                out.relabelled.append(relabel.task)
            except KubeError as exc:
                self._note(out, f"relabel {relabel.task}", exc)
        for collect in the_plan.gc:
            try:
                await self.api.delete(bottasks_path(ns, collect.task),
                                      preconditions={"uid": collect.uid})
                out.collected.append(collect.task)
            except NotFound:
                pass
            except KubeError as exc:
                self._note(out, f"collect {collect.task}", exc)
        try:
            await self.api.merge_patch(workerpools_path(ns, the_plan.pool, "status"),
                                       the_plan.status_patch())
        except KubeError as exc:
            self._note(out, "pool status", exc)
        memory.quiet_since = the_plan.quiet_since
        memory.orphans_seen = the_plan.orphans_seen
        memory.wanted -= {c.slot for c in the_plan.creates}  # started: no longer waiting
        if the_plan.last_scale is not None:
            memory.last_scale = the_plan.last_scale
        if the_plan.decision.action != ScaleAction.NONE and (out.created or out.deleted):
            metrics.SCALE_EVENTS.labels(the_plan.decision.action.value).inc()
        metrics.observe_fleet(the_plan.states, the_plan.pending)
        if self.notify is not None:
            for notice in the_plan.notices:
                try:
                    self.notify(pool, notice)
                except Exception:
                    log.exception("could not post an event on the pool")
        return out

    async def _guarded(self, out: Outcome, what: str, step: Any) -> None:
        try:
            await step
        except KubeError as exc:
            self._note(out, what, exc)

    @staticmethod
    def _note(out: Outcome, what: str, exc: KubeError) -> None:
        if isinstance(exc, (Conflict, NotFound)):
            out.conflicts.append(what)
            log.debug("%s skipped this round: %s", what, exc)
        else:
            out.errors.append(f"{what}: {exc}")
            log.warning("%s failed: %s", what, exc)

    async def _requeue(self, ns: str, q: Requeue, out: Outcome) -> None:
        written = await self.api.merge_patch(bottasks_path(ns, q.task, "status"),
                                             q.status_patch())
        out.requeued.append((q.task, q.phase))
        log.warning("task requeued", extra={"task": q.task, "worker": q.worker,
                                            "phase": q.phase})
        if q.phase != "Pending":
            metrics.TASKS.labels(q.phase.lower()).inc()
        try:
            await self.api.merge_patch(bottasks_path(ns, q.task), {"metadata": {
                "resourceVersion": written["metadata"]["resourceVersion"], "labels": q.labels}})
        except KubeError as exc:
            self._note(out, f"label {q.task}", exc)  # repaired by a later round
        try:
            e = q.event
            await self.outbox.add_event(e.kind, e.payload, task_id=e.task_id, chat_id=e.chat_id)
        except Exception:
            log.exception("could not announce %s of %s", q.event.kind, q.task)

    async def _create(self, ns: str, c: Create, memory: Memory, out: Outcome) -> None:
        owner = c.manifest["metadata"]["ownerReferences"][0]
        try:
            pool = await self.api.get(workerpools_path(ns, owner["name"]))
        except NotFound:
            return
        if pool["metadata"].get("uid") != owner["uid"] or pool["metadata"].get(
                "deletionTimestamp"):
            return  # the pool went (or is going) since our read: no new worker for it
        problem = await self._secret_problem(ns, c.secret)
        if problem is not None:
            memory.secret_errors[c.slot] = (problem, self.clock())
            out.errors.append(f"create {c.slot}: {problem}")
            log.warning("worker not started", extra={"worker": c.slot, "reason": problem})
            return
        memory.secret_errors.pop(c.slot, None)
        # Before the Deployment: a pod whose claim is missing would wait unscheduled.
        await self._ensure_claim(ns, pool, c.slot, out)
        try:
            await self.api.create(deployments_path(ns), c.manifest)
        except Conflict:
            # Already there (another replica, or a round before a restart of this operator
            # created it): a Deployment name is per slot, so there is never a second one.
            log.debug("deployment of %s already exists", c.slot)
            return
        out.created.append(c.manifest["metadata"]["name"])
        log.info("worker started", extra={"worker": c.slot, "reason": c.reason})

    async def _ensure_claim(self, ns: str, pool: Mapping[str, Any], slot: str,
                            out: Outcome) -> None:
        """Create the slot's workspace PVC if it is missing. An existing claim is never
        replaced, resized or recreated: it holds the worker's clone and Claude Code sessions."""
        claim = workspace_claim(pool, slot)
        if claim is None:
            return
        name = claim["metadata"]["name"]
        try:
            await self.api.get(persistentvolumeclaims_path(ns, name))
            return
        except NotFound:
            pass
        try:
            await self.api.create(persistentvolumeclaims_path(ns), claim)
        except Conflict:
            return  # created in between (another replica)
        out.claims.append(name)
        log.info("workspace claim created", extra={"worker": slot, "claim": name})

    async def _secret_problem(self, ns: str, secret: tuple[str, str]) -> str | None:
        name, key = secret
        try:
            obj = await self.api.get(secrets_path(ns, name))
        except NotFound:
            return f"token Secret {name} not found"
        except (Forbidden, KubeError):
            return None  # cannot check (RBAC): the pod will say
        if key not in (obj.get("data") or {}) and key not in (obj.get("stringData") or {}):
            return f"token Secret {name} has no key {key!r}"
        return None

    async def _assign(self, ns: str, pool: str, a: Assignment, out: Outcome) -> None:
        # (1) Reserve the worker: fails if its Deployment changed since our read.
        reserved = await self.api.merge_patch(deployments_path(ns, a.deployment),
                                              a.reservation_patch())
        # (2) Assign the task: fails if the task changed since our read.
        try:
            written = await self.api.merge_patch(bottasks_path(ns, a.task, "status"),
                                                 a.status_patch())
        except (Conflict, NotFound):
            await self._release(ns, a, reserved)
            raise
        out.assigned.append((a.task, a.worker))
        log.info("task assigned", extra={"task": a.task, "worker": a.worker,
                                         "attempt": a.attempts})
        # (3) Label it, so the worker (watching its own label) sees it.
        labels = {**labels_for(written), LABEL_POOL: pool}
        await self.api.merge_patch(bottasks_path(ns, a.task), {"metadata": {
            "resourceVersion": written["metadata"]["resourceVersion"], "labels": labels}})

    async def _release(self, ns: str, a: Assignment, reserved: Mapping[str, Any]) -> None:
        try:
            await self.api.merge_patch(deployments_path(ns, a.deployment), {"metadata": {
                "resourceVersion": reserved["metadata"]["resourceVersion"],
                "annotations": {ANNOTATION_RESERVED_TASK: None, ANNOTATION_RESERVED_AT: None},
            }})
        except KubeError:
            pass  # it expires by itself (reservation_ttl)
