"""The `fleetgram` command as a user runs it: configuration errors stop it with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import API_KEY, MASTER_TOKEN, worker_token


def run_cli(tmp_path: Path, env_file: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / ".env").write_text(env_file)
    clean = {k: v for k, v in os.environ.items()
             if k not in {"MASTER_BOT_TOKEN", "WORKER_TOKEN_POOL", "ALLOWED_USER_IDS",
                          "ANTHROPIC_API_KEY"}}
    return subprocess.run(
        [sys.executable, "-m", "fleetgram.cli", *args], cwd=tmp_path, env=clean,
        capture_output=True, text=True, timeout=60,
    )


GOOD = (f"MASTER_BOT_TOKEN={MASTER_TOKEN}\nWORKER_TOKEN_POOL={worker_token(1)}\n"
        f"ANTHROPIC_API_KEY={API_KEY}\n")


def test_up_refuses_to_start_without_an_allowlist(tmp_path: Path) -> None:
    result = run_cli(tmp_path, GOOD, "up")
    assert result.returncode == 2
    assert "ALLOWED_USER_IDS" in result.stderr and "serves nobody" in result.stderr
    assert not (tmp_path / "fleetgram.sqlite3").exists()  # nothing was started


@pytest.mark.parametrize(
    ("line", "setting"),
    [
        ("MIN_WORKERS=6\n", "MIN_WORKERS"),
        ("SCALE_DOWN_DELAY=soon\n", "SCALE_DOWN_DELAY"),
        ("DATABASE_URL=mysql://x\n", "DATABASE_URL"),
        ("ALLOWED_USER_IDS=ada\n", "ALLOWED_USER_IDS"),
    ],
)
def test_a_bad_setting_is_named_in_the_error(tmp_path: Path, line: str, setting: str) -> None:
    env = GOOD + ("ALLOWED_USER_IDS=1\n" if "ALLOWED" not in line else "") + line
    result = run_cli(tmp_path, env, "check")
    assert result.returncode == 2
    assert f"configuration error: {setting}" in result.stderr


def test_check_accepts_a_good_configuration_and_never_prints_secrets(tmp_path: Path) -> None:
    result = run_cli(tmp_path, GOOD + "ALLOWED_USER_IDS=1\n", "check")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert MASTER_TOKEN not in result.stdout + result.stderr
