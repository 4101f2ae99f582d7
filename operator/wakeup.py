"""Waking a stopped worker on Kubernetes, as `fleetgram.wakeup` does on a single host.

A message written to a stopped worker's chat waits at Telegram (unconfirmed updates are kept;
see `fleetgram.wakeup`). Every STOPPED_WORKER_POLL seconds, after a round of a pool, the
operator peeks at the waiting updates of each slot that has no Deployment at all (none live,
none terminating: a pod still polling would get a 409 Conflict from the peek), with the token
read from the slot's Secret. The chart's RBAC grants the operator `get` on exactly the worker
token Secrets (it already reads them to check them before starting a worker), and the
operator's environment has TELEGRAM_API_URL and ALLOWED_USER_IDS. Slots where an allowed user
waits go into `Memory.wanted`; the next round's `plan` starts them like the worker of a pinned
task. The token never leaves this module's memory and is never logged; it is kept there for
`token_ttl` seconds (default 10 minutes), so the looks at Telegram cost the API server nothing
in between (a changed Secret is read again after that, or when its worker starts).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fleetgram.domain import WorkerState
from fleetgram.kube.objects import LABEL_SLOT
from fleetgram.operator.kubeapi import KubeApi, KubeError, secrets_path
from fleetgram.operator.manifests import token_secret
from fleetgram.operator.reconcile import PoolSpec
from fleetgram.wakeup import UpdatePeeker, someone_waits

log = logging.getLogger(__name__)


def secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    """The Secret's value under `key`: base64 in `data` (as the API returns it), or plain in
    `stringData` (never returned by a real API server, but harmless to accept)."""
    raw = (secret.get("data") or {}).get(key)
    if isinstance(raw, str):
        try:
            return base64.b64decode(raw, validate=True).decode().strip() or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    plain = (secret.get("stringData") or {}).get(key)
    return plain.strip() or None if isinstance(plain, str) else None


def slots_with_deployments(deployments: Iterable[Mapping[str, Any]]) -> set[str]:
    return {((d.get("metadata") or {}).get("labels") or {}).get(LABEL_SLOT, "")
            for d in deployments}


def candidates(
    pool: Mapping[str, Any], states: Mapping[str, WorkerState], deployed: set[str]
) -> list[tuple[int, str]]:
    """(index, slot) of the stopped slots without any Deployment, in pool order."""
    return [(i, s) for i, s in enumerate(PoolSpec.of(pool).slots)
            if states.get(s) == WorkerState.STOPPED and s not in deployed]


class PoolWakeup:
    def __init__(
        self,
        api: KubeApi,
        peeker: UpdatePeeker,
        allowed: frozenset[int],
        every: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        token_ttl: float = 600.0,
    ) -> None:
        self.api = api
        self.peeker = peeker
        self.allowed = allowed
        self.every = every
        self.clock = clock
        self.token_ttl = token_ttl
        self._last: dict[tuple[str, str], float] = {}
        # (namespace, Secret, key) -> (token or None, read at)
        self._tokens: dict[tuple[str, str, str], tuple[str | None, float]] = {}

    def due(self, namespace: str, pool: str) -> bool:
        last = self._last.get((namespace, pool))
        return last is None or self.clock() - last >= self.every

    def until_due(self, namespace: str, pool: str) -> float:
        """Seconds until the pool's next look (0 when due)."""
        last = self._last.get((namespace, pool))
        return 0.0 if last is None else max(0.0, last + self.every - self.clock())

    async def waiting(
        self,
        namespace: str,
        pool: Mapping[str, Any],
        states: Mapping[str, WorkerState],
        deployments: Iterable[Mapping[str, Any]],
    ) -> set[str]:
        """The stopped slots of the pool with an allowed user's message waiting."""
        name = str((pool.get("metadata") or {}).get("name"))
        self._last[(namespace, name)] = self.clock()
        wanted: set[str] = set()
        for index, slot in candidates(pool, states, slots_with_deployments(deployments)):
            token = await self._token(namespace, pool, index, slot)
            if token is not None and await someone_waits(self.peeker, slot, token,
                                                         self.allowed):
                wanted.add(slot)
        return wanted

    async def _token(
        self, namespace: str, pool: Mapping[str, Any], index: int, slot: str
    ) -> str | None:
        secret_name, key = token_secret(pool, index)
        cached = self._tokens.get((namespace, secret_name, key))
        if cached is not None and self.clock() - cached[1] < self.token_ttl:
            return cached[0]
        try:
            secret = await self.api.get(secrets_path(namespace, secret_name))
        except KubeError as exc:  # missing, or RBAC: the slot cannot be woken this way
            log.debug("cannot read the token Secret of %s: %s", slot, exc.status)
            token = None
        else:
            token = secret_value(secret, key)
        self._tokens[(namespace, secret_name, key)] = (token, self.clock())
        return token

    def forget_token(self, namespace: str, secret_name: str) -> None:
        """Read this Secret again next time (its worker started: it may have changed)."""
        for cached in [k for k in self._tokens if k[:2] == (namespace, secret_name)]:
            del self._tokens[cached]

    async def close(self) -> None:
        await self.peeker.close()
