"""STREAM_DRAFTS: on by default, 0/1 accepted, anything else named in the start-up error."""

from __future__ import annotations

import pytest

from fleetgram.config import ConfigError, load_settings

BASE = {"MASTER_BOT_TOKEN": "123456:master-token-abc", "WORKER_TOKEN_POOL": "234567:worker-abc",
        "ALLOWED_USER_IDS": "1",
        "ANTHROPIC_API_KEY": "sk-ant-x"}


def test_drafts_are_on_by_default_and_can_be_turned_off() -> None:
    assert load_settings(BASE, dotenv=None).stream_drafts is True
    assert load_settings({**BASE, "STREAM_DRAFTS": "0"}, dotenv=None).stream_drafts is False


def test_a_bad_value_is_named_in_the_error() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings({**BASE, "STREAM_DRAFTS": "maybe"}, dotenv=None)
    assert "STREAM_DRAFTS" in str(error.value) and "maybe" in str(error.value)
