"""The kopf handlers: they keep the operator's view of the fleet current and poke the pools.

`register(registry, reconciler)` puts them into a registry (the default one, or a fresh
`kopf.OperatorRegistry()` for an embedded or tested operator):

- four in-memory indexes (`kopf.index`), fed by kopf's watches: `fleet_workerpools`,
  `fleet_bottasks`, `fleet_deployments` (the worker Deployments: those with a pool label) and
  `fleet_leases`, each holding whole objects under (namespace, name). kopf fills them from its
  initial listing before any other handler runs, and from watch events after that; the
  Reconciler's `IndexSource` plans from them, so no round lists anything;
- an event handler per kind (`kopf.on.event`): any change of a pool, a task, a worker
  Deployment or a Lease pokes the pools of its namespace, whose next round starts at once;
- a daemon per WorkerPool (`Reconciler.serve`): a round when poked, when the plan's next
  deadline comes (a Lease going stale, a quiet period ending...), and every
  `config.interval` seconds as a safety net; one round at a time per pool;
- the login (the kubernetes client's own: in-cluster, else kubeconfig), start-up settings and
  cleanup.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from fleetgram.kube.objects import BOTTASKS, GROUP, LABEL_POOL, VERSION, WORKERPOOLS
from fleetgram.operator.executor import IndexSource, Reconciler
from fleetgram.operator.reconcile import Notice

log = logging.getLogger(__name__)

LEASES = ("coordination.k8s.io", "v1", "leases")
DEPLOYMENTS = ("apps", "v1", "deployments")
WORKERS_ONLY = {LABEL_POOL: kopf.PRESENT}  # worker Deployments carry their pool's label


def post_notice(pool: Mapping[str, Any], notice: Notice) -> None:
    """A Kubernetes Event on the pool (`kubectl describe wp`)."""
    body = kopf.Body(cast(kopf.RawBody, dict(pool)))
    if notice.warning:
        kopf.warn(body, reason=notice.reason, message=notice.message)
    else:
        kopf.info(body, reason=notice.reason, message=notice.message)


def whole(namespace: str | None, name: str, body: kopf.Body) -> dict[Any, Any]:
    """An index entry: the object as the API sent it, under (namespace, name)."""
    return {(namespace or "default", name): copy.deepcopy(dict(body))}


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> IndexSource:
    """The handlers into `registry`; the reconciler's rounds plan from the indexes (its source
    becomes the returned IndexSource)."""
    view = IndexSource()
    reconciler.use(view)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Only the explicit notices become Events (scaling, restarts): never the handlers' own
        # log lines (one per watch event).
        settings.posting.loggers = False
        # The daemon needs a finalizer on each pool (kopf stops it before the pool goes).
        settings.persistence.finalizer = f"{GROUP}/operator"
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await reconciler.close()

    # -- the view
    @kopf.index(GROUP, VERSION, WORKERPOOLS, registry=registry, id="fleet_workerpools")
    def fleet_workerpools(namespace: str | None, name: str, body: kopf.Body,
                          **_: Any) -> dict[Any, Any]:
        return whole(namespace, name, body)

    @kopf.index(GROUP, VERSION, BOTTASKS, registry=registry, id="fleet_bottasks")
    def fleet_bottasks(namespace: str | None, name: str, body: kopf.Body,
                       **_: Any) -> dict[Any, Any]:
        return whole(namespace, name, body)

    @kopf.index(*DEPLOYMENTS, labels=WORKERS_ONLY, registry=registry, id="fleet_deployments")
    def fleet_deployments(namespace: str | None, name: str, body: kopf.Body,
                          **_: Any) -> dict[Any, Any]:
        return whole(namespace, name, body)

    @kopf.index(*LEASES, registry=registry, id="fleet_leases")
    def fleet_leases(namespace: str | None, name: str, body: kopf.Body,
                     **_: Any) -> dict[Any, Any]:
        return whole(namespace, name, body)

    def attach(kwargs: Mapping[str, Any]) -> None:
        view.attach(workerpools=kwargs["fleet_workerpools"], bottasks=kwargs["fleet_bottasks"],
                    deployments=kwargs["fleet_deployments"], leases=kwargs["fleet_leases"])

    # -- what pokes a round
    @kopf.on.event(GROUP, VERSION, WORKERPOOLS, registry=registry, id="pool-changed")
    @kopf.on.event(GROUP, VERSION, BOTTASKS, registry=registry, id="task-changed")
    @kopf.on.event(*DEPLOYMENTS, labels=WORKERS_ONLY, registry=registry, id="worker-changed")
    @kopf.on.event(*LEASES, registry=registry, id="lease-changed")
    async def changed(namespace: str | None, **kwargs: Any) -> None:
        attach(kwargs)
        reconciler.poke(namespace or "default")

    # -- the rounds
    # Stopped (the pool is going, or the operator): it leaves after the round under way; kopf
    # cancels it if that takes longer than the backoff.
    @kopf.daemon(GROUP, VERSION, WORKERPOOLS, registry=registry, id="reconcile",
                 cancellation_backoff=2.0, cancellation_timeout=5.0)
    async def rounds(name: str, namespace: str | None, stopped: kopf.DaemonStopped,
                     **kwargs: Any) -> None:
        attach(kwargs)
        ns = namespace or "default"

        async def wake_when_stopped() -> None:
            await stopped.wait()
            reconciler.poke(ns)

        waker = asyncio.create_task(wake_when_stopped())
        try:
            await reconciler.serve(ns, name, lambda: bool(stopped))
        finally:
            waker.cancel()

    @kopf.on.delete(GROUP, VERSION, WORKERPOOLS, registry=registry, id="deleted",
                    optional=True)
    def deleted(name: str, namespace: str | None, **_: Any) -> None:
        # The worker Deployments are owned by the pool: the garbage collector removes them.
        reconciler.forget(namespace or "default", name)

    return view
