"""The thin executor: take a pool's snapshot, `plan` it, apply the plan through the API.

Where the snapshot comes from is a `Source`: `ListingSource` lists the objects afresh (one-off
rounds, tests); in the operator, `IndexSource` reads kopf's in-memory indexes, which its
watches keep current, so a round that changes nothing makes no API request at all.
`Reconciler.serve` is a pool's loop in the operator: a round when a watch event pokes it, when
a deadline of the plan comes (`reconcile.next_deadline`: a Lease going stale, a quiet period
ending...) or, as a safety net, every `config.interval` seconds. After a round that wrote, the
next waits (up to `config.settle_timeout`) until the watches have brought those writes back,
so it never plans from a view older than its own writes.

Every write that could race another actor (a worker, the master, a second operator replica)
carries a precondition; a 409 skips that one action for this round and the next round decides
again. Nothing here decides anything the plan did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from fleetgram import metrics
from fleetgram.aio import wait_event
from fleetgram.domain import utcnow
from fleetgram.kube.added_slots import with_added_slots
from fleetgram.kube.objects import (
    ANNOTATION_RESERVED_AT,
    ANNOTATION_RESERVED_TASK,
    LABEL_POOL,
    LABEL_SLOT,
    labels_for,
)
from fleetgram.operator.added import AddedWorkers
from fleetgram.operator.announcer import Announcer
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
    next_deadline,
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


BATCH_WINDOW = 0.02  # after a poke: the rest of a burst of watch events joins the round
DEADLINE_MARGIN = 0.05  # past a deadline, so that the plan sees it passed
MIN_PAUSE = 0.05
# The workers' wake signal (a NOTIFY through the database): a round waits this long for it at
# most; one still under way finishes in the background, given up after WAKE_GIVE_UP_S (a
# connection to a host that never answers has no timeout of its own).
WAKE_WAIT_S = 1.0
WAKE_GIVE_UP_S = 30.0


class Source(Protocol):
    """Where a round's snapshot comes from."""

    async def snapshot(self, namespace: str, name: str, default_pool: str) -> Snapshot | None:
        ...

    def before_write(self, plural: str, namespace: str, name: str) -> str | None: ...

    def wrote(self, plural: str, namespace: str, name: str, before: str | None,
              after: str | None) -> None: ...

    def caught_up(self, namespace: str) -> bool: ...


def claims_unlabelled(name: str, default_pool: str, pools_in_namespace: int) -> bool:
    """Whether this pool takes the BotTasks without a pool label."""
    return name == default_pool or pools_in_namespace == 1


class ListingSource:
    """Fresh lists of everything, each round (one-off rounds and tests)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api

    async def snapshot(self, namespace: str, name: str, default_pool: str) -> Snapshot | None:
        pools = await self.api.list(workerpools_path(namespace))
        pool = next((p for p in pools if p["metadata"]["name"] == name), None)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            return None  # gone or going: its Deployments go with it (owner references)
        tasks, deployments, leases = await asyncio.gather(
            self.api.list(bottasks_path(namespace)),
            self.api.list(deployments_path(namespace), label_selector=f"{LABEL_POOL}={name}"),
            self.api.list(leases_path(namespace)),
        )
        return Snapshot(pool, tasks, deployments, leases,
                        claims_unlabelled(name, default_pool, len(pools)))

    def before_write(self, plural: str, namespace: str, name: str) -> str | None:
        return None

    def wrote(self, plural: str, namespace: str, name: str, before: str | None,
              after: str | None) -> None:
        return None

    def caught_up(self, namespace: str) -> bool:
        return True


ABSENT = ""  # the "resourceVersion" of an object the view does not hold


class IndexSource:
    """The operator's view: kopf's in-memory indexes of WorkerPools, BotTasks, Deployments and
    Leases (see `handlers.py`: each holds whole objects under (namespace, name)), kept current
    by kopf's watches. `attach` hands them over (kopf gives them to handlers only).

    It also remembers this operator's own writes until the watches have brought them back
    (`caught_up`): a round planned before that would act on objects it has just changed."""

    PLURALS = ("workerpools", "bottasks", "deployments", "leases")

    def __init__(self) -> None:
        self.indexes: dict[str, Mapping[Any, Iterable[JsonDict]]] = {}
        # (plural, namespace, name) -> (versions the view must move past, the last written)
        self._pending: dict[tuple[str, str, str], tuple[set[str], str | None]] = {}

    def attach(self, **indexes: Mapping[Any, Iterable[JsonDict]]) -> None:
        self.indexes.update(indexes)

    def objects(self, plural: str, namespace: str) -> list[JsonDict]:
        index = self.indexes.get(plural) or {}
        return [obj for (ns, _), store in list(index.items()) if ns == namespace
                for obj in store]

    def get(self, plural: str, namespace: str, name: str) -> JsonDict | None:
        store = (self.indexes.get(plural) or {}).get((namespace, name))
        return next(iter(store), None) if store is not None else None

    def version(self, plural: str, namespace: str, name: str) -> str:
        obj = self.get(plural, namespace, name)
        return ABSENT if obj is None else str(obj["metadata"].get("resourceVersion", ""))

    async def snapshot(self, namespace: str, name: str, default_pool: str) -> Snapshot | None:
        pools = self.objects("workerpools", namespace)
        pool = next((p for p in pools if p["metadata"]["name"] == name), None)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            return None
        deployments = [d for d in self.objects("deployments", namespace)
                       if (d["metadata"].get("labels") or {}).get(LABEL_POOL) == name]
        return Snapshot(pool, self.objects("bottasks", namespace), deployments,
                        self.objects("leases", namespace),
                        claims_unlabelled(name, default_pool, len(pools)))

    def before_write(self, plural: str, namespace: str, name: str) -> str | None:
        if plural not in self.PLURALS:
            return None
        return self.version(plural, namespace, name)

    def wrote(self, plural: str, namespace: str, name: str, before: str | None,
              after: str | None) -> None:
        if before is None:
            return  # not a watched kind
        key = (plural, namespace, name)
        stale, last = self._pending.get(key, (set(), None))
        stale = stale | {before} | ({last} if last is not None else set())
        self._pending[key] = (stale, after)

    def caught_up(self, namespace: str) -> bool:
        for key in [k for k in self._pending if k[1] == namespace]:
            stale, last = self._pending[key]
            now = self.version(*key)
            if (last is not None and now == last) or now not in stale:
                del self._pending[key]
        return not any(k[1] == namespace for k in self._pending)


class TrackedApi:
    """The KubeApi the executor writes through: each successful write is told to the source
    (with the version its view held before), so that the next round waits for its echo."""

    def __init__(self, api: KubeApi, source: Source) -> None:
        self.api = api
        self.source = source

    @staticmethod
    def _key(path: str, body: Mapping[str, Any] | None = None) -> tuple[str, str, str] | None:
        parts = path.strip("/").split("/")
        if "namespaces" not in parts:
            return None
        i = parts.index("namespaces")
        rest = parts[i + 1:]
        if len(rest) < 2:
            return None
        name = rest[2] if len(rest) > 2 else str(((body or {}).get("metadata") or {}).get(
            "name", ""))
        return (rest[1], rest[0], name) if name else None

    async def _write(self, key: tuple[str, str, str] | None, call: Any) -> Any:
        before = self.source.before_write(*key) if key else None
        result = await call
        if key is not None:
            after = (result.get("metadata") or {}).get("resourceVersion") if isinstance(
                result, dict) else None
            self.source.wrote(*key, before, str(after) if after is not None else None)
        return result

    async def list(self, path: str, *, label_selector: str | None = None) -> list[JsonDict]:
        return await self.api.list(path, label_selector=label_selector)

    async def get(self, path: str) -> JsonDict:
        return await self.api.get(path)

    async def create(self, path: str, body: Mapping[str, Any]) -> JsonDict:
        result: JsonDict = await self._write(self._key(path, body), self.api.create(path, body))
        return result

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JsonDict:
        result: JsonDict = await self._write(self._key(path), self.api.merge_patch(path, patch))
        return result

    async def replace(self, path: str, body: Mapping[str, Any]) -> JsonDict:
        result: JsonDict = await self._write(self._key(path), self.api.replace(path, body))
        return result

    async def delete(self, path: str, *, preconditions: Mapping[str, str] | None = None,
                     propagation: str = "Background") -> None:
        await self._write(self._key(path), self.api.delete(
            path, preconditions=preconditions, propagation=propagation))


def status_written(pool: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether the pool's status already says all this (then it is not written again)."""
    current = pool.get("status") or {}
    return all(current.get(key) == value for key, value in status.items())


def applied(the_plan: Plan, out: Outcome) -> bool:
    """Whether the round's scaling decision happened: its Deployment created (start) or
    deleted (stop). A create refused (missing Secret, pool gone, already there) or a delete
    that lost a race is no scaling event."""
    decision = the_plan.decision
    if decision.action == ScaleAction.NONE or decision.slot is None:
        return False
    if decision.action == ScaleAction.START:
        names = {c.manifest["metadata"]["name"] for c in the_plan.creates
                 if c.slot == decision.slot}
        return bool(names & set(out.created))
    names = {d.name for d in the_plan.deletes if d.slot == decision.slot}
    return bool(names & set(out.deleted))


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
    """Reconciles WorkerPools: one round at a time per pool (a lock per pool), each from its
    source's snapshot (fresh lists by default; kopf's indexes in the operator)."""

    def __init__(
        self,
        api: KubeApi,
        outbox: Outbox | None = None,
        config: OperatorConfig | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        notify: NotifyFn | None = None,
        wakeup: PoolWakeup | None = None,
        source: Source | None = None,
        added: AddedWorkers | None = None,
    ) -> None:
        self.source: Source = source or ListingSource(api)
        self._tracked = TrackedApi(api, self.source)
        self.api: KubeApi = self._tracked
        self.wakeup = wakeup
        self.added = added  # /addworker's slots (None: only spec.tokenSecrets)
        self.outbox: Outbox = outbox or NullOutbox()
        self.announcer = Announcer(self.outbox)
        self.config = config or OperatorConfig()
        self.clock = clock
        self.notify = notify
        self.memories: dict[tuple[str, str], Memory] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._wakes: dict[tuple[str, str], asyncio.Event] = {}
        self._deadlines: dict[tuple[str, str], datetime | None] = {}
        self.wake_wait, self.wake_give_up = WAKE_WAIT_S, WAKE_GIVE_UP_S
        self._waking: asyncio.Task[None] | None = None
        self._wake_failing = False  # logged once per outage, not once per round

    async def close(self) -> None:
        if self._waking is not None:
            self._waking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._waking
        await self.announcer.close()  # before the store it writes to
        if self.added is not None:
            await self.added.close()  # before the store its read uses
        close = getattr(self.outbox, "close", None)
        if close is not None:
            await close()
        if self.wakeup is not None:
            await self.wakeup.close()

    def use(self, source: Source) -> None:
        """Plan from this source from now on (the operator's IndexSource)."""
        self.source = source
        self._tracked.source = source

    def memory(self, namespace: str, name: str) -> Memory:
        return self.memories.setdefault((namespace, name), Memory())

    def forget(self, namespace: str, name: str) -> None:
        self.memories.pop((namespace, name), None)
        self._locks.pop((namespace, name), None)
        self._deadlines.pop((namespace, name), None)

    async def snapshot(self, namespace: str, name: str) -> Snapshot | None:
        return await self.source.snapshot(namespace, name, self.config.default_pool)

    def poke(self, namespace: str | None = None) -> None:
        """Something changed (a watch event): the pools of that namespace (all when None)
        start a round soon."""
        for (ns, _), wake in self._wakes.items():
            if namespace is None or ns == namespace:
                wake.set()

    async def reconcile(self, namespace: str, name: str) -> Outcome | None:
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            snap = await self.snapshot(namespace, name)
            if snap is None:
                return None
            memory = self.memory(namespace, name)
            if self.added is not None:
                snap = await self._with_added_slots(snap, memory)
            the_plan = plan(snap.pool, snap.tasks, snap.deployments, snap.leases, self.clock(),
                            memory, self.config, claim_unlabelled=snap.claim_unlabelled)
            out = await self.execute(the_plan, snap.pool, memory)
            if self.wakeup is not None and self.wakeup.due(namespace, name):
                # Under the pool's lock: no round starts a worker while its chat is peeked at.
                try:
                    memory.wanted = await self.wakeup.waiting(
                        namespace, snap.pool, the_plan.states, snap.deployments)
                except Exception:
                    log.exception("checking stopped workers' chats failed")
                if memory.wanted:
                    self.poke(namespace)  # the next round starts them
            self._deadlines[(namespace, name)] = next_deadline(
                snap.pool, snap.tasks, snap.deployments, snap.leases, self.clock(), memory,
                self.config, claim_unlabelled=snap.claim_unlabelled)
            return out

    async def _with_added_slots(self, snap: Snapshot, memory: Memory) -> Snapshot:
        """The snapshot with the pool's slots added from Telegram (operator/added.py)."""
        assert self.added is not None
        pool = snap.pool

        def post(notice: Notice) -> None:
            if self.notify is not None:
                try:
                    self.notify(pool, notice)
                except Exception:
                    log.exception("could not post an event on the pool")

        running = await self.added.slots(pool, post)
        # A spare slot that has a Deployment was added before (this operator before a
        # restart): it stays in the pool even while the database cannot be read, or its
        # worker would be removed as an orphan.
        meta = pool["metadata"]
        for dep in snap.deployments:
            labels = (dep.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_POOL) == meta["name"] and labels.get(LABEL_SLOT):
                running.add(str(labels[LABEL_SLOT]))
        memory.fresh |= self.added.take_fresh(meta.get("namespace") or "default", meta["name"])
        return dataclasses.replace(snap, pool=with_added_slots(pool, running))

    def pause(self, namespace: str, name: str) -> float:
        """Seconds until the pool's next timed round: its plan's next deadline, the wake-up
        watcher's next look, or the safety net, whichever comes first."""
        pause = self.config.interval
        deadline = self._deadlines.get((namespace, name))
        if deadline is not None:
            pause = min(pause, (deadline - self.clock()).total_seconds() + DEADLINE_MARGIN)
        if self.wakeup is not None:
            pause = min(pause, self.wakeup.until_due(namespace, name))
        return max(pause, MIN_PAUSE)

    async def serve(self, namespace: str, name: str,
                    stopped: Callable[[], bool] = lambda: False) -> None:
        """A pool's rounds for as long as the operator serves it (a kopf daemon's body): one
        at once, then one per poke, deadline or safety-net interval; never raises."""
        wake = self._wakes.setdefault((namespace, name), asyncio.Event())
        try:
            while not stopped():
                wake.clear()
                await self._round_of(namespace, name)
                await self._sleep(wake, self.pause(namespace, name))
                if stopped():
                    break
                await self._settle(wake, namespace, name, stopped)
                await asyncio.sleep(BATCH_WINDOW)  # a burst of events makes one round
        finally:
            self._wakes.pop((namespace, name), None)

    async def _round_of(self, namespace: str, name: str) -> Outcome | None:
        try:
            outcome = await self.reconcile(namespace, name)
        except Exception:  # the next round retries
            log.exception("reconciliation failed", extra={"pool": name, "namespace": namespace})
            return None
        if outcome is not None and (outcome.assigned or outcome.created or outcome.deleted
                                    or outcome.requeued or outcome.errors):
            log.info("reconciled", extra={
                "pool": name, "assigned": outcome.assigned, "requeued": outcome.requeued,
                "started": outcome.created, "stopped": outcome.deleted,
                "errors": outcome.errors})
        return outcome

    @staticmethod
    async def _sleep(wake: asyncio.Event, seconds: float) -> None:
        await wait_event(wake, seconds)

    async def _settle(self, wake: asyncio.Event, namespace: str, name: str,
                      stopped: Callable[[], bool]) -> None:
        """Until the view shows this operator's own writes (or `settle_timeout` passed)."""
        limit = time.monotonic() + self.config.settle_timeout
        while (not self.source.caught_up(namespace) and time.monotonic() < limit
               and not stopped()):
            wake.clear()
            await self._sleep(wake, min(0.2, max(0.0, limit - time.monotonic())))

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
        signal = getattr(self.outbox, "signal_tasks", None)
        if out.assigned and signal is not None:
            # After the labels the workers' claim selects by: they look at once, not on
            # their next poll (which stays the backstop when this fails).
            await self._wake_workers(signal)
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
        if not status_written(pool, the_plan.status):
            try:
                await self.api.merge_patch(workerpools_path(ns, the_plan.pool, "status"),
                                           the_plan.status_patch())
            except KubeError as exc:
                self._note(out, "pool status", exc)
        memory.quiet_since = the_plan.quiet_since
        memory.orphans_seen = the_plan.orphans_seen
        memory.wanted -= {c.slot for c in the_plan.creates}  # started: no longer waiting
        if the_plan.decision.action != ScaleAction.START:
            memory.fresh.clear()  # no room (or nothing to start): they start when wanted
        memory.fresh -= {c.slot for c in the_plan.creates}
        if the_plan.last_scale is not None:
            memory.last_scale = the_plan.last_scale
        if applied(the_plan, out):
            metrics.SCALE_EVENTS.labels(the_plan.decision.action.value).inc()
        metrics.observe_fleet(the_plan.states, the_plan.pending)
        if self.notify is not None:
            for notice in the_plan.notices:
                try:
                    self.notify(pool, notice)
                except Exception:
                    log.exception("could not post an event on the pool")
        return out

    async def _wake_workers(self, signal: Callable[[], Awaitable[None]]) -> None:
        """Signal the workers, waiting `wake_wait` at most: the assignments are written
        already, so a database that is down or hangs must not hold up the round. One signal
        at a time: while one hangs, later rounds leave the workers to their poll."""
        if self._waking is not None and not self._waking.done():
            log.debug("the last wake signal is still under way; none sent this round")
            return
        self._waking = asyncio.create_task(self._signal(signal), name="wake-workers")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.wake_wait):  # (wait_for can lose a cancel on 3.11)
                await asyncio.shield(self._waking)

    async def _signal(self, signal: Callable[[], Awaitable[None]]) -> None:
        try:
            await asyncio.wait_for(signal(), self.wake_give_up)
        except Exception as exc:
            # The error's type only: a connection error may quote the URL.
            extra = {"error": type(exc).__name__}
            if self._wake_failing:
                log.debug("the workers' wake signal still fails", extra=extra)
            else:
                log.warning("could not wake the workers; they find their tasks on their poll "
                            "until the database answers again", extra=extra)
            self._wake_failing = True
            return
        if self._wake_failing:
            self._wake_failing = False
            log.info("the workers' wake signal works again")

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
        # Written in order, in the background when the database is slow (operator/announcer.py).
        await self.announcer.announce(q.event)

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
        if self.wakeup is not None:
            self.wakeup.forget_token(ns, c.secret[0])  # read afresh once it stops again

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
