"""Test helpers around the emulated API server: objects, fake worker pods, a kopf thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

import kopf

from fleetgram.domain import utcnow
from fleetgram.kube.objects import (
    ANNOTATION_CURRENT_TASK,
    ANNOTATION_READY_AT,
    ANNOTATION_STARTED_AT,
    ANNOTATION_USERNAME,
    API_VERSION,
    LABEL_PHASE,
    LABEL_POOL,
    LABEL_SLOT,
    LABEL_WORKER,
    iso,
    lease_name,
)
from tests.emulators.kube_api import ApiError, KubeEmulator

NS = "fleetgram"


def make_secrets(emu: KubeEmulator, count: int, *, skip: Iterable[int] = ()) -> None:
    for i in range(1, count + 1):
        if i in set(skip):
            continue
        emu.create({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": f"worker{i}-token", "namespace": NS},
                    "stringData": {"token": f"10000{i}:worker-token-{i}"}})


def make_pool(emu: KubeEmulator, tokens: int = 3, name: str = "fleetgram",
              **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tokenSecrets": [{"name": f"worker{i}-token"} for i in range(1, tokens + 1)],
        "template": {"image": "ghcr.io/fleetgram/fleetgram-worker:test", "model": "claude-test",
                     "maxTokens": 1024,
                     "env": [{"name": "ALLOWED_USER_IDS", "value": "42"}]},
    }
    body.update(spec)
    return emu.create({"apiVersion": API_VERSION, "kind": "WorkerPool",
                       "metadata": {"name": name, "namespace": NS}, "spec": body})


def make_task(emu: KubeEmulator, name: str, **spec: Any) -> dict[str, Any]:
    body = {"prompt": f"prompt of {name}", "title": f"title of {name}", "userId": 42,
            "chatId": 42, **spec}
    return emu.create({"apiVersion": API_VERSION, "kind": "BotTask",
                       "metadata": {"name": name, "namespace": NS,
                                    "labels": {LABEL_PHASE: "pending"}},
                       "spec": body})


def write_lease(emu: KubeEmulator, pool: str, slot: str, *, renewed: datetime,
                ready: datetime | None, started: datetime | None = None,
                current: str | None = None, username: str | None = None) -> None:
    ann: dict[str, str | None] = {
        ANNOTATION_READY_AT: iso(ready), ANNOTATION_STARTED_AT: iso(started),
        ANNOTATION_CURRENT_TASK: current, ANNOTATION_USERNAME: username,
    }
    body: dict[str, Any] = {
        "metadata": {"annotations": ann},
        "spec": {"holderIdentity": f"{slot}-pod", "leaseDurationSeconds": 5,
                 "renewTime": iso(renewed)},
    }
    name = lease_name(pool, slot)
    if emu.get("leases", name, NS) is None:
        body["metadata"] = {"name": name, "namespace": NS, "labels": {
            LABEL_POOL: pool, LABEL_SLOT: slot},
            "annotations": {k: v for k, v in ann.items() if v is not None}}
        body.update({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"})
        with contextlib.suppress(ApiError):
            emu.create(body)
            return
    emu.patch("leases", name, body, NS)


def must(emu: KubeEmulator, kind: str, name: str) -> dict[str, Any]:
    """The object, which must exist."""
    obj = emu.get(kind, name, NS)
    assert obj is not None, f"{kind}/{name} not found"
    return obj


def phase(emu: KubeEmulator, name: str) -> str | None:
    """The task's phase (Pending until somebody writes a status); None when it is gone."""
    obj = emu.get("bottasks", name, NS)
    if obj is None:
        return None
    value: str = (obj.get("status") or {}).get("phase", "Pending")
    return value


# --------------------------------------------------------------------------------------------
# What happened, from the emulator's change history.
# --------------------------------------------------------------------------------------------


def assignments_per_task(emu: KubeEmulator) -> Counter[str]:
    """How many times each task entered phase Assigned."""
    counts: Counter[str] = Counter()
    for change in emu.changes("bottasks"):
        new = ((change.object.get("status") or {}).get("phase"))
        old = (((change.previous or {}).get("status") or {}).get("phase"))
        if new == "Assigned" and old != "Assigned":
            counts[change.name] += 1
    return counts


def double_bookings(emu: KubeEmulator) -> list[str]:
    """Moments at which one worker held two Assigned/Running tasks at once."""
    holding: dict[str, str | None] = {}
    problems = []
    for change in emu.changes("bottasks"):
        status = change.object.get("status") or {}
        if change.type != "DELETED" and status.get("phase") in ("Assigned", "Running"):
            holding[change.name] = status.get("worker")
        else:
            holding.pop(change.name, None)
        per_worker = Counter(w for w in holding.values() if w)
        problems += [f"rv {change.rv}: {w} holds {n}" for w, n in per_worker.items() if n > 1]
    return problems


def deployments_created(emu: KubeEmulator) -> Counter[str]:
    return Counter(c.name for c in emu.changes("deployments") if c.type == "ADDED")


# --------------------------------------------------------------------------------------------
# Fake worker pods: what the worker processes would write, driven by the Deployments.
# --------------------------------------------------------------------------------------------


@dataclass
class _Process:
    uid: str
    started: datetime
    hung: bool = False


@dataclass
class FakeWorkers:
    """A thread playing every worker pod of a pool: each Deployment is one process that gets
    ready after `boot` seconds, renews its Lease, runs the tasks labelled with its slot for
    `work` seconds each, and completes them. A process of a slot in `hang_on_task` stops
    heartbeating (a hung pod) once it starts a task; a fresh Deployment is a fresh process."""

    emu: KubeEmulator
    pool: str = "fleetgram"
    boot: float = 0.2
    work: float = 0.3
    hang_on_task: set[str] = field(default_factory=set)
    processes: dict[str, _Process] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> FakeWorkers:
        self._thread = threading.Thread(target=self._run, name="fake-workers", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except ApiError as exc:  # raced the operator (e.g. a Deployment just deleted)
                self.errors.append(str(exc))
            except Exception as exc:  # pragma: no cover - shown by the test's assertions
                self.errors.append(repr(exc))
            time.sleep(0.05)

    def step(self) -> None:
        now = utcnow()
        for dep in self.emu.objects("deployments", NS):
            labels = dep["metadata"].get("labels") or {}
            if labels.get(LABEL_POOL) != self.pool or dep["metadata"].get("deletionTimestamp"):
                continue
            slot = labels[LABEL_SLOT]
            proc = self.processes.get(slot)
            if proc is None or proc.uid != dep["metadata"]["uid"]:
                proc = self.processes[slot] = _Process(dep["metadata"]["uid"], now)
            if proc.hung:
                continue
            ready = proc.started + timedelta(seconds=self.boot)
            if now < ready:
                continue
            current = self._work(slot, proc, now)
            write_lease(self.emu, self.pool, slot, renewed=now, ready=ready,
                        started=proc.started, current=current, username=f"{slot}_test_bot")

    def _work(self, slot: str, proc: _Process, now: datetime) -> str | None:
        mine = [t for t in self.emu.objects("bottasks", NS)
                if (t["metadata"].get("labels") or {}).get(LABEL_WORKER) == slot
                and (t.get("status") or {}).get("worker") == slot
                and (t.get("status") or {}).get("phase") in ("Assigned", "Running")]
        for t in sorted(mine, key=lambda t: t["status"].get("assignedAt", "")):
            name, status = t["metadata"]["name"], t["status"]
            if status["phase"] == "Assigned":
                self.emu.patch("bottasks", name, {"status": {
                    "phase": "Running", "startedAt": iso(now)}}, NS, subresource="status")
                self.emu.patch("bottasks", name, {"metadata": {"labels": {
                    LABEL_PHASE: "running"}}}, NS)
                if slot in self.hang_on_task:
                    self.hang_on_task.discard(slot)
                    proc.hung = True
                return str(name)
            started = datetime.fromisoformat(status["startedAt"].replace("Z", "+00:00"))
            if (now - started).total_seconds() < self.work:
                return str(name)
            self.emu.patch("bottasks", name, {"status": {
                "phase": "Completed", "completedAt": iso(now), "summary": f"done by {slot}"}},
                NS, subresource="status")
            self.emu.patch("bottasks", name, {"metadata": {"labels": {
                LABEL_PHASE: "completed"}}}, NS)
        return None


# --------------------------------------------------------------------------------------------
# A kopf operator in a thread of its own (its own event loop), like kopf.testing.KopfRunner
# but without click's process-wide stdout swapping, so that two can run side by side.
# --------------------------------------------------------------------------------------------


class OperatorThread:
    def __init__(self, registry: kopf.OperatorRegistry, *, namespace: str = NS,
                 name: str = "operator") -> None:
        self.registry = registry
        self.namespace = namespace
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(kopf.operator(
                registry=self.registry, settings=kopf.OperatorSettings(), standalone=True,
                namespaces=[self.namespace], stop_flag=self._stop, ready_flag=self._ready))
        except BaseException as exc:
            self.error = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> OperatorThread:
        self._thread.start()
        self._ready.wait(15)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(20)
        if self._thread.is_alive():
            raise RuntimeError("the operator did not stop")
        if self.error is not None and exc is None:
            raise self.error
