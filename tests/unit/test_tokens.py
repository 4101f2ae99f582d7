"""Worker tokens added with /addworker: the key, the encryption, and the slots they get."""

from __future__ import annotations

import pytest

from fleetgram import tokens
from fleetgram.config import ConfigError, Settings, load_settings
from fleetgram.master.addworker import not_configured, refused_by_telegram, suggested_username

MASTER = "100000001:master-secret-AAAAAAAA"
WORKER_1 = "200000001:worker-one-BBBBBBBB"
WORKER_2 = "200000002:worker-two-CCCCCCCC"
NEW = "300000003:managed-DDDDDDDD"
KEY = "ZmxlZXRncmFtLXRlc3Qta2V5LTAxMjM0NTY3ODlhYmM="  # 32 bytes, url-safe base64
OTHER_KEY = "b3RoZXIta2V5LWZvci10ZXN0cy0wMTIzNDU2Nzg5YWI="


def load(**overrides: str) -> Settings:
    env = {"MASTER_BOT_TOKEN": MASTER, "WORKER_TOKEN_POOL": f"{WORKER_1},{WORKER_2}",
           "ALLOWED_USER_IDS": "42", "ANTHROPIC_API_KEY": "sk-ant-test-key", **overrides}
    return load_settings(env, dotenv=None)


def test_a_fernet_key_is_accepted() -> None:
    assert tokens.key_problem(KEY) is None
    assert load(TOKEN_ENCRYPTION_KEY=KEY).token_encryption_key == KEY


@pytest.mark.parametrize("raw", ["secret", "a" * 44, KEY[:-4], "é" * 44],
                         ids=["short", "not-32-bytes", "truncated", "not-ascii"])
def test_anything_else_is_refused_naming_the_setting_and_how_to_make_one(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(TOKEN_ENCRYPTION_KEY=raw)
    assert caught.value.setting == "TOKEN_ENCRYPTION_KEY"
    assert "Fernet.generate_key()" in caught.value.problem


def test_the_key_is_optional() -> None:
    assert load().token_encryption_key is None


def test_a_token_round_trips_and_is_not_readable_in_the_ciphertext() -> None:
    cipher = tokens.TokenCipher(KEY)
    blob = cipher.encrypt(NEW)
    assert NEW.encode() not in blob and b"managed-DDDDDDDD" not in blob
    assert cipher.decrypt(blob) == NEW


def test_another_key_does_not_decrypt() -> None:
    blob = tokens.TokenCipher(KEY).encrypt(NEW)
    with pytest.raises(tokens.WrongKey, match="TOKEN_ENCRYPTION_KEY"):
        tokens.TokenCipher(OTHER_KEY).decrypt(blob)


def test_a_new_token_gets_the_next_slot_after_the_pool() -> None:
    settings = load()
    assert tokens.next_slot(settings) == "worker3"
    assert tokens.join_pool(settings, [NEW]) == ["worker3"]
    assert settings.slot_names == ["worker1", "worker2", "worker3"]
    assert settings.token_for("worker3") == NEW


def test_a_token_already_in_the_pool_gets_no_second_slot() -> None:
    settings = load()
    assert tokens.join_pool(settings, [WORKER_2, NEW, NEW]) == ["worker3"]
    assert len(settings.worker_token_pool) == 3


def test_the_suggested_username_names_the_slot_and_ends_in_bot() -> None:
    assert suggested_username("fleet_master_bot", "worker6") == "fleet_master_worker6_bot"
    assert suggested_username("FleetBot", "worker3") == "Fleet_worker3_bot"
    long = suggested_username("a" * 40 + "_bot", "worker12")
    assert len(long) <= 32 and long.endswith("_worker12_bot") and long[0].isalpha()


def test_the_answers_name_what_to_set() -> None:
    assert "TOKEN_ENCRYPTION_KEY" in not_configured()
    assert tokens.GENERATE_KEY in not_configured()
    refusal = refused_by_telegram("fleet_master_bot")
    assert "@BotFather" in refusal and "Bot Management Mode" in refusal
