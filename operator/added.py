"""The operator's side of /addworker on Kubernetes: the tokens the master stored become the
Secrets of the pool's spare slots (see `fleetgram.kube.added_slots`).

The master, which holds no Secret rights, stores a new bot's token encrypted under
TOKEN_ENCRYPTION_KEY in the shared database and signals `fleetgram_workers`. On that signal
(and at start, and every `refresh` seconds as a safety net) the operator reads the stored
tokens; for each one whose slot is a spare slot of a pool it writes the slot's Secret once per
process (201, or 409 when it is there already), owned by the WorkerPool so that `helm
uninstall` (which deletes the pool) takes it away too. The slot then belongs to the pool as
the operator plans it, and a slot added just now is started at once, like a pinned task's.

A database that does not answer delays a round by ROUND_WAIT at most: the last known tokens
stand, each read is bounded, and the next try comes after `retry` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from fleetgram.kube.added_slots import SpareSlot, spare_slots, token_slot_names
from fleetgram.kube.objects import LABEL_POOL, LABEL_SLOT
from fleetgram.operator.announcer import Announcer, Note
from fleetgram.operator.kubeapi import Conflict, KubeApi, KubeError, secrets_path
from fleetgram.operator.manifests import owner_reference
from fleetgram.operator.reconcile import Notice
from fleetgram.tokens import KEY_SETTING, TokenCipher, WrongKey

log = logging.getLogger(__name__)

READ_TIMEOUT = 3.0  # seconds a read of the stored tokens may take
ROUND_WAIT = 0.2  # seconds a round waits for that read before going on with the last known
REFRESH = 60.0  # seconds between reads without a signal (the safety net)
RETRY = 5.0  # seconds before a failed read is tried again


class StoredTokens(Protocol):
    """The two calls the operator needs of the shared database (operator.outbox.StoreOutbox)."""

    async def managed_tokens(self) -> Sequence[Any]: ...

    async def watch_added_workers(self, callback: Callable[[], None]) -> None: ...


def secret_manifest(pool: Mapping[str, Any], spare: SpareSlot, token: str) -> dict[str, Any]:
    meta = pool["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": spare.secret,
            "namespace": meta.get("namespace") or "default",
            "labels": {
                "app.kubernetes.io/part-of": "fleetgram",
                "app.kubernetes.io/component": "worker",
                "app.kubernetes.io/managed-by": "fleetgram-operator",
                LABEL_POOL: meta["name"],
                LABEL_SLOT: spare.slot,
            },
            "ownerReferences": [owner_reference(pool)],
        },
        "data": {spare.key: base64.b64encode(token.encode()).decode()},
    }


class AddedWorkers:
    """For each pool: the spare slots holding a stored token whose Secret is written."""

    def __init__(self, api: KubeApi, tokens: StoredTokens, key: str | None, *,
                 poke: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic,
                 refresh: float = REFRESH, retry: float = RETRY,
                 announcer: Announcer | None = None) -> None:
        self.api = api
        self.tokens = tokens
        self._cipher = TokenCipher(key) if key else None
        self._poke = poke
        # Tells the chat a bot was added from whether its worker starts (None: nobody).
        self.announcer = announcer
        self._clock = clock
        self._refresh_every, self._retry = refresh, retry
        self._rows: list[Any] = []
        self._next_read = 0.0  # clock time of the next read (0: read at once)
        self._watching = False
        self._reading: asyncio.Task[None] | None = None
        self._read_once = False
        self._failing = False  # the last read failed (logged once per run of failures)
        self._written: set[tuple[str, str, str]] = set()  # (namespace, pool uid, slot)
        self._fresh: dict[tuple[str, str], set[str]] = {}
        self._reported: set[tuple[str, str, str]] = set()

    def signalled(self) -> None:
        """A token was stored (the master's NOTIFY): read at the next round, which starts now."""
        self._next_read = 0.0
        self._poke()

    def take_fresh(self, namespace: str, pool: str) -> set[str]:
        """The slots whose Secret was written since the last call: to be started now."""
        return self._fresh.pop((namespace, pool), set())

    async def slots(self, pool: Mapping[str, Any],
                    notify: Callable[[Notice], None]) -> set[str]:
        """The spare slots of `pool` that run: a token is stored for each, and its Secret
        is written. Problems become Events on the pool (`notify`), each once."""
        spares = {s.slot: s for s in spare_slots(pool)}
        if not spares:
            return set()
        await self._read()
        meta = pool["metadata"]
        namespace, name, uid = meta.get("namespace") or "default", meta["name"], meta["uid"]
        own = set(token_slot_names(pool))
        running: set[str] = set()
        for row in self._rows:
            spare = spares.get(row.slot)
            if spare is None or row.slot in own:
                self._report(namespace, row.slot, notify, Notice(
                    "AddedWorkerLeftOut",
                    f"{row.slot} (@{row.username}), added with /addworker, is not a spare slot "
                    f"of this pool (workerTokens grew, or addWorker.spareSlots shrank); add its "
                    f"bot's token to workerTokens to run it again", warning=True))
                continue
            if (namespace, uid, row.slot) not in self._written:
                problem, created = await self._write(pool, spare, row)
                if problem is not None:
                    if self._report(namespace, row.slot, notify,
                                    Notice("AddedWorkerNotStarted", problem, warning=True)):
                        await self._tell(row, "worker_not_added", reason=problem)
                    continue
                self._written.add((namespace, uid, row.slot))
                self._fresh.setdefault((namespace, name), set()).add(row.slot)
                if created:  # not after a restart, when the Secret was there already
                    notify(Notice("WorkerAdded",
                                  f"{row.slot} (@{row.username}) joined the pool from /addworker"))
                    await self._tell(row, "worker_added")
            running.add(row.slot)
        return running

    def _report(self, namespace: str, slot: str, notify: Callable[[Notice], None],
                notice: Notice) -> bool:
        """Post `notice` once per process; True the first time."""
        if (namespace, slot, notice.reason) in self._reported:
            return False
        self._reported.add((namespace, slot, notice.reason))
        log.warning("an added worker is not run", extra={"worker": slot, "reason": notice.message})
        notify(notice)
        return True

    async def _tell(self, row: Any, kind: str, **extra: str) -> None:
        """An outbox notice to the chat the bot was added from (master/views.render_event)."""
        if self.announcer is None or getattr(row, "chat_id", None) is None:
            return
        await self.announcer.announce(Note(kind, {"worker": row.slot, "username": row.username,
                                                  **extra}, chat_id=row.chat_id))

    async def _read(self) -> None:
        """Read the stored tokens when due. A round waits `ROUND_WAIT` for the read at most
        and goes on with the last known ones; a read that finishes later pokes a new round
        when it found something new (a read of its own is bounded by READ_TIMEOUT)."""
        if self._reading is None or self._reading.done():
            if self._clock() < self._next_read:
                return
            self._reading = asyncio.create_task(self._refresh(), name="added-workers-read")
        # Until the first read, a round waits for it (a start must see the added slots).
        wait = ROUND_WAIT if self._read_once else READ_TIMEOUT
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):  # (not wait_for: it can lose a cancel on 3.11)
                await asyncio.shield(self._reading)

    async def _refresh(self) -> None:
        try:
            if not self._watching:
                await asyncio.wait_for(self.tokens.watch_added_workers(self.signalled),
                                       READ_TIMEOUT)
                self._watching = True
            rows = list(await asyncio.wait_for(self.tokens.managed_tokens(), READ_TIMEOUT))
        except Exception as exc:  # the database: down, slow, or refusing us
            if not self._failing:
                self._failing = True
                log.warning("could not read the workers added with /addworker; the last "
                            "known stand", extra={"error": type(exc).__name__})
            self._next_read = self._clock() + self._retry
            return
        self._failing = False
        self._read_once = True
        self._next_read = self._clock() + self._refresh_every
        new = {r.slot for r in rows} - {r.slot for r in self._rows}
        self._rows = rows
        if new:
            self._poke()  # a round that did not wait for this read must see it

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reading

    async def _write(self, pool: Mapping[str, Any], spare: SpareSlot,
                     row: Any) -> tuple[str | None, bool]:
        """Write the slot's Secret: (why not, or None when it is there; whether this call
        created it)."""
        if self._cipher is None:
            return (f"{spare.slot} (@{row.username}) was added with /addworker, but the "
                    f"operator has no {KEY_SETTING} to read its token"), False
        try:
            token = self._cipher.decrypt(row.token_encrypted)
        except WrongKey:
            return (f"{spare.slot} (@{row.username}): its stored token does not decrypt with "
                    f"the operator's {KEY_SETTING} (it must be the master's)"), False
        namespace = pool["metadata"].get("namespace") or "default"
        try:
            await self.api.create(secrets_path(namespace), secret_manifest(pool, spare, token))
        except Conflict:
            return None, False  # written before (this operator before a restart, or a replica)
        except KubeError as exc:
            return f"{spare.slot}: could not write its token Secret {spare.secret}: {exc}", False
        log.info("an added worker's token Secret is written", extra={"worker": spare.slot})
        return None, True
