"""The ledger reads behind budgets: a user without a budget costs no query, and a ledger that
cannot be read lets the task through (the fleet keeps working)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fleetgram import spend
from fleetgram.budget import Cap
from fleetgram.config import Settings
from fleetgram.domain import Usage
from fleetgram.store.base import UsageLine

NOW = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


class Ledger:
    """Just enough of a Store: usage_since, answering `lines` or raising `error`."""

    def __init__(self, lines: list[UsageLine] | None = None, error: Exception | None = None):
        self.lines, self.error = lines or [], error
        self.asked: list[tuple[datetime, Any]] = []

    async def usage_since(self, since: datetime, *, user_id: int | None = None,
                          until: datetime | None = None) -> list[UsageLine]:
        self.asked.append((since, user_id))
        if self.error is not None:
            raise self.error
        return self.lines


def settings(**budgets: Any) -> Settings:
    return Settings(master_bot_token="1:abcdef", worker_token_pool=(),
                    allowed_user_ids=frozenset({111}), anthropic_api_key="k", **budgets)


def spent(cost: float) -> Ledger:
    return Ledger([UsageLine(111, "worker1", Usage(cost_usd=cost / 2), 1),
                   UsageLine(111, "worker2", Usage(cost_usd=cost / 2), 1)])


async def test_a_user_without_a_budget_costs_no_ledger_query() -> None:
    ledger = spent(100.0)
    assert await spend.intake_refusal(ledger, settings(), 111, NOW) is None  # type: ignore[arg-type]
    assert await spend.task_cap(ledger, settings(), 111, NOW) is None  # type: ignore[arg-type]
    assert ledger.asked == []


async def test_spend_is_summed_over_workers_since_local_midnight() -> None:
    ledger = spent(1.0)
    refusal = await spend.intake_refusal(
        ledger, settings(user_daily_budget_usd=1.0, budget_timezone="Europe/Berlin"),  # type: ignore[arg-type]
        111, NOW)
    assert refusal is not None and "spent $1.00 of $1.00" in refusal
    assert ledger.asked == [(datetime(2026, 11, 27, 23, 0, tzinfo=UTC), 111)]


async def test_a_starting_task_gets_the_rest_of_the_days_budget() -> None:
    cap = await spend.task_cap(spent(0.75), settings(user_daily_budget_usd=1.0), 111, NOW)  # type: ignore[arg-type]
    assert cap == Cap(0.25, 1.0)


async def test_a_ledger_that_cannot_be_read_lets_the_task_in_without_a_cap() -> None:
    broken = Ledger(error=OSError("database is down"))
    budgets = settings(user_daily_budget_usd=1.0)
    assert await spend.intake_refusal(broken, budgets, 111, NOW) is None  # type: ignore[arg-type]
    assert await spend.task_cap(broken, budgets, 111, NOW) is None  # type: ignore[arg-type]
