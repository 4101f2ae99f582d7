"""The `Store` of cluster mode: the task queue on BotTasks, worker liveness on Leases.

Tasks waiting, assigned and running live as BotTask objects in the namespace; the kopf operator
assigns them (status.phase Assigned, status.worker, the worker label, attempts + 1: see the
attempts rule in fleetgram/kube/objects.py). Worker slots are read from the WorkerPool, the
worker Deployments and the workers' Leases. Everything else (conversations and their Claude
Code sessions, the usage ledger, the outbox, the workers' reply messages, the files sent with
prompts, and the full record of every task, archived at each change made here) stays in the SQL
store this one wraps, so the master and worker bots run unchanged on either.

Consistency: a change of a task's state is one write of its status subresource, conditional on
the resourceVersion it was decided from; on 409 the object is read again and the decision
taken anew (the operator, the master and the worker may all write the same BotTask). The
labels follow in a second write (they live on the main resource), after the status and after
the SQL record and outbox event of the change, so a label is never ahead of the status: a
finished phase label means a finished task, whatever the other labels say.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from fleetgram.config import Settings
from fleetgram.domain import Attachment, Event, Task, TaskState, WorkerSlot
from fleetgram.kube.added_slots import free_spare_slot, with_added_slots
from fleetgram.kube.client import Conflict, KubeApiError, KubeClient, NotFound
from fleetgram.kube.objects import (
    BOTTASKS,
    DEPLOYMENT_SLOT_FIELDS,
    LABEL_PHASE,
    LABEL_POOL,
    LABEL_SLOT,
    LABEL_WORKER,
    PHASE_OF,
    PROMPT_MAX,
    SLOT_ANNOTATIONS,
    SUMMARY_MAX,
    TITLE_MAX,
    WORKERPOOLS,
    Requeue,
    bottask_manifest,
    deployment_name,
    iso,
    labels_for,
    labels_in_step,
    lease_manifest,
    lease_name,
    lease_patch,
    phase_label,
    requeue_of,
    slot_names_of,
    status_of,
    summary_of,
    usage_status,
    worker_slot_of,
)
from fleetgram.kube.objects import task_of as bare_task_of
from fleetgram.policy import queue_key
from fleetgram.store.base import (
    ApiCall,
    CancelOutcome,
    CancelResult,
    Store,
    UnstorableText,
    UsageLine,
    check_storable,
    storable,
)
from fleetgram.store.signals import Signals, signals_of
from fleetgram.store.sql import DuplicateTaskError

log = logging.getLogger(__name__)

RETRIES = 10  # conditional writes tried this many times against concurrent writers

# Finished is terminal, and a label is written only after the status: an object labelled with a
# finished phase is finished. Any other label (or none) may lag its status by a step or more.
_FINISHED_LABELS = ",".join(phase_label(s) for s in TaskState if s.finished)
_NOT_FINISHED = f"{LABEL_PHASE} notin ({_FINISHED_LABELS})"

_SLOT_FIELDS = {"heartbeat_at", *SLOT_ANNOTATIONS, *DEPLOYMENT_SLOT_FIELDS}

WAITING_FOR = "waitingFor"  # status field: what the running task waits for from its user
WAITING_MAX = 1000  # the CRD's status.waitingFor maxLength


def task_of(obj: dict[str, Any]) -> Task:
    """`objects.task_of`, with Task.waiting from status.waitingFor. Only an assigned/running
    task waits: a waitingFor left on a task requeued by the operator (which does not clear it)
    is not shown."""
    task = bare_task_of(obj)
    waiting = (obj.get("status") or {}).get(WAITING_FOR)
    return task.with_(waiting=waiting) if waiting and task.state.active else task


def _waiting_text(what: str) -> str:
    """`what` as status.waitingFor holds it: storable, and cut to the CRD's limit."""
    what = storable(what)
    return what if len(what) <= WAITING_MAX else what[: WAITING_MAX - 1] + "…"


def _name(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def _rv(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


def _check_bottask_text(prompt: str, title: str) -> None:
    """What create_task/update_pending_prompt refuse before writing anything: what no store
    keeps, and a prompt longer than a BotTask's spec holds (the API server would answer 422)."""
    check_storable(prompt=prompt, title=title)
    if len(prompt) > PROMPT_MAX:
        raise UnstorableText(
            "prompt", f"{len(prompt)} characters (a task holds at most {PROMPT_MAX} in "
            "cluster mode)",
        )


def _pinned_matches(task: Task, pinned: bool | None) -> bool:
    return pinned is None or (task.pinned_worker is not None) == pinned


def _maybe_truncated(result: str | None) -> bool:
    """A summary that may have been cut short of the full result (kept in SQL)."""
    return result is not None and len(result) == SUMMARY_MAX and result.endswith("…")


class ClusterStore:
    """`Store` over BotTasks and Leases in `settings.namespace`, with `inner` (the SQL store)
    for everything else. `kube` may be given (tests); otherwise open() connects with the
    in-cluster config, or the kubeconfig at `kubeconfig` / $KUBECONFIG."""

    def __init__(
        self,
        settings: Settings,
        inner: Store,
        *,
        kube: KubeClient | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
    ) -> None:
        self.settings = settings
        self.inner = inner
        self.namespace = settings.namespace
        self.pool = settings.pool_name
        self._kube = kube
        self._owns_kube = kube is None
        self._kubeconfig = kubeconfig

    @property
    def signals(self) -> Signals | None:
        """The SQL store's change signals: the outbox's wake the master; "tasks changed"
        comes from SQL too (a task's record is written with each change made here, and the
        operator can signal an assignment on the same database)."""
        return signals_of(self.inner)

    @property
    def kube(self) -> KubeClient:
        if self._kube is None:
            raise RuntimeError("ClusterStore is not open")
        return self._kube

    # --- lifecycle -----------------------------------------------------------------------
    async def open(self) -> None:
        await self.inner.open()
        if self._kube is None:
            self._kube = await KubeClient.connect(self.namespace, self._kubeconfig)

    async def close(self) -> None:
        try:
            await self.inner.close()
        finally:
            if self._owns_kube and self._kube is not None:
                await self._kube.close()
                self._kube = None

    # --- reading BotTasks ----------------------------------------------------------------
    async def _read(self, task_id: str) -> dict[str, Any] | None:
        try:
            return await self.kube.get_object(BOTTASKS, task_id)
        except NotFound:
            return None

    async def _list(
        self, states: Iterable[TaskState] | None = None, *, selector: str | None = None
    ) -> list[dict[str, Any]]:
        """BotTasks that may be in `states` (all when None), narrowed by label where the labels
        can be trusted (see _NOT_FINISHED); callers filter on the status."""
        parts = [selector] if selector else []
        if states is not None and not any(TaskState(s).finished for s in states):
            parts.append(_NOT_FINISHED)
        return await self.kube.list_objects(BOTTASKS, ",".join(parts) or None)

    async def _tasks(
        self, states: Iterable[TaskState] | None = None, *, selector: str | None = None
    ) -> list[Task]:
        wanted = None if states is None else {TaskState(s) for s in states}
        tasks = [task_of(obj) for obj in await self._list(wanted, selector=selector)]
        if wanted is not None:
            tasks = [t for t in tasks if t.state in wanted]
        return sorted(tasks, key=queue_key)

    async def _full(self, task: Task) -> Task:
        """The task with its full result when the BotTask's summary may be cut short."""
        if not _maybe_truncated(task.result):
            return task
        archived = await self.inner.get_task(task.id)
        if archived is None or archived.result is None:
            return task
        return task.with_(result=archived.result)

    # --- writing BotTasks ----------------------------------------------------------------
    async def _change_status(
        self,
        task_id: str,
        decide: Callable[[Task], dict[str, Any] | None],
        obj: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Patch the status with what `decide` makes of the task as read, conditional on that
        read; on 409 read again and decide again. None when `decide` declines (or the task is
        gone); else the object as written."""
        for _ in range(RETRIES):
            if obj is None:
                obj = await self._read(task_id)
                if obj is None:
                    return None
            status = decide(task_of(obj))
            if status is None:
                return None
            patch = {"metadata": {"resourceVersion": _rv(obj)}, "status": status}
            try:
                return await self.kube.patch_status(BOTTASKS, task_id, patch)
            except Conflict:
                obj = None
            except NotFound:
                return None
        raise Conflict(409, "Conflict", f"{task_id} kept changing; gave up after {RETRIES} tries")

    async def _sync_labels(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Bring the phase and worker labels in step with the status (conditional writes). The
        status is the truth: a failure here is logged, never raised."""
        name = _name(obj)
        try:
            for _ in range(RETRIES):
                if labels_in_step(obj):
                    return obj
                patch = {"metadata": {"resourceVersion": _rv(obj), "labels": labels_for(obj)}}
                try:
                    return await self.kube.patch_object(BOTTASKS, name, patch)
                except Conflict:
                    fresh = await self._read(name)
                    if fresh is None:
                        return obj
                    obj = fresh
        except NotFound:
            return obj
        except KubeApiError:
            log.exception("could not label the task", extra={"task": name})
            return obj
        log.warning("task labels still out of step", extra={"task": name})
        return obj

    async def _archive(self, task: Task) -> Task:
        """Record the task in SQL. Usage totals are SQL's own (the ledger's sums), so that
        a stale status never undoes a recorded call."""
        archived = await self.inner.get_task(task.id)
        if archived is not None:
            task = task.with_(usage=archived.usage)
        await self.inner.archive_task(task)
        return task

    async def _announce(self, task: Task, event: tuple[str, dict[str, Any]] | None) -> None:
        if event is not None:
            kind, payload = event
            await self.inner.add_event(kind, payload, task_id=task.id, chat_id=task.chat_id)

    # --- task queue ----------------------------------------------------------------------
    async def create_task(
        self, task: Task, event: tuple[str, dict[str, Any]] | None = None
    ) -> Task:
        _check_bottask_text(task.prompt, task.title)  # before any write, as SQL does
        if await self.inner.get_task(task.id) is not None:
            raise DuplicateTaskError(f"task id {task.id} is already taken")
        try:
            obj = await self.kube.create_object(BOTTASKS, bottask_manifest(task, self.namespace))
        except Conflict as exc:
            raise DuplicateTaskError(f"task id {task.id} is already taken") from exc
        # The status from the start (kubectl shows the phase), unless someone was quicker.
        try:
            obj = await self.kube.patch_status(
                BOTTASKS, task.id,
                {"metadata": {"resourceVersion": _rv(obj)}, "status": status_of(task)},
            )
        except Conflict:
            obj = await self._read(task.id) or obj
        created = task_of(obj).with_(result=task.result)
        await self.inner.create_task(created, event)  # the record and its event, one transaction
        await self._sync_labels(obj)
        return created

    async def get_task(self, task_id: str) -> Task | None:
        obj = await self._read(task_id)
        return None if obj is None else await self._full(task_of(obj))

    async def list_tasks(
        self,
        states: Iterable[TaskState] | None = None,
        *,
        user_id: int | None = None,
        worker: str | None = None,
        limit: int = 100,
        pinned: bool | None = None,
    ) -> list[Task]:
        if states is not None:
            states = [TaskState(s) for s in states]
            if not states:
                return []
        tasks = [
            t for t in await self._tasks(states)
            if (user_id is None or t.user_id == user_id) and (worker is None or t.worker == worker)
            and _pinned_matches(t, pinned)
        ]
        return [await self._full(t) for t in tasks[:limit]]

    async def count_tasks(
        self,
        states: Iterable[TaskState],
        *,
        user_id: int | None = None,
        pinned: bool | None = None,
    ) -> int:
        """Kubernetes has no count: this lists the BotTasks (narrowed by the phase label where
        it can be trusted) and counts them here. The queue holds only live tasks (finished ones
        are purged by TTL), so the list stays small; no full results are fetched from SQL."""
        wanted = [TaskState(s) for s in states]
        if not wanted:
            return 0
        return sum(
            1 for t in await self._tasks(wanted)
            if (user_id is None or t.user_id == user_id) and _pinned_matches(t, pinned)
        )

    async def find_task_by_message(
        self, chat_id: int, message_id: int, *, made_in: str | None = None
    ) -> Task | None:
        """Through the SQL archive (which has the message, indexed), then the BotTask, which
        is the truth while it exists; the archived record once the BotTask was purged."""
        archived = await self.inner.find_task_by_message(chat_id, message_id, made_in=made_in)
        if archived is None:
            return None
        current = await self.get_task(archived.id)
        return current if current is not None else archived

    async def update_pending_prompt(self, task_id: str, prompt: str, title: str, *,
                                    priority: int | None = None) -> Task | None:
        """The spec's prompt and title, in one write conditional on the version read as
        Pending: an assignment (or cancel) in between makes it 409, and the task, read again,
        is then no longer pending."""
        _check_bottask_text(prompt, title)
        for _ in range(RETRIES):
            obj = await self._read(task_id)
            if obj is None or task_of(obj).state is not TaskState.PENDING:
                return None
            spec: dict[str, Any] = {"prompt": prompt, "title": title[:TITLE_MAX]}
            if priority is not None and priority < task_of(obj).priority:
                spec["priority"] = priority  # only ever more urgent
            patch = {"metadata": {"resourceVersion": _rv(obj)}, "spec": spec}
            try:
                new = await self.kube.patch_object(BOTTASKS, task_id, patch)
            except Conflict:
                continue
            except NotFound:
                return None
            return await self._archive(task_of(new))
        raise Conflict(409, "Conflict", f"{task_id} kept changing; gave up after {RETRIES} tries")

    async def queue_position(self, task_id: str) -> int | None:
        pending = await self._tasks([TaskState.PENDING])
        mine = next((t for t in pending if t.id == task_id), None)
        if mine is None:
            return None
        key = queue_key(mine)
        return 1 + sum(1 for t in pending if not t.cancel_requested and queue_key(t) < key)

    async def claim_next(self, worker: str, now: datetime) -> Task | None:
        """The first (queue order) of the tasks the operator assigned to `worker` and that it
        has not started: workers never take pending tasks themselves in cluster mode. A task
        whose cancel was requested is handed over too: mark_running refuses it, and the worker
        then finishes it as cancelled."""
        assigned = await self._tasks([TaskState.ASSIGNED], selector=f"{LABEL_WORKER}={worker}")
        return next((t for t in assigned if t.worker == worker), None)

    async def mark_running(self, task_id: str, worker: str, now: datetime) -> Task | None:
        def decide(task: Task) -> dict[str, Any] | None:
            if task.state is not TaskState.ASSIGNED or task.worker != worker:
                return None
            if task.cancel_requested:
                return None
            return {"phase": PHASE_OF[TaskState.RUNNING], "startedAt": iso(now)}

        obj = await self._change_status(task_id, decide)
        if obj is None:
            return None
        running = await self._archive(task_of(obj))
        await self._sync_labels(obj)
        return running

    async def finish_task(
        self,
        task_id: str,
        worker: str,
        state: TaskState,
        now: datetime,
        *,
        result: str | None = None,
        error: str | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> Task | None:
        if not TaskState(state).finished:
            raise ValueError(f"finish_task needs a finished state, not {state!r}")
        result, error = storable(result), storable(error)  # recorded, never refused
        archived = await self.inner.get_task(task_id)

        def decide(task: Task) -> dict[str, Any] | None:
            if task.worker != worker or not task.state.active:
                return None
            usage = archived.usage if archived is not None else task.usage
            return {
                "phase": PHASE_OF[TaskState(state)],
                "completedAt": iso(now),
                "summary": summary_of(result),  # None removes an older one
                "error": error,
                "usage": usage_status(usage),
                WAITING_FOR: None,  # a finished task waits for no one
            }

        obj = await self._change_status(task_id, decide)
        if obj is None:
            return None
        finished = await self._archive(task_of(obj).with_(result=result))
        await self._announce(finished, event)
        await self._sync_labels(obj)
        return finished

    async def request_cancel(
        self, task_id: str, user_id: int | None, now: datetime
    ) -> CancelResult:
        for _ in range(RETRIES):
            obj = await self._read(task_id)
            if obj is None:
                return CancelResult(CancelOutcome.NOT_FOUND, None)
            task = task_of(obj)
            if user_id is not None and task.user_id != user_id:
                return CancelResult(CancelOutcome.NOT_YOURS, None)
            if task.state.finished:
                return CancelResult(CancelOutcome.ALREADY_FINISHED, await self._full(task))
            precondition = {"resourceVersion": _rv(obj)}
            try:
                if task.state is TaskState.PENDING:
                    new = await self.kube.patch_status(BOTTASKS, task_id, {
                        "metadata": precondition,
                        "status": {"phase": PHASE_OF[TaskState.CANCELLED],
                                   "completedAt": iso(now)},
                    })
                else:
                    new = await self.kube.patch_object(BOTTASKS, task_id, {
                        "metadata": precondition, "spec": {"cancel": True},
                    })
            except Conflict:
                continue  # it changed meanwhile (assigned, started, finished...): look again
            except NotFound:
                return CancelResult(CancelOutcome.NOT_FOUND, None)
            changed = await self._archive(task_of(new))
            if task.state is not TaskState.PENDING:
                return CancelResult(CancelOutcome.REQUESTED, changed)
            by = "user" if user_id is not None else "operator"
            await self._announce(changed, ("cancelled", {"by": by, "title": changed.title}))
            await self._sync_labels(new)
            return CancelResult(CancelOutcome.CANCELLED, changed)
        raise Conflict(409, "Conflict", f"{task_id} kept changing; gave up after {RETRIES} tries")

    async def requeue_worker_tasks(
        self, worker: str, now: datetime, *, max_attempts: int, reason: str,
        keep_on_worker: bool = False,
    ) -> list[Task]:
        """The worker's assigned/running tasks (by status.worker, not by label) back to pending,
        attempts unchanged; failed once attempts >= max_attempts; cancelled if cancel was
        requested (`objects.requeue_of`, which the operator shares). With keep_on_worker, a
        task going back to pending is first pinned to `worker` (spec.pinnedWorker), so the
        operator can never hand it to another worker in between."""
        candidates = [
            obj for obj in await self._list([TaskState.ASSIGNED, TaskState.RUNNING])
            if (t := task_of(obj)).state.active and t.worker == worker
        ]
        candidates.sort(key=lambda obj: queue_key(task_of(obj)))
        changed: list[Task] = []
        for candidate in candidates:
            if keep_on_worker:
                candidate = await self._pin_for_rerun(
                    candidate, worker, now, max_attempts=max_attempts, reason=reason
                )
            after = await self._requeue(
                _name(candidate), worker, now, max_attempts, reason, candidate
            )
            if after is not None:
                changed.append(after)
        return changed

    async def requeue_task(
        self, task_id: str, worker: str, now: datetime, *, max_attempts: int, reason: str
    ) -> Task | None:
        return await self._requeue(task_id, worker, now, max_attempts, reason)

    async def _pin_for_rerun(
        self, obj: dict[str, Any], worker: str, now: datetime, *, max_attempts: int, reason: str
    ) -> dict[str, Any] | None:
        """Pin the active task of `worker` to it (spec.pinnedWorker, one write conditional on
        the version read) if the requeue will put it back to pending. Pinning a task that is
        still assigned/running changes nothing for the operator, which assigns pending tasks
        only. Returns the object to requeue from (None: read it afresh)."""
        name = _name(obj)
        for _ in range(RETRIES):
            task = task_of(obj)
            if task.worker != worker or not task.state.active or task.pinned_worker == worker:
                return obj
            rerun = requeue_of(task, now, max_attempts=max_attempts, reason=reason, worker=worker)
            if rerun.state is not TaskState.PENDING:
                return obj
            patch = {"metadata": {"resourceVersion": _rv(obj)}, "spec": {"pinnedWorker": worker}}
            try:
                return await self.kube.patch_object(BOTTASKS, name, patch)
            except Conflict:
                fresh = await self._read(name)
                if fresh is None:
                    return None
                obj = fresh
            except NotFound:
                return None
        raise Conflict(409, "Conflict", f"{name} kept changing; gave up after {RETRIES} tries")

    async def _requeue(
        self,
        task_id: str,
        worker: str,
        now: datetime,
        max_attempts: int,
        reason: str,
        obj: dict[str, Any] | None = None,
    ) -> Task | None:
        """One task of `worker` put back by `requeue_of`, if it is still active on it (each
        decision on a fresh read after a 409); its record, event and labels follow."""
        decided: list[Requeue] = []

        def decide(task: Task) -> dict[str, Any] | None:
            if task.worker != worker or not task.state.active:
                return None
            decided.append(
                requeue_of(task, now, max_attempts=max_attempts, reason=reason, worker=worker)
            )
            return {**decided[-1].status, WAITING_FOR: None}  # requeued: waits for no one

        written = await self._change_status(task_id, decide, obj)
        if written is None:
            return None
        after = await self._archive(task_of(written))
        await self._announce(after, decided[-1].event)
        await self._sync_labels(written)
        return after

    async def set_waiting(self, task_id: str, what: str | None) -> None:
        """status.waitingFor (None removes it), written only while the task is active, and
        recorded in SQL with the task."""
        text = None if what is None else _waiting_text(what)

        def decide(task: Task) -> dict[str, Any] | None:
            if text is not None and not task.state.active:
                return None
            if task.waiting == text:
                return None  # nothing to change: no write
            return {WAITING_FOR: text}

        obj = await self._change_status(task_id, decide)
        if obj is not None:
            await self._archive(task_of(obj))

    async def usage_since(
        self, since: datetime, *, user_id: int | None = None, until: datetime | None = None
    ) -> list[UsageLine]:
        """The SQL ledger's (record_api_call gives every call's task a SQL record)."""
        return await self.inner.usage_since(since, user_id=user_id, until=until)

    async def record_api_call(self, call: ApiCall) -> None:
        """The call goes to the SQL ledger (and the SQL task's totals); the BotTask's
        status.usage then shows those totals."""
        task_id = call.task_id
        if task_id is not None and await self.inner.get_task(task_id) is None:
            obj = await self._read(task_id)  # e.g. created with kubectl: give it a record
            if obj is not None:
                await self.inner.archive_task(task_of(obj))
        await self.inner.record_api_call(call)
        if task_id is None:
            return
        archived = await self.inner.get_task(task_id)
        if archived is None:
            return
        try:
            await self.kube.patch_status(
                BOTTASKS, task_id, {"status": {"usage": usage_status(archived.usage)}}
            )
        except NotFound:
            pass

    async def purge_finished(self, before: datetime) -> int:
        """Delete the finished BotTasks completed before `before`, then the SQL store's part
        (the archived records of tasks finished before it, delivered events and ledger rows
        older than it): the retention applies to the audit record as well. The operator's TTL
        removes finished BotTasks much sooner, so their records outlive them until then.
        Returns the number of tasks deleted, each counted once."""
        purged: list[str] = []
        for obj in await self._list():
            for _ in range(RETRIES):
                task = task_of(obj)
                if not (task.state.finished and task.completed_at is not None
                        and task.completed_at < before):
                    break
                try:
                    await self.kube.delete_object(BOTTASKS, task.id, resource_version=_rv(obj))
                except NotFound:
                    break
                except Conflict:
                    fresh = await self._read(task.id)
                    if fresh is None:
                        break
                    obj = fresh
                else:
                    purged.append(task.id)
                    break
        # A BotTask made with kubectl may have no SQL record: count it here, not twice.
        unrecorded = sum([await self.inner.get_task(task_id) is None for task_id in purged])
        return unrecorded + await self.inner.purge_finished(before)

    async def archive_task(self, task: Task) -> None:
        await self.inner.archive_task(task)

    # --- attachments: the SQL store's (the database every pod shares) ----------------------
    async def add_attachments(self, task_id: str, files: Sequence[Attachment]) -> None:
        await self.inner.add_attachments(task_id, files)

    async def load_attachments(self, task_id: str) -> list[Attachment]:
        return await self.inner.load_attachments(task_id)

    # --- worker slots --------------------------------------------------------------------
    async def ensure_slots(self, names: Sequence[str]) -> None:
        """Nothing to do: the slots are the WorkerPool's spec.tokenSecrets."""

    async def add_managed_token(self, slot: str, bot_id: int, username: str,
                                token_encrypted: bytes, *, chat_id: int | None = None) -> None:
        await self.inner.add_managed_token(slot, bot_id, username, token_encrypted,
                                           chat_id=chat_id)

    async def managed_tokens(self) -> list[Any]:
        return await self.inner.managed_tokens()

    async def _added_slots(self) -> set[str]:
        return {row.slot for row in await self.inner.managed_tokens()}

    async def next_added_slot(self) -> str | None:
        """/addworker: the first of the WorkerPool's spare slots that holds no token yet (None
        when the chart reserves none, or all are taken)."""
        try:
            pool = await self.kube.get_object(WORKERPOOLS, self.pool)
        except NotFound:
            return None
        spare = free_spare_slot(pool, await self._added_slots())
        return spare.slot if spare is not None else None

    async def _pool_slot_names(self) -> list[str]:
        """The pool's slots: spec.tokenSecrets', then those added with /addworker."""
        try:
            pool = await self.kube.get_object(WORKERPOOLS, self.pool)
        except NotFound:
            return self.settings.slot_names
        if not (pool.get("spec") or {}).get("spareSlots"):
            return slot_names_of(pool)
        return slot_names_of(with_added_slots(pool, await self._added_slots()))

    async def get_slots(self) -> list[WorkerSlot]:
        """worker1..N of the WorkerPool; enabled while the slot's Deployment exists (started_at:
        its started-at annotation or creation, or the Lease's when later), the rest from the
        worker's Lease (`objects.worker_slot_of`, the operator's reading too)."""
        names, deployments, leases = await asyncio.gather(
            self._pool_slot_names(),
            self.kube.list_deployments(f"{LABEL_POOL}={self.pool}"),
            self.kube.list_leases(),
        )
        by_slot: dict[str, dict[str, Any]] = {}
        for dep in deployments:
            meta = dep.get("metadata") or {}
            slot = (meta.get("labels") or {}).get(LABEL_SLOT)
            if slot:
                by_slot[slot] = dep
            by_slot.setdefault(meta.get("name", ""), dep)
        lease_by_name = {(lease.get("metadata") or {}).get("name"): lease for lease in leases}
        return [
            worker_slot_of(
                name,
                by_slot.get(name) or by_slot.get(deployment_name(self.pool, name)),
                lease_by_name.get(lease_name(self.pool, name)),
            )
            for name in names
        ]

    async def update_slot(self, name: str, **fields: Any) -> None:
        """A worker renews its Lease (heartbeat_at) and records username, ready_at,
        current_task, error, state_since and started_at on it; the Lease is created on first
        use. enabled is accepted and ignored: the slot's Deployment (the operator's) says it."""
        unknown = set(fields) - _SLOT_FIELDS
        if unknown:
            raise TypeError(f"update_slot got unknown fields: {', '.join(sorted(unknown))}")
        own = {k: v for k, v in fields.items() if k not in DEPLOYMENT_SLOT_FIELDS}
        if not own:
            return
        lease_seconds = self.settings.worker_lease_seconds
        patch = lease_patch(name, lease_seconds, own)
        lease = lease_name(self.pool, name)
        for _ in range(RETRIES):
            try:
                await self.kube.patch_lease(lease, patch)
                return
            except NotFound:
                manifest = lease_manifest(self.pool, name, self.namespace, lease_seconds)
                try:
                    await self.kube.create_lease(manifest)
                except Conflict:
                    pass  # created meanwhile: patch it
        raise RuntimeError(f"could not write the Lease {lease}")

    # --- outbox, worker replies and conversations: the SQL store's --------------------------
    async def add_event(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        task_id: str | None = None,
        chat_id: int | None = None,
    ) -> int:
        return await self.inner.add_event(kind, payload, task_id=task_id, chat_id=chat_id)

    async def pending_events(self, limit: int = 50) -> list[Event]:
        return await self.inner.pending_events(limit)

    async def mark_event_delivered(self, event_id: int) -> None:
        await self.inner.mark_event_delivered(event_id)

    async def record_ambiguous_send(self, event_id: int) -> int:
        return await self.inner.record_ambiguous_send(event_id)

    async def remember_reply(
        self, worker: str, task_id: str, chat_id: int, message_id: int
    ) -> None:
        await self.inner.remember_reply(worker, task_id, chat_id, message_id)

    async def forget_replies(self, worker: str, task_id: str) -> None:
        await self.inner.forget_replies(worker, task_id)

    async def leftover_replies(self, worker: str) -> list[tuple[str, int, int]]:
        return await self.inner.leftover_replies(worker)

    async def active_conversation(self, worker: str, user_id: int) -> int:
        return await self.inner.active_conversation(worker, user_id)

    async def new_conversation(self, worker: str, user_id: int) -> int:
        return await self.inner.new_conversation(worker, user_id)

    async def set_session(self, conversation_id: int, session_id: str | None) -> None:
        await self.inner.set_session(conversation_id, session_id)

    async def session_of(self, conversation_id: int) -> str | None:
        return await self.inner.session_of(conversation_id)

    async def load_turns(self, conversation_id: int) -> list[dict[str, Any]]:
        return await self.inner.load_turns(conversation_id)

    async def append_turns(
        self, conversation_id: int, turns: Sequence[dict[str, Any]], task_id: str | None
    ) -> None:
        await self.inner.append_turns(conversation_id, turns, task_id)

    async def replace_turns(
        self, conversation_id: int, turns: Sequence[dict[str, Any]]
    ) -> None:
        await self.inner.replace_turns(conversation_id, turns)

    # Follow-ups by reply: kept in SQL, like the conversations they point into.
    async def record_messages(
        self, bot: str, chat_id: int, message_ids: Sequence[int], task_id: str, kind: str
    ) -> None:
        await self.inner.record_messages(bot, chat_id, message_ids, task_id, kind)

    async def task_of_message(self, bot: str, chat_id: int, message_id: int) -> str | None:
        return await self.inner.task_of_message(bot, chat_id, message_id)

    async def messages_of_task(self, task_id: str, kind: str) -> list[tuple[int, int]]:
        return await self.inner.messages_of_task(task_id, kind)

    async def link_follow_up(self, task_id: str, follow_up_of: str) -> None:
        await self.inner.link_follow_up(task_id, follow_up_of)

    async def follow_up_of(self, task_id: str) -> str | None:
        return await self.inner.follow_up_of(task_id)

    async def link_conversation(self, task_id: str, conversation_id: int) -> None:
        await self.inner.link_conversation(task_id, conversation_id)

    async def conversation_of_task(self, task_id: str) -> tuple[int, str] | None:
        return await self.inner.conversation_of_task(task_id)

    async def activate_conversation(self, conversation_id: int) -> None:
        await self.inner.activate_conversation(conversation_id)
