"""Daily budgets as decisions: which budget applies, when a day and a month begin in the
budget's time zone, when a new task is refused and what a starting task may still spend."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetgram import budget
from fleetgram.budget import Allow, BudgetReached, Cap, Refuse
from fleetgram.claude.runner import UsageMeter, describe_error
from fleetgram.domain import Usage
from fleetgram.store.base import ApiCall

BERLIN = budget.zone("Europe/Berlin")
NEW_YORK = budget.zone("America/New_York")
NOON = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


# --- which budget ---------------------------------------------------------------------------------
def test_a_user_without_an_override_has_the_default_budget() -> None:
    assert budget.budget_for(111, 5.0, {222: 0.5}) == 5.0


def test_a_per_user_override_wins_over_the_default() -> None:
    assert budget.budget_for(222, 5.0, {222: 0.5}) == 0.5


def test_an_override_of_none_exempts_the_user_from_the_default() -> None:
    assert budget.budget_for(222, 5.0, budget.parse_user_budgets("222:none")) is None


def test_without_any_setting_nobody_has_a_budget() -> None:
    assert budget.budget_for(111, None, {}) is None


def test_user_budgets_are_parsed_from_id_colon_dollars() -> None:
    assert budget.parse_user_budgets(" 111:5, 222:0.5 ,") == {111: 5.0, 222: 0.5}


@pytest.mark.parametrize(("raw", "says"), [
    ("111", "is not user_id:dollars"),
    ("abc:5", "'abc' is not a numeric user id"),
    ("111:lots", "'lots' is not an amount in US dollars"),
    ("111:-1", "must be an amount of at least 0"),
    ("111:1,111:2", "lists user 111 twice"),
])
def test_a_malformed_user_budget_names_the_entry(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        budget.parse_user_budgets(raw)


# --- periods --------------------------------------------------------------------------------------
def test_today_begins_at_midnight_utc_by_default() -> None:
    assert budget.day_start(NOON, UTC) == datetime(2026, 1, 15, tzinfo=UTC)


def test_today_begins_at_local_midnight_in_the_budget_timezone() -> None:
    # 23:30 UTC is already 00:30 on the 16th in Berlin (UTC+1 in winter).
    now = datetime(2026, 1, 15, 23, 30, tzinfo=UTC)
    assert budget.day_start(now, BERLIN) == datetime(2026, 1, 15, 23, 0, tzinfo=UTC)


def test_a_minute_before_local_midnight_is_still_the_same_day() -> None:
    now = datetime(2026, 1, 15, 22, 59, tzinfo=UTC)  # 23:59 in Berlin
    assert budget.day_start(now, BERLIN) == datetime(2026, 1, 14, 23, 0, tzinfo=UTC)


def test_the_budget_resets_at_the_next_local_midnight() -> None:
    assert budget.next_day_start(NOON, BERLIN) == datetime(2026, 1, 15, 23, 0, tzinfo=UTC)


def test_on_the_day_clocks_go_forward_the_reset_comes_after_23_hours() -> None:
    just_after_midnight = datetime(2026, 3, 28, 23, 30, tzinfo=UTC)  # 00:30 on 29 March
    start = budget.day_start(just_after_midnight, BERLIN)
    assert budget.next_day_start(just_after_midnight, BERLIN) - start == (
        datetime(2026, 3, 29, 23, tzinfo=UTC) - datetime(2026, 3, 29, tzinfo=UTC))


def test_this_month_begins_on_the_first_at_local_midnight() -> None:
    assert budget.month_start(NOON, BERLIN) == datetime(2025, 12, 31, 23, 0, tzinfo=UTC)


def test_the_new_month_begins_by_local_time_across_new_year() -> None:
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # already 1 January in Berlin
    assert budget.month_start(now, BERLIN) == datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert budget.month_start(now, UTC) == datetime(2026, 12, 1, tzinfo=UTC)


def test_west_of_utc_the_old_month_lasts_into_the_utc_morning() -> None:
    now = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)  # 21:00 on 28 February in New York
    assert budget.month_start(now, NEW_YORK) == datetime(2026, 2, 1, 5, 0, tzinfo=UTC)


def test_an_unknown_time_zone_is_refused_with_an_example() -> None:
    with pytest.raises(ValueError, match=r"not a known time zone .*Europe/Berlin"):
        budget.zone("Mars/Olympus")


# --- refusing a new task ------------------------------------------------------------------------
def test_a_user_without_a_budget_is_never_refused() -> None:
    assert budget.decide(1_000.0, None, NOON, UTC) == Allow()


def test_spend_below_the_budget_lets_a_new_task_in() -> None:
    assert budget.decide(4.99, 5.0, NOON, UTC) == Allow()


def test_spend_that_reached_the_budget_refuses_with_spent_budget_and_reset() -> None:
    decision = budget.decide(5.02, 5.0, NOON, UTC)
    assert isinstance(decision, Refuse)
    assert decision.reason == (
        "💸 Your daily budget is used up: you have spent $5.02 of $5.00 today "
        "(USER_DAILY_BUDGET_USD). Nothing was queued. It resets at midnight (UTC), "
        "in 12 h 0 min.")


def test_a_budget_of_zero_refuses_every_task() -> None:
    assert isinstance(budget.decide(0.0, 0.0, NOON, UTC), Refuse)


def test_the_reset_is_said_in_the_budget_timezone() -> None:
    decision = budget.decide(1.0, 1.0, NOON, BERLIN)
    assert isinstance(decision, Refuse)
    assert "at midnight (Europe/Berlin), in 11 h 0 min" in decision.reason


# --- a starting task's cap ------------------------------------------------------------------------
def test_a_starting_task_may_spend_the_rest_of_the_budget() -> None:
    assert budget.cap_for(3.25, 5.0) == Cap(1.75, 5.0)


def test_a_task_of_a_user_without_a_budget_has_no_cap() -> None:
    assert budget.cap_for(3.25, None) is None


def test_the_agent_gets_the_lower_of_the_task_budget_and_the_rest_of_the_day() -> None:
    assert budget.agent_budget(2.0, Cap(0.5, 5.0)) == 0.5
    assert budget.agent_budget(0.25, Cap(0.5, 5.0)) == 0.25
    assert budget.agent_budget(None, Cap(0.5, 5.0)) == 0.5
    assert budget.agent_budget(2.0, None) == 2.0


def test_an_agent_budget_stop_is_the_daily_budget_only_when_that_was_lower() -> None:
    assert budget.daily_cap_binds(2.0, Cap(0.5, 5.0))
    assert budget.daily_cap_binds(None, Cap(0.5, 5.0))
    assert not budget.daily_cap_binds(0.25, Cap(0.5, 5.0))
    assert not budget.daily_cap_binds(2.0, None)


def _meter(cap: Cap | None, *costs: float) -> UsageMeter:
    meter = UsageMeter("t-00001", "worker1", cap=cap)
    meter.calls.extend(ApiCall("t-00001", "worker1", "m", Usage(cost_usd=c)) for c in costs)
    return meter


def test_the_meter_lets_a_task_run_below_its_cap() -> None:
    _meter(Cap(0.10, 1.0), 0.04).check(Usage(cost_usd=0.05))


def test_the_meter_stops_a_task_when_its_running_cost_reaches_the_cap() -> None:
    with pytest.raises(BudgetReached) as stopped:
        _meter(Cap(0.10, 1.0), 0.04).check(Usage(cost_usd=0.06))
    assert str(stopped.value) == "stopped: your daily budget of $1.00 is reached"


def test_a_task_starting_with_nothing_left_is_stopped_before_its_first_call() -> None:
    with pytest.raises(BudgetReached):
        _meter(Cap(0.0, 1.0)).check()


def test_the_meter_without_a_cap_never_stops_a_task() -> None:
    _meter(None, 1_000.0).check(Usage(cost_usd=1_000.0))


def test_the_stop_is_recorded_with_the_budget_note_as_its_reason() -> None:
    assert describe_error(BudgetReached(0.5)) == "stopped: your daily budget of $0.50 is reached"


# --- words ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("amount", "shown"), [
    (0, "$0"), (5, "$5.00"), (1234.5, "$1,234.50"), (0.5, "$0.50"), (0.0123, "$0.0123"),
    (0.005, "$0.005"), (0.00001, "<$0.0001"),
])
def test_dollars_are_shown_in_cents_above_a_dollar_and_finer_below(
    amount: float, shown: str
) -> None:
    assert budget.usd(amount) == shown
