"""Delivering the outbox: every notice the master sends about a task (its receipt included).

Two parts. `decide` is pure: given what a send raised, it says what to do (delivered, wait
until T, resend as plain text, count an ambiguous send, give up). `Outbox` is the I/O loop:
it reads undelivered events, sends each chat's events in order, one chat never waiting for
another, and marks an event delivered only once Telegram accepted it (or it was given up on).

Guarantees (issue 7):
- A 429 is waited out however long it lasts, for that chat only ("blocked until").
- A send that failed ambiguously (the request may have been processed: a lost reply, a read
  timeout, an unparsable 200) is resent at most once: after the second ambiguous send the
  event is marked delivered and logged as possibly lost or duplicated.
- A 5xx answer or a failed connection (nothing processed) is retried with backoff, forever.
- HTML that Telegram refuses is resent as plain text; 403 (blocked) gives up with a log line.
- When a task ends its receipt loses the Cancel button (editMessageReplyMarkup), after the
  ending's notice is settled: a 429, a 5xx or a lost answer is tried again as a send would be
  (at most MAX_BUTTON_TRIES times, held in memory), a 400 or 403 leaves the button be.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from telegram import Bot, InlineKeyboardMarkup
from telegram.constants import ParseMode

from fleetgram.aio import wait_event
from fleetgram.domain import Event
from fleetgram.master.followups import MASTER_BOT, NOTICE, RECEIPT
from fleetgram.store.base import Store
from fleetgram.store.signals import Channel, signals_of
from fleetgram.telegram.delivery import MAX_AMBIGUOUS_SENDS, Action, Decision, decide

log = logging.getLogger(__name__)

# Events after which a task can no longer be cancelled (its receipt loses the button).
ENDINGS = frozenset({"completed", "failed", "cancelled"})
# Tries at removing one receipt's button before it is left as it is: a stale Cancel button
# only answers that the task is over, so a long outage need not be outlasted (20 tries of
# backoff reach about 7 minutes; a 429 waits its retry_after and counts as one try).
MAX_BUTTON_TRIES = 20


@dataclass(frozen=True)
class Outgoing:
    """One Telegram message of a notice."""

    html: str
    plain: str
    markup: InlineKeyboardMarkup | None = None


# Turns an event into its messages: [] if it announces nothing, None if it is not ready yet
# (e.g. a receipt whose queue position is still being counted).
Compose = Callable[[Event], Awaitable[Sequence[Outgoing] | None]]
# The private chat an event goes to (None: nowhere).
Route = Callable[[Event], Awaitable[int | None]]


@dataclass(frozen=True)
class _Unbutton:
    """A receipt whose Cancel button Telegram did not remove yet (a 429, a 5xx, a lost answer).
    Kept in memory only: after a restart the button stays, which is harmless."""

    task_id: str
    tries: int
    due: float  # the loop's clock


class Outbox:
    def __init__(
        self,
        store: Store,
        bot: Bot,
        compose: Compose,
        route: Route,
        *,
        poll_interval: float,
        batch: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.bot, self.compose, self.route = store, bot, compose, route
        self.poll_interval, self.batch, self.clock = poll_interval, batch, clock
        self._blocked_until: dict[int, float] = {}
        self._failures: dict[int, int] = {}  # event id -> unprocessed failures so far
        self._sent_parts: dict[int, int] = {}  # event id -> messages already accepted
        self._plain: set[tuple[int, int]] = set()  # (event id, part) to send without HTML
        self._unbuttons: dict[tuple[int, int], _Unbutton] = {}  # (chat, message id) -> retry
        self._wake = asyncio.Event()
        self._ready = False
        self._ready_lock = asyncio.Lock()

    async def ensure_ready(self) -> None:
        """Initialize the bot (its HTTP client, getMe) once; raises while Telegram is out."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await self.bot.initialize()
                self._ready = True

    @property
    def buttons_to_retry(self) -> int:
        """Receipts whose Cancel button is to be removed again later (tests, debugging)."""
        return len(self._unbuttons)

    def wake(self) -> None:
        """Something was written to the outbox: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        # "Outbox changed" (an event written here or, on Postgres, by any process) wakes the
        # loop at once; the poll stays as the safety net.
        signals = signals_of(self.store)
        unsubscribe = None if signals is None else signals.subscribe(Channel.OUTBOX, self.wake)
        try:
            await self._loop()
        finally:
            if unsubscribe is not None:
                unsubscribe()

    async def _loop(self) -> None:
        while True:
            # Cleared before the pass, not after: an event written during it is not missed.
            self._wake.clear()
            try:
                progressed = await self.deliver_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox delivery failed; retrying")
                progressed = False
            if not progressed:
                await wait_event(self._wake, self._idle_wait())

    def _idle_wait(self) -> float:
        now = self.clock()
        times = [*self._blocked_until.values(), *(u.due for u in self._unbuttons.values())]
        soonest = min((t for t in times if t > now), default=None)
        wait = self.poll_interval if soonest is None else min(self.poll_interval, soonest - now)
        return max(0.01, wait)

    async def deliver_once(self) -> bool:
        """One pass: every chat that is not waiting sends its events in order, concurrently
        with the other chats. True if any event was settled."""
        await self.ensure_ready()
        events = await self.store.pending_events(limit=self.batch)
        by_chat: dict[int | None, list[Event]] = {}
        for event in events:
            by_chat.setdefault(await self.route(event), []).append(event)
        now = self.clock()
        runs = [
            self._deliver_chat(chat, chat_events)
            for chat, chat_events in by_chat.items()
            if chat is None or self._blocked_until.get(chat, 0.0) <= now
        ]
        settled, _ = await asyncio.gather(asyncio.gather(*runs), self._retry_unbuttons())
        return any(settled)

    async def _deliver_chat(self, chat: int | None, events: list[Event]) -> bool:
        settled = False
        for event in events:
            if chat is None:
                await self._settle(event)
                settled = True
                continue
            outgoing = await self.compose(event)
            if outgoing is None:
                return settled  # not ready: later events of this chat wait behind it
            if not await self._send_event(chat, event, outgoing):
                return settled
            settled = True
        return settled

    async def _send_event(self, chat: int, event: Event, outgoing: Sequence[Outgoing]) -> bool:
        """Send the event's remaining messages; True once it is settled (delivered or given
        up on), False if the chat must wait."""
        part = self._sent_parts.get(event.id, 0)
        while part < len(outgoing):
            message = outgoing[part]
            html = (event.id, part) not in self._plain
            error: BaseException | None = None
            sent = None
            try:
                sent = await self.bot.send_message(
                    chat,
                    message.html if html else message.plain,
                    parse_mode=ParseMode.HTML if html else None,
                    reply_markup=message.markup,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            failures = self._failures.get(event.id, 0) + (0 if error is None else 1)
            verdict = decide(error, failures=failures, html=html, now=self.clock())
            match verdict.action:
                case Action.DELIVERED:
                    await self._remember(event, chat, getattr(sent, "message_id", None))
                    part += 1
                    self._sent_parts[event.id] = part
                case Action.PLAIN:
                    self._plain.add((event.id, part))
                case Action.WAIT:
                    self._failures[event.id] = failures
                    self._blocked_until[chat] = verdict.until
                    log.info("notice waits", extra=_extra(event, chat, verdict))
                    return False
                case Action.AMBIGUOUS:
                    sends = await self.store.record_ambiguous_send(event.id)
                    if sends >= MAX_AMBIGUOUS_SENDS or sends == 0:
                        log.warning(
                            "notice sent ambiguously twice: it may be lost or duplicated; "
                            "not sending it again",
                            extra=_extra(event, chat, verdict),
                        )
                        part += 1
                        self._sent_parts[event.id] = part
                        continue
                    self._blocked_until[chat] = verdict.until
                    log.info("notice may have been sent; resending once",
                             extra=_extra(event, chat, verdict))
                    return False
                case Action.GIVE_UP:
                    log.warning("notice cannot be delivered; dropped",
                                extra=_extra(event, chat, verdict))
                    break
        await self._settle(event)
        if event.kind in ENDINGS and event.task_id is not None:
            await self._drop_cancel_buttons(event.task_id)
        return True

    async def _remember(self, event: Event, chat: int, message_id: int | None) -> None:
        """Record which task the message is about: a reply to it is a follow-up, and the
        receipt's Cancel button goes when the task ends. A failure loses only that."""
        if event.task_id is None or not isinstance(message_id, int):
            return
        kind = RECEIPT if event.kind == "receipt" else NOTICE
        try:
            await self.store.record_messages(MASTER_BOT, chat, [message_id], event.task_id,
                                             kind)
        except Exception as exc:
            log.warning("could not record a notice's message", extra={
                "task_id": event.task_id, "error": type(exc).__name__})

    async def _drop_cancel_buttons(self, task_id: str) -> None:
        """The task ended: its receipt's Cancel button would do nothing any more."""
        try:
            receipts = await self.store.messages_of_task(task_id, RECEIPT)
        except Exception as exc:
            log.warning("could not find a receipt", extra={
                "task_id": task_id, "error": type(exc).__name__})
            return
        for chat, message_id in receipts:
            await self._unbutton(chat, message_id, task_id, tries=0)

    async def _retry_unbuttons(self) -> None:
        """Try again the buttons whose time has come (not in a chat waiting out a 429)."""
        now = self.clock()
        for (chat, message_id), pending in list(self._unbuttons.items()):
            if pending.due <= now and self._blocked_until.get(chat, 0.0) <= now:
                await self._unbutton(chat, message_id, pending.task_id, pending.tries)

    async def _unbutton(self, chat: int, message_id: int, task_id: str, tries: int) -> None:
        """One editMessageReplyMarkup; decided as a send is: a 429, a 5xx or a lost answer is
        tried again later (an edit is safe to repeat), a refusal (400: not modified or the
        message deleted, 403) leaves the button be."""
        error: BaseException | None = None
        try:
            await self.bot.edit_message_reply_markup(chat, message_id, reply_markup=None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        self._unbuttons.pop((chat, message_id), None)
        tries += 1
        verdict = decide(error, failures=tries, html=False, now=self.clock())
        extra = {"task_id": task_id, "chat_id": chat, "tries": tries,
                 "error": type(error).__name__, "reason": verdict.reason[:200]}
        if verdict.action == Action.DELIVERED or "not modified" in verdict.reason:
            return  # gone (a "not modified": an earlier try whose answer was lost removed it)
        if verdict.action in (Action.WAIT, Action.AMBIGUOUS) and tries < MAX_BUTTON_TRIES:
            self._unbuttons[(chat, message_id)] = _Unbutton(task_id, tries, verdict.until)
            log.info("receipt button not removed yet; trying again", extra=extra)
            return
        log.info("receipt button not removed", extra=extra)

    async def _settle(self, event: Event) -> None:
        await self.store.mark_event_delivered(event.id)
        self._failures.pop(event.id, None)
        self._sent_parts.pop(event.id, None)
        self._plain = {key for key in self._plain if key[0] != event.id}


def _extra(event: Event, chat: int, verdict: Decision) -> dict[str, Any]:
    return {
        "event_id": event.id, "kind": event.kind, "task_id": event.task_id, "chat_id": chat,
        "reason": verdict.reason[:200],
    }
