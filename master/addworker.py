"""/addworker: one-tap worker bots with Bot API 9.6 managed bots.

The master offers a reply-keyboard button with `request_managed_bot`
(https://core.telegram.org/bots/api#keyboardbuttonrequestmanagedbot). Telegram shows the user a
pre-filled bot creation screen; once they confirm, the master receives the service message
`managed_bot_created` (https://core.telegram.org/bots/api#managedbotcreated; the `managed_bot`
update, https://core.telegram.org/bots/api#managedbotupdated, arrives too and is not needed),
fetches the new bot's token with getManagedBotToken
(https://core.telegram.org/bots/api#getmanagedbottoken), stores it encrypted
(fleetgram/tokens.py) and adds a slot to the fleet. On Kubernetes the slot is the first free
one of the WorkerPool's spare slots (`spec.spareSlots`, reserved by the chart's
`addWorker.spareSlots`); the operator, which shares the database and the key, writes the
token's Secret and starts the worker (operator/added.py): the master writes no Secret.
The button only works for a master whose owner turned on bot management in the @BotFather
Mini App (getMe: can_manage_bots); Telegram refuses it otherwise.

python-telegram-bot 22.8 has the types and methods (KeyboardButtonRequestManagedBot,
Message.managed_bot_created, Bot.get_managed_bot_token), so no raw API call is needed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from telegram import (
    KeyboardButton,
    KeyboardButtonRequestManagedBot,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    Update,
)
from telegram.error import BadRequest, TelegramError
from telegram.ext import CommandHandler, ContextTypes, MessageHandler, filters

from fleetgram import tokens
from fleetgram.config import Mode, Settings
from fleetgram.store.base import Store
from fleetgram.telegram.retrying import read_retrying

log = logging.getLogger(__name__)

REQUEST_ID = 1  # one button per message; any signed 32-bit number unique in the message
BUTTON_TEXT = "🤖 Create a worker bot"
BOTFATHER_SETTING = ("turn on Bot Management Mode for this bot in the @BotFather Mini App "
                     "(open @BotFather, tap Open, pick this bot, Bot Settings)")


def not_configured() -> str:
    return (f"/addworker is not configured: set {tokens.KEY_SETTING} (it encrypts the new bots' "
            f"tokens at rest) and restart. Generate a key with:\n{tokens.GENERATE_KEY}")


def cluster_not_configured() -> str:
    return ("/addworker is not configured: set addWorker.encryptionKey and addWorker.spareSlots "
            f"in the chart's values ({tokens.KEY_SETTING} of the master and the operator) and "
            f"run helm upgrade. Generate a key with:\n{tokens.GENERATE_KEY}")


def no_spare_slot() -> str:
    return ("no worker slot is free for /addworker: the chart reserves addWorker.spareSlots "
            "of them (all are taken, or none is reserved); raise it in the chart's values and "
            "run helm upgrade.")


class NoSpareSlot(Exception):
    """Kubernetes: the pool's spare slots were all taken meanwhile."""


def refused_by_telegram(master: str) -> str:
    return (f"Telegram refused the bot-creation button: @{master} may not create bots yet. "
            f"To allow it, {BOTFATHER_SETTING}, then send /addworker again.")


def suggested_username(master: str, slot: str) -> str:
    """A username to pre-fill: the master's name without its bot suffix, then the slot
    (fleet_master_bot, worker6 -> fleet_master_worker6_bot); the user may change it."""
    stem = re.sub(r"_?bot$", "", master, flags=re.IGNORECASE) or "fleetgram"
    return f"{stem}_{slot}_bot"[-32:].lstrip("_0123456789") or f"{slot}_bot"


class Onboarding:
    """The /addworker command and the managed_bot_created message of the master bot."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        # Set by the fleet: begins starting a slot's worker (None: workers run elsewhere).
        self.start_worker: Callable[[str], Awaitable[None]] | None = None
        self._lock = asyncio.Lock()  # two bots created at once must not get the same slot

    def install(self, add: Callable[[object], None]) -> None:
        only_new = filters.UpdateType.MESSAGE
        add(CommandHandler("addworker", self.on_addworker, filters=only_new))
        add(MessageHandler(only_new & filters.StatusUpdate.MANAGED_BOT_CREATED,
                           self.on_created))

    def _may_add(self, user_id: int) -> bool:
        """Admins when ADMIN_USER_IDS is set, else every allowed user (the allowlist already
        stopped everyone else)."""
        admins = self.settings.admin_user_ids
        return not admins or user_id in admins

    async def on_addworker(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None:
            return
        if not self._may_add(user.id):
            await message.reply_text("Only the fleet's admins (ADMIN_USER_IDS) can add workers.")
            return
        if not self.settings.token_encryption_key:
            await message.reply_text(self._not_configured())
            return
        slot = await self._next_slot()  # read once: on Kubernetes it reads the pool and the DB
        if slot is None:
            await message.reply_text(no_spare_slot())
            return
        master = context.bot.username
        button = KeyboardButton(BUTTON_TEXT, request_managed_bot=KeyboardButtonRequestManagedBot(
            request_id=REQUEST_ID, suggested_name=f"Claude {slot}",
            suggested_username=suggested_username(master, slot)))
        try:
            await message.reply_text(
                "Tap the button below: Telegram creates a new bot for you, and it joins the "
                "fleet as a worker.",
                reply_markup=ReplyKeyboardMarkup([[button]], resize_keyboard=True,
                                                 one_time_keyboard=True))
        except BadRequest as exc:
            log.info("the managed-bot button was refused", extra={"reason": str(exc)[:200]})
            await message.reply_text(refused_by_telegram(master))

    async def on_created(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        user = update.effective_user
        if message is None or user is None or message.managed_bot_created is None:
            return
        created = message.managed_bot_created.bot
        refusal = None
        if not self._may_add(user.id):
            refusal = "only the fleet's admins (ADMIN_USER_IDS) can add workers."
        elif not self.settings.token_encryption_key:
            refusal = self._not_configured()
        if refusal is not None:
            await message.reply_text(f"@{created.username} was not added to the fleet: "
                                     f"{refusal}", reply_markup=ReplyKeyboardRemove())
            return
        try:
            # A read: a 502 burst, a 429 or a lost answer is read again, never given up at once.
            token = await read_retrying(
                lambda: context.bot.get_managed_bot_token(user_id=created.id))
        except TelegramError as exc:
            log.warning("getManagedBotToken failed", extra={"error": type(exc).__name__})
            await message.reply_text(f"@{created.username} was created, but Telegram did not "
                                     "give its token; try /addworker again later.",
                                     reply_markup=ReplyKeyboardRemove())
            return
        try:
            slot = await self._add(token, created.id, created.username or str(created.id),
                                   message.chat_id)
        except NoSpareSlot:
            await message.reply_text(f"@{created.username} was not added to the fleet: "
                                     f"{no_spare_slot()}", reply_markup=ReplyKeyboardRemove())
            return
        if slot is None:
            await message.reply_text(f"@{created.username} is already in the fleet.",
                                     reply_markup=ReplyKeyboardRemove())
            return
        if self._cluster:  # the operator says here when it starts it (operator/added.py)
            joined = (f"{slot} (@{created.username}) is added; the operator starts its worker "
                      f"now. Press Start in its chat: t.me/{created.username}")
        else:
            joined = (f"{slot} (@{created.username}) joined; press Start in its chat: "
                      f"t.me/{created.username}")
        await message.reply_text(joined, reply_markup=ReplyKeyboardRemove())

    @property
    def _cluster(self) -> bool:
        return self.settings.mode == Mode.KUBERNETES

    async def _next_slot(self) -> str | None:
        """The slot a bot added now gets; None when Kubernetes has no spare slot left."""
        if self._cluster:  # the pool's spare slots (fleetgram.kube.added_slots)
            return await self.store.next_added_slot()  # type: ignore[attr-defined,no-any-return]
        return tokens.next_slot(self.settings)

    def _not_configured(self) -> str:
        return cluster_not_configured() if self._cluster else not_configured()

    async def _add(self, token: str, bot_id: int, username: str,
                   chat_id: int | None = None) -> str | None:
        """Store the token encrypted and add its slot. On a single host the worker starts
        here if MAX_WORKERS allows (otherwise the orchestrator starts it when it is wanted);
        on Kubernetes the operator writes its Secret and starts it (operator/added.py).
        None: the bot is in the fleet already."""
        assert self.settings.token_encryption_key
        cipher = tokens.TokenCipher(self.settings.token_encryption_key)
        async with self._lock:
            stored = await self.store.managed_tokens()
            if token in self.settings.worker_token_pool or any(
                    row.bot_id == bot_id for row in stored):
                return None
            slot = await self._next_slot()
            if slot is None:
                raise NoSpareSlot
            # Stored before it joins the pool: a crash in between loses nothing.
            await self.store.add_managed_token(slot, bot_id, username, cipher.encrypt(token),
                                               chat_id=chat_id)
            if self._cluster:
                log.info("a worker bot's token is stored for the operator",
                         extra={"worker": slot})
                return slot
            tokens.join_pool(self.settings, [token])
            await self.store.ensure_slots([slot])
        log.info("a worker bot joined the pool", extra={"worker": slot})
        if self.start_worker is not None:
            running = sum(1 for s in await self.store.get_slots() if s.enabled)
            if running < self.settings.max_workers:
                await self.start_worker(slot)
        return slot
