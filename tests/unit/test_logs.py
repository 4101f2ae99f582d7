"""Structured JSON logs that never carry a bot token or an API key."""

from __future__ import annotations

import json
import logging
import sys

from fleetgram.logs import JsonFormatter, redact

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
API_KEY = "sk-ant-api03-Zx9_abcDEF-123456"


def record(msg: str, *args: object, name: str = "fleetgram", **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def formatted(rec: logging.LogRecord, secrets: tuple[str, ...] = ()) -> str:
    return JsonFormatter(secrets).format(rec)


def test_a_bot_token_inside_an_httpx_request_url_never_appears():
    url = f"https://api.telegram.org/bot{BOT_TOKEN}/getUpdates"
    out = formatted(
        record('HTTP Request: %s %s "%s"', "POST", url, "HTTP/1.1 200 OK", name="httpx")
    )
    assert BOT_TOKEN not in out
    assert "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw" not in out
    assert "/getUpdates" in out


def test_a_bot_token_inside_a_file_download_url_never_appears():
    out = formatted(record("GET https://api.telegram.org/file/bot%s/photos/1.jpg", BOT_TOKEN))
    assert BOT_TOKEN not in out


def test_a_bare_bot_token_never_appears():
    assert BOT_TOKEN not in formatted(record("starting with token %s", BOT_TOKEN))


def test_an_anthropic_api_key_never_appears():
    out = formatted(record("calling Claude with key %s", API_KEY))
    assert API_KEY not in out and "***" in out


def test_secrets_in_extra_fields_never_appear():
    out = formatted(record("config", token=BOT_TOKEN, key=API_KEY))
    assert BOT_TOKEN not in out and API_KEY not in out


def test_secrets_in_an_exception_traceback_never_appear():
    try:
        raise RuntimeError(f"401 for https://api.telegram.org/bot{BOT_TOKEN}/getMe key={API_KEY}")
    except RuntimeError:
        rec = logging.LogRecord(
            "fleetgram", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    out = formatted(rec)
    assert "RuntimeError" in out
    assert BOT_TOKEN not in out and API_KEY not in out


def test_configured_secrets_of_any_shape_are_redacted():
    out = formatted(record("password is hunter2-long"), secrets=("hunter2-long",))
    assert "hunter2-long" not in out


def test_each_line_is_a_json_object_with_level_logger_and_message():
    entry = json.loads(formatted(record("task %s queued", "t-7k2qf")))
    assert entry["level"] == "info"
    assert entry["logger"] == "fleetgram"
    assert entry["msg"] == "task t-7k2qf queued"
    assert "ts" in entry


def test_extra_fields_appear_as_json_keys():
    entry = json.loads(formatted(record("scaling", action="start", worker="worker2", pending=4)))
    assert entry["action"] == "start"
    assert entry["worker"] == "worker2"
    assert entry["pending"] == 4


def test_redact_leaves_ordinary_text_alone():
    text = "worker2 took t-7k2qf at 12:30:45 on 127.0.0.1:8080"
    assert redact(text) == text


def test_the_token_in_python_telegram_bots_invalid_token_message_never_appears():
    from telegram.error import InvalidToken

    try:
        raise InvalidToken(f"The token `{BOT_TOKEN}` was rejected by the server.")
    except InvalidToken:
        rec = logging.LogRecord("telegram.ext", logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    assert BOT_TOKEN not in formatted(rec)


def test_a_configured_secret_that_json_escapes_is_still_redacted():
    secret = 'pa"ss\\word-42'
    out = formatted(record("connecting with %s", secret), secrets=(secret,))
    assert "ss\\\\word" not in out and "pa\\\"ss" not in out and "***" in out


def test_an_uncaught_exception_is_logged_redacted_instead_of_printed_raw(capsys):
    import threading

    from fleetgram import logs

    saved_thread_hook = threading.excepthook
    saved_hook, saved_handlers = sys.excepthook, logging.getLogger().handlers[:]
    saved_level = logging.getLogger().level
    try:
        logs.configure("INFO", (BOT_TOKEN,))
        try:
            raise RuntimeError(f"token {BOT_TOKEN} refused")
        except RuntimeError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook, threading.excepthook = saved_hook, saved_thread_hook
        logging.getLogger().handlers[:] = saved_handlers
        logging.getLogger().setLevel(saved_level)
    err = capsys.readouterr().err
    assert "uncaught exception" in err and "RuntimeError" in err
    assert BOT_TOKEN not in err
