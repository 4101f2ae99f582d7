"""/usage as the user reads it: today's and this month's tokens and cost per worker, the
budget if they have one, and for admins the fleet's totals and each user's; one message."""

from __future__ import annotations

from datetime import UTC, datetime

from fleetgram import budget
from fleetgram.domain import Usage
from fleetgram.master.usage import (
    MESSAGE_BUDGET,
    Period,
    tokens,
    usage_view,
)
from fleetgram.master.views import HELP, MASTER_COMMANDS
from fleetgram.store.base import UsageLine
from tests.telegram.html_check import html_errors

NOW = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
ADA, BOB = 1111, 2222


def line(user: int | None, worker: str, cost: float, tasks: int = 1) -> UsageLine:
    return UsageLine(user, worker, Usage(1200, 340, 5600, 78, cost), tasks)


def view(today: list[UsageLine], month: list[UsageLine] | None = None, *,
         viewer: int = ADA, limit: float | None = None, fleet: bool = False,
         tz: str = "UTC") -> str:
    zone = budget.zone(tz)
    return usage_view(
        viewer, Period("Today", budget.day_start(NOW, zone), today),
        Period("This month", budget.month_start(NOW, zone), month if month is not None else today),
        now=NOW, tz=zone, limit=limit, fleet=fleet)


def test_usage_shows_each_period_per_worker_with_tokens_and_cost() -> None:
    text = view([line(ADA, "worker1", 0.0123, 2), line(ADA, "worker2", 0.5)])
    lines = text.splitlines()
    assert lines[1] == ("<b>Today</b> (since 00:00): $0.5123 · 3 tasks · in 2.4k · out 680 · "
                        "cache 11.2k read, 156 written")
    assert "• worker2: $0.50 · 1 task · in 1.2k · out 340 · cache 5.6k read, 78 written" in lines
    assert "• worker1: $0.0123 · 2 tasks · in 1.2k · out 340 · cache 5.6k read, 78 written" in lines
    assert any(x.startswith("<b>This month</b> (since 1 Nov): $0.5123") for x in lines)


def test_a_period_without_usage_says_nothing_yet() -> None:
    text = view([], [line(ADA, "worker1", 0.01)])
    assert "<b>Today</b> (since 00:00): nothing yet" in text
    assert "<b>This month</b> (since 1 Nov): $0.01" in text


def test_a_user_sees_only_their_own_usage_without_the_fleet() -> None:
    text = view([line(ADA, "worker1", 0.01), line(BOB, "worker2", 7.0)])
    assert "worker2" not in text and "$7.00" not in text and "fleet" not in text


def test_the_budget_line_says_what_is_spent_left_and_when_it_resets() -> None:
    text = view([line(ADA, "worker1", 1.25)], limit=5.0)
    assert ("💰 Daily budget: $1.25 of $5.00 spent today ($3.75 left); it resets at midnight "
            "(UTC), in 9 h 0 min.") in text


def test_a_spent_budget_says_used_up() -> None:
    assert "(used up)" in view([line(ADA, "worker1", 5.0)], limit=5.0)


def test_periods_are_shown_in_the_budget_timezone() -> None:
    text = view([line(ADA, "worker1", 0.01)], tz="Europe/Berlin")
    assert "times in Europe/Berlin" in text and "(since 00:00)" in text


def test_an_admin_sees_the_fleet_total_and_each_users_total() -> None:
    lines = [line(ADA, "worker1", 0.01), line(BOB, "worker2", 7.0, 3), line(None, "worker3", 0.5)]
    text = view(lines, fleet=True)
    fleet = text.split("🚢 <b>The fleet</b> (you are an admin)\n")[1]
    assert fleet.splitlines()[0].startswith("<b>Today</b>: $7.51 · 5 tasks")
    assert "• user 2222: $7.00 · 3 tasks · 7.2k tokens" in fleet
    assert "• user 1111 (you): $0.01 · 1 task · 7.2k tokens" in fleet
    assert "• tasks no longer recorded: $0.50 · 1 task · 7.2k tokens" in fleet


def test_worker_names_are_html_escaped() -> None:
    text = view([line(ADA, "<b>worker&1", 0.01)])
    assert "&lt;b&gt;worker&amp;1" in text and html_errors(text) == []


def test_usage_of_a_large_fleet_fits_one_message() -> None:
    today = [line(user, f"worker{n}", 123.456789 + n, 99)
             for user in range(1, 41) for n in range(1, 31)]
    today += [line(ADA, f"worker{n}", 1234.5678, 999) for n in range(1, 31)]
    text = view(today, fleet=True, limit=5.0)
    assert len(text) <= MESSAGE_BUDGET and html_errors(text) == []
    assert "• 20 more workers:" in text and "• 31 more users:" in text


def test_token_counts_are_short() -> None:
    assert [tokens(n) for n in (950, 12_345, 4_560_000)] == ["950", "12.3k", "4.56M"]


def test_help_and_the_command_menu_offer_usage_once() -> None:
    assert HELP.count("/usage") == 1
    assert HELP.index("/usage") < HELP.index("/help — this message")
    assert [name for name, _ in MASTER_COMMANDS].count("usage") == 1
