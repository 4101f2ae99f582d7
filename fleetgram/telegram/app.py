"""Building python-telegram-bot Applications the same way for every bot of the fleet."""

from __future__ import annotations

import logging

from telegram import BotCommand, Update
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    ContextTypes,
    TypeHandler,
)

from fleetgram.config import Settings

log = logging.getLogger(__name__)

REFUSAL = "Sorry, this bot serves its owners only."


def build_application(token: str, settings: Settings) -> Application:
    return (
        ApplicationBuilder()
        .token(token)
        .base_url(settings.telegram_base_url)
        .base_file_url(settings.telegram_file_url)
        # Waits out 429 retry_after on ordinary replies; streaming handles its own edits.
        .rate_limiter(AIORateLimiter(max_retries=5))
        .concurrent_updates(True)
        .build()
    )


def install_allowlist(app: Application, allowed: frozenset[int]) -> None:
    """Fail closed: updates from anyone outside `allowed` stop here, after one short refusal
    per user (kept in memory only: nothing of theirs is stored)."""
    refused: set[int] = set()

    async def gate(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not isinstance(update, Update):
            raise ApplicationHandlerStop
        user = update.effective_user
        if user is not None and user.id in allowed:
            return
        if user is not None and user.id not in refused:
            refused.add(user.id)
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
    await app.bot.set_my_commands([BotCommand(c, d) for c, d in commands])
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
