"""The store: the task queue, worker slots, the outbox, conversations and the usage ledger.

`open_store(DATABASE_URL)` picks the engine: SQLite (the embedded default) or PostgreSQL.
"""

from __future__ import annotations

from fleetgram.store.base import ApiCall, CancelOutcome, CancelResult, Store, UnstorableText
from fleetgram.store.sql import DuplicateTaskError

__all__ = [
    "ApiCall",
    "CancelOutcome",
    "CancelResult",
    "DuplicateTaskError",
    "Store",
    "UnstorableText",
    "open_store",
]

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(database_url: str) -> Store:
    """The store for a DATABASE_URL, not yet opened (`await store.open()` connects and
    migrates). `sqlite:///relative/path`, `sqlite:////absolute/path`, `sqlite:///:memory:` or a
    plain file path give SQLite; `postgresql://...` or `postgres://...` give Postgres."""
    url = database_url.strip()
    if url.startswith(_POSTGRES_SCHEMES):
        from fleetgram.store.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith(_SQLITE_PREFIX):
        path = url.removeprefix(_SQLITE_PREFIX)
    elif url and "://" not in url and not url.startswith("sqlite:"):
        path = url
    else:
        path = ""
    if not path:
        # Only the scheme is shown: the rest of a URL may hold a password.
        shown = url.split("://", 1)[0] + "://..." if "://" in url else repr(url)
        raise ValueError(
            "DATABASE_URL must be sqlite:///path/to/file.db, sqlite:///:memory:, a file path, "
            f"or postgresql://user@host/db; got {shown}"
        )
    from fleetgram.store.sqlite import SQLiteStore

    return SQLiteStore(path)
