#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, starts PostgreSQL
# if it is down, then runs the linter and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
# -P and the console scripts below keep the repo root off sys.path: its operator/ folder
# must never shadow the standard library's `operator`.
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -P -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e '.[test,agent]'

# The tests use the real PostgreSQL of this machine (127.0.0.1:5432, trust auth).
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi

# System tools some tests run for real: bubblewrap and socat (AGENT_SANDBOX, Claude Code's
# sandbox for the agent's commands), and Prometheus with promtool (the alert rules and the
# dashboard's queries against a real scrape), and chromium with its driver (the demo page in a
# real headless browser).
missing=""
command -v bwrap >/dev/null 2>&1 || missing="$missing bubblewrap"
command -v socat >/dev/null 2>&1 || missing="$missing socat"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
if [ -n "$missing" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing$missing"
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 || {
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing >/dev/null; }
fi

.venv/bin/ruff check .
# Most tests wait on emulated networks and timers, not on the CPU (a serial run keeps a 2-core
# machine about a quarter busy), so they run in several processes. PYTEST_WORKERS=0: serial.
.venv/bin/pytest -n "${PYTEST_WORKERS:-4}" "$@"
