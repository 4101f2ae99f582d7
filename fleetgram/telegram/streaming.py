"""Show a growing answer in a Telegram chat by editing messages as the text arrives.

``StreamingReply`` keeps the whole text and, from a background flusher task, brings the chat up
to date at most once per ``min_interval``: the message being written is edited, and when the
text outgrows it (per ``split_for_telegram``, which is prefix-stable, so a full message never
changes again) that message gets its final edit and a new message is sent for the rest.

Telegram conduct: every call passes ``parse_mode`` (HTML) itself; "can't parse entities" falls
back to the plain text of that chunk; "message is not modified" is success; 429 is waited out
(``retry_after``) and retried, so no text is ever dropped; timeouts and network errors are
retried with backoff; 403 becomes ``ChatUnavailable``. A malformed answer ("Invalid server
response": PTB's ``TelegramError`` for a body that is not JSON) is retried like a network error.

Lost replies: when a sendMessage fails in a way that Telegram may have processed it (the
connection dropped after the request, a timeout, a malformed answer), the message is sent
again, and the message just before the new one is probed by editing it with exactly the same
content (editMessageText, https://core.telegram.org/bots/api#editmessagetext). Telegram
answers 400 "Bad Request: message is not modified: specified new message content and reply
markup are exactly the same as a current content and reply markup of the message" only when
text, entities and markup are identical, which proves it is our lost copy: it is deleted
(deleteMessage, https://core.telegram.org/bots/api#deletemessage: "Bots can delete outgoing
messages in private chats, groups, and supergroups", within 48 hours). "message can't be
edited" means a user's message: left alone. Message ids count per private chat, so the lost
copy is the id just before the resend unless the user wrote in between. The probe is only
made above ``known_floor`` (the newest message id known to be in the chat before this
reply), so an earlier message of ours is never touched.

The final text always reaches the chat: when the final edits keep failing, the text not yet
shown is sent as new plain-text messages.

Drafts (native streaming). In a private chat the growing text is shown with sendMessageDraft
instead of edits. What the Bot API documents
(https://core.telegram.org/bots/api/methods/sendmessagedraft.md, canonical
https://core.telegram.org/bots/api#sendmessagedraft; Bot API 9.3, open to every bot since 9.5):

- "stream a partial message to a user while the message is being generated. Note that the
  streamed draft is ephemeral and acts as a temporary 30-second preview - once the output is
  finalized, you must call sendMessage with the complete message to persist it in the user's
  chat." So the final text always goes out with sendMessage, and a draft left alone for 30 s
  disappears: while Claude is quiet the draft is written again every ``draft_keepalive``.
- ``chat_id``: "Unique identifier for the target private chat" (groups: 400
  "Bad Request: TEXTDRAFT_PEER_INVALID", as bots report it, e.g. nullclaw/nullclaw#626; groups
  therefore always use edits).
- ``draft_id``: "must be non-zero. Changes to drafts with the same identifier are animated.
  Otherwise, the draft is replaced without animation." One id per message-sized part.
- ``text``: "0-4096 characters after entities parsing. Pass an empty text to show a
  "Thinking..." placeholder"; ``parse_mode`` as for sendMessage (HTML, same "can't parse
  entities" errors, so the same plain-text fallback).
- ``can_stop`` (Bot API 10.x, "Pass True to show the user a button to stop further drafts", with
  a ``stopped_message_generation`` update) is not used: /cancel stays the way to stop.
- How clients show it (https://core.telegram.org/api/bots/ai, "Live response streaming"): as a
  normal message "always pinned to the bottom of the chat", one live draft per chat, deleted
  "message_typing_draft_ttl seconds after they're received, or when receiving a normal message
  within the same chat" -- a permanent part sent with sendMessage replaces the draft, and the
  rest is drafted on under the next id.
- Rate limits: the documentation gives no figure for drafts (nor lists them in the FAQ's
  limits, https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this, about
  one message per second per chat); drafts do get 429 + retry_after in the wild. Drafts are
  therefore spaced ``draft_interval`` (0.3 s) apart, the first text goes out at once, and a 429
  on a draft only postpones the next draft (it is never waited out inside finish: the final
  sendMessage supersedes it). Permanent messages keep the 1-per-``min_interval`` rule.

When a draft is refused (a server without the method: 404; "TEXTDRAFT_PEER_INVALID" or another
400 about drafts), the reply falls back to edits and the bot is remembered
(``drafts_refused``), so later replies of that bot do not try again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import telegram
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from .delivery import maybe_processed, retry_after_seconds
from .formatting import escape, markdown_to_html, utf16_len, visible_length, visible_text
from .splitting import DEFAULT_LIMIT, TELEGRAM_LIMIT, split_for_telegram

__all__ = [
    "ChatUnavailable",
    "StreamingReply",
    "drafts_refused",
    "forget_draft_refusals",
    "retry_after_seconds",
]

_LOG = logging.getLogger(__name__)
_T = TypeVar("_T")

PLACEHOLDER = "…"  # shown while there is no text yet
EMPTY = "(no text)"  # shown when a reply ends without any text
HEADER_MAX = 256  # UTF-16 units of the header line kept; longer headers are shortened
_CLOSER_ROOM = 5  # a chunk may carry an invisible closing fence; its plain form shows it
_NO_PREVIEW = telegram.LinkPreviewOptions(is_disabled=True)
DRAFT_INTERVAL = 0.3  # seconds between drafts (no documented figure; see the module docstring)
DRAFT_KEEPALIVE = 20.0  # a quiet draft is written again this often (clients drop it after 30 s)
_DRAFT_ID_MAX = 2**31 - 1

# Bots (by token) whose drafts Telegram refused: their later replies use edits at once.
_REFUSED: set[str] = set()


def drafts_refused(bot: telegram.Bot) -> bool:
    """Telegram refused this bot's drafts before (kept for the life of the process)."""
    return bot.token in _REFUSED


def forget_draft_refusals() -> None:
    """Try drafts again for every bot (tests; a server upgraded in the meantime)."""
    _REFUSED.clear()


class _DraftsRefused(Exception):
    """sendMessageDraft is not available for this chat or bot."""


def _refuses_drafts(error: TelegramError) -> bool:
    """A draft answer meaning "no drafts here": the method is missing (404, which PTB raises as
    InvalidToken) or a 400 about the peer or drafts. Entity errors are not refusals."""
    if isinstance(error, InvalidToken | EndPointNotFound):
        return True
    if not isinstance(error, BadRequest):
        return False
    reason = error.message.lower()
    if "can't parse entities" in reason:
        return False
    return any(word in reason for word in ("draft", "method", "peer_invalid", "not found"))


class ChatUnavailable(Exception):
    """Telegram answered 403: the user never opened this bot, or blocked it."""

    def __init__(self, chat_id: int, reason: str) -> None:
        super().__init__(f"chat {chat_id} is unavailable: {reason}")
        self.chat_id = chat_id
        self.reason = reason


@dataclass(frozen=True)
class _Render:
    """One message's content: as HTML, and as the plain text used when HTML is refused."""

    html: str
    plain: str


_MALFORMED = "invalid server response"


def _is_malformed(error: TelegramError) -> bool:
    """PTB's error for an answer that is not JSON (a proxy page, a body cut short)."""
    return type(error) is TelegramError and _MALFORMED in error.message.lower()


def _shows(html: str) -> bool:
    """The HTML shows something besides whitespace (Telegram trims whitespace)."""
    return bool(visible_text(html).strip())


def _shorten(text: str, units: int) -> str:
    if utf16_len(text) <= units:
        return text
    out: list[str] = []
    used = 1  # the ellipsis
    for ch in text:
        used += utf16_len(ch)
        if used > units:
            break
        out.append(ch)
    return "".join(out) + PLACEHOLDER


class StreamingReply:
    """A growing Markdown text shown in one chat, across as many messages as it needs."""

    network_retries = 4  # per API call, on TimedOut / NetworkError
    backoff_base = 0.5  # seconds before the first network retry, doubled after each
    backoff_max = 8.0
    final_attempts = 3  # whole final syncs tried when the network keeps failing
    retry_margin = 0.05  # added to retry_after: timers may fire a little early

    def __init__(
        self,
        bot: telegram.Bot,
        chat_id: int,
        *,
        header: str = "",
        min_interval: float = 1.0,
        limit: int = DEFAULT_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        known_floor: int | None = None,
        drafts: bool = True,
        draft_interval: float = DRAFT_INTERVAL,
        draft_keepalive: float = DRAFT_KEEPALIVE,
    ) -> None:
        self._bot = bot
        self.chat_id = chat_id
        self._header = _shorten(" ".join(header.split()), HEADER_MAX)
        self._min_interval = min_interval
        room = TELEGRAM_LIMIT - _CLOSER_ROOM
        if self._header:
            room -= utf16_len(self._header) + 1
        self._limit = min(limit, room)
        self._clock = clock
        # Newest message id in the chat known not to be a lost copy of ours (None: unknown).
        self.known_floor = known_floor
        self.lost_copies_deleted = 0
        self._doubted = 0  # sends given up on that may have reached the chat
        self.message_ids: list[int] = []
        self._parts: list[str] = []
        self._text = ""
        self._shown: list[_Render] = []
        self._plain: set[int] = set()  # messages whose HTML Telegram refused
        self._dirty = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._next_at = 0.0  # clock time before which the chat is not touched again
        self._started = False
        self._closed = False  # finish/abort began: no more text is taken
        self._done = False  # the final text is shown
        self._error: ChatUnavailable | None = None
        # Drafts: private chats only (a group's id is negative), unless refused before.
        self._drafting = drafts and chat_id > 0 and not drafts_refused(bot)
        self._draft_interval = draft_interval
        self._draft_keepalive = draft_keepalive
        self._draft_base = random.randint(1, _DRAFT_ID_MAX - 10_000)
        self._draft_shown: tuple[int, str] | None = None  # (draft_id, text) the client shows
        self._draft_at = -math.inf  # clock time of the last draft written
        self._not_before = 0.0  # drafts: clock time before which the flusher does not call

    # ------------------------------------------------------------------ public interface
    @property
    def text(self) -> str:
        """Everything appended so far."""
        if self._parts:
            self._text += "".join(self._parts)
            self._parts.clear()
        return self._text

    async def start(self) -> None:
        """Show the reply's start now -- in a private chat a draft (the header and "…", or
        "Thinking..." without a header), elsewhere the first message -- then flush in the
        background.

        Raises ``ChatUnavailable`` if Telegram answers 403; other errors once the retries
        are spent, after which ``start`` may be called again."""
        if self._started:
            return
        self._started = True
        first = self._compose(0, "", "", final=False)
        if self._drafting:
            try:
                async with self._lock:
                    await self._put_draft(0, first)
            except ChatUnavailable as error:
                self._error = error
                raise
            except _DraftsRefused:
                pass  # fell back to edits: the first message, as without drafts
            except RetryAfter:
                self._start_flusher()  # the placeholder is cosmetic: the text comes later
                return
            except BaseException:
                self._started = False
                raise
            else:
                self._not_before = 0.0  # the first text goes out as soon as it arrives
                self._start_flusher()
                return
        try:
            message = await self._deliver(None, first, plain=False)
        except ChatUnavailable as error:
            self._error = error
            raise
        except BaseException:
            self._started = False  # may be called again (Telegram failing for a while)
            raise
        self.message_ids.append(message.message_id)
        self._shown.append(first)
        self._next_at = self._clock() + self._min_interval
        self._start_flusher()

    def _start_flusher(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name=f"streaming-reply-{self.chat_id}")

    def append(self, delta: str) -> None:
        """Add text; returns at once. Ignored after ``finish`` or ``abort``."""
        if self._closed:
            _LOG.debug("chat %s: text appended after the reply was closed", self.chat_id)
            return
        if delta:
            self._parts.append(delta)
            self._dirty.set()

    async def finish(self, footer: str = "") -> list[int]:
        """Show the complete text (and ``footer`` after it) and return the message ids.

        Waits out flood control and retries network errors rather than lose the final text;
        raises ``ChatUnavailable`` on 403."""
        await self._stop_flusher()
        self._closed = True
        if self._error is not None:
            raise self._error
        if not self._done:
            await self._final_sync_or_resend(footer)
            self._done = True
        return list(self.message_ids)

    async def abort(self, note: str) -> None:
        """Stop streaming and show the text so far with ``note`` (e.g. "⏹ cancelled").

        Meant for clean-up paths: Telegram errors are logged, not raised."""
        await self._stop_flusher()
        self._closed = True
        if self._done or self._error is not None:
            return
        try:
            await self._final_sync_or_resend(note)
            self._done = True
        except (ChatUnavailable, TelegramError) as error:
            _LOG.warning("chat %s: could not show the aborted reply: %s", self.chat_id, error)

    # ------------------------------------------------------------------ flushing
    async def _flush_loop(self) -> None:
        while True:
            refresh = not await self._wait_dirty()
            delay = (self._not_before if self._drafting else self._next_at) - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            self._dirty.clear()
            sync = asyncio.ensure_future(self._sync(final=False, refresh=refresh))
            try:
                await asyncio.shield(sync)
            except asyncio.CancelledError:
                # finish/abort: let a call in flight land, or a message could be sent that
                # this object never learns about (and would send again).
                await asyncio.wait({sync})
                self._note_failure(sync)
                raise
            except ChatUnavailable as error:
                self._error = error
                return
            except Exception as error:  # keep streaming; the next flush tries again
                _LOG.warning("chat %s: flush failed: %r", self.chat_id, error)
                self._next_at = self._clock() + max(self._min_interval, self.backoff_base)
                self._not_before = self._next_at
                self._dirty.set()

    async def _wait_dirty(self) -> bool:
        """Wait for new text; False when, instead, the shown draft is due to be written again
        before the client drops it."""
        if not self._drafting or self._draft_shown is None:
            await self._dirty.wait()
            return True
        timeout = self._draft_at + self._draft_keepalive - self._clock()
        # Not asyncio.wait_for: on 3.11 it can swallow a cancel that meets the event being set,
        # and finish() would wait for a flusher that never stops.
        waiter = asyncio.ensure_future(self._dirty.wait())
        try:
            done, _ = await asyncio.wait({waiter}, timeout=max(timeout, 0.0))
        finally:
            waiter.cancel()
        return bool(done)

    def _note_failure(self, sync: asyncio.Future[None]) -> None:
        if sync.cancelled():
            return
        error = sync.exception()
        if isinstance(error, ChatUnavailable):
            self._error = error
        elif error is not None:
            _LOG.warning("chat %s: flush failed: %r", self.chat_id, error)

    async def _stop_flusher(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})  # the caller's own cancellation still propagates
        if not task.cancelled() and (error := task.exception()) is not None:
            _LOG.warning("chat %s: flusher ended with %r", self.chat_id, error)

    async def _final_sync_or_resend(self, footer: str) -> None:
        """The final edits; if they keep failing, the parts not yet shown as new plain-text
        messages (so a malformed answer or a dead message never loses the final text)."""
        try:
            await self._final_sync(footer)
            return
        except ChatUnavailable:
            raise
        except TelegramError as error:
            _LOG.warning("chat %s: final edit failed (%r); sending it anew", self.chat_id, error)
        renders = self._renders(final=True, footer=footer)
        async with self._lock:
            for index, render in enumerate(renders):
                if index < len(self._shown) and self._shown[index] == render:
                    continue
                message = await self._send(render.plain, None)
                if index < len(self.message_ids):
                    stale, self.message_ids[index] = self.message_ids[index], message.message_id
                    self._shown[index] = render
                    await self._delete_quietly(stale)
                else:
                    self.message_ids.append(message.message_id)
                    self._shown.append(render)
                self._plain.add(index)

    async def _delete_quietly(self, message_id: int) -> None:
        """Remove a message the final text replaced; if that fails, it only shows less."""
        try:
            await self._call(lambda: self._bot.delete_message(self.chat_id, message_id))
        except (ChatUnavailable, TelegramError) as error:
            _LOG.info("chat %s: could not delete replaced #%s: %r", self.chat_id, message_id,
                      error)

    async def _final_sync(self, footer: str) -> None:
        for attempt in range(1, self.final_attempts + 1):
            delay = self._next_at - self._clock()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self._sync(final=True, footer=footer)
                return
            except BadRequest:
                raise
            except TelegramError as error:
                # A garbled answer means Telegram (or a proxy) is up but its answers to edits are
                # unusable: sending the text anew beats waiting out more rounds of edits.
                if not isinstance(error, NetworkError) or attempt == self.final_attempts:
                    raise
                _LOG.warning("chat %s: final flush failed (%r), again", self.chat_id, error)
                self._next_at = self._clock() + self.backoff_max

    async def _sync(self, *, final: bool, footer: str = "", refresh: bool = False) -> None:
        """Bring the chat up to date: edit what changed, send what is new (at most one new
        message unless ``final``); while drafting, draft the part being written instead."""
        async with self._lock:
            if self._drafting and not final:
                try:
                    await self._sync_draft(refresh=refresh)
                    return
                except _DraftsRefused:
                    pass  # fell back: edits from here on
            await self._sync_edits(final=final, footer=footer)

    async def _sync_draft(self, *, refresh: bool) -> None:
        """Draft the first part not yet permanent; once that part is complete (the text has
        outgrown it), send it with sendMessage (which replaces the draft) when the chat's
        message allowance permits, and draft the next part under a new id."""
        renders = self._renders(final=False, footer="")
        index = len(self.message_ids)
        if index >= len(renders):
            return  # nothing visible past the permanent parts yet
        complete = index < len(renders) - 1  # the text outgrew this part: it never changes
        if complete and self._clock() >= self._next_at:
            message = await self._deliver(None, renders[index], plain=False, index=index)
            self.message_ids.append(message.message_id)
            self._shown.append(renders[index])
            self._next_at = self._clock() + self._min_interval
            self._draft_shown = None  # the message took the draft's place
            self._not_before = self._clock()
            self._dirty.set()  # the next part's draft, now
            return
        shown = (self._draft_id(index), self._draft_html(renders[index]))
        if refresh or self._draft_shown != shown:
            try:
                await self._put_draft(index, renders[index])
            except RetryAfter as error:
                # A lost draft is harmless: postpone the next one rather than wait here.
                wait = retry_after_seconds(error) + self.retry_margin
                _LOG.info("chat %s: flood control on drafts, next in %.1f s", self.chat_id, wait)
                self._not_before = self._clock() + wait
                self._dirty.set()
        if complete:  # its message waits for the chat's message allowance
            self._not_before = max(self._not_before, self._next_at)
            self._dirty.set()

    async def _sync_edits(self, *, final: bool, footer: str) -> None:
        """Edit what changed, send what is new (at most one new message unless ``final``)."""
        renders = self._renders(final=final, footer=footer)
        sent = False
        try:
            for index, render in enumerate(renders):
                if index < len(self.message_ids):
                    if self._shown[index] != render:
                        await self._edit(index, render)
                elif final or not sent:
                    message = await self._deliver(None, render, plain=False, index=index)
                    self.message_ids.append(message.message_id)
                    self._shown.append(render)
                    sent = True
                else:
                    self._dirty.set()  # more to send at the next flush
                    break
        finally:
            self._next_at = self._clock() + self._min_interval

    # ------------------------------------------------------------------ rendering
    def _renders(self, *, final: bool, footer: str) -> list[_Render]:
        chunks = split_for_telegram(self.text, self._limit) or [""]
        bodies = [(markdown_to_html(chunk), chunk) for chunk in chunks]
        # a trailing chunk with nothing visible (blank lines, a code fence just opened) gets
        # no message of its own -- unless it already has one
        while len(bodies) > max(1, len(self.message_ids)) and not _shows(bodies[-1][0]):
            bodies.pop()
        renders = [
            self._compose(index, body_html, body_plain, final=final)
            for index, (body_html, body_plain) in enumerate(bodies)
        ]
        footer = footer.strip()
        if final and footer:
            last_index, (body_html, body_plain) = len(bodies) - 1, bodies[-1]
            if _shows(body_html):
                body_html = f"{body_html}\n\n{escape(footer)}"
                body_plain = f"{body_plain}\n\n{footer}"
            else:
                body_html, body_plain = escape(footer), footer
            with_footer = self._compose(last_index, body_html, body_plain, final=True)
            if (
                visible_length(with_footer.html) <= TELEGRAM_LIMIT
                and utf16_len(with_footer.plain) <= TELEGRAM_LIMIT
            ):
                renders[-1] = with_footer
            else:
                renders.append(_Render(escape(footer), footer))
        return renders

    def _compose(self, index: int, body_html: str, body_plain: str, *, final: bool) -> _Render:
        if not _shows(body_html):
            body_html = body_plain = EMPTY if final else PLACEHOLDER
        if index == 0 and self._header:
            return _Render(
                f"<b>{escape(self._header)}</b>\n{body_html}", f"{self._header}\n{body_plain}"
            )
        return _Render(body_html, body_plain)

    # ------------------------------------------------------------------ drafts
    def _draft_id(self, index: int) -> int:
        return self._draft_base + index

    def _draft_html(self, render: _Render) -> str:
        """Nothing but the placeholder: an empty draft, which clients show as "Thinking..."."""
        return "" if render.plain == PLACEHOLDER else render.html

    async def _put_draft(self, index: int, render: _Render) -> None:
        """sendMessageDraft for part ``index`` (HTML, or plain text when Telegram cannot parse
        it). Raises _DraftsRefused (after falling back to edits), RetryAfter, ChatUnavailable."""
        draft_id = self._draft_id(index)
        html = self._draft_html(render)
        text, mode = (render.plain, None) if index in self._plain else (html, ParseMode.HTML)
        if not html:
            text, mode = "", None
        try:
            try:
                await self._call(self._draft_request(draft_id, text, mode), flood=False)
            except BadRequest as error:
                if mode is None or "can't parse entities" not in error.message.lower():
                    raise
                _LOG.warning("chat %s: Telegram refused our HTML in a draft (%s); plain text",
                             self.chat_id, error.message)
                self._plain.add(index)
                text = render.plain
                await self._call(self._draft_request(draft_id, text, None), flood=False)
        except (BadRequest, InvalidToken, EndPointNotFound) as error:
            if not _refuses_drafts(error):
                raise
            self._fall_back(error)
            raise _DraftsRefused(error.message) from error
        self._draft_shown = (draft_id, html)
        self._draft_at = self._clock()
        self._not_before = self._draft_at + self._draft_interval

    def _draft_request(
        self, draft_id: int, text: str, mode: str | None
    ) -> Callable[[], Awaitable[bool]]:
        async def request() -> bool:
            return await self._bot.send_message_draft(
                self.chat_id, draft_id, text, parse_mode=mode
            )
        return request

    def _fall_back(self, error: TelegramError) -> None:
        """Drafts refused: this reply goes on with edits, and so do the bot's later ones."""
        _LOG.warning("chat %s: drafts refused (%s); streaming with edits", self.chat_id,
                     error.message)
        self._drafting = False
        self._draft_shown = None
        _REFUSED.add(self._bot.token)

    # ------------------------------------------------------------------ Telegram calls
    async def _edit(self, index: int, render: _Render) -> None:
        message_id = self.message_ids[index]
        try:
            await self._deliver(message_id, render, plain=index in self._plain, index=index)
        except BadRequest as error:
            reason = error.message.lower()
            if "message is not modified" in reason:
                pass
            elif "message to edit not found" in reason or "message can't be edited" in reason:
                # deleted in the meantime: show this part anew, in a new message
                message = await self._deliver(None, render, plain=index in self._plain)
                self.message_ids[index] = message.message_id
            else:
                raise
        self._shown[index] = render

    async def _deliver(
        self, message_id: int | None, render: _Render, *, plain: bool, index: int | None = None
    ) -> telegram.Message:
        """Send (``message_id`` None) or edit one message, as HTML or, if Telegram cannot parse
        that, as plain text."""
        if not plain:
            try:
                return await self._put(message_id, render.html, ParseMode.HTML)
            except BadRequest as error:
                if "can't parse entities" not in error.message.lower():
                    raise
                _LOG.warning(
                    "chat %s: Telegram refused our HTML (%s); sending plain text",
                    self.chat_id,
                    error.message,
                )
                if index is not None:
                    self._plain.add(index)
        return await self._put(message_id, render.plain, None)

    async def _send(self, text: str, mode: str | None) -> telegram.Message:
        """sendMessage, retried; after an ambiguous failure, remove the lost copy (if any)."""
        doubts: list[TelegramError] = []

        async def send() -> telegram.Message:
            return await self._bot.send_message(
                self.chat_id, text, parse_mode=mode, link_preview_options=_NO_PREVIEW
            )

        try:
            message = await self._call(send, doubts=doubts)
        except TelegramError:
            # Given up, but copies may be in the chat: the next successful send probes for them.
            self._doubted += len(doubts)
            raise
        lost = len(doubts) + self._doubted
        self._doubted = 0
        # Each ambiguous send may have left one copy, just below the one that got through
        # (the user may have written in between: their messages are never edited).
        for candidate in range(message.message_id - 1, message.message_id - 1 - lost, -1):
            await self._remove_lost_copy(candidate, text, mode)
        self.known_floor = max(self.known_floor or 0, message.message_id)
        return message

    async def _remove_lost_copy(self, message_id: int, text: str, mode: str | None) -> None:
        """Probe `message_id` with exactly the content we sent: "not modified" proves it is
        our copy whose answer was lost; delete it. Anything else: not ours, leave it."""
        if self.known_floor is None or message_id <= self.known_floor:
            # Without a floor the id below could be an older message of ours with other text,
            # which the probe would overwrite: a stale copy is the lesser harm.
            return
        try:
            await self._call(lambda: self._bot.edit_message_text(
                text, chat_id=self.chat_id, message_id=message_id, parse_mode=mode,
                link_preview_options=_NO_PREVIEW,
            ))
        except BadRequest as error:
            if "message is not modified" not in error.message.lower():
                return  # a user's message, or gone: not ours to touch
            try:
                await self._call(lambda: self._bot.delete_message(self.chat_id, message_id))
            except TelegramError as delete_error:
                _LOG.warning("chat %s: could not delete lost copy #%s: %r", self.chat_id,
                             message_id, delete_error)
                return
            self.lost_copies_deleted += 1
            _LOG.info("chat %s: deleted #%s, a copy whose reply was lost", self.chat_id,
                      message_id)
        except TelegramError as error:
            _LOG.warning("chat %s: could not probe #%s: %r", self.chat_id, message_id, error)
        else:
            # The edit went through: it was a message of ours we did not know of (its earlier
            # text is lost). Only possible without a known floor; logged for the record.
            _LOG.warning("chat %s: probe edited #%s, which was not a lost copy",
                         self.chat_id, message_id)

    async def _put(self, message_id: int | None, text: str, mode: str | None) -> telegram.Message:
        """Send or edit one message (retried, see ``_call``)."""
        if message_id is None:
            return await self._send(text, mode)
        result = await self._call(lambda: self._bot.edit_message_text(
            text,
            chat_id=self.chat_id,
            message_id=message_id,
            parse_mode=mode,
            link_preview_options=_NO_PREVIEW,
        ))
        if not isinstance(result, telegram.Message):  # only for inline messages
            raise TypeError(f"editMessageText answered {result!r}")
        return result

    async def _call(
        self,
        request: Callable[[], Awaitable[_T]],
        *,
        doubts: list[TelegramError] | None = None,
        flood: bool = True,
    ) -> _T:
        """One API call with Telegram's flood control and flaky networks taken care of.
        Failures after which Telegram may have done the call anyway go into `doubts`.
        ``flood`` False: a 429 is raised (RetryAfter) rather than waited out."""
        failures = 0
        while True:
            try:
                return await request()
            except RetryAfter as error:
                if not flood:
                    raise
                wait = retry_after_seconds(error) + self.retry_margin
                _LOG.info("chat %s: flood control, waiting %.1f s", self.chat_id, wait)
                await asyncio.sleep(wait)
            except Forbidden as error:
                raise ChatUnavailable(self.chat_id, error.message) from error
            except BadRequest:
                raise
            except TelegramError as error:  # TimedOut, NetworkError, a malformed answer
                if not isinstance(error, NetworkError) and not _is_malformed(error):
                    raise
                if doubts is not None and maybe_processed(error):
                    doubts.append(error)
                failures += 1
                if failures > self.network_retries:
                    raise
                wait = min(self.backoff_base * 2 ** (failures - 1), self.backoff_max)
                _LOG.info("chat %s: %r, retrying in %.1f s", self.chat_id, error, wait)
                await asyncio.sleep(wait)
