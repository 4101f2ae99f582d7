"""The budget settings: each mistake is reported with the setting's name, all at once."""

from __future__ import annotations

import pytest

from fleetgram.config import ConfigErrors, Settings, load_settings

VALID = {
    "MASTER_BOT_TOKEN": "100000001:master-secret-AAAAAAAA",
    "WORKER_TOKEN_POOL": "200000001:worker-one-BBBBBBBB",
    "ALLOWED_USER_IDS": "111,222",
    "ANTHROPIC_API_KEY": "sk-ant-test-key",
}


def load(**overrides: str) -> Settings:
    return load_settings({**VALID, **overrides}, dotenv=None)


def errors(**overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigErrors) as caught:
        load(**overrides)
    return {e.setting: e.problem for e in caught.value.errors}


def test_without_budget_settings_nobody_has_a_budget_and_days_are_utc() -> None:
    settings = load()
    assert settings.user_daily_budget_usd is None
    assert settings.user_budgets_usd == {}
    assert settings.admin_user_ids == frozenset()
    assert settings.budget_timezone == "UTC"


def test_budget_settings_are_read() -> None:
    settings = load(USER_DAILY_BUDGET_USD="5", USER_BUDGETS_USD="111:0.5,222:none",
                    ADMIN_USER_IDS="111", BUDGET_TIMEZONE="Europe/Berlin")
    assert settings.user_daily_budget_usd == 5.0
    assert settings.user_budgets_usd == {111: 0.5, 222: None}
    assert settings.admin_user_ids == frozenset({111})
    assert settings.budget_timezone == "Europe/Berlin"


def test_every_budget_mistake_is_named_at_once() -> None:
    found = errors(USER_DAILY_BUDGET_USD="lots", USER_BUDGETS_USD="111:x",
                   ADMIN_USER_IDS="abc", BUDGET_TIMEZONE="Mars/Olympus")
    assert set(found) == {"USER_DAILY_BUDGET_USD", "USER_BUDGETS_USD", "ADMIN_USER_IDS",
                          "BUDGET_TIMEZONE"}
    assert "such as 5 or 0.50" in found["USER_DAILY_BUDGET_USD"]
    assert "'x' is not an amount" in found["USER_BUDGETS_USD"]
    assert "'abc' is not a numeric user id" in found["ADMIN_USER_IDS"]
    assert "not a known time zone" in found["BUDGET_TIMEZONE"]


def test_a_negative_daily_budget_is_refused() -> None:
    assert "at least 0" in errors(USER_DAILY_BUDGET_USD="-1")["USER_DAILY_BUDGET_USD"]


def test_an_admin_must_be_an_allowed_user() -> None:
    problem = errors(ADMIN_USER_IDS="111,999")["ADMIN_USER_IDS"]
    assert "999" in problem and "ALLOWED_USER_IDS" in problem and "111" not in problem


def test_a_budget_for_a_user_who_is_not_allowed_is_refused() -> None:
    problem = errors(USER_BUDGETS_USD="999:1")["USER_BUDGETS_USD"]
    assert "999" in problem and "ALLOWED_USER_IDS" in problem
