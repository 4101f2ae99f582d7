"""Settings from the environment: every error names the setting that is wrong."""

from __future__ import annotations

import pytest

from fleetgram.config import (
    DEFAULT_MODEL,
    ConfigError,
    ConfigErrors,
    EnvFileMissing,
    Mode,
    Settings,
    load_settings,
    read_env,
    safe_database_url,
)

MASTER = "100000001:master-secret-AAAAAAAA"
WORKER_1 = "200000001:worker-one-BBBBBBBB"
WORKER_2 = "200000002:worker-two-CCCCCCCC"

VALID = {
    "MASTER_BOT_TOKEN": MASTER,
    "WORKER_TOKEN_POOL": f"{WORKER_1},{WORKER_2}",
    "ALLOWED_USER_IDS": "42",
    "ANTHROPIC_API_KEY": "sk-ant-test-key",
}


def load(**overrides: str) -> Settings:
    """Load from VALID with some settings changed; a value of None removes the setting."""
    env = {**VALID, **overrides}
    return load_settings({k: v for k, v in env.items() if v is not None}, dotenv=None)


def refused(**overrides) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(**overrides)
    return caught.value


# --- required settings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting", ["MASTER_BOT_TOKEN", "WORKER_TOKEN_POOL", "ALLOWED_USER_IDS", "ANTHROPIC_API_KEY"]
)
def test_a_missing_required_setting_is_an_error_naming_it(setting):
    error = refused(**{setting: None})
    assert error.setting == setting
    assert str(error).startswith(f"{setting}:")


@pytest.mark.parametrize(
    "setting", ["MASTER_BOT_TOKEN", "WORKER_TOKEN_POOL", "ALLOWED_USER_IDS", "ANTHROPIC_API_KEY"]
)
def test_a_blank_required_setting_counts_as_missing(setting):
    assert refused(**{setting: "   "}).setting == setting


def test_without_an_allowlist_fleetgram_refuses_to_start_rather_than_serve_everyone():
    error = refused(ALLOWED_USER_IDS=None)
    assert "nobody" in error.problem


def test_an_allowlist_of_only_separators_is_refused():
    assert refused(ALLOWED_USER_IDS=" , ,").setting == "ALLOWED_USER_IDS"


def test_a_non_numeric_user_id_is_refused():
    error = refused(ALLOWED_USER_IDS="42,@alice")
    assert error.setting == "ALLOWED_USER_IDS" and "@alice" in error.problem


def test_the_allowlist_is_the_set_of_listed_ids():
    assert load(ALLOWED_USER_IDS=" 42, 7 ,42").allowed_user_ids == frozenset({7, 42})


def test_a_master_token_that_is_not_a_bot_token_is_refused():
    assert refused(MASTER_BOT_TOKEN="not-a-token").setting == "MASTER_BOT_TOKEN"


def test_a_worker_token_that_is_not_a_bot_token_is_refused_with_its_position():
    error = refused(WORKER_TOKEN_POOL=f"{WORKER_1},oops")
    assert error.setting == "WORKER_TOKEN_POOL" and "entry 2" in error.problem


def test_the_same_worker_token_twice_is_refused():
    assert refused(WORKER_TOKEN_POOL=f"{WORKER_1},{WORKER_1}").setting == "WORKER_TOKEN_POOL"


def test_the_master_token_in_the_worker_pool_is_refused():
    assert refused(WORKER_TOKEN_POOL=f"{WORKER_1},{MASTER}").setting == "WORKER_TOKEN_POOL"


def test_the_worker_pool_becomes_slots_worker1_to_workerN_in_order():
    settings = load(WORKER_TOKEN_POOL=f" {WORKER_1} , {WORKER_2} ,")
    assert settings.worker_token_pool == (WORKER_1, WORKER_2)
    assert settings.slot_names == ["worker1", "worker2"]
    assert settings.token_for("worker2") == WORKER_2


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting", ["MIN_WORKERS", "MAX_WORKERS", "SCALE_UP_THRESHOLD", "CLAUDE_MAX_TOKENS"]
)
def test_a_whole_number_setting_that_is_not_a_number_is_refused(setting):
    error = refused(**{setting: "five"})
    assert error.setting == setting and "'five'" in error.problem


@pytest.mark.parametrize("setting", ["SCALE_DOWN_DELAY", "WORKER_LEASE_SECONDS", "CLAUDE_TIMEOUT"])
def test_a_seconds_setting_that_is_not_a_number_is_refused(setting):
    assert refused(**{setting: "soon"}).setting == setting


def test_max_workers_below_one_is_refused():
    assert refused(MAX_WORKERS="0").setting == "MAX_WORKERS"


def test_negative_min_workers_is_refused():
    assert refused(MIN_WORKERS="-1").setting == "MIN_WORKERS"


def test_min_workers_above_max_workers_is_refused():
    error = refused(MIN_WORKERS="4", MAX_WORKERS="3")
    assert error.setting == "MIN_WORKERS" and "MAX_WORKERS" in error.problem


def test_max_workers_may_exceed_the_number_of_tokens():
    assert load(MAX_WORKERS="10").max_workers == 10


def test_a_heartbeat_not_shorter_than_the_lease_is_refused():
    error = refused(WORKER_LEASE_SECONDS="10", HEARTBEAT_INTERVAL="10")
    assert error.setting == "HEARTBEAT_INTERVAL"


# --- URLs and modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["mysql://db/fleet", "fleetgram.sqlite3", "http://db"])
def test_a_database_url_with_another_scheme_is_refused(url):
    assert refused(DATABASE_URL=url).setting == "DATABASE_URL"


@pytest.mark.parametrize(
    "url", ["sqlite:///tmp/f.sqlite3", "postgresql://u@db/fleet", "postgres://u@db/fleet"]
)
def test_sqlite_and_postgres_database_urls_are_accepted(url):
    assert load(DATABASE_URL=url).database_url == url


def test_a_telegram_api_url_that_is_not_http_is_refused():
    assert refused(TELEGRAM_API_URL="ftp://x").setting == "TELEGRAM_API_URL"


def test_an_unknown_mode_is_refused():
    assert refused(FLEETGRAM_MODE="cloud").setting == "FLEETGRAM_MODE"


def test_the_telegram_base_urls_are_built_from_the_api_url():
    settings = load(TELEGRAM_API_URL="http://127.0.0.1:8081/")
    assert settings.telegram_base_url == "http://127.0.0.1:8081/bot"
    assert settings.telegram_file_url == "http://127.0.0.1:8081/file/bot"


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_store_tasks_in_a_local_sqlite_file():
    assert load().database_url == "sqlite:///fleetgram.sqlite3"


def test_defaults_talk_to_the_real_telegram_api():
    assert load().telegram_api_url == "https://api.telegram.org"


def test_defaults_use_the_default_claude_model():
    assert DEFAULT_MODEL.startswith("claude-")
    assert load().claude_model == DEFAULT_MODEL


def test_defaults_scale_with_the_seeds_1_5_3_60():
    settings = load()
    assert (
        settings.min_workers,
        settings.max_workers,
        settings.scale_up_threshold,
        settings.scale_down_delay,
    ) == (1, 5, 3, 60.0)


def test_defaults_run_in_single_host_mode():
    assert load().mode == Mode.SINGLE


def test_blank_optional_settings_fall_back_to_their_defaults():
    settings = load(DATABASE_URL="", CLAUDE_MODEL=" ", MIN_WORKERS="", SCALE_DOWN_DELAY="")
    assert settings.database_url == "sqlite:///fleetgram.sqlite3"
    assert settings.claude_model == DEFAULT_MODEL
    assert (settings.min_workers, settings.scale_down_delay) == (1, 60.0)


def test_scaling_settings_are_read_from_the_environment():
    settings = load(
        MIN_WORKERS="2", MAX_WORKERS="4", SCALE_UP_THRESHOLD="6", SCALE_DOWN_DELAY="7.5"
    )
    assert (
        settings.min_workers,
        settings.max_workers,
        settings.scale_up_threshold,
        settings.scale_down_delay,
    ) == (2, 4, 6, 7.5)


# --- every error at once ----------------------------------------------------------------------


def test_every_error_is_reported_at_once_each_naming_its_setting():
    with pytest.raises(ConfigErrors) as caught:
        load(ANTHROPIC_API_KEY=None, MIN_WORKERS="many", SCALE_DOWN_DELAY="soon",
             DATABASE_URL="mysql://x", LOG_LEVEL="loud")
    assert caught.value.settings == [
        "ANTHROPIC_API_KEY", "MIN_WORKERS", "DATABASE_URL", "LOG_LEVEL", "SCALE_DOWN_DELAY"
    ]
    assert all(str(e).startswith(f"{e.setting}: ") for e in caught.value.errors)


def test_all_errors_are_still_a_config_error_naming_the_first():
    error = refused(ANTHROPIC_API_KEY=None, LOG_LEVEL="loud")
    assert isinstance(error, ConfigErrors)
    assert error.setting == "ANTHROPIC_API_KEY"
    assert str(error) == f"{error.errors[0]}; {error.errors[1]}"


def test_more_min_workers_than_worker_tokens_is_refused():
    error = refused(MIN_WORKERS="3")  # VALID has two worker tokens
    assert error.setting == "MIN_WORKERS" and "worker tokens" in error.problem


def test_min_workers_may_equal_the_number_of_worker_tokens():
    assert load(MIN_WORKERS="2").min_workers == 2


def test_min_workers_beyond_the_tokens_is_fine_where_workers_are_not_run_here():
    env = {**VALID, "MIN_WORKERS": "3"}
    settings = load_settings(env, dotenv=None, need_workers=False)
    assert settings.min_workers == 3


# --- the settings of the hardening (limits, retention, timeouts) ------------------------------


@pytest.mark.parametrize(
    ("setting", "attribute", "value", "expected"),
    [
        ("CLAUDE_STALL_TIMEOUT", "claude_stall_timeout", "45", 45.0),
        ("CLAUDE_CONTEXT_WINDOW", "claude_context_window", "100000", 100_000),
        ("COMPACT_AT", "compact_at", "0.7", 0.7),
        ("MAX_PENDING_PER_USER", "max_pending_per_user", "5", 5),
        ("PROMPTS_PER_MINUTE", "prompts_per_minute", "6", 6),
        ("RETENTION_DAYS", "retention_days", "7", 7.0),
        ("PASTE_MERGE_WINDOW", "paste_merge_window", "0", 0.0),
        ("STOPPED_WORKER_POLL", "stopped_worker_poll", "2.5", 2.5),
    ],
)
def test_the_hardening_settings_are_read(setting, attribute, value, expected):
    assert getattr(load(**{setting: value}), attribute) == expected


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("CLAUDE_STALL_TIMEOUT", "0"),
        ("CLAUDE_STALL_TIMEOUT", "never"),
        ("CLAUDE_CONTEXT_WINDOW", "10"),
        ("COMPACT_AT", "1.5"),
        ("COMPACT_AT", "0"),
        ("MAX_PENDING_PER_USER", "0"),
        ("PROMPTS_PER_MINUTE", "-1"),
        ("RETENTION_DAYS", "0"),
        ("PASTE_MERGE_WINDOW", "-1"),
        ("STOPPED_WORKER_POLL", "0"),
        ("ANTHROPIC_BASE_URL", "localhost:8080"),
    ],
)
def test_a_bad_hardening_setting_is_refused_by_name(setting, value):
    assert refused(**{setting: value}).setting == setting


def test_the_hardening_defaults():
    s = load()
    assert (s.claude_stall_timeout, s.claude_context_window, s.compact_at,
            s.max_pending_per_user, s.prompts_per_minute, s.retention_days,
            s.paste_merge_window, s.stopped_worker_poll) == (
        60.0, 200_000, 0.8, 20, 20, 30.0, 1.5, 5.0)


# --- the env file -----------------------------------------------------------------------------


def test_an_env_file_named_explicitly_must_exist(tmp_path):
    with pytest.raises(EnvFileMissing) as caught:
        read_env(tmp_path / "nope.env", required=True)
    assert str(caught.value) == f"--env-file {tmp_path / 'nope.env'}: no such file"


def test_the_default_env_file_may_be_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETGRAM_TEST_MARKER", "1")
    assert read_env(tmp_path / ".env")["FLEETGRAM_TEST_MARKER"] == "1"


def test_the_environment_wins_over_the_env_file(tmp_path, monkeypatch):
    env_file = tmp_path / "x.env"
    env_file.write_text("CLAUDE_MODEL=from-file\nFLEETGRAM_ONLY_IN_FILE=yes\n")
    monkeypatch.setenv("CLAUDE_MODEL", "from-env")
    env = read_env(env_file, required=True)
    assert env["CLAUDE_MODEL"] == "from-env" and env["FLEETGRAM_ONLY_IN_FILE"] == "yes"


def test_a_database_url_is_shown_without_its_password():
    assert safe_database_url("postgresql://fleet:s3cret@db:5432/fleet") == \
        "postgresql://fleet:***@db:5432/fleet"
    assert safe_database_url("sqlite:///fleet.db") == "sqlite:///fleet.db"


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_seconds_setting_that_is_not_a_finite_number_is_refused(value):
    assert refused(CLAUDE_STALL_TIMEOUT=value).setting == "CLAUDE_STALL_TIMEOUT"


def test_a_setting_in_days_says_so_when_refused():
    assert "number of days" in refused(RETENTION_DAYS="a month").problem
