"""/usage in the master chat: today's and this month's tokens and cost from the usage ledger.

Each user sees their own usage per worker (and their daily budget, if they have one); admins
(ADMIN_USER_IDS) also see the fleet's totals and each user's. "Today" and "this month" begin
at midnight in BUDGET_TIMEZONE. The rendering is pure (`usage_view`); `usage_text` reads the
store. Everything fits one Telegram message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from html import escape

from fleetgram import budget
from fleetgram.config import Settings
from fleetgram.domain import Usage
from fleetgram.spend import budget_of, zone_of
from fleetgram.store.base import Store, UsageLine

log = logging.getLogger(__name__)

USAGE_FAILED = "⚠️ I could not read the usage ledger just now; try again in a minute."

MESSAGE_BUDGET = 4000  # below Telegram's 4096, as the other views
WORKER_LINES = 10  # per period; the rest are summed into one line
USER_LINES = 10  # per period, for admins


# --- the view --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Period:
    """One period's ledger lines (from Store.usage_since) and when it began."""

    name: str  # "Today", "This month"
    since: datetime
    lines: Sequence[UsageLine]


def tokens(n: int) -> str:
    """A token count as read at a glance: 950, 12.3k, 4.56M."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def _sum(lines: Iterable[UsageLine]) -> tuple[Usage, int]:
    total, tasks = Usage(), 0
    for line in lines:
        total, tasks = total + line.usage, tasks + line.tasks
    return total, tasks


def _tasks(n: int) -> str:
    return f"{n} task" + ("" if n == 1 else "s")


def _figures(usage: Usage) -> str:
    return (f"in {tokens(usage.input_tokens)} · out {tokens(usage.output_tokens)} · "
            f"cache {tokens(usage.cache_read_tokens)} read, "
            f"{tokens(usage.cache_write_tokens)} written")


def _since(period: Period, tz: tzinfo) -> str:
    local = period.since.astimezone(tz)
    return f"{local.day} {local:%b}" if period.name != "Today" else f"{local:%H:%M}"


def _period_lines(period: Period, tz: tzinfo, user_id: int) -> list[str]:
    mine = [line for line in period.lines if line.user_id == user_id]
    total, tasks = _sum(mine)
    head = f"<b>{period.name}</b> (since {_since(period, tz)})"
    if not mine:
        return [f"{head}: nothing yet"]
    out = [f"{head}: {budget.usd(total.cost_usd)} · {_tasks(tasks)} · {_figures(total)}"]
    by_worker: dict[str, list[UsageLine]] = {}
    for line in mine:
        by_worker.setdefault(line.worker, []).append(line)
    rows = sorted(by_worker.items(), key=lambda item: -_sum(item[1])[0].cost_usd)
    for worker, lines in rows[:WORKER_LINES]:
        usage, n = _sum(lines)
        out.append(f"• {escape(worker)}: {budget.usd(usage.cost_usd)} · {_tasks(n)} · "
                   f"{_figures(usage)}")
    rest = rows[WORKER_LINES:]
    if rest:
        usage, n = _sum(line for _, lines in rest for line in lines)
        out.append(f"• {len(rest)} more workers: {budget.usd(usage.cost_usd)} · {_tasks(n)}")
    return out


def _fleet_lines(period: Period, viewer: int) -> list[str]:
    total, tasks = _sum(period.lines)
    out = [f"<b>{period.name}</b>: {budget.usd(total.cost_usd)} · {_tasks(tasks)} · "
           f"{_figures(total)}"]
    by_user: dict[int | None, list[UsageLine]] = {}
    for line in period.lines:
        by_user.setdefault(line.user_id, []).append(line)
    rows = sorted(by_user.items(), key=lambda item: -_sum(item[1])[0].cost_usd)
    for user, lines in rows[:USER_LINES]:
        usage, n = _sum(lines)
        who = ("tasks no longer recorded" if user is None
               else f"user {user}" + (" (you)" if user == viewer else ""))
        out.append(f"• {who}: {budget.usd(usage.cost_usd)} · {_tasks(n)} · "
                   f"{tokens(usage.total_tokens)} tokens")
    rest = rows[USER_LINES:]
    if rest:
        usage, n = _sum(line for _, lines in rest for line in lines)
        out.append(f"• {len(rest)} more users: {budget.usd(usage.cost_usd)} · {_tasks(n)}")
    return out


def budget_line(spent_today: float, limit: float | None, now: datetime, tz: tzinfo) -> str:
    if limit is None:
        return ""
    state = "used up" if spent_today >= limit else f"{budget.usd(limit - spent_today)} left"
    return (f"💰 Daily budget: {budget.usd(spent_today)} of {budget.usd(limit)} spent today "
            f"({state}); it resets {budget.resets_text(now, tz)}.")


def usage_view(
    user_id: int, today: Period, month: Period, *, now: datetime, tz: tzinfo,
    limit: float | None = None, fleet: bool = False,
) -> str:
    """The /usage answer (HTML). `today` and `month` hold every user's lines when `fleet`
    (an admin asks), else the viewer's at least."""
    lines = [f"📊 <b>Your usage</b> · times in {escape(budget.zone_name(tz))}"]
    lines += _period_lines(today, tz, user_id)
    lines += _period_lines(month, tz, user_id)
    spent = _sum(line for line in today.lines if line.user_id == user_id)[0].cost_usd
    limit_text = budget_line(spent, limit, now, tz)
    if limit_text:
        lines.append(limit_text)
    if fleet:
        lines += ["", "🚢 <b>The fleet</b> (you are an admin)"]
        lines += _fleet_lines(today, user_id)
        lines += _fleet_lines(month, user_id)
    return fit("\n".join(lines))


def fit(text: str, limit: int = MESSAGE_BUDGET) -> str:
    """`text` cut at a line end to fit one message (the caps above make this rare)."""
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit - 2)
    return text[: cut if cut > 0 else limit - 2] + "\n…"


# --- the store ---------------------------------------------------------------------------------
async def usage_text(store: Store, settings: Settings, user_id: int, now: datetime) -> str:
    """The /usage answer for `user_id` at `now`."""
    tz = zone_of(settings)
    fleet = user_id in settings.admin_user_ids
    who = None if fleet else user_id
    day, month = budget.day_start(now, tz), budget.month_start(now, tz)
    try:
        month_lines = await store.usage_since(month, user_id=who)
        today_lines = await store.usage_since(day, user_id=who)
    except Exception as exc:
        log.warning("could not read the usage ledger for /usage",
                    extra={"user_id": user_id, "error": type(exc).__name__})
        return USAGE_FAILED
    return usage_view(
        user_id, Period("Today", day, today_lines), Period("This month", month, month_lines),
        now=now, tz=tz, limit=budget_of(settings, user_id), fleet=fleet)
