"""The operator plans from kopf's indexes, fed by watches: no lists per round, a round when
something changes, and a round when time alone changes the plan (a Lease's deadline), not a
poll every second."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest

from fleetgram.operator.executor import IndexSource
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.main import build_registry
from fleetgram.operator.reconcile import Memory, OperatorConfig, next_deadline
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.builders import NOW, ago, deployment, lease, pool, ready_worker, task
from tests.operator.harness import (
    NS,
    FakeWorkers,
    OperatorThread,
    make_pool,
    make_secrets,
    make_task,
    phase,
)

kube_emulator = kube_api.kube_emulator  # the fixture

SLOW_SAFETY_NET = OperatorConfig(interval=60.0)  # no round from the timer during a test


# -- the deadlines of a plan (pure) ------------------------------------------------------------

def test_a_workers_lease_going_stale_is_the_next_deadline() -> None:
    dep, les = ready_worker("worker1", renewed_ago=2)
    when = next_deadline(pool(3, leaseSeconds=30), [], [dep], [les], NOW)
    assert when == ago(2) + timedelta(seconds=30)


def test_a_finished_tasks_ttl_and_a_quiet_period_are_deadlines_too() -> None:
    done = task("t-done", "Completed", completed_ago=100)
    the_pool = pool(3, finishedTaskTTLSeconds=3600, scaleDownDelaySeconds=60)
    assert next_deadline(the_pool, [done], [], [], NOW) == ago(100) + timedelta(seconds=3600)
    quiet = Memory(quiet_since=ago(10))
    assert next_deadline(the_pool, [done], [], [], NOW, quiet) == ago(10) + timedelta(
        seconds=60)


def test_a_reservation_expiring_is_a_deadline() -> None:
    dep = deployment("worker1", started_ago=1000, reserved="t-1", reserved_ago=3)
    les = lease("worker1", renewed_ago=100)  # long stale: no deadline of its own any more
    when = next_deadline(pool(3, leaseSeconds=30), [task("t-1")], [dep], [les], NOW,
                         config=OperatorConfig(reservation_ttl=10, start_timeout=300))
    assert when == ago(3) + timedelta(seconds=10)


def test_nothing_timed_means_no_deadline() -> None:
    assert next_deadline(pool(3), [task("t-1")], [], [], NOW) is None


# -- the view's memory of its own writes -------------------------------------------------------

def test_the_view_is_caught_up_once_the_watch_brought_back_a_write() -> None:
    tasks: dict[tuple[str, str], list[dict]] = {(NS, "t-1"): [task("t-1", rv="10")]}
    view = IndexSource()
    view.attach(bottasks=tasks)
    before = view.before_write("bottasks", NS, "t-1")
    view.wrote("bottasks", NS, "t-1", before, "11")  # the status
    view.wrote("bottasks", NS, "t-1", view.before_write("bottasks", NS, "t-1"), "12")  # labels
    assert not view.caught_up(NS)
    tasks[(NS, "t-1")] = [task("t-1", rv="11")]  # only the first write is back
    assert not view.caught_up(NS)
    tasks[(NS, "t-1")] = [task("t-1", rv="14")]  # past it (kopf may skip versions)
    assert view.caught_up(NS)


def test_a_deleted_or_unwatched_object_does_not_hold_the_view_back() -> None:
    deps: dict[tuple[str, str], list[dict]] = {
        (NS, "fleetgram-worker1"): [deployment("worker1", rv="7")]}
    view = IndexSource()
    view.attach(deployments=deps)
    view.wrote("deployments", NS, "fleetgram-worker1",
               view.before_write("deployments", NS, "fleetgram-worker1"), None)
    view.wrote("persistentvolumeclaims", NS, "ws",
               view.before_write("persistentvolumeclaims", NS, "ws"), "3")
    assert not view.caught_up(NS)
    del deps[(NS, "fleetgram-worker1")]
    assert view.caught_up(NS)


# -- the operator --------------------------------------------------------------------------------

@pytest.mark.k8s
def test_rounds_plan_from_the_watched_view_without_listing(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 3)
    make_pool(emu, 3, minWorkers=2, maxWorkers=2, leaseSeconds=5)
    names = [f"t-{i}" for i in range(6)]
    registry, _ = build_registry(KubernetesApi(), config=SLOW_SAFETY_NET)
    with FakeWorkers(emu, work=0.1), OperatorThread(registry):
        for name in names:
            make_task(emu, name)
        emu.wait_for_sync(lambda: all(phase(emu, n) == "Completed" for n in names), 20)
    lists = Counter(r.plural for r in emu.requests(verb="list"))
    # kopf lists each kind once, as its watch starts; every round after that reads the view.
    assert {plural: lists[plural] for plural in
            ("workerpools", "bottasks", "deployments", "leases")} == {
        "workerpools": 1, "bottasks": 1, "deployments": 1, "leases": 1}


@pytest.mark.k8s
def test_a_hung_workers_task_is_requeued_at_its_lease_deadline_with_no_event_to_wake_it(
        kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 1)
    make_pool(emu, 1, minWorkers=1, maxWorkers=1, leaseSeconds=5)  # worker1 only
    registry, _ = build_registry(KubernetesApi(), config=SLOW_SAFETY_NET)
    with FakeWorkers(emu) as workers, OperatorThread(registry):
        emu.wait_for_sync(lambda: emu.objects("deployments", NS), 10)
        workers.hang_on_task.add("worker1")
        make_task(emu, "t-hang")
        emu.wait_for_sync(lambda: phase(emu, "t-hang") == "Running", 10)
        hung = time.monotonic()
        # Nothing changes any more (no Lease renewal, no write): the Lease's deadline alone
        # starts the round that requeues the task and restarts worker1.
        emu.wait_for_sync(lambda: attempts(emu, "t-hang") == 2 or phase(emu, "t-hang") in (
            "Pending", "Assigned"), 15)
        assert time.monotonic() - hung < 5 + 2.0  # leaseSeconds and a little, not 60 s
    assert len([c for c in emu.changes("deployments") if c.type == "ADDED"]) == 2  # restarted


def attempts(emu: KubeEmulator, name: str) -> int:
    return int(((emu.get("bottasks", name, NS) or {}).get("status") or {}).get("attempts", 0))
