"""On Kubernetes too, a message in a stopped worker's chat starts that worker: the operator
reads the slot's token from its Secret, peeks at the waiting updates (a fake Telegram here:
tests/e2e/test_stopped_worker.py drives the real peek against the Telegram emulator) and the
next round creates the slot's Deployment."""

from __future__ import annotations

import base64

import pytest

from fleetgram.domain import WorkerState, utcnow
from fleetgram.operator.executor import Reconciler
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.reconcile import OperatorConfig
from fleetgram.operator.wakeup import PoolWakeup, candidates, secret_value
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.builders import pool as pool_dict
from tests.operator.harness import NS, make_pool, make_secrets, write_lease

pytestmark = pytest.mark.k8s
kube_emulator = kube_api.kube_emulator  # the fixture

ADA, MALLORY = 42, 666
TOKEN3 = "100003:worker-token-3"  # what make_secrets puts in worker3-token


class FakePeeker:
    def __init__(self, waiting: dict[str, list[int | None]]) -> None:
        self.waiting = waiting
        self.asked: list[str] = []

    async def senders(self, token: str) -> list[int | None]:
        self.asked.append(token)
        return self.waiting.get(token, [])

    async def close(self) -> None:
        return None


def test_a_secret_value_is_read_from_base64_data():
    secret = {"data": {"token": base64.b64encode(b"123:abc\n").decode()}}
    assert secret_value(secret, "token") == "123:abc"
    assert secret_value({"data": {"token": "%%not base64%%"}}, "token") is None
    assert secret_value({"data": {}}, "token") is None


def test_only_stopped_slots_without_any_deployment_are_candidates():
    states = {"worker1": WorkerState.IDLE, "worker2": WorkerState.STOPPED,
              "worker3": WorkerState.STOPPED, "worker4": WorkerState.ERROR}
    # worker2's old Deployment is still terminating: its pod may still poll.
    assert candidates(pool_dict(4), states, {"worker1", "worker2"}) == [(2, "worker3")]


async def test_a_message_in_a_stopped_workers_chat_starts_it(
    kube_emulator: KubeEmulator,
) -> None:
    emu = kube_emulator
    make_secrets(emu, 3)
    make_pool(emu, 3, minWorkers=1)
    peeker = FakePeeker({TOKEN3: [ADA]})
    clock = [0.0]
    wakeup = PoolWakeup(KubernetesApi(), peeker, frozenset({ADA}), every=5.0,
                        clock=lambda: clock[0])
    r = Reconciler(KubernetesApi(), None, OperatorConfig(), wakeup=wakeup)

    first = await r.reconcile(NS, "fleetgram")
    assert first is not None and first.created == ["fleetgram-worker1"]  # MIN_WORKERS
    # worker1 has a Deployment now; worker2 and worker3 were peeked with their own tokens.
    assert peeker.asked == ["100002:worker-token-2", TOKEN3]
    assert r.memory(NS, "fleetgram").wanted == {"worker3"}

    write_lease(emu, "fleetgram", "worker1", renewed=utcnow(), ready=utcnow(),
                username="worker1_bot")
    second = await r.reconcile(NS, "fleetgram")
    assert second is not None and second.created == ["fleetgram-worker3"]
    assert "worker3's chat" in second.plan.decision.reason
    assert r.memory(NS, "fleetgram").wanted == set()
    assert emu.get("deployments", "fleetgram-worker2", NS) is None  # nobody wrote there
    # Not due again before STOPPED_WORKER_POLL has passed.
    assert peeker.asked == ["100002:worker-token-2", TOKEN3]


async def test_a_strangers_message_starts_nothing(kube_emulator: KubeEmulator) -> None:
    emu = kube_emulator
    make_secrets(emu, 3)
    make_pool(emu, 3, minWorkers=1)
    wakeup = PoolWakeup(KubernetesApi(), FakePeeker({TOKEN3: [MALLORY]}), frozenset({ADA}),
                        every=0.0)
    r = Reconciler(KubernetesApi(), None, OperatorConfig(), wakeup=wakeup)
    for _ in range(3):
        await r.reconcile(NS, "fleetgram")
    assert emu.get("deployments", "fleetgram-worker3", NS) is None
    assert r.memory(NS, "fleetgram").wanted == set()
