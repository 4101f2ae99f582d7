"""Small builders shared by the store tests."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetgram.domain import Task
from fleetgram.store.sql import SqlStore

OpenStore = Callable[[], Awaitable[SqlStore]]

T0 = datetime(2026, 1, 25, 12, 0, tzinfo=UTC)

_numbers = itertools.count(1)


def at(seconds: float) -> datetime:
    """A fixed moment: T0 plus `seconds`."""
    return T0 + timedelta(seconds=seconds)


def make_task(**changes: Any) -> Task:
    """A pending task with a fresh id (ids rise in creation order), owned by user 100."""
    number = next(_numbers)
    fields: dict[str, Any] = {
        "id": f"t-{number:05d}",
        "user_id": 100,
        "chat_id": 1000,
        "prompt": f"prompt {number}",
        "title": f"task {number}",
        "created_at": at(number),
    }
    fields.update(changes)
    return Task(**fields)
