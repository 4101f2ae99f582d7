"""The agent engine's decisions as plain data: what the CLI is given, what it may not read,
how its result is billed and read (limit, failure), and the launcher's filtered environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from claude_agent_sdk import ResultMessage

from fleetgram.config import Settings
from fleetgram.engines.agent import (
    cli_environment,
    failure_of,
    limit_of,
    permission_rules,
    usage_of,
)
from fleetgram.engines.base import Limit
from fleetgram.engines.launcher import REAL_CLI, kept_environment
from fleetgram.workspace import Workspace


def settings(tmp_path: Path, **changes: object) -> Settings:
    base = Settings(
        master_bot_token="1:m", worker_token_pool=("2:a", "3:b", "4:c"),
        allowed_user_ids=frozenset({1}), anthropic_api_key="sk-ant-key",
        workspace_root=tmp_path / "ws", database_url=f"sqlite:///{tmp_path / 'f.sqlite3'}")
    return base.__class__(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def result(subtype: str = "success", *, is_error: bool = False, **more: object) -> ResultMessage:
    return ResultMessage(subtype=subtype, duration_ms=1, duration_api_ms=1, is_error=is_error,
                         num_turns=1, session_id="s-1", **more)  # type: ignore[arg-type]


def test_the_cli_gets_its_home_in_the_workspace_and_the_key_but_no_bot_token(
        tmp_path: Path) -> None:
    s = settings(tmp_path)
    ws = Workspace(s.workspace_for("worker1"), None, slot="worker1")
    env = cli_environment(s, ws)
    assert env["HOME"] == str(ws.home)
    assert env["CLAUDE_CONFIG_DIR"] == str(ws.home / ".claude")
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-key"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert not any("2:a" in value or "1:m" in value for value in env.values())


def test_a_subscription_token_reaches_the_cli_when_set(tmp_path: Path) -> None:
    s = settings(tmp_path, anthropic_api_key="", claude_code_oauth_token="sk-ant-oat01-x")
    env = cli_environment(s, Workspace(tmp_path / "w", None, slot="worker1"))
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == "sk-ant-oat01-x"
    assert env["ANTHROPIC_API_KEY"] == ""  # blanks an inherited key; the launcher drops it


def test_the_rules_deny_other_workers_workspaces_secrets_and_the_database(
        tmp_path: Path) -> None:
    deny = permission_rules(settings(tmp_path), "worker1")["permissions"]["deny"]
    root = (tmp_path / "ws").resolve()
    assert f"Read(/{root}/worker2/**)" in deny and f"Edit(/{root}/worker3/**)" in deny
    assert not any("/worker1/" in rule for rule in deny)
    assert "Read(//var/run/secrets/**)" in deny
    assert f"Read(/{(tmp_path / 'f.sqlite3').resolve()})" in deny


def test_the_limits_are_read_from_the_result_subtype() -> None:
    assert limit_of(result("error_max_turns", is_error=True)) == Limit.TURNS
    assert limit_of(result("error_max_budget_usd", is_error=True)) == Limit.BUDGET
    assert limit_of(result()) is None


def test_a_limit_is_not_a_failure_but_an_api_error_is_named() -> None:
    assert failure_of(result("error_max_turns", is_error=True)) is None
    assert failure_of(result(is_error=True, api_error_status=529)) == (
        "Claude API error: overloaded (after retries)")
    assert "boom" in (failure_of(result("error_during_execution", is_error=True,
                                        errors=["boom"])) or "")
    assert failure_of(result()) is None


def test_claude_codes_own_cost_is_billed_when_it_gives_one() -> None:
    usage = usage_of({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                      "cache_creation_input_tokens": 1000}, 0.0421, "claude-sonnet-5-5")
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
            usage.cache_write_tokens, usage.cost_usd) == (10, 5, 100, 1000, 0.0421)


def test_without_a_cost_the_fleets_price_table_is_used() -> None:
    assert usage_of({"output_tokens": 1_000_000}, None, "claude-sonnet-5-5").cost_usd > 0


def test_the_launcher_keeps_only_what_the_cli_needs() -> None:
    kept = kept_environment({
        "PATH": "/bin", "HOME": "/h", "ANTHROPIC_API_KEY": "k", "CLAUDE_CODE_X": "1",
        "MASTER_BOT_TOKEN": "1:m", "WORKER_TOKEN_POOL": "2:a", "DATABASE_URL": "postgres://",
        "AWS_SECRET_ACCESS_KEY": "s", "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "ANTHROPIC_BASE_URL": ""})
    assert kept == {"PATH": "/bin", "HOME": "/h", "ANTHROPIC_API_KEY": "k", "CLAUDE_CODE_X": "1"}


def test_the_installed_launcher_execs_the_cli_with_the_filtered_environment() -> None:
    launcher = Path(sys.executable).parent / "fleetgram-agent-cli"
    out = subprocess.run(
        [str(launcher)], capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", REAL_CLI: "/usr/bin/env", "MASTER_BOT_TOKEN": "1:m",
             "CLAUDE_CONFIG_DIR": "/h/.claude"}).stdout
    assert "CLAUDE_CONFIG_DIR=/h/.claude" in out and "MASTER_BOT_TOKEN" not in out
