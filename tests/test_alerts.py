"""The chart's PrometheusRule: rendered only when enabled, shaped as the Prometheus Operator
wants, each alert tested with promtool on input series, and all four firing in a real
Prometheus that scrapes a running fleet."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetgram import housekeeping, metrics
from fleetgram.domain import TaskState
from tests.e2e.harness import (
    World,
    emulated_world,
    wait_task,
    wait_until,
    worker_token,
)
from tests.test_chart import NS, RELEASE, VALUES, objects, render
from tests.tools import requiring

DASHBOARD = Path(__file__).parents[1] / "charts/fleetgram/dashboards/fleetgram.json"
ALERTS = ["FleetgramBacklogStale", "FleetgramWorkersInError", "FleetgramTaskFailureRatio",
          "FleetgramClaudeCostPerHour"]
JOB = f"{RELEASE}-fleetgram-master-metrics"  # the ServiceMonitor's job: the Service's name

needs_promtool = requiring("promtool")
needs_prometheus = requiring("prometheus")


def rule(**values: Any) -> dict[str, Any]:
    rendered = objects(render({**VALUES, "prometheusRule": {"enabled": True, **values}}))
    [found] = [o for o in rendered if o["kind"] == "PrometheusRule"]
    return found


def rule_file(tmp_path: Path, **values: Any) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule(**values)["spec"]["groups"]}))
    return path


def test_the_rule_is_rendered_only_when_enabled() -> None:
    assert not [o for o in objects(render()) if o["kind"] == "PrometheusRule"]
    assert rule()["metadata"]["name"] == f"{RELEASE}-fleetgram"


def test_the_rule_is_a_prometheus_operator_rule_with_the_four_alerts() -> None:
    found = rule(labels={"release": "prometheus"})
    assert found["apiVersion"] == "monitoring.coreos.com/v1"
    assert found["metadata"]["labels"]["release"] == "prometheus"
    [group] = found["spec"]["groups"]
    assert [r["alert"] for r in group["rules"]] == ALERTS
    for r in group["rules"]:
        assert set(r) == {"alert", "expr", "for", "labels", "annotations"}
        assert r["labels"]["severity"] in ("critical", "warning")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
        assert f'namespace="{NS}"' in r["expr"] and f'job=~"{RELEASE}-fleetgram-.*"' in r["expr"]


def test_the_thresholds_come_from_the_values() -> None:
    rules = {r["alert"]: r for r in rule(backlogMinutes=7, failureRatio=0.5, costPerHourUSD=3,
                                         **{"for": "2m"})["spec"]["groups"][0]["rules"]}
    assert rules["FleetgramBacklogStale"]["expr"].endswith("> 420")
    assert rules["FleetgramTaskFailureRatio"]["expr"].endswith("> 0.5")
    assert rules["FleetgramClaudeCostPerHour"]["expr"].endswith("> 3")
    assert {r["for"] for r in rules.values()} == {"2m"}


@needs_promtool
def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    result = subprocess.run(["promtool", "check", "rules", str(rule_file(tmp_path))],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def promtool_test(tmp_path: Path, series: list[dict[str, str]], alert: str,
                  firing: list[dict[str, Any]], at: str = "30m") -> None:
    rules = rule_file(tmp_path, backlogMinutes=10, failureRatio=0.2, costPerHourUSD=10,
                      **{"for": "5m"})
    groups = yaml.safe_load(rules.read_text())
    for r in groups["groups"][0]["rules"]:  # the expressions are under test, not the texts
        del r["annotations"]
    rules.write_text(yaml.safe_dump(groups))
    test = {"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": firing}],
    }]}
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump(test))
    result = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def s(name: str, values: str, **labels: str) -> dict[str, str]:
    labels = {"namespace": NS, "job": JOB, **labels}
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def fires(severity: str) -> list[dict[str, Any]]:
    return [{"exp_labels": {"severity": severity}}]


@needs_promtool
def test_backlog_alert_fires_when_the_oldest_task_waits_past_backlog_minutes(
        tmp_path: Path) -> None:
    # 0 s, then a task waiting from minute 1 on: past 10 min at minute 11, firing 5 min later.
    series = [s("fleetgram_oldest_pending_task_age_seconds", "0 60+60x40")]
    promtool_test(tmp_path, series, "FleetgramBacklogStale", [], at="14m")
    promtool_test(tmp_path, series, "FleetgramBacklogStale", fires("critical"), at="17m")
    other = [s("fleetgram_oldest_pending_task_age_seconds", "0 60+60x40", namespace="other")]
    promtool_test(tmp_path, other, "FleetgramBacklogStale", [], at="30m")


@needs_promtool
def test_workers_in_error_alert_fires_when_a_worker_stays_in_error(tmp_path: Path) -> None:
    promtool_test(tmp_path, [s("fleetgram_workers", "0x40", state="error")],
                  "FleetgramWorkersInError", [])
    promtool_test(tmp_path, [s("fleetgram_workers", "0x10 1x30", state="error")],
                  "FleetgramWorkersInError", fires("warning"))


@needs_promtool
def test_failure_ratio_alert_fires_above_the_ratio_over_15_minutes(tmp_path: Path) -> None:
    # 10 tasks a minute: 1 failing (10%) stays quiet; 3 failing (30%) fires.
    quiet = [s("fleetgram_tasks_total", "0+9x40", state="completed"),
             s("fleetgram_tasks_total", "0+1x40", state="failed")]
    promtool_test(tmp_path, quiet, "FleetgramTaskFailureRatio", [])
    loud = [s("fleetgram_tasks_total", "0+7x40", state="completed"),
            s("fleetgram_tasks_total", "0+3x40", state="failed")]
    promtool_test(tmp_path, loud, "FleetgramTaskFailureRatio", fires("critical"))


@needs_promtool
def test_cost_alert_fires_above_the_hourly_spend(tmp_path: Path) -> None:
    # 0.10 USD a minute is 6 USD/h (quiet); 0.25 USD a minute is 15 USD/h (fires above 10).
    promtool_test(tmp_path, [s("fleetgram_claude_cost_usd_total", "0+0.1x40")],
                  "FleetgramClaudeCostPerHour", [])
    promtool_test(tmp_path, [s("fleetgram_claude_cost_usd_total", "0+0.25x40")],
                  "FleetgramClaudeCostPerHour", fires("warning"))


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_the_dashboard_has_namespace_and_job_variables_and_every_query_filters_by_them(
) -> None:
    import re

    variables = {v["name"]: v for v in json.loads(DASHBOARD.read_text())["templating"]["list"]}
    assert {"namespace", "job"} <= set(variables)
    assert "$namespace" in variables["job"]["definition"]  # jobs of the chosen namespaces
    for expr in dashboard_queries():
        for selector in re.finditer(r"\bfleetgram_[a-z_]+(\{[^}]*\})?", expr):
            assert 'namespace=~"$namespace",job=~"$job"' in (selector.group(1) or ""), expr


# ------------------------------------------------------------------ a real scrape

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with emulated_world(f"sqlite:///{tmp_path / 'fleet.sqlite3'}") as world:
        yield world


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())["data"]


@pytest.mark.e2e
@needs_prometheus
async def test_every_alert_fires_in_a_real_prometheus_scraping_a_fleet(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(housekeeping, "BACKLOG_EVERY_SECONDS", 0.2)
    metrics_port, prom_port = free_port(), free_port()
    metrics.serve(metrics_port)
    # Thresholds low enough for a test: a task pending 1.2 s, any failure, any spend.
    rules = rule_file(tmp_path, backlogMinutes=0.02, failureRatio=0.01, costPerHourUSD=0.0001,
                      **{"for": "0s"})
    prometheus = await start_prometheus(tmp_path, metrics_port, prom_port, rules)
    try:
        await wait_until(lambda: _up(prom_port), 20, "Prometheus to scrape the fleet")
        # worker1's token is refused (error); worker2 works.
        pool = ",".join(["3999:refused-token-abcdef", worker_token(2)])
        await world.open_chats(world.ada, 2)
        async with world.fleet(2, WORKER_TOKEN_POOL=pool, MIN_WORKERS="2", MAX_WORKERS="2",
                               CLAUDE_MAX_RETRIES="0") as fleet:
            world.claude.inject(529)
            failed = await world.prompt("this one fails")
            await wait_task(fleet, failed, TaskState.FAILED, timeout=20)
            done = await world.prompt("this one is billed")
            await wait_task(fleet, done, TaskState.COMPLETED, timeout=20)
            world.claude.tokens_per_second = 2.0  # worker2 busy for a while...
            await world.prompt("a long one")
            await world.prompt("and one that waits")  # ...so this one waits
            await wait_until(lambda: _firing(prom_port) >= set(ALERTS), 30,
                             "every alert to fire")
            firing = _firing(prom_port)
            world.claude.tokens_per_second = 400.0
    finally:
        prometheus.terminate()
        await asyncio.wait_for(prometheus.wait(), 10)
    assert firing >= set(ALERTS)


@pytest.mark.e2e
@needs_prometheus
async def test_the_dashboards_queries_answer_only_for_the_chosen_namespace_and_job(
        world: World, tmp_path: Path) -> None:
    metrics_port, prom_port = free_port(), free_port()
    metrics.serve(metrics_port)
    prometheus = await start_prometheus(tmp_path, metrics_port, prom_port, rules=None)
    try:
        await wait_until(lambda: _up(prom_port), 20, "Prometheus to scrape the fleet")
        await world.open_chats(world.ada, 1)
        async with world.fleet(1, MIN_WORKERS="1", MAX_WORKERS="1") as fleet:
            task = await world.prompt("count me")
            await wait_task(fleet, task, TaskState.COMPLETED, timeout=20)
            await asyncio.sleep(3)  # a few scrapes after the task
            mine = [_query(prom_port, e, NS, JOB) for e in dashboard_queries()]
            other = [_query(prom_port, e, "other-namespace", ".*") for e in dashboard_queries()]
    finally:
        prometheus.terminate()
        await asyncio.wait_for(prometheus.wait(), 10)
    assert all(mine), [e for e, r in zip(dashboard_queries(), mine, strict=True) if not r]
    assert not any(other)


def _query(port: int, expr: str, namespace: str, job: str) -> list[Any]:
    import urllib.parse

    expr = expr.replace("$namespace", namespace).replace("$job", job)
    return api(port, "/api/v1/query?query=" + urllib.parse.quote(expr))["result"]


async def start_prometheus(tmp_path: Path, metrics_port: int, prom_port: int,
                           rules: Path | None) -> asyncio.subprocess.Process:
    """A real Prometheus scraping the fleet's /metrics each second, with the labels the
    ServiceMonitor gives it (job: the Service's name; namespace: the release's)."""
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)] if rules is not None else [],
        "scrape_configs": [{
            "job_name": JOB,
            "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"],
                                "labels": {"namespace": NS}}],
        }],
    }))
    return await asyncio.create_subprocess_exec(
        "prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))


def _up(port: int) -> bool:
    try:
        return any(r["value"][1] == "1" for r in api(port, "/api/v1/query?query=up")["result"])
    except OSError:
        return False


def _firing(port: int) -> set[str]:
    alerts = api(port, "/api/v1/alerts")["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
