"""Building python-telegram-bot Applications the same way for every bot of the fleet."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections import OrderedDict

from telegram import BotCommand, Update
from telegram.error import TelegramError, TimedOut
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    ContextTypes,
    TypeHandler,
)
from telegram.request import HTTPXRequest

from fleetgram import metrics
from fleetgram.config import Settings

log = logging.getLogger(__name__)

REFUSAL = "Sorry, this bot serves its owners only."
HANDLER_FAILED = "⚠️ Something went wrong on my side; nothing was queued. Please try again."
MENU_TIMEOUT = 3.0  # seconds setMyCommands may take at start-up
# Strangers remembered (so each gets one refusal) before the longest-unseen are forgotten.
REFUSED_MEMORY = 10_000


class RecentIds:
    """A bounded set of ids: adding beyond `capacity` forgets the least recently seen."""

    def __init__(self, capacity: int = REFUSED_MEMORY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._ids: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item: object) -> bool:
        return item in self._ids

    def seen(self, item: int) -> bool:
        """Remember `item`; True if it was already remembered (it becomes the most recent)."""
        if item in self._ids:
            self._ids.move_to_end(item)
            return True
        self._ids[item] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return False


class CountingRequest(HTTPXRequest):
    """PTB's HTTPXRequest that counts failed calls for Prometheus by Bot API method and HTTP
    code (`network`/`timeout` when Telegram never answered); 429s count apart
    (fleetgram_telegram_rate_limited_total)."""

    async def do_request(self, url: str, method: str, *args: object,
                         **kwargs: object) -> tuple[int, bytes]:
        try:
            code, payload = await super().do_request(url, method, *args, **kwargs)  # type: ignore[arg-type]
        except TimedOut:
            metrics.telegram_error(metrics.telegram_method(url), "timeout")
            raise
        except TelegramError:
            metrics.telegram_error(metrics.telegram_method(url), "network")
            raise
        if not 200 <= code <= 299:
            metrics.telegram_error(metrics.telegram_method(url), code)
        return code, payload


def build_application(token: str, settings: Settings) -> Application:
    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(settings.telegram_base_url)
        .base_file_url(settings.telegram_file_url)
        # PTB's own defaults (256 connections; 1 for getUpdates), counting failures.
        .request(CountingRequest(connection_pool_size=256))
        .get_updates_request(CountingRequest(connection_pool_size=1))
        # Waits out 429 retry_after on ordinary replies; streaming handles its own edits.
        .rate_limiter(AIORateLimiter(max_retries=5))
        .concurrent_updates(True)
        .build()
    )
    install_error_handler(app, settings.allowed_user_ids)
    return app


def install_error_handler(app: Application, allowed: frozenset[int]) -> None:
    """Any exception in a handler is logged and the allowed user is answered with one line,
    so a failure is never silence. Strangers get nothing more than the allowlist's refusal.

    Above DEBUG the log carries the error type and the stack without the exception's message:
    a message can quote the prompt (no prompt text above DEBUG)."""

    async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        where = {"error": type(error).__name__ if error is not None else None}
        if isinstance(update, Update):
            user = update.effective_user
            chat = update.effective_chat
            where.update(update_id=update.update_id, user_id=user.id if user else None,
                         chat_id=chat.id if chat else None)
        stack = "".join(traceback.format_tb(error.__traceback__)) if error is not None else ""
        log.error("handler failed", extra={**where, "stack": stack})
        if error is not None:
            log.debug("handler failed: details", exc_info=error)
        if not isinstance(update, Update) or update.effective_user is None:
            return
        if update.effective_user.id not in allowed:
            return
        try:
            if update.callback_query is not None:
                await update.callback_query.answer(HANDLER_FAILED)
            elif update.effective_chat is not None:
                await context.bot.send_message(update.effective_chat.id, HANDLER_FAILED)
        except Exception as exc:  # the answer is best effort: Telegram may be what failed
            log.warning("could not tell the user a handler failed",
                        extra={**where, "answer_error": type(exc).__name__})

    app.add_error_handler(on_error)


def install_allowlist(app: Application, allowed: frozenset[int]) -> None:
    """Fail closed: updates from anyone outside `allowed` stop here, after one short refusal
    per user (kept in memory only, and only the last REFUSED_MEMORY strangers: an attacker
    cycling through ids cannot grow it without bound)."""
    refused = RecentIds(REFUSED_MEMORY)

    async def gate(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not isinstance(update, Update):
            raise ApplicationHandlerStop
        user = update.effective_user
        if user is not None and user.id in allowed:
            return
        if user is not None and not refused.seen(user.id):
            log.info("refused user", extra={"user_id": user.id})
            if update.callback_query is not None:
                await update.callback_query.answer(REFUSAL)
            elif update.effective_chat is not None:
                await context.bot.send_message(update.effective_chat.id, REFUSAL)
        raise ApplicationHandlerStop

    app.add_handler(TypeHandler(object, gate), group=-1)


async def start_polling(app: Application, commands: list[tuple[str, str]]) -> None:
    """Initialize (getMe: raises InvalidToken for a bad token), register the command menu,
    then poll. The caller owns stop_polling."""
    await app.initialize()
    try:
        # The menu is a convenience: a slow or refusing setMyCommands must not fail the start.
        await asyncio.wait_for(
            app.bot.set_my_commands([BotCommand(c, d) for c, d in commands]), MENU_TIMEOUT
        )
    except (TelegramError, TimeoutError) as exc:
        log.warning("could not set the command menu", extra={"error": type(exc).__name__})
    assert app.updater is not None
    await app.updater.start_polling(
        poll_interval=0.0, timeout=10, allowed_updates=Update.ALL_TYPES
    )
    await app.start()


async def stop_polling(app: Application) -> None:
    try:
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
    finally:
        await app.shutdown()
