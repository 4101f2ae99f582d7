"""The kopf handlers: thin, each one only asks the Reconciler for a round of the pool.

`register(registry, reconciler)` puts them into a registry (the default one, or a fresh
`kopf.OperatorRegistry()` for an embedded or tested operator):

- a timer on every WorkerPool (every `config.interval` seconds): the steady reconciliation;
- create / update / resume of a WorkerPool: a round at once, without waiting for the timer;
- the login (the kubernetes client's own: in-cluster, else kubeconfig) and start-up settings.

Timer and change handlers share the Reconciler's per-pool lock, so rounds never overlap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from fleetgram.kube.objects import GROUP, VERSION, WORKERPOOLS
from fleetgram.operator.executor import Outcome, Reconciler
from fleetgram.operator.reconcile import Notice

log = logging.getLogger(__name__)


def post_notice(pool: Mapping[str, Any], notice: Notice) -> None:
    """A Kubernetes Event on the pool (`kubectl describe wp`)."""
    body = kopf.Body(cast(kopf.RawBody, dict(pool)))
    if notice.warning:
        kopf.warn(body, reason=notice.reason, message=notice.message)
    else:
        kopf.info(body, reason=notice.reason, message=notice.message)


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    interval = reconciler.config.interval

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Only the explicit notices become Events (scaling, restarts): never the handlers' own
        # log lines, or a timer every second would flood them.
        settings.posting.loggers = False
        # The timer needs a finalizer on each pool (kopf stops it before the pool goes).
        settings.persistence.finalizer = f"{GROUP}/operator"
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await reconciler.close()

    async def round_of(name: str, namespace: str | None) -> Outcome | None:
        """One round; never raises (kopf would back the timer off for its `backoff`)."""
        ns = namespace or "default"
        try:
            outcome = await reconciler.reconcile(ns, name)
            if outcome is not None and (outcome.assigned or outcome.created or outcome.deleted
                                        or outcome.requeued or outcome.errors):
                log.info("reconciled", extra={
                    "pool": name, "assigned": outcome.assigned, "requeued": outcome.requeued,
                    "started": outcome.created, "stopped": outcome.deleted,
                    "errors": outcome.errors})
            return outcome
        except Exception:  # the next round retries
            log.exception("reconciliation failed", extra={"pool": name, "namespace": ns})
            return None

    @kopf.timer(GROUP, VERSION, WORKERPOOLS, interval=interval, registry=registry,
                id="reconcile", backoff=max(interval, 1.0))
    async def tick(name: str, namespace: str | None, **_: Any) -> None:
        await round_of(name, namespace)

    @kopf.on.resume(GROUP, VERSION, WORKERPOOLS, registry=registry, id="resumed")
    @kopf.on.create(GROUP, VERSION, WORKERPOOLS, registry=registry, id="created")
    @kopf.on.update(GROUP, VERSION, WORKERPOOLS, field="spec", registry=registry, id="changed")
    async def changed(name: str, namespace: str | None, **_: Any) -> None:
        await round_of(name, namespace)

    @kopf.on.delete(GROUP, VERSION, WORKERPOOLS, registry=registry, id="deleted",
                    optional=True)
    def deleted(name: str, namespace: str | None, **_: Any) -> None:
        # The worker Deployments are owned by the pool: the garbage collector removes them.
        reconciler.forget(namespace or "default", name)
