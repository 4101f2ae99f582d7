"""Can fleetgram reach what it needs? The database, Telegram (getMe per token), Claude.

Start-up uses these to fail in seconds with one line naming the setting to fix;
`fleetgram check` runs them all and prints a summary. Nothing here ever prints a token or a
key: a failure is described by the setting's name, the slot, an HTTP status or an error type,
never by an exception's text that may quote a URL (Telegram URLs contain the token).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from fleetgram.config import Settings, safe_database_url
from fleetgram.logs import redact

# Bounds for start-up and `check`: together they keep a failed start well under 10 s.
DATABASE_TIMEOUT = 6.0
TELEGRAM_TIMEOUT = 7.0
CLAUDE_TIMEOUT = 20.0


class StartupError(Exception):
    """Something fleetgram needs is unreachable or refuses it; `setting` says what to fix."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


@dataclass(frozen=True)
class CheckResult:
    name: str  # what was checked, e.g. "database" or "worker2"
    ok: bool
    line: str  # one printable line, never a secret


def _first_line(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    text = str(exc).strip().splitlines()
    reason = text[0].strip() if text else ""
    return redact(reason or type(exc).__name__, secrets)


# --- the database -----------------------------------------------------------------------------


async def _postgres_reason(url: str, seconds: float) -> str | None:
    """One direct connection attempt: the pool only says "timed out", this says why."""
    import psycopg

    try:
        conn = await asyncio.wait_for(
            psycopg.AsyncConnection.connect(url, connect_timeout=max(2, int(seconds))), seconds
        )
    except TimeoutError:
        return f"no answer within {seconds:g}s"
    except Exception as exc:
        return _first_line(exc)
    await conn.close()
    return None


async def open_store_within(store: Any, database_url: str,
                            seconds: float = DATABASE_TIMEOUT) -> None:
    """`await store.open()`, bounded; a failure is a StartupError naming DATABASE_URL (shown
    without its password)."""
    shown = safe_database_url(database_url)
    secrets = _password_of(database_url)
    if database_url.startswith(("postgresql://", "postgres://")):
        reason = await _postgres_reason(database_url, min(seconds, 4.0))
        if reason is not None:
            raise StartupError("DATABASE_URL", f"cannot connect to {shown}: "
                                               f"{redact(reason, secrets)}")
    try:
        await asyncio.wait_for(store.open(), seconds)
    except TimeoutError:
        raise StartupError(
            "DATABASE_URL", f"cannot open {shown}: no answer within {seconds:g}s"
        ) from None
    except Exception as exc:  # psycopg, sqlite3 and OS errors have no common base
        raise StartupError("DATABASE_URL", f"cannot open {shown}: "
                                           f"{_first_line(exc, secrets)}") from None


def _password_of(url: str) -> tuple[str, ...]:
    from urllib.parse import urlsplit

    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            return (password,)
    return ()


async def check_database(settings: Settings) -> CheckResult:
    from fleetgram.store import open_store

    shown = safe_database_url(settings.database_url)
    store = open_store(settings.database_url)  # the SQL store, in either mode
    try:
        await open_store_within(store, settings.database_url)
    except StartupError as exc:
        return CheckResult("database", False, str(exc))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(store.close(), 2)
    return CheckResult("database", True, f"database: reachable ({shown})")


# --- Telegram ---------------------------------------------------------------------------------


def telegram_failure(exc: BaseException, setting: str, settings: Settings,
                     who: str = "") -> StartupError:
    """Turn what python-telegram-bot raised while starting a bot into a StartupError.

    PTB's InvalidToken message quotes the whole token, so no message of its is used."""
    from telegram.error import InvalidToken, NetworkError, TimedOut

    prefix = f"{who}: " if who else ""
    if isinstance(exc, InvalidToken):
        # PTB raises InvalidToken for 401 and for 404; its cause's message says which.
        if exc.__cause__ is not None and "Not Found" in str(exc.__cause__):
            return StartupError(setting, f"{prefix}getMe answered 404 Not Found: the token is "
                                         "malformed, or TELEGRAM_API_URL is not a Bot API server")
        return StartupError(setting, f"{prefix}Telegram refused the token (getMe: "
                                     "Unauthorized); copy it again from @BotFather")
    if isinstance(exc, TimedOut | TimeoutError):
        return StartupError("TELEGRAM_API_URL", f"{prefix}no answer from Telegram at "
                                                f"{settings.telegram_api_url} (timed out)")
    if isinstance(exc, NetworkError | OSError):
        return StartupError("TELEGRAM_API_URL", f"{prefix}cannot reach Telegram at "
                                                f"{settings.telegram_api_url} "
                                                f"({type(exc).__name__})")
    return StartupError(setting, f"{prefix}Telegram answered getMe with "
                                 f"{type(exc).__name__}")


async def get_me(settings: Settings, token: str, setting: str, who: str) -> CheckResult:
    """One getMe over plain HTTP. The request URL holds the token: no httpx error text is
    shown, only its type or Telegram's status and description."""
    import httpx

    url = f"{settings.telegram_base_url}{token}/getMe"
    try:
        async with httpx.AsyncClient(timeout=TELEGRAM_TIMEOUT) as client:
            response = await client.get(url)
    except httpx.TimeoutException:
        return CheckResult(who, False, f"TELEGRAM_API_URL: {who}: no answer from "
                                       f"{settings.telegram_api_url} (timed out)")
    except httpx.HTTPError as exc:
        return CheckResult(who, False, f"TELEGRAM_API_URL: {who}: cannot reach "
                                       f"{settings.telegram_api_url} ({type(exc).__name__})")
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200 and isinstance(body, dict) and body.get("ok"):
        username = (body.get("result") or {}).get("username", "?")
        return CheckResult(who, True, f"{who}: Telegram knows this token as @{username}")
    description = body.get("description") if isinstance(body, dict) else None
    description = redact(str(description or response.reason_phrase), (token,))[:100]
    if response.status_code in (401, 404):
        return CheckResult(who, False, f"{setting}: {who}: Telegram refused the token "
                                       f"({response.status_code} {description})")
    return CheckResult(who, False, f"{setting}: {who}: getMe answered "
                                   f"{response.status_code} {description}")


def token_checks(settings: Settings) -> list[tuple[str, str, str]]:
    """(token, setting, who) for the master and every worker token in the configuration."""
    out: list[tuple[str, str, str]] = []
    if settings.master_bot_token:
        out.append((settings.master_bot_token, "MASTER_BOT_TOKEN", "master"))
    for i, (slot, token) in enumerate(zip(settings.slot_names, settings.worker_token_pool,
                                          strict=True)):
        out.append((token, f"WORKER_TOKEN_POOL (entry {i + 1})", slot))
    if settings.worker_token:
        out.append((settings.worker_token, "WORKER_TOKEN", "worker"))
    return out


# --- Claude -----------------------------------------------------------------------------------


async def check_claude(settings: Settings) -> CheckResult:
    """The cheapest real call: a one-token answer to a one-word prompt."""
    import anthropic

    where = settings.anthropic_base_url or "https://api.anthropic.com"
    setting = "ANTHROPIC_API_KEY"
    if settings.anthropic_api_key:
        secrets: tuple[str, ...] = (settings.anthropic_api_key,)
        client = anthropic.AsyncAnthropic(
            api_key=settings.anthropic_api_key, base_url=settings.anthropic_base_url,
            timeout=CLAUDE_TIMEOUT, max_retries=1,
        )
    else:  # agent mode on a subscription: the token as Claude Code sends it
        setting = "CLAUDE_CODE_OAUTH_TOKEN"
        token = settings.claude_code_oauth_token or ""
        secrets = (token,)
        client = anthropic.AsyncAnthropic(
            auth_token=token, base_url=settings.anthropic_base_url, timeout=CLAUDE_TIMEOUT,
            max_retries=1, default_headers={"anthropic-beta": "oauth-2025-04-20"},
        )
    try:
        await client.messages.create(
            model=settings.claude_model, max_tokens=1,
            messages=[{"role": "user", "content": "ping"}],
        )
    except anthropic.AuthenticationError:
        return CheckResult("claude", False, f"{setting}: the Claude API refused it "
                                            "(401 authentication_error)")
    except anthropic.PermissionDeniedError:
        return CheckResult("claude", False, f"{setting}: it may not use the "
                                            "Claude API (403 permission_error)")
    except anthropic.NotFoundError:
        return CheckResult("claude", False, f"CLAUDE_MODEL: the Claude API does not know "
                                            f"{settings.claude_model!r} (404)")
    except anthropic.APIStatusError as exc:
        return CheckResult("claude", False, f"Claude API at {where} answered {exc.status_code}: "
                                            f"{_first_line(exc, secrets)[:120]}")
    except anthropic.APIConnectionError as exc:
        return CheckResult("claude", False, f"ANTHROPIC_BASE_URL: cannot reach the Claude API at "
                                            f"{where} ({type(exc).__name__})")
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    return CheckResult("claude", True, f"claude: {settings.claude_model} answers at {where}")


async def run_checks(settings: Settings, *, online: bool) -> list[CheckResult]:
    """The database always; with `online`, getMe for every token and one Claude call."""
    results = [await check_database(settings)]
    if online:
        probes = [get_me(settings, token, setting, who)
                  for token, setting, who in token_checks(settings)]
        results += await asyncio.gather(*probes)
        results.append(await check_claude(settings))
    return results
