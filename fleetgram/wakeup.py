"""Waking a stopped worker when someone writes in its chat.

A stopped worker does not poll, but Telegram keeps a bot's updates until a getUpdates call
confirms them: "By default, updates starting with the earliest unconfirmed update are returned.
An update is considered confirmed as soon as getUpdates is called with an offset higher than
its update_id" (https://core.telegram.org/bots/api#getupdates), and they are kept for up to 24
hours (https://core.telegram.org/bots/api#getting-updates). So a message to a stopped worker
waits at Telegram. Every STOPPED_WORKER_POLL seconds the watcher peeks at each stopped slot's
waiting updates with a bare `telegram.Bot` (getUpdates, timeout 0, never an offset: nothing is
confirmed, so the worker gets every one of them when it starts) and reports the slots where
an allowed user is waiting; the orchestrator starts those (policy: `FleetView.wanted`).

Only stopped slots are peeked: a second getUpdates next to a running worker's long poll makes
Telegram answer 409 Conflict to one of them ("terminated by other getUpdates request").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Protocol

from telegram import Bot, Update
from telegram.request import HTTPXRequest

from fleetgram.config import Settings
from fleetgram.domain import WorkerSlot, WorkerState

log = logging.getLogger(__name__)

PEEK_TIMEOUT = 5.0  # seconds per HTTP call: a slow Telegram must not hold up the orchestrator


# --- pure decisions ------------------------------------------------------------------------


def peekable(slots: Iterable[WorkerSlot], states: Mapping[str, WorkerState]) -> list[str]:
    """Slots whose updates may be peeked: stopped ones only (not starting or running, whose
    bot polls; not in error, whose token Telegram refused)."""
    return [s.name for s in slots
            if states.get(s.name) == WorkerState.STOPPED and not s.enabled and not s.error]


def someone_allowed_waits(senders: Iterable[int | None], allowed: frozenset[int]) -> bool:
    """A stranger's message never starts a worker: it would be refused anyway."""
    return any(sender is not None and sender in allowed for sender in senders)


def senders_of(updates: Iterable[Update]) -> list[int | None]:
    return [u.effective_user.id if u.effective_user is not None else None for u in updates]


# --- the watcher ---------------------------------------------------------------------------


class UpdatePeeker(Protocol):
    async def senders(self, token: str) -> list[int | None]:
        """Who wrote the updates waiting for the bot of `token` (none confirmed)."""

    async def close(self) -> None: ...


class BotPeeker:
    """Peeks with one bare `telegram.Bot` per token (no Application, no polling). The
    operator uses it too, with tokens read from the workers' Secrets."""

    def __init__(self, base_url: str, base_file_url: str) -> None:
        self.base_url = base_url
        self.base_file_url = base_file_url
        self._bots: dict[str, Bot] = {}

    def _bot(self, token: str) -> Bot:
        bot = self._bots.get(token)
        if bot is None:
            def request() -> HTTPXRequest:
                return HTTPXRequest(connect_timeout=PEEK_TIMEOUT, read_timeout=PEEK_TIMEOUT,
                                    write_timeout=PEEK_TIMEOUT, pool_timeout=PEEK_TIMEOUT)

            bot = Bot(token, base_url=self.base_url, base_file_url=self.base_file_url,
                      request=request(), get_updates_request=request())
            self._bots[token] = bot
        return bot

    async def senders(self, token: str) -> list[int | None]:
        # No offset: nothing is confirmed. No allowed_updates: Telegram would keep it as the
        # bot's setting, which is the worker's to choose.
        updates = await self._bot(token).get_updates(timeout=0, limit=100)
        return senders_of(updates)

    async def close(self) -> None:
        bots, self._bots = list(self._bots.values()), {}
        for bot in bots:
            try:
                await bot.shutdown()
            except Exception:  # closing only
                log.debug("closing a peek bot failed", exc_info=True)


async def someone_waits(
    peeker: UpdatePeeker, slot: str, token: str, allowed: frozenset[int]
) -> bool:
    """True if an allowed user's update waits for the slot's bot. A failed peek (Telegram
    down, a refused token) is False: the next round asks again."""
    try:
        senders = await peeker.senders(token)
    except Exception as exc:
        # The error's type only: an InvalidToken's text names the token.
        log.warning("could not peek at a stopped worker's chat",
                    extra={"worker": slot, "error": type(exc).__name__})
        return False
    if someone_allowed_waits(senders, allowed):
        log.info("a message waits in a stopped worker's chat", extra={"worker": slot})
        return True
    return False


class StoppedChatWatcher:
    """Single host: the tokens are the settings' own."""

    def __init__(self, settings: Settings, peeker: UpdatePeeker | None = None) -> None:
        self.settings = settings
        self.peeker: UpdatePeeker = peeker or BotPeeker(settings.telegram_base_url,
                                                        settings.telegram_file_url)

    async def someone_waits(self, slot: str) -> bool:
        return await someone_waits(self.peeker, slot, self.settings.token_for(slot),
                                   self.settings.allowed_user_ids)

    async def close(self) -> None:
        await self.peeker.close()
