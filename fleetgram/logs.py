"""Structured (JSON) logs that never carry a bot token or an API key."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

_SECRETS = [
    # Telegram bot tokens, also inside URLs, where they follow "bot" with no word boundary
    # (https://api.telegram.org/bot123456:ABC.../getMe).
    re.compile(r"(?:\b|(?<=bot))\d{3,}:[A-Za-z0-9_-]{5,}"),
    re.compile(r"sk-ant-[A-Za-z0-9_-]+"),  # Anthropic API keys
]
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def redact(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    for secret in extra_secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRETS:
        text = pattern.sub("***", text)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False), self.secrets)


def configure(level: str = "INFO", secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL, and Telegram URLs contain the bot token.
    for noisy in ("httpx", "httpx2", "httpcore", "telegram.ext.Updater", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
