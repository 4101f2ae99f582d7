"""A store that can be made to fail its writes, for tests of what the bots do when the
database cannot write (a full disk, an outage): `FaultyStore(inner)` stands in for `inner`
everywhere (every Store method is `inner`'s, by delegation), and

    store.refuse_writes(3.0)        # every write fails for the next 3 s, as a full disk does
    store.refuse_writes()           # ... until store.heal()
    store.refuse_writes(error=RuntimeError("boom"), methods={"finish_task"})
    store.heal()

Reads keep working, as they do on a real full disk. The default error is the one the inner
engine raises for a full disk (tests/store/test_faults.py shows SQLite's through a real one):
SQLite `sqlite3.OperationalError("database or disk is full")` (SQLITE_FULL), Postgres
`psycopg.errors.DiskFull` (SQLSTATE 53100); a cluster store fails as its SQL store does.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Any

# The Store methods that write (each raises while writes are refused). Everything else passes.
WRITE_METHODS = frozenset({
    "create_task", "update_pending_prompt", "claim_next", "mark_running", "finish_task",
    "request_cancel", "requeue_worker_tasks", "requeue_task", "record_api_call",
    "purge_finished", "archive_task", "ensure_slots", "update_slot", "add_event",
    "mark_event_delivered", "record_ambiguous_send", "remember_reply", "forget_replies",
    "active_conversation", "new_conversation", "append_turns", "replace_turns",
    "set_session", "set_waiting", "add_attachments",
    "record_messages", "link_follow_up", "link_conversation", "activate_conversation",
    "add_managed_token",
})

SQLITE_FULL_MESSAGE = "database or disk is full"  # sqlite3_errstr(SQLITE_FULL)
# What Postgres says when it cannot grow a table file (md.c, mdextend), SQLSTATE 53100.
POSTGRES_FULL_MESSAGE = 'could not extend file "base/16384/16385": No space left on device'


def disk_full_error(store: Any) -> Exception:
    """The error `store`'s engine raises when its disk is full."""
    from fleetgram.store.postgres import PostgresStore
    from fleetgram.store.sqlite import SQLiteStore

    seen: set[int] = set()
    while store is not None and id(store) not in seen:
        seen.add(id(store))
        if isinstance(store, SQLiteStore):
            return sqlite3.OperationalError(SQLITE_FULL_MESSAGE)
        if isinstance(store, PostgresStore):
            import psycopg.errors

            return psycopg.errors.DiskFull(POSTGRES_FULL_MESSAGE)
        store = getattr(store, "inner", None)  # a ClusterStore, or another wrapper
    return OSError(28, "No space left on device")  # ENOSPC


class FaultyStore:
    """`inner` with writes that can be refused (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._refusing = False
        self._until: float | None = None
        self._error: Exception | None = None
        self._methods: frozenset[str] = WRITE_METHODS
        self.refused: list[str] = []  # the writes refused so far, by method name

    def refuse_writes(
        self,
        seconds: float | None = None,
        error: Exception | None = None,
        *,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Refuse writes from now on: for `seconds` (then heal by themselves) or until heal().
        `error` (default: the engine's full-disk error) is raised by each refused call;
        `methods` narrows the refusal to some write methods (default: all of them)."""
        chosen = WRITE_METHODS if methods is None else frozenset(methods)
        unknown = chosen - WRITE_METHODS
        if unknown:
            raise ValueError(f"not write methods of the Store: {', '.join(sorted(unknown))}")
        self._methods = chosen
        self._error = error
        self._until = None if seconds is None else time.monotonic() + seconds
        self._refusing = True

    def heal(self) -> None:
        """Writes work again."""
        self._refusing = False
        self._until = None
        self._error = None
        self._methods = WRITE_METHODS

    @property
    def refusing(self) -> bool:
        if self._refusing and self._until is not None and time.monotonic() >= self._until:
            self.heal()
        return self._refusing

    def _refuses(self, name: str) -> bool:
        return self.refusing and name in self._methods

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in WRITE_METHODS or not callable(attr):
            return attr
        return self._guarded(name, attr)

    def _guarded(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if self._refuses(name):
                self.refused.append(name)
                raise self._error if self._error is not None else disk_full_error(self.inner)
            return await method(*args, **kwargs)

        return guarded
