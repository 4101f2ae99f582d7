"""Daily budgets against the usage ledger: the store reads that fleetgram.budget's decisions
need, for the intakes (a new task is refused) and the engines (a starting task's cap).

A user without a budget costs no query. A failing read lets the task through (logged): the
fleet keeps working when only the ledger cannot be read, and the ledger is complete again
once the store is back.
"""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo

from fleetgram import budget
from fleetgram.config import Settings
from fleetgram.store.base import Store

log = logging.getLogger(__name__)


def zone_of(settings: Settings) -> tzinfo:
    return budget.zone(settings.budget_timezone)


def budget_of(settings: Settings, user_id: int) -> float | None:
    return budget.budget_for(user_id, settings.user_daily_budget_usd, settings.user_budgets_usd)


async def spent_since(store: Store, user_id: int, since: datetime) -> float:
    """The cost of the user's ledger calls since `since` (calls of running tasks are in the
    ledger once their task ends)."""
    lines = await store.usage_since(since, user_id=user_id)
    return round(sum(line.usage.cost_usd for line in lines), 6)


async def intake_refusal(store: Store, settings: Settings, user_id: int,
                         now: datetime) -> str | None:
    """The answer refusing a new task of `user_id` whose spend today reached their budget,
    or None to accept it."""
    limit = budget_of(settings, user_id)
    if limit is None:
        return None
    tz = zone_of(settings)
    try:
        spent = await spent_since(store, user_id, budget.day_start(now, tz))
    except Exception as exc:
        log.warning("could not read the usage ledger; the task is accepted",
                    extra={"user_id": user_id, "error": type(exc).__name__})
        return None
    decision = budget.decide(spent, limit, now, tz)
    return decision.reason if isinstance(decision, budget.Refuse) else None


async def task_cap(store: Store, settings: Settings, user_id: int,
                   now: datetime) -> budget.Cap | None:
    """What a task starting `now` may spend before its user's daily budget is reached
    (None: no budget, or the ledger could not be read)."""
    limit = budget_of(settings, user_id)
    if limit is None:
        return None
    try:
        spent = await spent_since(store, user_id, budget.day_start(now, zone_of(settings)))
    except Exception as exc:
        log.warning("could not read the usage ledger; the task runs without a budget cap",
                    extra={"user_id": user_id, "error": type(exc).__name__})
        return None
    return budget.cap_for(spent, limit)
