"""The real kopf operator against the emulated API server, with fake worker pods.

Two replicas at once, then a restart: each task is assigned once, each Deployment created once
(a restart of a hung worker aside), deleting the pool deletes its workers.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import kopf.testing
import pytest

from fleetgram.kube.objects import LABEL_WORKER
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.main import build_registry
from fleetgram.operator.reconcile import OperatorConfig
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import (
    NS,
    FakeWorkers,
    OperatorThread,
    assignments_per_task,
    deployments_created,
    double_bookings,
    make_pool,
    make_secrets,
    make_task,
    must,
    phase,
)

pytestmark = pytest.mark.k8s
kube_emulator = kube_api.kube_emulator  # the fixture

FAST = OperatorConfig(interval=0.2, reservation_ttl=5.0)


class ThreadSafeOutbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[tuple[str, str | None, dict[str, Any]]] = []

    async def add_event(self, kind: str, payload: dict[str, Any], *, task_id: str | None = None,
                        chat_id: int | None = None) -> None:
        with self._lock:
            self.events.append((kind, task_id, payload))


def pool_status(emu: KubeEmulator) -> dict[str, Any]:
    return (emu.get("workerpools", "fleetgram", NS) or {}).get("status") or {}


def test_two_operator_replicas_run_one_fleet(kube_emulator: KubeEmulator,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fleetgram.operator")  # logging errors surface too
    emu = kube_emulator
    make_secrets(emu, 3)
    pool = make_pool(emu, 3, minWorkers=1, maxWorkers=3, scaleUpThreshold=1,
                     scaleDownDelaySeconds=1, leaseSeconds=5)
    names = [f"t-{i:02d}" for i in range(9)]
    first, _ = build_registry(KubernetesApi(), config=FAST)
    second, _ = build_registry(KubernetesApi(), config=FAST)
    with (FakeWorkers(emu, work=0.5) as workers,
          OperatorThread(first, name="operator-1"),
          OperatorThread(second, name="operator-2")):
        for i, name in enumerate(names):
            make_task(emu, name, priority=1 + i % 3)
        emu.wait_for_sync(lambda: all(phase(emu, n) == "Completed" for n in names), 40)

        # Scaled up past the threshold, one token Secret per worker, owned by the pool.
        assert sorted(deployments_created(emu)) == [
            "fleetgram-worker1", "fleetgram-worker2", "fleetgram-worker3"]
        for dep in emu.objects("deployments", NS):
            assert dep["metadata"]["ownerReferences"][0]["uid"] == pool["metadata"]["uid"]
            slot = dep["metadata"]["labels"]["fleetgram.dev/slot"]
            env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == f"{slot}-token"

        # Idle and nothing pending for scaleDownDelaySeconds: one stops (3 idle > 2).
        emu.wait_for_sync(lambda: len(emu.objects("deployments", NS)) == 2, 15)

        def settled() -> dict[str, Any] | None:
            status = pool_status(emu)
            states = {s["name"]: s["state"] for s in status.get("slots", [])}
            last = (status.get("lastScale") or {}).get("action")
            # Two replicas write the status in turn: wait for the one that saw the stop.
            if states.get("worker3") == "stopped" and status.get("idle") == 2 and last == "stop":
                return status
            return None

        status = emu.wait_for_sync(settled, 10)
        assert status["pending"] == 0 and status["busy"] == 0 and status["ready"] == 2
        assert status["lastScale"]["action"] == "stop"
        assert "3 idle and nothing pending" in status["lastScale"]["reason"]
        assert {s["name"]: s["state"] for s in status["slots"]} == {
            "worker1": "idle", "worker2": "idle", "worker3": "stopped"}
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"

        # Deleting the pool deletes its workers (owner references).
        emu.delete("workerpools", "fleetgram", NS)
        emu.wait_for_sync(lambda: emu.get("workerpools", "fleetgram", NS) is None, 15)
        emu.wait_for_sync(lambda: emu.objects("deployments", NS) == [], 5)

    # Never twice: no task assigned twice, no worker holding two tasks, no Deployment twice.
    assert assignments_per_task(emu) == dict.fromkeys(names, 1)
    assert double_bookings(emu) == []
    assert set(deployments_created(emu).values()) == {1}
    for name in names:
        task = must(emu, "bottasks", name)
        assert task["status"]["attempts"] == 1
        assert task["metadata"]["labels"][LABEL_WORKER] == task["status"]["worker"]
    assert not [e for e in workers.errors if "not found" not in e]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert any(r.getMessage() == "reconciled" for r in caplog.records)


def test_a_restarted_operator_adopts_the_fleet_and_requeues_a_hung_worker(
        kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 2)
    make_pool(emu, 2, minWorkers=2, maxWorkers=2, leaseSeconds=5, maxAttempts=3)
    outbox = ThreadSafeOutbox()
    args = ["run", "--standalone", f"--namespace={NS}"]
    with FakeWorkers(emu) as workers:
        registry, _ = build_registry(KubernetesApi(), outbox=outbox, config=FAST)
        with kopf.testing.KopfRunner(args, registry=registry, timeout=30) as runner:
            # Stop it as soon as it has started scaling up.
            emu.wait_for_sync(lambda: emu.objects("deployments", NS), 10)
        assert runner.exit_code == 0 and runner.exception is None

        registry, _ = build_registry(KubernetesApi(), outbox=outbox, config=FAST)
        with kopf.testing.KopfRunner(args, registry=registry, timeout=30) as runner:
            emu.wait_for_sync(lambda: pool_status(emu).get("idle") == 2, 10)
            uids = {d["metadata"]["name"]: d["metadata"]["uid"]
                    for d in emu.objects("deployments", NS)}
            assert deployments_created(emu) == {"fleetgram-worker1": 1, "fleetgram-worker2": 1}

            # worker1 takes a task and hangs: no heartbeat any more.
            workers.hang_on_task.add("worker1")
            make_task(emu, "t-hang", pinnedWorker="worker1")
            emu.wait_for_sync(lambda: phase(emu, "t-hang") == "Running", 5)
            emu.wait_for_sync(lambda: phase(emu, "t-hang") == "Pending"
                              or must(emu, "bottasks", "t-hang")["status"]["attempts"] == 2,
                              15)
            # Its Deployment is replaced; the fresh worker1 runs the task again.
            emu.wait_for_sync(lambda: phase(emu, "t-hang") == "Completed", 15)
            time.sleep(0.5)
        assert runner.exit_code == 0 and runner.exception is None

    task = must(emu, "bottasks", "t-hang")
    assert task["status"]["attempts"] == 2 and task["status"]["worker"] == "worker1"
    assert assignments_per_task(emu) == {"t-hang": 2}
    assert deployments_created(emu) == {"fleetgram-worker1": 2, "fleetgram-worker2": 1}
    assert must(emu, "deployments", "fleetgram-worker1")["metadata"]["uid"] != (
        uids["fleetgram-worker1"])
    assert must(emu, "deployments", "fleetgram-worker2")["metadata"]["uid"] == (
        uids["fleetgram-worker2"])
    assert [(kind, tid) for kind, tid, _ in outbox.events] == [("requeued", "t-hang")]
    assert outbox.events[0][2]["worker"] == "worker1"
    assert outbox.events[0][2]["username"] == "worker1_test_bot"
