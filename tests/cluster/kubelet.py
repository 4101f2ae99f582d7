"""The test harness plays the kubelet: no kubelet runs against the emulated API server, so when
a worker Deployment appears this starts that worker in-process with the Deployment's env and
its token Secret, and stops it when the Deployment goes. With `kubeconfig_for`, each worker
talks to the API server with a token of its pod template's `serviceAccountName` (what the
kubelet mounts in a pod), so RBAC applies to it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from fleetgram.config import load_settings
from fleetgram.fleet import WorkerOnly
from tests.emulators.kube_api import KubeEmulator


def container_env(deployment: dict[str, Any], emulator: KubeEmulator,
                  namespace: str) -> dict[str, str]:
    """The env a pod of this Deployment would see, secretKeyRefs resolved."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = emulator.get("secrets", ref["name"], namespace) or {}
            data = secret.get("data") or {}
            if ref["key"] in data:
                env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
            elif ref["key"] in (secret.get("stringData") or {}):
                env[item["name"]] = secret["stringData"][ref["key"]]
    return env


COMPONENT_LABEL = "app.kubernetes.io/component"
# Pods have a network of their own; in-process workers share one, so no per-pod servers.
IN_PROCESS = {"HEALTH_PORT": "0", "METRICS_PORT": "0"}


class FakeKubelet:
    def __init__(self, emulator: KubeEmulator, namespace: str,
                 base_env: Mapping[str, str],
                 kubeconfig_for: Callable[[str], str] | None = None) -> None:
        self.emulator = emulator
        self.kubeconfig_for = kubeconfig_for
        self.namespace = namespace
        self.base_env = dict(base_env)  # what the cluster's ConfigMap/Secrets would add
        self.pods: dict[str, WorkerOnly] = {}
        self.started: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._down_until: dict[str, float] = {}
        self._stopping = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        self._stopping = True  # the loop ends even if a cancellation is lost in a pod's start
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name in list(self.pods):
            await self._kill(name)

    async def kill(self, deployment: str, down_for: float = 3600.0) -> None:
        """The pod dies (its process ends) and, like a crash-looping pod, stays down for
        `down_for` seconds; the Deployment stays."""
        self._down_until[deployment] = time.monotonic() + down_for
        await self._kill(deployment)

    async def _kill(self, name: str) -> None:
        pod = self.pods.pop(name, None)
        if pod is not None:
            with contextlib.suppress(Exception):
                await pod.stop()

    async def _loop(self) -> None:
        while not self._stopping:
            deployments = {
                d["metadata"]["name"]: d
                for d in self.emulator.objects("deployments", self.namespace)
                if d["metadata"].get("deletionTimestamp") is None
                and (d["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "worker"
            }
            for name in list(self.pods):
                if name not in deployments:
                    await self._kill(name)
            for name, deployment in deployments.items():
                if name in self.pods or self._down_until.get(name, 0) > time.monotonic():
                    continue
                env = {**self.base_env, **container_env(deployment, self.emulator,
                                                       self.namespace)}
                env.update(IN_PROCESS)
                settings = load_settings(env, dotenv=None, need_master=False,
                                         need_workers=True)
                pod = WorkerOnly(settings, env["WORKER_SLOT"])
                if self.kubeconfig_for is not None:
                    account = deployment["spec"]["template"]["spec"].get(
                        "serviceAccountName") or "default"
                    # The pod's in-cluster credentials: its ServiceAccount's token.
                    pod.store._kubeconfig = self.kubeconfig_for(account)  # type: ignore[attr-defined]
                self.pods[name] = pod
                self.started.append(name)
                with contextlib.suppress(SystemExit):
                    await pod.start()
            await asyncio.sleep(0.1)
