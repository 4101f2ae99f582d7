"""The operator's side of /addworker (operator/added.py): a stored token becomes its spare slot's
Secret, once, owned by the pool; every way it can go wrong is said once on the pool and
never stops a round. The API server and the database are doubles here; the whole story runs
against the emulated cluster in tests/cluster/test_cluster_addworker.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.fernet import Fernet

from fleetgram.operator import added as added_module
from fleetgram.operator.added import AddedWorkers
from fleetgram.operator.kubeapi import Conflict, Forbidden
from fleetgram.operator.reconcile import Notice
from fleetgram.store.base import ManagedToken

KEY = Fernet.generate_key().decode()
OTHER_KEY = Fernet.generate_key().decode()
TOKEN = "7001:new-bot-token-abcdef"


def pool(tokens: int = 2, spare: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "fleetgram.dev/v1alpha1", "kind": "WorkerPool",
        "metadata": {"name": "fleetgram", "namespace": "fleetgram", "uid": "uid-1"},
        "spec": {
            "tokenSecrets": [{"name": f"t{i + 1}"} for i in range(tokens)],
            "spareSlots": [{"slot": f"worker{i + 1}", "key": "token",
                            "secretName": f"fleetgram-worker{i + 1}-token"}
                           for i in range(tokens, tokens + spare)],
        },
    }


def row(slot: str = "worker3", key: str = KEY, token: str = TOKEN) -> ManagedToken:
    return ManagedToken(slot, 7001, "ada_helper_bot", Fernet(key.encode()).encrypt(token.encode()),
                        datetime(2026, 11, 28, tzinfo=UTC))


class FakeApi:
    def __init__(self, error: Exception | None = None) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.error = error

    async def create(self, path: str, body: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        self.created.append((path, body))
        return dict(body)


class FakeTokens:
    def __init__(self, rows: Sequence[ManagedToken] = ()) -> None:
        self.rows = list(rows)
        self.reads = 0
        self.error: Exception | None = None
        self.hang = False
        self.callback: Callable[[], None] | None = None

    async def managed_tokens(self) -> list[ManagedToken]:
        self.reads += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.error is not None:
            raise self.error
        return list(self.rows)

    async def watch_added_workers(self, callback: Callable[[], None]) -> None:
        self.callback = callback


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def added(api: FakeApi, tokens: FakeTokens, key: str | None = KEY,
          clock: Clock | None = None, poke: Callable[[], None] = lambda: None) -> AddedWorkers:
    return AddedWorkers(api, tokens, key, clock=clock or Clock(), poke=poke,  # type: ignore[arg-type]
                        refresh=60, retry=5)


async def test_a_stored_token_becomes_its_spare_slots_secret_owned_by_the_pool() -> None:
    api, notices = FakeApi(), []
    running = await added(api, FakeTokens([row()])).slots(pool(), notices.append)
    assert running == {"worker3"}
    ((path, secret),) = api.created
    assert path == "/api/v1/namespaces/fleetgram/secrets"
    assert secret["metadata"]["name"] == "fleetgram-worker3-token"
    assert base64.b64decode(secret["data"]["token"]).decode() == TOKEN
    (owner,) = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("WorkerPool", "fleetgram", "uid-1")
    assert [n.reason for n in notices] == ["WorkerAdded"]


async def test_the_secret_is_written_once_and_the_slot_is_started_once() -> None:
    api = FakeApi()
    workers = added(api, FakeTokens([row()]))
    await workers.slots(pool(), lambda n: None)
    assert workers.take_fresh("fleetgram", "fleetgram") == {"worker3"}
    assert await workers.slots(pool(), lambda n: None) == {"worker3"}
    assert len(api.created) == 1
    assert workers.take_fresh("fleetgram", "fleetgram") == set()


async def test_a_secret_that_exists_already_counts_as_written() -> None:
    api = FakeApi(error=Conflict(409, "AlreadyExists", "secrets exists"))
    assert await added(api, FakeTokens([row()])).slots(pool(), lambda n: None) == {"worker3"}


async def test_a_token_that_does_not_decrypt_is_said_once_on_the_pool_and_not_run() -> None:
    api, notices = FakeApi(), []
    workers = added(api, FakeTokens([row(key=OTHER_KEY)]))
    for _ in range(3):
        assert await workers.slots(pool(), notices.append) == set()
    (notice,) = notices
    assert notice.warning and "does not decrypt" in notice.message
    assert "TOKEN_ENCRYPTION_KEY" in notice.message
    assert TOKEN not in notice.message
    assert api.created == []


async def test_an_operator_without_the_key_says_which_setting_it_lacks() -> None:
    notices: list[Notice] = []
    assert await added(FakeApi(), FakeTokens([row()]), key=None).slots(
        pool(), notices.append) == set()
    assert "TOKEN_ENCRYPTION_KEY" in notices[0].message


async def test_a_refused_secret_write_is_said_and_tried_again_next_round() -> None:
    api, notices = FakeApi(error=Forbidden(403, "Forbidden", "secrets is forbidden")), []
    workers = added(api, FakeTokens([row()]))
    assert await workers.slots(pool(), notices.append) == set()
    assert notices[0].reason == "AddedWorkerNotStarted" and "403" in notices[0].message
    api.error = None
    assert await workers.slots(pool(), notices.append) == {"worker3"}


async def test_a_token_stored_for_a_slot_the_pool_no_longer_spares_is_reported() -> None:
    """A helm upgrade grew workerTokens to 3: worker3 is a values slot now."""
    notices: list[Notice] = []
    assert await added(FakeApi(), FakeTokens([row()])).slots(
        pool(tokens=3), notices.append) == set()
    (notice,) = notices
    assert notice.reason == "AddedWorkerLeftOut" and "workerTokens" in notice.message


async def test_a_pool_without_spare_slots_never_reads_the_database() -> None:
    tokens = FakeTokens([row()])
    assert await added(FakeApi(), tokens).slots(pool(spare=0), lambda n: None) == set()
    assert tokens.reads == 0


async def test_tokens_are_read_again_only_on_a_signal_or_after_the_safety_interval() -> None:
    clock, tokens, pokes = Clock(), FakeTokens(), []
    workers = added(FakeApi(), tokens, clock=clock, poke=lambda: pokes.append(1))
    await workers.slots(pool(), lambda n: None)
    tokens.rows = [row()]
    assert await workers.slots(pool(), lambda n: None) == set()  # not read again yet
    assert tokens.callback is not None
    tokens.callback()  # the master's NOTIFY fleetgram_workers
    assert pokes == [1]
    assert await workers.slots(pool(), lambda n: None) == {"worker3"}
    clock.now += 61
    await workers.slots(pool(), lambda n: None)
    assert tokens.reads == 3


async def test_with_the_database_down_the_last_known_slots_stand_and_it_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, tokens = Clock(), FakeTokens([row()])
    workers = added(FakeApi(), tokens, clock=clock)
    assert await workers.slots(pool(), lambda n: None) == {"worker3"}
    tokens.error = OSError("connection refused")
    with caplog.at_level(logging.WARNING, logger="fleetgram.operator.added"):
        for _ in range(3):
            clock.now += 61
            assert await workers.slots(pool(), lambda n: None) == {"worker3"}
    assert sum("could not read" in r.getMessage() for r in caplog.records) == 1


async def test_the_first_round_waits_for_the_first_read_up_to_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A starting operator must know the added slots before it plans (or it would take their
    workers for orphans), but a database that hangs holds it up READ_TIMEOUT at most."""
    monkeypatch.setattr(added_module, "READ_TIMEOUT", 0.2)
    tokens = FakeTokens([row()])
    tokens.hang = True
    workers = added(FakeApi(), tokens)
    assert await asyncio.wait_for(workers.slots(pool(), lambda n: None), 5.0) == set()
    assert workers._reading is not None
    await asyncio.wait_for(workers._reading, 5.0)  # the read gave up at its own timeout
    assert tokens.reads == 1


async def test_once_read_a_round_does_not_wait_for_a_slow_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(added_module, "ROUND_WAIT", 0.01)
    clock, tokens, pokes = Clock(), FakeTokens(), []
    workers = added(FakeApi(), tokens, clock=clock, poke=lambda: pokes.append(1))
    assert await workers.slots(pool(), lambda n: None) == set()
    gate = asyncio.Event()
    read = tokens.managed_tokens

    async def slow() -> list[ManagedToken]:
        await gate.wait()
        return await read()

    tokens.managed_tokens = slow  # type: ignore[method-assign]
    tokens.rows = [row()]
    assert tokens.callback is not None
    tokens.callback()  # the master stored a token; the read is slow
    assert await workers.slots(pool(), lambda n: None) == set()  # went on without it
    gate.set()
    await asyncio.wait_for(workers._reading, 5.0)  # type: ignore[arg-type]
    assert pokes == [1, 1]  # the signal's round, then the one the finished read asks for
    assert await workers.slots(pool(), lambda n: None) == {"worker3"}
    await workers.close()


class Told:
    """An announcer double: what the chat the bot was added from is told."""

    def __init__(self) -> None:
        self.said: list[tuple[str, int | None, dict[str, Any]]] = []

    async def announce(self, note: Any) -> None:
        self.said.append((note.kind, note.chat_id, note.payload))


def told_row(**kw: Any) -> ManagedToken:
    return dataclasses.replace(row(**kw), chat_id=1111)


async def test_the_chat_a_bot_was_added_from_is_told_when_its_secret_is_written() -> None:
    told = Told()
    workers = added(FakeApi(), FakeTokens([told_row()]))
    workers.announcer = told  # type: ignore[assignment]
    await workers.slots(pool(), lambda n: None)
    await workers.slots(pool(), lambda n: None)
    assert told.said == [("worker_added", 1111, {"worker": "worker3",
                                                  "username": "ada_helper_bot"})]


async def test_nobody_is_told_again_after_a_restart_found_the_secret_written() -> None:
    told = Told()
    workers = added(FakeApi(error=Conflict(409, "AlreadyExists", "exists")),
                    FakeTokens([told_row()]))
    workers.announcer = told  # type: ignore[assignment]
    assert await workers.slots(pool(), lambda n: None) == {"worker3"}
    assert told.said == []


async def test_the_chat_is_told_once_why_the_worker_cannot_join() -> None:
    told = Told()
    workers = added(FakeApi(), FakeTokens([told_row(key=OTHER_KEY)]))
    workers.announcer = told  # type: ignore[assignment]
    for _ in range(3):
        await workers.slots(pool(), lambda n: None)
    ((kind, chat, payload),) = told.said
    assert (kind, chat) == ("worker_not_added", 1111)
    assert "does not decrypt" in payload["reason"]
