"""`fleetgram uninstall-fleet`: take the fleet down before Helm deletes the operator.

    fleetgram uninstall-fleet [--namespace NS] [--pool NAME] [--timeout SECONDS]

The chart runs this in a `pre-delete` hook Job (templates/uninstall-hook.yaml), while the
operator and its RBAC still exist. Helm does not order the WorkerPool (a custom kind) before the
operator, so without the hook the operator went first and the pool kept its kopf finalizer and
its worker Deployments: the bots kept polling Telegram and a reinstall met the stuck pool.

What it does:

1. deletes the WorkerPool (background propagation);
2. waits until the operator has released it (its finalizer removed, the pool gone) and the
   worker Deployments the pool owned are gone (the garbage collector removes them, and the
   workspace PVCs of agent pools, once the pool is gone; PVCs are not waited for);
3. after `--timeout` seconds (the operator is gone or stuck), removes the pool's finalizers
   and deletes the worker Deployments (label `fleetgram.dev/pool=<pool>`) itself, then waits
   a little more.

Exit status 0 when no WorkerPool and no worker Deployment is left (also when there was no pool),
1 otherwise: Helm then reports the failed hook and keeps the release, so `helm uninstall` can be
run again. It needs no fleetgram settings: only the API server (in-cluster, else kubeconfig).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleetgram.kube.objects import GROUP, LABEL_POOL, VERSION, WORKERPOOLS

log = logging.getLogger("fleetgram.uninstall")

DEFAULT_TIMEOUT = 120.0
# After the timeout, how long the forced clean-up may take to be seen done.
FORCE_GRACE = 30.0
_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--namespace", default=None,
                        help="the release's namespace (default: $FLEETGRAM_NAMESPACE, else the "
                             "pod's own namespace)")
    parser.add_argument("--pool", default=None,
                        help="the WorkerPool's name (default: $FLEETGRAM_POOL)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for the operator before removing the pool's "
                             f"finalizer and the workers itself (default {DEFAULT_TIMEOUT:g})")


def _default_namespace() -> str:
    env = os.environ.get("FLEETGRAM_NAMESPACE", "").strip()
    if env:
        return env
    try:
        return _NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def _load_config() -> None:
    import kubernetes.config

    try:
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]


class FleetRemover:
    """The API calls of the uninstall, on one `kubernetes` ApiClient."""

    def __init__(self, namespace: str, pool: str, api_client: Any = None) -> None:
        import kubernetes.client

        self.namespace, self.pool = namespace, pool
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)
        self.selector = f"{LABEL_POOL}={pool}"

    @staticmethod
    def _absent(exc: Exception) -> bool:
        return getattr(exc, "status", None) == 404

    def get_pool(self) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, WORKERPOOLS, self.pool))
        except Exception as exc:
            if self._absent(exc):
                return None
            raise

    def delete_pool(self) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, WORKERPOOLS, self.pool,
                propagation_policy="Background")
        except Exception as exc:
            if not self._absent(exc):
                raise

    def release_pool(self) -> None:
        """Remove every finalizer of the pool (the operator that would have is not there)."""
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, WORKERPOOLS, self.pool,
                {"metadata": {"finalizers": None}})
        except Exception as exc:
            if not self._absent(exc):
                raise

    def workers(self) -> list[str]:
        """The pool's worker Deployments still there (also those being deleted)."""
        found = self.apps.list_namespaced_deployment(self.namespace,
                                                     label_selector=self.selector)
        return sorted(d.metadata.name for d in found.items)

    def delete_workers(self) -> None:
        for name in self.workers():
            try:
                self.apps.delete_namespaced_deployment(name, self.namespace,
                                                       propagation_policy="Background")
            except Exception as exc:
                if not self._absent(exc):
                    raise

    def remaining(self) -> tuple[bool, list[str]]:
        return self.get_pool() is not None, self.workers()


def _wait(remover: FleetRemover, seconds: float, poll: float,
          sleep: Callable[[float], None]) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        pool_left, workers = remover.remaining()
        if not pool_left and not workers:
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(min(poll, max(deadline - time.monotonic(), 0.01)))


def uninstall_fleet(namespace: str, pool: str, *, timeout: float = DEFAULT_TIMEOUT,
                    poll: float = 1.0, force_grace: float = FORCE_GRACE, api_client: Any = None,
                    sleep: Callable[[float], None] = time.sleep) -> bool:
    """Delete the WorkerPool and wait for it and its workers to be gone (see the module's doc).
    True when nothing is left."""
    remover = FleetRemover(namespace, pool, api_client)
    if remover.get_pool() is not None:
        log.info("deleting the WorkerPool", extra={"pool": pool, "namespace": namespace})
        remover.delete_pool()
    if _wait(remover, timeout, poll, sleep):
        log.info("the fleet is down", extra={"pool": pool, "namespace": namespace})
        return True
    pool_left, workers = remover.remaining()
    log.warning("the operator did not take the fleet down in time: removing the WorkerPool's "
                "finalizer and its worker Deployments", extra={
                    "pool": pool, "namespace": namespace, "seconds": timeout,
                    "pool_left": pool_left, "workers": workers})
    if pool_left:
        remover.release_pool()
    remover.delete_workers()
    if _wait(remover, force_grace, poll, sleep):
        return True
    pool_left, workers = remover.remaining()
    log.error("the fleet is still there", extra={"pool_left": pool_left, "workers": workers})
    return False


def main(args: argparse.Namespace) -> int:
    from fleetgram import logs

    logs.configure("INFO", ())
    pool = args.pool or os.environ.get("FLEETGRAM_POOL", "").strip()
    if not pool:
        print("fleetgram: uninstall-fleet: give --pool or FLEETGRAM_POOL", file=sys.stderr)
        return 2
    namespace = args.namespace or _default_namespace()
    try:
        _load_config()
        done = uninstall_fleet(namespace, pool, timeout=args.timeout)
    except Exception as exc:
        print(f"fleetgram: uninstall-fleet: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if done:
        print(f"WorkerPool {namespace}/{pool} and its workers removed")
        return 0
    print(f"fleetgram: uninstall-fleet: WorkerPool {namespace}/{pool} or its workers remain",
          file=sys.stderr)
    return 1
