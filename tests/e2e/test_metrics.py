"""Prometheus metrics: what the Grafana dashboard plots exists and moves with real work."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from fleetgram import metrics
from fleetgram.domain import TaskState
from tests.e2e.harness import World, wait_task, wait_until

DASHBOARD = Path(__file__).parents[2] / "charts/fleetgram/dashboards/fleetgram.json"


def _exposed_names() -> set[str]:
    text = metrics.generate_latest().decode()
    return {m.group(1) for m in re.finditer(r"^([a-z_]+)(?:\{|\s)", text, re.M)}


def test_every_metric_on_the_grafana_dashboard_is_exported() -> None:
    wanted = set(re.findall(r"fleetgram_[a-z_]+", json.dumps(json.loads(DASHBOARD.read_text()))))
    missing = {name for name in wanted if name not in _exposed_names()}
    assert not missing, f"the dashboard plots metrics nobody exports: {sorted(missing)}"


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.e2e
async def test_a_completed_task_shows_in_the_served_metrics(world: World) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics.serve(port)
    before = _scrape(port)
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        task_id = await world.prompt("count me")
        await wait_task(fleet, task_id, TaskState.COMPLETED)
        await world.ada.wait_for_text("fleet_worker1_bot", "✅")
        # The run's duration is observed as it ends, a moment after its final message shows.
        duration = "fleetgram_task_duration_seconds_count"
        await wait_until(lambda: _value(_scrape(port), duration) > _value(before, duration),
                         message="the task's duration to be observed")
        after = _scrape(port)
    done = 'fleetgram_tasks_total{state="completed"}'
    assert _value(after, done) == _value(before, done) + 1
    out = 'fleetgram_claude_tokens_total{kind="output"}'
    assert _value(after, out) > _value(before, out)
    assert _value(after, "fleetgram_task_duration_seconds_count") > _value(
        before, "fleetgram_task_duration_seconds_count")
    assert 'fleetgram_workers{state="idle"}' in after
