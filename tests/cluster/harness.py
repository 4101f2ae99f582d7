"""Kubernetes mode, all parts running: the real kopf operator (in its own thread), the master
in cluster mode, and worker "pods" started by a fake kubelet from the operator's Deployments;
against the emulated API server, Telegram and Claude, and the real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from fleetgram.config import load_settings
from fleetgram.fleet import Fleet
from fleetgram.kube.objects import API_VERSION
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.main import build_registry
from fleetgram.operator.outbox import StoreOutbox
from fleetgram.operator.reconcile import OperatorConfig
from tests.cluster.kubelet import FakeKubelet
from tests.e2e.harness import World, fleet_env
from tests.e2e.harness import worker_token as token_of
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import OperatorThread

NS = "fleetgram"
POOL = "fleetgram"


def make_pool(emu: KubeEmulator, tokens: int = 3, **spec: Any) -> None:
    for n in range(1, tokens + 1):
        emu.create({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": f"worker{n}-token", "namespace": NS},
                    "stringData": {"token": token_of(n)}})
    body = {
        "tokenSecrets": [{"name": f"worker{n}-token"} for n in range(1, tokens + 1)],
        "template": {"image": "fleetgram-worker:test", "model": "claude-sonnet-5-5",
                     "maxTokens": 1024},
        **spec,
    }
    emu.create({"apiVersion": API_VERSION, "kind": "WorkerPool",
                "metadata": {"name": POOL, "namespace": NS}, "spec": body})


class Cluster:
    def __init__(self, emu: KubeEmulator, world: World, tokens: int = 3, **pool: Any) -> None:
        make_pool(emu, tokens, **pool)
        self.emu, self.world = emu, world
        self.env = fleet_env(world.telegram, world.claude, world.database_url, tokens)
        self.env.update(FLEETGRAM_MODE="kubernetes", FLEETGRAM_NAMESPACE=NS,
                        FLEETGRAM_POOL=POOL)
        worker_env = {k: v for k, v in self.env.items() if k != "WORKER_TOKEN_POOL"}
        self.kubelet = FakeKubelet(emu, NS, worker_env)
        self.master = Fleet(load_settings(self.env, dotenv=None))

    @contextmanager
    def operator(self) -> Any:
        registry, _ = build_registry(KubernetesApi(), outbox=StoreOutbox(self.world.database_url),
                                     config=OperatorConfig(interval=0.3))
        with OperatorThread(registry) as thread:
            yield thread

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Cluster]:
        """Operator, kubelet and master up for the duration of the block."""
        with self.operator():
            async with self.bots():
                yield self

    @asynccontextmanager
    async def bots(self) -> AsyncIterator[Cluster]:
        await self.kubelet.start()
        await self.master.start()
        try:
            yield self
        finally:
            await self.master.stop()
            await self.kubelet.stop()

    def task(self, task_id: str) -> dict[str, Any]:
        return self.emu.get("bottasks", task_id, NS) or {}

    def phase(self, task_id: str) -> str:
        return (self.task(task_id).get("status") or {}).get("phase", "")

    def status(self, task_id: str) -> dict[str, Any]:
        return self.task(task_id).get("status") or {}

    def deployments(self) -> list[str]:
        return sorted(d["metadata"]["name"] for d in self.emu.objects("deployments", NS)
                      if not d["metadata"].get("deletionTimestamp"))
