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
from typing import Any

import kopf
from fleetgram.operator.executor import Outcome, Reconciler
from fleetgram.operator.reconcile import Notice

from fleetgram.kube.objects import GROUP, VERSION, WORKERPOOLS

log = logging.getLogger(__name__)


def post_notice(pool: Mapping[str, Any], notice: Notice) -> None:
    """A Kubernetes Event on the pool (`kubectl describe wp`)."""
    body = dict(pool)
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
        # Handler results are logged, not posted: a timer every second would flood Events.
        settings.posting.level = logging.WARNING
        # The timer needs a finalizer on each pool (kopf stops it before the pool goes).
        settings.persistence.finalizer = f"{GROUP}/operator"
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration")
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await reconciler.close()

    async def round_of(name: str, namespace: str, logger: Any) -> Outcome | None:
        try:
            outcome = await reconciler.reconcile(namespace, name)
        except Exception as exc:  # the next round retries; the timer must keep going
            logger.warning(f"reconciliation failed: {exc!r}")
            log.debug("reconciliation failed", exc_info=True)
            return None
        if outcome is not None and (outcome.assigned or outcome.created or outcome.deleted
                                    or outcome.requeued or outcome.errors):
            logger.info(
                f"round: assigned={outcome.assigned} requeued={outcome.requeued} "
                f"created={outcome.created} deleted={outcome.deleted} errors={outcome.errors}")
        return outcome

    @kopf.timer(GROUP, VERSION, WORKERPOOLS, interval=interval, registry=registry,
                id="reconcile")
    async def tick(name: str, namespace: str, logger: Any, **_: Any) -> None:
        await round_of(name, namespace, logger)

    @kopf.on.resume(GROUP, VERSION, WORKERPOOLS, registry=registry, id="resumed")
    @kopf.on.create(GROUP, VERSION, WORKERPOOLS, registry=registry, id="created")
    @kopf.on.update(GROUP, VERSION, WORKERPOOLS, field="spec", registry=registry, id="changed")
    async def changed(name: str, namespace: str, logger: Any, **_: Any) -> None:
        await round_of(name, namespace, logger)

    @kopf.on.delete(GROUP, VERSION, WORKERPOOLS, registry=registry, id="deleted",
                    optional=True)
    def deleted(name: str, namespace: str, **_: Any) -> None:
        # The worker Deployments are owned by the pool: the garbage collector removes them.
        reconciler.forget(namespace, name)
