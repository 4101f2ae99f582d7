"""The executor against the emulated API server (no kopf): each round from fresh reads, every
racing write guarded, and nothing done twice."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from fleetgram.domain import utcnow
from fleetgram.kube.objects import (
    ANNOTATION_RESERVED_TASK,
    LABEL_PHASE,
    LABEL_POOL,
    LABEL_WORKER,
)
from fleetgram.operator.executor import Reconciler
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.outbox import StoreOutbox
from fleetgram.operator.reconcile import OperatorConfig, plan
from fleetgram.store import open_store
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import (
    NS,
    assignments_per_task,
    double_bookings,
    make_pool,
    make_secrets,
    make_task,
    must,
    phase,
    write_lease,
)

pytestmark = pytest.mark.k8s
kube_emulator = kube_api.kube_emulator  # the fixture


class ListOutbox:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], str | None, int | None]] = []

    async def add_event(self, kind: str, payload: dict[str, Any], *, task_id: str | None = None,
                        chat_id: int | None = None) -> None:
        self.events.append((kind, payload, task_id, chat_id))


def ready(emu: KubeEmulator, *slots: str, renewed_ago: float = 0.0) -> None:
    """The workers of these slots answered getMe after their Deployment was created."""
    now = utcnow()
    for slot in slots:
        write_lease(emu, "fleetgram", slot, renewed=now - timedelta(seconds=renewed_ago),
                    ready=now - timedelta(seconds=renewed_ago), username=f"{slot}_bot")


def complete(emu: KubeEmulator, name: str) -> None:
    emu.patch("bottasks", name, {"status": {"phase": "Completed", "completedAt":
                                            utcnow().isoformat().replace("+00:00", "Z")}},
              NS, subresource="status")


@pytest.fixture()
def emu(kube_emulator: KubeEmulator) -> KubeEmulator:
    return kube_emulator


def reconciler(outbox: Any = None, **config: Any) -> Reconciler:
    return Reconciler(KubernetesApi(), outbox, OperatorConfig(**config))


async def test_a_round_creates_an_owned_deployment_once(emu: KubeEmulator) -> None:
    make_secrets(emu, 3)
    pool = make_pool(emu, 3, minWorkers=1)
    out = await reconciler().reconcile(NS, "fleetgram")
    assert out is not None and out.created == ["fleetgram-worker1"] and not out.errors
    dep = must(emu, "deployments", "fleetgram-worker1")
    assert dep is not None
    assert dep["metadata"]["ownerReferences"][0]["uid"] == pool["metadata"]["uid"]
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WORKER_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "worker1-token", "key": "token"}}
    status = must(emu, "workerpools", "fleetgram")["status"]
    assert status["slots"][0]["state"] == "starting"
    assert status["lastScale"]["action"] == "start"
    # Again, and from a freshly started operator (no memory): nothing new.
    assert (await reconciler().reconcile(NS, "fleetgram")).created == []  # type: ignore[union-attr]
    assert [c.name for c in emu.changes("deployments") if c.type == "ADDED"] == [
        "fleetgram-worker1"]


async def test_a_create_that_finds_the_deployment_there_is_fine(emu: KubeEmulator) -> None:
    """An operator restarted mid-scale, or a second replica, created it in between."""
    make_secrets(emu, 3)
    make_pool(emu, 3, minWorkers=1)
    r = reconciler()
    snap = await r.snapshot(NS, "fleetgram")
    assert snap is not None
    the_plan = plan(snap.pool, snap.tasks, snap.deployments, snap.leases, utcnow())
    emu.create(the_plan.creates[0].manifest)  # someone else was faster
    out = await r.execute(the_plan, snap.pool, r.memory(NS, "fleetgram"))
    assert out.created == [] and out.errors == []
    assert len(emu.objects("deployments", NS)) == 1


async def test_two_operators_assign_each_task_once(emu: KubeEmulator) -> None:
    make_secrets(emu, 3)
    make_pool(emu, 3, minWorkers=3, scaleUpThreshold=0)
    first, second = reconciler(), reconciler()
    await asyncio.gather(first.reconcile(NS, "fleetgram"), second.reconcile(NS, "fleetgram"))
    assert len(emu.objects("deployments", NS)) == 1  # one start per round, never twice
    for _ in range(4):
        await asyncio.gather(first.reconcile(NS, "fleetgram"),
                             second.reconcile(NS, "fleetgram"))
        ready(emu, *(d["metadata"]["labels"]["fleetgram.dev/slot"]
                     for d in emu.objects("deployments", NS)))
    assert len(emu.objects("deployments", NS)) == 3
    names = [f"t-{i:02d}" for i in range(9)]
    for i, name in enumerate(names):
        make_task(emu, name, priority=1 + i % 3)
    for _ in range(30):
        await asyncio.gather(first.reconcile(NS, "fleetgram"),
                             second.reconcile(NS, "fleetgram"))
        for t in emu.objects("bottasks", NS):
            if (t.get("status") or {}).get("phase") == "Assigned":
                complete(emu, t["metadata"]["name"])
        ready(emu, "worker1", "worker2", "worker3")
        if all(phase(emu, n) == "Completed" for n in names):
            break
    assert all(phase(emu, n) == "Completed" for n in names)
    assert assignments_per_task(emu) == dict.fromkeys(names, 1)
    assert double_bookings(emu) == []
    for name in names:
        obj = must(emu, "bottasks", name)
        assert obj["status"]["attempts"] == 1
        assert obj["metadata"]["labels"][LABEL_POOL] == "fleetgram"
        assert obj["metadata"]["labels"][LABEL_WORKER] == obj["status"]["worker"]
    # The higher priorities went first. Two replicas racing only promise this loosely: one
    # may plan from a snapshot taken halfway through the other's round.
    order = sorted(names, key=lambda n: must(emu, "bottasks", n)["status"]["assignedAt"])
    priorities = [must(emu, "bottasks", n)["spec"]["priority"] for n in order]
    assert max(priorities[:3]) <= 2 and min(priorities[-3:]) >= 2, priorities


async def test_a_task_changed_under_the_plan_is_skipped(emu: KubeEmulator) -> None:
    make_secrets(emu, 1)
    make_pool(emu, 1, minWorkers=1)
    r = reconciler()
    await r.reconcile(NS, "fleetgram")
    ready(emu, "worker1")
    make_task(emu, "t-raced")
    snap = await r.snapshot(NS, "fleetgram")
    assert snap is not None
    the_plan = plan(snap.pool, snap.tasks, snap.deployments, snap.leases, utcnow())
    assert [(a.task, a.worker) for a in the_plan.assignments] == [("t-raced", "worker1")]
    # Someone else changes the task between our read and our write.
    emu.patch("bottasks", "t-raced", {"metadata": {"labels": {"touched": "yes"}}}, NS)
    out = await r.execute(the_plan, snap.pool, r.memory(NS, "fleetgram"))
    assert out.assigned == [] and out.conflicts == ["assign t-raced"]
    assert phase(emu, "t-raced") == "Pending"
    dep = must(emu, "deployments", "fleetgram-worker1")
    assert ANNOTATION_RESERVED_TASK not in dep["metadata"].get("annotations", {})  # released
    # The next round assigns it.
    out2 = await r.reconcile(NS, "fleetgram")
    assert out2 is not None and out2.assigned == [("t-raced", "worker1")]
    task = must(emu, "bottasks", "t-raced")
    assert task["status"]["attempts"] == 1
    assert task["metadata"]["labels"][LABEL_WORKER] == "worker1"
    assert task["metadata"]["labels"][LABEL_PHASE] == "assigned"


async def test_a_missing_token_secret_puts_its_slot_in_error(emu: KubeEmulator) -> None:
    make_secrets(emu, 3, skip=[1])
    make_pool(emu, 3, minWorkers=1)
    r = reconciler()
    out = await r.reconcile(NS, "fleetgram")
    assert out is not None and out.created == []
    assert out.errors == ["create worker1: token Secret worker1-token not found"]
    out = await r.reconcile(NS, "fleetgram")
    assert out is not None and out.created == ["fleetgram-worker2"]
    status = must(emu, "workerpools", "fleetgram")["status"]
    assert {s["name"]: s["state"] for s in status["slots"]}["worker1"] == "error"
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and "worker1-token not found" in degraded["message"]


async def test_lease_expiry_requeues_restarts_and_announces(emu: KubeEmulator,
                                                            tmp_path: Path) -> None:
    make_secrets(emu, 2)
    make_pool(emu, 2, minWorkers=2, leaseSeconds=5, maxAttempts=2)
    outbox = StoreOutbox(f"sqlite:///{tmp_path / 'outbox.sqlite3'}")
    r = reconciler(outbox)
    for _ in range(3):
        await r.reconcile(NS, "fleetgram")
        ready(emu, "worker1", "worker2")
    make_task(emu, "t-once", pinnedWorker="worker1")
    await r.reconcile(NS, "fleetgram")
    assert phase(emu, "t-once") == "Assigned"
    old_uid = must(emu, "deployments", "fleetgram-worker1")["metadata"]["uid"]
    # worker1 goes silent: its last heartbeat is older than the lease.
    ready(emu, "worker1", renewed_ago=6)
    out = await r.reconcile(NS, "fleetgram")
    assert out is not None and out.requeued == [("t-once", "Pending")]
    task = must(emu, "bottasks", "t-once")
    assert task["status"]["phase"] == "Pending" and "worker" not in task["status"]
    assert task["status"]["attempts"] == 1
    assert LABEL_WORKER not in task["metadata"]["labels"]
    assert task["metadata"]["labels"][LABEL_PHASE] == "pending"
    new = must(emu, "deployments", "fleetgram-worker1")
    assert new["metadata"]["uid"] != old_uid  # restarted: a fresh Deployment
    # The second death is the last attempt.
    ready(emu, "worker1")
    await r.reconcile(NS, "fleetgram")
    assert must(emu, "bottasks", "t-once")["status"]["attempts"] == 2
    ready(emu, "worker1", renewed_ago=6)
    await r.reconcile(NS, "fleetgram")
    task = must(emu, "bottasks", "t-once")
    assert task["status"]["phase"] == "Failed"
    assert task["status"]["error"] == "worker died; gave up after 2 attempts"
    await r.close()
    store = open_store(f"sqlite:///{tmp_path / 'outbox.sqlite3'}")
    await store.open()
    try:
        events = await store.pending_events()
    finally:
        await store.close()
    assert [(e.kind, e.task_id, e.chat_id) for e in events] == [
        ("requeued", "t-once", 42), ("failed", "t-once", 42)]
    assert events[0].payload["worker"] == "worker1"
    assert events[0].payload["username"] == "worker1_bot"
    assert events[0].payload["reason"] == "worker died"
    assert events[1].payload["error"] == "worker died; gave up after 2 attempts"


async def test_finished_tasks_are_deleted_after_their_ttl(emu: KubeEmulator) -> None:
    make_secrets(emu, 1)
    make_pool(emu, 1, minWorkers=0, finishedTaskTTLSeconds=60)
    make_task(emu, "t-old")
    make_task(emu, "t-new")
    emu.patch("bottasks", "t-old", {"status": {"phase": "Completed", "completedAt":
              (utcnow() - timedelta(seconds=61)).isoformat().replace("+00:00", "Z")}},
              NS, subresource="status")
    complete(emu, "t-new")
    out = await reconciler().reconcile(NS, "fleetgram")
    assert out is not None and out.collected == ["t-old"]
    assert emu.get("bottasks", "t-old", NS) is None
    assert emu.get("bottasks", "t-new", NS) is not None


async def test_outbox_of_a_requeue_uses_a_fake_too(emu: KubeEmulator) -> None:
    make_secrets(emu, 1)
    make_pool(emu, 1, minWorkers=1, leaseSeconds=5)
    outbox = ListOutbox()
    r = reconciler(outbox)
    await r.reconcile(NS, "fleetgram")
    ready(emu, "worker1")
    make_task(emu, "t-x")
    await r.reconcile(NS, "fleetgram")
    ready(emu, "worker1", renewed_ago=10)
    await r.reconcile(NS, "fleetgram")
    assert [(k, t, c) for k, _, t, c in outbox.events] == [("requeued", "t-x", 42)]
