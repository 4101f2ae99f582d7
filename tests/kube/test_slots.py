"""Worker slots from the WorkerPool, the worker Deployments and the workers' Leases."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from fleetgram.domain import WorkerState
from fleetgram.kube.objects import (
    ANNOTATION_CURRENT_TASK,
    ANNOTATION_READY_AT,
    ANNOTATION_USERNAME,
    LABEL_POOL,
    LABEL_SLOT,
    iso,
    lease_name,
    parse_time,
)
from fleetgram.kube.queue import ClusterStore
from fleetgram.policy import worker_state
from tests.emulators.kube_api import KubeEmulator
from tests.kube.support import NS, POOL, create_deployment, create_pool
from tests.store.support import at

pytestmark = pytest.mark.k8s

LEASE = 30.0


async def test_a_heartbeat_creates_and_renews_the_workers_lease(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    await store.update_slot("worker1", username="fleet_worker1_bot", ready_at=at(10),
                            heartbeat_at=at(10), error=None, current_task=None,
                            state_since=at(10))
    lease = emu.get("leases", lease_name(POOL, "worker1"), NS)
    assert lease is not None
    spec = lease["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"]) == ("worker1", 30)
    assert spec["renewTime"] == "2026-01-25T12:00:10.000000Z"  # a MicroTime: six digits
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", spec["acquireTime"])
    meta = lease["metadata"]
    assert meta["labels"] == {LABEL_POOL: POOL, LABEL_SLOT: "worker1"}
    assert meta["annotations"][ANNOTATION_USERNAME] == "fleet_worker1_bot"
    assert meta["annotations"][ANNOTATION_READY_AT] == iso(at(10))
    assert ANNOTATION_CURRENT_TASK not in meta["annotations"]

    await store.update_slot("worker1", heartbeat_at=at(15) + timedelta(microseconds=250),
                            current_task="t-abcde")
    lease = emu.get("leases", lease_name(POOL, "worker1"), NS)
    assert lease is not None
    assert parse_time(lease["spec"]["renewTime"]) == at(15) + timedelta(microseconds=250)
    assert lease["metadata"]["annotations"][ANNOTATION_CURRENT_TASK] == "t-abcde"
    assert lease["metadata"]["annotations"][ANNOTATION_USERNAME] == "fleet_worker1_bot"
    assert len(emu.requests("create", "leases")) == 1

    await store.update_slot("worker1", current_task=None)
    lease = emu.get("leases", lease_name(POOL, "worker1"), NS)
    assert lease is not None
    assert ANNOTATION_CURRENT_TASK not in lease["metadata"]["annotations"]


async def test_slots_come_from_the_pool_the_deployments_and_the_leases(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    create_pool(emu, slots=4)
    dep = create_deployment(emu, "worker1")
    create_deployment(emu, "worker2")
    create_deployment(emu, "worker4")
    started = parse_time(dep["metadata"]["creationTimestamp"])
    assert started is not None
    # The worker bots' own writes, as worker/bot.py makes them.
    ready = started + timedelta(seconds=2)
    await store.update_slot("worker1", enabled=True)  # WorkerOnly: not the worker's to say
    await store.update_slot("worker1", username="w1_bot", ready_at=ready, heartbeat_at=ready,
                            error=None, current_task=None, state_since=ready)
    await store.update_slot("worker4", error="token refused by Telegram", state_since=ready)
    await store.update_slot("worker3", heartbeat_at=ready)  # a leftover Lease, no Deployment

    slots = await store.get_slots()

    assert [s.name for s in slots] == ["worker1", "worker2", "worker3", "worker4"]
    w1, w2, w3, w4 = slots
    assert (w1.enabled, w1.username, w1.started_at, w1.ready_at, w1.heartbeat_at) == (
        True, "w1_bot", started, ready, ready,
    )
    assert (w2.enabled, w2.ready_at, w2.heartbeat_at) == (True, None, None)
    assert not w3.enabled
    assert w4.error == "token refused by Telegram"

    def states(now: timedelta) -> list[WorkerState]:
        return [worker_state(s, ready + now, LEASE) for s in slots]

    assert states(timedelta(seconds=1)) == [
        WorkerState.IDLE, WorkerState.STARTING, WorkerState.STOPPED, WorkerState.ERROR,
    ]
    assert states(timedelta(seconds=31))[0] is WorkerState.OFFLINE  # the lease ran out

    # The pod restarts (same Deployment): its new process says when it started, and the slot
    # is starting again until its bot is ready.
    restarted = ready + timedelta(seconds=60)
    await store.update_slot("worker1", started_at=restarted)
    [w1, *_] = await store.get_slots()
    assert w1.started_at == restarted
    assert worker_state(w1, restarted, LEASE) is WorkerState.STARTING
    await store.update_slot("worker1", ready_at=restarted, heartbeat_at=restarted)
    [w1, *_] = await store.get_slots()
    assert worker_state(w1, restarted, LEASE) is WorkerState.IDLE

    await store.update_slot("worker1", current_task="t-abcde", heartbeat_at=restarted,
                            state_since=restarted)
    [w1, *_] = await store.get_slots()
    assert worker_state(w1, restarted + timedelta(seconds=1), LEASE) is WorkerState.BUSY
    assert (w1.current_task, w1.state_since) == ("t-abcde", restarted)

    emu.delete("deployments", "fleetgram-worker2", NS)  # the operator stops worker2
    [_, w2, *_] = await store.get_slots()
    assert worker_state(w2, ready, LEASE) is WorkerState.STOPPED


async def test_without_a_pool_the_slots_are_the_configured_ones(store: ClusterStore) -> None:
    assert await store.get_slots() == []  # no WorkerPool, no WORKER_TOKEN_POOL
    await store.ensure_slots(["worker1"])  # nothing to do in a cluster
    assert await store.get_slots() == []


async def test_unknown_slot_fields_are_refused(store: ClusterStore) -> None:
    with pytest.raises(TypeError, match="colour"):
        await store.update_slot("worker1", colour="blue")
