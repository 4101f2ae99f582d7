"""Agent-mode settings: defaults, every mistake named at once, and the install checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fleetgram.config import ConfigErrors, EngineKind, PermissionMode
from tests.unit.test_config import load, refused


def test_the_chat_engine_is_the_default_and_agent_settings_have_safe_defaults() -> None:
    settings = load()
    assert settings.worker_engine == EngineKind.CHAT
    assert settings.permission_mode == PermissionMode.ASK
    assert settings.approval_timeout == 600.0
    assert settings.task_budget_usd is None and settings.task_max_turns is None
    assert settings.workspace_for("worker2") == Path("fleetgram-data/workspaces/worker2")


def test_workspace_root_defaults_under_the_data_directory() -> None:
    settings = load(WORKER_ENGINE="agent", DATA_DIR="/srv/fleet")
    assert settings.workspace_root == Path("/srv/fleet/workspaces")


def test_agent_mode_takes_a_claude_code_oauth_token_instead_of_an_api_key() -> None:
    settings = load(WORKER_ENGINE="agent", ANTHROPIC_API_KEY=None,
                    CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-abc")
    assert settings.anthropic_api_key == "" and settings.claude_code_oauth_token


def test_the_chat_engine_refuses_an_oauth_token_without_an_api_key() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(ANTHROPIC_API_KEY=None, CLAUDE_CODE_OAUTH_TOKEN="sk-ant-oat01-abc")
    assert {"ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"} <= set(caught.value.settings)


def test_every_agent_setting_mistake_is_reported_at_once_naming_each_setting() -> None:
    with pytest.raises(ConfigErrors) as caught:
        load(WORKER_ENGINE="robot", PERMISSION_MODE="yolo", TASK_BUDGET_USD="lots",
             TASK_MAX_TURNS="0", APPROVAL_TIMEOUT="0", AGENT_VERBOSE="3",
             WORKSPACE_REPO="/no/such/repo", AGENT_SANDBOX="maybe")
    assert set(caught.value.settings) >= {
        "WORKER_ENGINE", "PERMISSION_MODE", "TASK_BUDGET_USD", "TASK_MAX_TURNS",
        "APPROVAL_TIMEOUT", "AGENT_VERBOSE", "WORKSPACE_REPO", "AGENT_SANDBOX"}


def test_agent_mode_without_the_agent_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "claude_agent_sdk" else real(name, *a))
    error = refused(WORKER_ENGINE="agent")
    assert error.setting == "WORKER_ENGINE" and "fleetgram[agent]" in str(error)


def test_a_budget_and_a_turn_limit_are_read_as_numbers() -> None:
    settings = load(WORKER_ENGINE="agent", TASK_BUDGET_USD="2.50", TASK_MAX_TURNS="40",
                    PERMISSION_MODE="edits", AGENT_SANDBOX="1")
    assert settings.task_budget_usd == 2.5 and settings.task_max_turns == 40
    assert settings.permission_mode == PermissionMode.EDITS and settings.agent_sandbox


def test_the_master_needs_no_agent_extra_in_agent_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetgram.config import load_settings
    from tests.unit.test_config import VALID

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "claude_agent_sdk" else real(name, *a))
    settings = load_settings({**VALID, "WORKER_ENGINE": "agent"}, dotenv=None,
                             need_workers=False)
    assert settings.worker_engine == EngineKind.AGENT
