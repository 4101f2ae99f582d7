"""Prometheus metrics (names match the Grafana dashboard in charts/)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, generate_latest, start_http_server

from fleetgram.domain import WorkerState

__all__ = ["generate_latest", "observe_fleet", "serve"]

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

# Known label values start at zero, so dashboards show flat lines rather than "no data".
for _state in ("completed", "failed", "cancelled"):
    TASKS.labels(_state)
for _kind in ("input", "output", "cache_read", "cache_write"):
    CLAUDE_TOKENS.labels(_kind)
for _action in ("start", "stop"):
    SCALE_EVENTS.labels(_action)
for _worker_state in WorkerState:
    WORKERS.labels(_worker_state.value)


def observe_fleet(states: dict[str, WorkerState], pending: int) -> None:
    QUEUE_PENDING.set(pending)
    for state in WorkerState:
        WORKERS.labels(state.value).set(sum(1 for s in states.values() if s == state))


def serve(port: int) -> None:
    if port:
        start_http_server(port)
