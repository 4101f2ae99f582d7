"""The `fleetgram` command as a user runs it: configuration errors stop it with one clear line
each; `fleetgram check` says what is wrong, all of it at once, and never prints a secret."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.harness import API_KEY, MASTER_TOKEN, World, fleet_env, worker_token

SECRET_ENV = {"MASTER_BOT_TOKEN", "WORKER_TOKEN_POOL", "ALLOWED_USER_IDS", "ANTHROPIC_API_KEY",
              "ANTHROPIC_BASE_URL", "TELEGRAM_API_URL", "DATABASE_URL", "MIN_WORKERS",
              "MAX_WORKERS"}


def run_cli(tmp_path: Path, env_file: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / ".env").write_text(env_file)
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
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


def closed_port() -> int:
    """A local TCP port nothing listens on (connections to it are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_check_reports_every_configuration_error_at_once_one_line_each(tmp_path: Path) -> None:
    env = (f"MASTER_BOT_TOKEN={MASTER_TOKEN}\nWORKER_TOKEN_POOL={worker_token(1)}\n"
           "ALLOWED_USER_IDS=1\nSCALE_DOWN_DELAY=soon\nMAX_WORKERS=zero\nLOG_LEVEL=loud\n")
    result = run_cli(tmp_path, env, "check")
    assert result.returncode == 2
    lines = error_lines(result)
    named = [line.removeprefix("fleetgram: configuration error: ").split(":")[0]
             for line in lines]
    assert sorted(named) == sorted(
        ["ANTHROPIC_API_KEY", "SCALE_DOWN_DELAY", "MAX_WORKERS", "LOG_LEVEL"]
    ), lines
    assert all(line.startswith("fleetgram: configuration error: ") for line in lines)


def test_check_refuses_more_min_workers_than_worker_tokens(tmp_path: Path) -> None:
    result = run_cli(tmp_path, GOOD + "ALLOWED_USER_IDS=1\nMIN_WORKERS=3\n", "check")
    assert result.returncode == 2
    assert error_lines(result) == [
        "fleetgram: configuration error: MIN_WORKERS: (3) exceeds the number of worker tokens "
        "in WORKER_TOKEN_POOL (1)"
    ]


def test_check_reports_an_unreachable_database_by_name_without_its_password(
    tmp_path: Path,
) -> None:
    url = f"postgresql://fleet:pw-s3cret@127.0.0.1:{closed_port()}/fleet"
    result = run_cli(tmp_path, GOOD + f"ALLOWED_USER_IDS=1\nDATABASE_URL={url}\n", "check")
    assert result.returncode == 1
    assert "configuration OK" in result.stdout
    problems = [line for line in error_lines(result) if line.startswith("problem:")]
    assert len(problems) == 1, result.stderr
    assert problems[0].startswith("problem: DATABASE_URL: cannot connect to postgresql://fleet:")
    assert "refused" in problems[0].lower()
    assert "pw-s3cret" not in result.stdout + result.stderr
    assert "1 problem" in result.stderr


def test_check_opens_a_reachable_database_and_says_all_is_well(tmp_path: Path) -> None:
    result = run_cli(tmp_path, GOOD + "ALLOWED_USER_IDS=1\n", "check")
    assert result.returncode == 0, result.stderr
    assert "ok: database: reachable (sqlite:///fleetgram.sqlite3)" in result.stdout
    assert "fleetgram check: all good" in result.stdout


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_missing_env_file_is_named_before_or_after_the_subcommand(
    tmp_path: Path, where: str
) -> None:
    args = ["--env-file", "/nope/.env", "check"] if where == "before" \
        else ["check", "--env-file", "/nope/.env"]
    result = run_cli(tmp_path, GOOD + "ALLOWED_USER_IDS=1\n", *args)
    assert result.returncode == 2
    assert error_lines(result) == ["fleetgram: configuration error: --env-file /nope/.env: "
                                   "no such file"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_env_file_is_read_before_or_after_the_subcommand(tmp_path: Path, where: str) -> None:
    other = tmp_path / "other.env"
    other.write_text(GOOD + "ALLOWED_USER_IDS=1\n")
    args = ["--env-file", str(other), "check"] if where == "before" \
        else ["check", "--env-file", str(other)]
    result = run_cli(tmp_path, "", *args)  # the default .env is empty: other.env is read
    assert result.returncode == 0, result.stderr
    assert "configuration OK: 1 worker tokens" in result.stdout


def test_without_env_file_an_absent_default_env_is_fine(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    env.update(MASTER_BOT_TOKEN=MASTER_TOKEN, WORKER_TOKEN_POOL=worker_token(1),
               ALLOWED_USER_IDS="1", ANTHROPIC_API_KEY=API_KEY)
    result = subprocess.run([sys.executable, "-m", "fleetgram.cli", "check"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert not (tmp_path / ".env").exists()
    assert result.returncode == 0, result.stderr


# --- check --online, against the emulated Telegram and Claude ---------------------------------


async def check_online(world: World, tmp_path: Path, **overrides: str) -> tuple[int, str, str]:
    env = fleet_env(world.telegram, world.claude, world.database_url, 3, **overrides)
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fleetgram.cli", "check", "--online", cwd=tmp_path, env=clean,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.e2e
async def test_check_online_calls_get_me_for_every_token_and_claude_once(
    world: World, tmp_path: Path
) -> None:
    before = len(world.claude.requests)
    code, out, err = await check_online(world, tmp_path)
    assert code == 0, err
    for who, bot in [("master", "fleet_master_bot"), ("worker1", "fleet_worker1_bot"),
                     ("worker2", "fleet_worker2_bot"), ("worker3", "fleet_worker3_bot")]:
        assert f"ok: {who}: Telegram knows this token as @{bot}" in out
    assert "ok: claude: claude-sonnet-5-5 answers at " in out
    assert "fleetgram check: all good (configuration, database, Telegram tokens and Claude" in out
    assert len(world.claude.requests) == before + 1
    assert world.claude.requests[-1]["max_tokens"] == 1
    assert MASTER_TOKEN not in out + err and API_KEY not in out + err


@pytest.mark.e2e
async def test_check_online_names_the_slot_of_a_token_telegram_refuses(
    world: World, tmp_path: Path
) -> None:
    unknown = "2999:typo-worker-token-zzz"
    pool = ",".join([worker_token(1), unknown, worker_token(3)])
    code, out, err = await check_online(world, tmp_path, WORKER_TOKEN_POOL=pool)
    assert code == 1
    problems = [line for line in err.splitlines() if line.startswith("problem:")]
    assert problems == ["problem: WORKER_TOKEN_POOL (entry 2): worker2: Telegram refused the "
                        "token (401 Unauthorized)"]
    assert "ok: worker1:" in out and "ok: worker3:" in out and "ok: master:" in out
    assert "fleetgram check: 1 problem" in err
    assert "typo-worker-token" not in out + err


@pytest.mark.e2e
async def test_check_online_reports_a_refused_claude_key(world: World, tmp_path: Path) -> None:
    code, out, err = await check_online(world, tmp_path, ANTHROPIC_API_KEY="sk-ant-wrong-key-999")
    assert code == 1
    assert "problem: ANTHROPIC_API_KEY: the Claude API refused it" in err
    assert "sk-ant-wrong-key-999" not in out + err


@pytest.mark.e2e
async def test_check_online_calls_claude_with_a_subscription_token_in_agent_mode(
    world: World, tmp_path: Path
) -> None:
    token = "sk-ant-oat01-check-token"
    world.claude.api_key = token
    code, out, err = await check_online(world, tmp_path, ANTHROPIC_API_KEY="",
                                        WORKER_ENGINE="agent", CLAUDE_CODE_OAUTH_TOKEN=token)
    assert code == 0, err
    assert "ok: claude:" in out and token not in out + err


@pytest.mark.e2e
async def test_check_online_names_a_refused_subscription_token(
    world: World, tmp_path: Path
) -> None:
    code, out, err = await check_online(world, tmp_path, ANTHROPIC_API_KEY="",
                                        WORKER_ENGINE="agent",
                                        CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-wrong")
    assert code == 1
    assert "problem: CLAUDE_CODE_OAUTH_TOKEN: the Claude API refused it" in err
    assert "sk-ant-oat01-wrong" not in out + err
