"""`fleetgram operator`: the kopf operator of the worker fleet.

    fleetgram operator     # FLEETGRAM_NAMESPACE (default "default"); in-cluster or kubeconfig

It watches the WorkerPools, BotTasks, worker Deployments and Leases of its namespace into
in-memory indexes and reconciles a pool (see fleetgram.operator.reconcile) when one of them
changes, when a deadline of the plan comes, and every OPERATOR_INTERVAL seconds (default 20)
as a safety net (see fleetgram.operator.handlers). Requeue and failure announcements go to
the store's outbox when a database is configured (DATABASE_URL, normally Postgres).

Liveness: kopf's own endpoint, `http://0.0.0.0:<HEALTH_PORT>/healthz` (HEALTH_PORT, default
8081; 0 turns it off).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import kopf

from fleetgram.config import Settings
from fleetgram.operator.added import AddedWorkers
from fleetgram.operator.executor import Reconciler
from fleetgram.operator.handlers import post_notice, register
from fleetgram.operator.kubeapi import KubeApi, KubernetesApi
from fleetgram.operator.outbox import NullOutbox, Outbox, StoreOutbox
from fleetgram.operator.reconcile import OperatorConfig
from fleetgram.operator.wakeup import PoolWakeup
from fleetgram.wakeup import BotPeeker

log = logging.getLogger(__name__)


def outbox_for(settings: Settings, env: Mapping[str, str] | None = None) -> Outbox:
    """The store's outbox for a Postgres DATABASE_URL (or an explicitly set SQLite one); none
    for the built-in SQLite default, which would be a file nobody reads in a pod."""
    env = os.environ if env is None else env
    url = settings.database_url
    if url.startswith(("postgresql://", "postgres://")) or env.get("DATABASE_URL", "").strip():
        return StoreOutbox(url)
    return NullOutbox()


DEFAULT_HEALTH_PORT = 8081


def liveness_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """kopf's liveness endpoint (`kopf run --liveness=...`) on HEALTH_PORT; None when 0."""
    env = os.environ if env is None else env
    raw = env.get("HEALTH_PORT", "").strip()
    try:
        port = int(raw) if raw else DEFAULT_HEALTH_PORT
    except ValueError:
        raise ValueError(f"HEALTH_PORT must be a port number, not {raw!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"HEALTH_PORT must be a port number, not {raw!r}")
    return f"http://0.0.0.0:{port}/healthz" if port else None


def build_registry(
    api: KubeApi,
    *,
    outbox: Outbox | None = None,
    config: OperatorConfig | None = None,
    wakeup: PoolWakeup | None = None,
    token_key: str | None = None,
) -> tuple[kopf.OperatorRegistry, Reconciler]:
    """A registry holding the operator's handlers, and the Reconciler they call. With a
    database outbox, the worker bots added with /addworker join their pools' spare slots
    (`token_key`: TOKEN_ENCRYPTION_KEY, which their stored tokens are encrypted with)."""
    registry = kopf.OperatorRegistry()
    reconciler = Reconciler(api, outbox, config, notify=post_notice, wakeup=wakeup)
    if isinstance(outbox, StoreOutbox):
        reconciler.added = AddedWorkers(api, outbox, token_key, poke=reconciler.poke,
                                        announcer=reconciler.announcer)
    register(registry, reconciler)
    return registry, reconciler


def run_operator(settings: Settings, *, liveness: bool = True) -> int:
    config = OperatorConfig.from_env(os.environ, default_pool=settings.pool_name)
    endpoint = liveness_endpoint() if liveness else None
    api = KubernetesApi()
    try:
        KubernetesApi.load_config()
    except Exception as exc:  # kopf's own login reports it properly
        log.warning("no Kubernetes configuration found yet: %s", exc)
    # A message in a stopped worker's chat starts it (see fleetgram.operator.wakeup).
    wakeup = PoolWakeup(api, BotPeeker(settings.telegram_base_url, settings.telegram_file_url),
                        settings.allowed_user_ids, settings.stopped_worker_poll)
    registry, _ = build_registry(api, outbox=outbox_for(settings), config=config,
                                 wakeup=wakeup, token_key=settings.token_encryption_key)
    # kopf reports every handler run ("Handler 'task-changed' succeeded.") at INFO: one line
    # per watch event. Its warnings and errors stay; the rounds that change something log
    # their own.
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING,
                                                   logging.getLogger().getEffectiveLevel()))
    log.info("operator starting", extra={"namespace": settings.namespace,
                                         "interval": config.interval, "liveness": endpoint})
    kopf.run(
        registry=registry,
        standalone=True,
        namespaces=[settings.namespace],
        clusterwide=False,
        liveness_endpoint=endpoint,
    )
    api.close()
    return 0
