"""Daily spending budgets per user, as plain decisions: which budget applies, when "today" and
"this month" begin in BUDGET_TIMEZONE, whether a new task is refused, what a starting task may
still spend, and the words the user reads. No I/O here (fleetgram.spend reads the ledger).

A user's spend today is the cost in the usage ledger of their tasks since local midnight.
A new task is refused once it reaches the budget; a task that starts below it gets a cap (the
rest of the budget) and is stopped when its own cost reaches that cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class BudgetReached(Exception):
    """A running task was stopped: the user's daily budget is reached. The message is the
    reason shown in the chats and recorded with the failed task."""

    def __init__(self, budget_usd: float) -> None:
        super().__init__(stopped_reason(budget_usd))
        self.budget_usd = budget_usd


# --- settings -----------------------------------------------------------------------------------
def zone(name: str) -> tzinfo:
    """The time zone BUDGET_TIMEZONE names (an IANA name such as Europe/Berlin, or UTC).
    Raises ValueError with a readable message for an unknown name."""
    if name.strip().upper() in ("UTC", "Z", "GMT"):
        return UTC
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known time zone (use an IANA name such as "
                         "Europe/Berlin, or UTC)") from None


def parse_user_budgets(raw: str) -> dict[int, float | None]:
    """USER_BUDGETS_USD: "111:5,222:0.5" (user id: dollars a day; "none" for no budget).
    Raises ValueError naming the entry that is wrong."""
    budgets: dict[int, float | None] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        user, sep, amount = (part.strip() for part in entry.partition(":"))
        if not sep or not user or not amount:
            raise ValueError(f"entry {entry!r} is not user_id:dollars (e.g. 111:5)")
        try:
            user_id = int(user)
        except ValueError:
            raise ValueError(f"entry {entry!r}: {user!r} is not a numeric user id") from None
        if user_id in budgets:
            raise ValueError(f"lists user {user_id} twice")
        budgets[user_id] = parse_amount(amount, f"entry {entry!r}")
    return budgets


def parse_amount(raw: str, where: str) -> float | None:
    """Dollars a day, at least 0; "none"/"unlimited" for no budget."""
    if raw.strip().lower() in ("none", "unlimited", "off"):
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{where}: {raw!r} is not an amount in US dollars") from None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ValueError(f"{where}: {raw!r} must be an amount of at least 0")
    return value


def budget_for(user_id: int, default: float | None,
               overrides: Mapping[int, float | None]) -> float | None:
    """The user's daily budget in dollars; None: no budget."""
    if user_id in overrides:
        return overrides[user_id]
    return default


# --- periods ------------------------------------------------------------------------------------
def _local_midnight(day: datetime, tz: tzinfo) -> datetime:
    """Midnight starting the local date of `day` (already in `tz`), as an aware UTC time.
    Where midnight does not exist (a DST jump at 00:00) zoneinfo places it consistently."""
    return datetime.combine(day.date(), time(0), tzinfo=tz).astimezone(UTC)


def day_start(now: datetime, tz: tzinfo) -> datetime:
    """When "today" began in `tz` (UTC)."""
    return _local_midnight(now.astimezone(tz), tz)


def next_day_start(now: datetime, tz: tzinfo) -> datetime:
    """When "tomorrow" begins in `tz` (UTC): the moment the daily budget resets."""
    # The next calendar date, not now + 24 h: a DST day has 23 or 25 hours.
    tomorrow = now.astimezone(tz).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=tz).astimezone(UTC)


def month_start(now: datetime, tz: tzinfo) -> datetime:
    """When "this month" began in `tz` (UTC)."""
    local = now.astimezone(tz)
    return _local_midnight(local.replace(day=1), tz)


# --- decisions ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Allow:
    pass


@dataclass(frozen=True)
class Refuse:
    reason: str  # what the user is told, one paragraph


def decide(spent: float, budget: float | None, now: datetime, tz: tzinfo) -> Allow | Refuse:
    """May the user start a new task, having spent `spent` dollars today?"""
    if budget is None or spent < budget:
        return Allow()
    return Refuse(refusal_text(spent, budget, now, tz))


@dataclass(frozen=True)
class Cap:
    """What a starting task may spend before its user's daily budget is reached."""

    usd: float  # the rest of the budget (0 or less: stop before the first call)
    budget: float  # the daily budget, for the note

    def reached(self, cost: float) -> bool:
        return cost >= self.usd


def cap_for(spent: float, budget: float | None) -> Cap | None:
    """The cap of a task starting when the user has spent `spent` today; None: no budget."""
    if budget is None:
        return None
    return Cap(round(budget - spent, 6), budget)


def agent_budget(task_budget: float | None, cap: Cap | None) -> float | None:
    """Claude Code's max_budget_usd for a task: TASK_BUDGET_USD or the rest of the daily
    budget, whichever is lower (the CLI needs a positive amount)."""
    if cap is None:
        return task_budget
    rest = max(cap.usd, 0.0001)
    return rest if task_budget is None else min(task_budget, rest)


def daily_cap_binds(task_budget: float | None, cap: Cap | None) -> bool:
    """A budget stop of the agent came from the daily budget, not TASK_BUDGET_USD."""
    return cap is not None and (task_budget is None or cap.usd < task_budget)


# --- words ----------------------------------------------------------------------------------------
def usd(amount: float) -> str:
    """Dollars as people read them: cents above a dollar, finer below (a task costs cents)."""
    if amount == 0:
        return "$0"
    if abs(amount) >= 1:
        return f"${amount:,.2f}"
    if abs(amount) < 0.0001:
        return "<$0.0001"
    text = f"{amount:.4f}".rstrip("0")
    return "$" + (text + "0" * (2 - len(text.split(".")[1])))


def zone_name(tz: tzinfo) -> str:
    return "UTC" if tz is UTC else str(getattr(tz, "key", tz))


def until(later: datetime, now: datetime) -> str:
    """"3 h 12 min" (rounded up to the minute)."""
    minutes = max(1, -(-int((later - now).total_seconds()) // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def resets_text(now: datetime, tz: tzinfo) -> str:
    """"at midnight (Europe/Berlin), in 3 h 12 min"."""
    return f"at midnight ({zone_name(tz)}), in {until(next_day_start(now, tz), now)}"


def refusal_text(spent: float, budget: float, now: datetime, tz: tzinfo) -> str:
    return (f"💸 Your daily budget is used up: you have spent {usd(spent)} of {usd(budget)} "
            f"today (USER_DAILY_BUDGET_USD). Nothing was queued. It resets "
            f"{resets_text(now, tz)}.")


def stopped_reason(budget: float) -> str:
    return f"stopped: your daily budget of {usd(budget)} is reached"
