"""Prometheus metrics (names match the Grafana dashboard and the PrometheusRule in charts/)."""

from __future__ import annotations

import platform
import re
from importlib import metadata

from prometheus_client import Counter, Gauge, Histogram, generate_latest, start_http_server

from fleetgram.domain import WorkerState

__all__ = ["claude_request", "generate_latest", "observe_fleet", "serve", "telegram_error"]

TASKS = Counter("fleetgram_tasks_total", "Tasks reaching a state", ["state"])
QUEUE_PENDING = Gauge("fleetgram_queue_pending", "Pending tasks")
WORKERS = Gauge("fleetgram_workers", "Worker slots by state", ["state"])
TASK_DURATION = Histogram(
    "fleetgram_task_duration_seconds", "Wall time of a task on a worker",
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
CLAUDE_TOKENS = Counter("fleetgram_claude_tokens_total", "Claude tokens", ["kind"])
CLAUDE_COST = Counter("fleetgram_claude_cost_usd_total", "Claude cost in USD")
SCALE_EVENTS = Counter("fleetgram_scale_events_total", "Scaling decisions applied", ["action"])
OLDEST_PENDING = Gauge("fleetgram_oldest_pending_task_age_seconds",
                       "Age of the oldest pending task (0: none pending)")
CLAUDE_REQUESTS = Counter(
    "fleetgram_claude_requests_total",
    "Claude API calls (chat engine: each request; agent engine: each Claude Code result) by "
    "outcome (ok, error, timeout, cancelled) and HTTP status (none: no answer)",
    ["outcome", "status"],
)
CLAUDE_SECONDS = Histogram(
    "fleetgram_claude_request_seconds", "Wall time of a Claude API call (retries included)",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
)
TELEGRAM_ERRORS = Counter(
    "fleetgram_telegram_errors_total",
    "Failed Telegram Bot API calls by method and HTTP code (network, timeout: no answer); "
    "429s are counted in fleetgram_telegram_rate_limited_total instead",
    ["method", "code"],
)
TELEGRAM_RATE_LIMITED = Counter(
    "fleetgram_telegram_rate_limited_total", "Telegram Bot API calls refused with 429",
    ["method"],
)
BUILD_INFO = Gauge("fleetgram_build_info", "Always 1: the running version",
                   ["version", "python"])

# Known label values start at zero, so dashboards show flat lines rather than "no data".
for _state in ("completed", "failed", "cancelled"):
    TASKS.labels(_state)
for _kind in ("input", "output", "cache_read", "cache_write"):
    CLAUDE_TOKENS.labels(_kind)
for _action in ("start", "stop"):
    SCALE_EVENTS.labels(_action)
for _worker_state in WorkerState:
    WORKERS.labels(_worker_state.value)
CLAUDE_REQUESTS.labels("ok", "200")
CLAUDE_REQUESTS.labels("error", "none")


def _version() -> str:
    try:
        return metadata.version("fleetgram")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version()).set(1)

_METHOD = re.compile(r"[A-Za-z]{1,64}")


def claude_request(outcome: str, status: int | str | None, seconds: float) -> None:
    """One Claude call ended: `outcome` ok | error | timeout | cancelled, `status` the HTTP
    status (None: the API never answered)."""
    CLAUDE_REQUESTS.labels(outcome, str(status) if status else "none").inc()
    CLAUDE_SECONDS.observe(max(0.0, seconds))


def telegram_method(url: str) -> str:
    """The Bot API method of a request URL (bounded: file downloads are `file`, anything
    unexpected `other`)."""
    if "/file/bot" in url:
        return "file"
    method = url.rstrip("/").rsplit("/", 1)[-1]
    return method if _METHOD.fullmatch(method) else "other"


def telegram_error(method: str, code: int | str) -> None:
    """A Telegram call failed with HTTP `code` (or network, timeout); 429s count apart."""
    if str(code) == "429":
        TELEGRAM_RATE_LIMITED.labels(method).inc()
    else:
        TELEGRAM_ERRORS.labels(method, str(code)).inc()


def observe_fleet(states: dict[str, WorkerState], pending: int) -> None:
    QUEUE_PENDING.set(pending)
    for state in WorkerState:
        WORKERS.labels(state.value).set(sum(1 for s in states.values() if s == state))


def serve(port: int) -> None:
    if port:
        start_http_server(port)
