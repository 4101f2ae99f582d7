"""The benchmark suite (benchmarks/run.py) runs in its small configuration and reports every
figure it measured as a finite number, in the table it prints and in its JSON. Speed is not
asserted here: the suite prints figures beside their goals instead."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
# Figures the quick run does not measure, and what it says instead.
NOT_IN_QUICK = {"operator API requests per idle minute": "skipped in --quick"}


def test_the_quick_benchmark_reports_every_figure_as_a_finite_number(tmp_path: Path) -> None:
    report_path = tmp_path / "results" / "latest.json"
    # From an empty folder, with the package's dependencies only (no pytest in the suite).
    run = subprocess.run(
        [sys.executable, "-P", str(SUITE), "--quick", "--json", str(report_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=170, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]

    report = json.loads(report_path.read_text())
    assert {"cores", "python", "platform"} <= report["machine"].keys()
    assert report["quick"] is True
    figures = report["figures"]
    names = [f["name"] for f in figures]
    assert any(n.startswith("single bot") for n in names)
    assert sum(n.startswith("fleet, ") for n in names) == len(report["plan"]["fleets"])
    for figure in figures:
        assert {"name", "value", "unit", "goal", "met", "note"} <= figure.keys()
        assert figure["name"] in run.stdout  # the printed table has a row for it
        if figure["name"] in NOT_IN_QUICK:
            assert figure["value"] is None and figure["note"] == NOT_IN_QUICK[figure["name"]]
            continue
        assert isinstance(figure["value"], int | float), figure
        assert math.isfinite(figure["value"]), figure
        assert figure["met"] in (True, False, None)


def test_the_suite_loads_without_pytest_or_the_tests_package(tmp_path: Path) -> None:
    """A user runs it from the package's own dependencies: pytest, kmock and tests.* may be
    missing (the operator figure alone needs them, and says so when they are)."""
    code = ("import runpy, sys\n"
            "for name in ('pytest', 'kmock', 'tests'):\n"
            "    sys.modules[name] = None  # importing it now raises ImportError\n"
            f"sys.argv = [{str(SUITE)!r}, '--help']\n"
            f"runpy.run_path({str(SUITE)!r}, run_name='__main__')\n")
    run = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "--postgres" in run.stdout
