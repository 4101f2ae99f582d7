"""On Kubernetes a worker starts a task as soon as the operator assigns it, not on its poll:
the operator assigns through the API server, then signals the workers through the shared
Postgres (NOTIFY on the tasks channel) that their store listens to."""

from __future__ import annotations

import time

import pytest

from tests.cluster.harness import Cluster
from tests.e2e.harness import World, wait_until
from tests.emulators.kube_api import KubeEmulator

pytestmark = [pytest.mark.k8s, pytest.mark.postgres, pytest.mark.e2e]

POLL = 30.0  # seconds: only a wake-up can start the task sooner


async def test_an_assigned_task_starts_without_waiting_for_the_workers_poll(
        kube_emulator: KubeEmulator, world: World) -> None:
    cluster = Cluster(kube_emulator, world, tokens=1, minWorkers=1, maxWorkers=1,
                      env={"POLL_INTERVAL": str(POLL)})
    async with cluster.running():
        await world.open_chats(world.ada, workers=1)
        await wait_until(lambda: cluster.deployments(), 20, "worker1")
        # The worker's first claim (at start) has found nothing; it now sleeps for POLL.
        await wait_until(lambda: any(
            r.plural == "bottasks" and r.verb == "list" and r.user
            and r.user.endswith("fleetgram-worker-1") for r in kube_emulator.history), 20,
            "the worker's first claim")
        sent = time.monotonic()
        task_id = await world.prompt("write the docs")
        await wait_until(lambda: cluster.phase(task_id) in ("Running", "Completed"), POLL / 3,
                         "started by the wake-up")
        assert time.monotonic() - sent < POLL / 3
