"""A faithful local emulator of the Telegram Bot API, for driving the real python-telegram-bot.

Point a bot at it with::

    emu = TelegramEmulator()
    await emu.start()
    emu.add_bot("123:ABC", "master_bot")
    app = (ApplicationBuilder().token("123:ABC")
           .base_url(f"{emu.url}/bot").base_file_url(f"{emu.url}/file/bot").build())

Simulated people (``emu.add_user``) type into private chats, press inline buttons and read the
chat as a Telegram client would show it. The server follows the Bot API's wire format (form,
multipart or JSON requests; ``{"ok": ..., "result"/"description"...}`` answers with the HTTP
status equal to ``error_code``) and the rules that bite in production: text limits measured
after entity parsing in UTF-16 units, the HTML / MarkdownV2 parsers of tdlib (error texts
included), "message is not modified", per-chat and per-bot flood control (429 + retry_after),
403 for users who never opened the bot, long polling with offset confirmation and 409 conflicts.
Error descriptions are those of tdlib/telegram-bot-api (``Client.cpp``, ``MessageEntity.cpp``).

For tests and debugging: ``calls`` records every request (``Call.status`` is 0 while a long
poll waits, 499 when its client went away; ``Call.fault`` names the chaos that hit it);
``bot_log(bot)`` narrates a bot's calls and its users' actions; ``fail_next`` injects errors;
``wait_until_polling``, ``pending_updates``, ``callback_answer``, ``SimUser.send_document``,
``send_photo`` / ``send_voice`` / ``send_sticker``, ``edit`` (an ``edited_message`` update),
``send_in_group`` (with ``group_messages`` to read the group), ``press_raw`` (callback data no
button carries), ``SimUser.delete`` (a message deleted for both sides) and ``SimUser.block`` go
beyond the basics.

Files: ``sendDocument`` / ``sendPhoto`` (upload or file_id), ``getFile`` and the
``/file/bot<token>/<path>`` download route, with the hosted Bot API's limits
(https://core.telegram.org/bots/api#sending-files): getFile refuses files over 20 MB, uploads
over 50 MB get the front end's 413, photos must be at most 10 MB with width + height <= 10000
and a ratio <= 20, captions 0-1024 characters. ``file_bytes(file_id)`` reads what a bot sent
(``ChatMessage.document`` / ``ChatMessage.photo`` carry the file_ids).

Chaos, as the real service misbehaves (see each method): ``fail_for`` (the front end answers
5xx for a while), ``flood`` (a 429 storm), ``lose_reply_next`` (processed, but the connection
drops before the answer) and ``malformed_next`` (HTTP 200 with a body that is not JSON).
Time (flood control, long polls, ``Call.at``) is the event loop's clock, ``loop.time()``.

Drafts (``sendMessageDraft``, https://core.telegram.org/bots/api#sendmessagedraft, Bot API 9.3;
open to all bots since 9.5): "stream a partial message to a user while the message is being
generated. Note that the streamed draft is ephemeral and acts as a temporary 30-second preview -
once the output is finalized, you must call sendMessage with the complete message to persist it"
(https://core.telegram.org/bots/api/methods/sendmessagedraft.md). ``chat_id`` is a "target
private chat"; ``draft_id`` "must be non-zero. Changes to drafts with the same identifier are
animated. Otherwise, the draft is replaced without animation"; ``text`` is "0-4096 characters
after entities parsing. Pass an empty text to show a "Thinking..." placeholder". How clients show
it (https://core.telegram.org/api/bots/ai, "Live response streaming"): "rendered as a normal
message, always pinned to the bottom of the chat", "deleted automatically by graphical clients
message_typing_draft_ttl seconds after they're received, or when receiving a normal message within
the same chat", and a draft with another id "will replace any previous live draft": one draft per
chat. So here: a draft is no message (``SimUser.chat`` never lists it); ``SimUser.visible_draft``
is what the client shows now (None, the text, or "Thinking..."), gone ``draft_ttl`` seconds
(30 by default) after the bot's last write or at the bot's next message in the chat;
``SimUser.draft_log`` lists every accepted draft write with its time. The docs give no rate
limit for drafts: each private chat has a draft allowance of its own (``draft_rate`` per second,
``draft_burst`` at once; 429 + retry_after past it), apart from the messages' one.
``drafts_supported=False`` answers like a server without the method (404 "Not Found").
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import json
import logging
import math
import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["Call", "ChatMessage", "DraftUpdate", "SimUser", "TelegramEmulator"]

_LOG = logging.getLogger("fleetgram.emulators.telegram_api")

_NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are "
    "exactly the same as a current content and reply markup of the message"
)
_CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
# How form fields are decoded (the Bot API sends everything as strings; these are typed).
_JSON_FIELDS = frozenset(
    "reply_markup reply_parameters link_preview_options allowed_updates commands scope "
    "entities caption_entities".split()
)
_INT_FIELDS = frozenset(
    "offset limit timeout message_id reply_to_message_id cache_time message_thread_id "
    "draft_id user_id".split()
)
_BOOL_FIELDS = frozenset(
    "disable_notification protect_content allow_sending_without_reply show_alert "
    "drop_pending_updates disable_web_page_preview disable_content_type_detection can_stop "
    "keep_on_stop".split()
)
_BUTTON_ACTIONS = frozenset(
    "url callback_data callback_game pay switch_inline_query switch_inline_query_current_chat "
    "switch_inline_query_chosen_chat login_url web_app copy_text".split()
)
# What a 200 that is not the Bot API's answer looks like (a proxy's page; see malformed_next).
_PROXY_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Loading...</title></head>"
    "<body><p>Please wait.</p></body></html>\n"
)
# Update types a bot gets when allowed_updates is empty (all but these three).
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
_CHAT_ACTIONS = frozenset(
    "typing upload_photo record_video upload_video record_voice upload_voice upload_document "
    "choose_sticker find_location record_video_note upload_video_note cancel record_audio "
    "upload_audio pick_up_location".split()
)
# File size limits of the hosted Bot API (https://core.telegram.org/bots/api#sending-files,
# #sendphoto, #senddocument, #getfile): "Post the file using multipart/form-data ... 10 MB max
# size for photos, 50 MB for other files"; getFile: "bots can download files of up to 20MB in
# size"; sendPhoto: "The photo's width and height must not exceed 10000 in total. Width and
# height ratio must be at most 20."
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
MAX_PHOTO_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_PHOTO_SIDES = 10000
MAX_PHOTO_RATIO = 20
# The sizes Telegram makes of a photo (the long side, px); the largest kept is capped at 2560.
_PHOTO_STEPS = (90, 320, 800, 1280)
_PHOTO_MAX_SIDE = 2560
# What a stored file is, by the folder of its file_path (for "can't use file of type X as Y").
_FILE_TYPES = {"documents": "Document", "photos": "Photo", "voice": "Voice", "stickers": "Sticker"}


class ApiError(Exception):
    """An error answer of the Bot API."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.retry_after = code, description, retry_after

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


@dataclass
class Call:
    """One request to the API, recorded when it arrives; status/response filled when answered."""

    token: str
    method: str
    params: dict[str, Any]
    at: float
    status: int = 0
    response: dict[str, Any] | None = None
    # The chaos that hit the call: "outage" / "flood" (not processed), "lost_reply" (processed,
    # the answer never left), "malformed" (the answer was not JSON); None for a normal call.
    fault: str | None = None

    def __repr__(self) -> str:
        shown = {
            k: (v if len(repr(v)) < 60 else repr(v)[:57] + "...") for k, v in self.params.items()
        }
        fault = f" [{self.fault}]" if self.fault else ""
        return f"Call({self.method} -> {self.status or 'pending'}{fault} {shown})"


@dataclass
class ChatMessage:
    """A message as the user's Telegram client shows it (a snapshot)."""

    message_id: int
    from_bot: bool
    text: str
    raw_text: str
    parse_mode: str | None
    reply_markup: dict[str, Any] | None
    edits: int
    edit_history: list[str]
    date: float
    document: dict[str, Any] | None
    entities: list[dict[str, Any]] = field(default_factory=list)
    reply_to: int | None = None
    media: dict[str, Any] | None = None
    sender_id: int | None = None  # who sent it (a group has many senders)

    @property
    def photo(self) -> list[dict[str, Any]] | None:
        """The PhotoSize array of a photo message (smallest first), None for other messages;
        ``TelegramEmulator.file_bytes(sizes[-1]["file_id"])`` reads what was sent."""
        return (self.media or {}).get("photo")

    def buttons(self) -> list[tuple[str, str]]:
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [
            (b.get("text", ""), b["callback_data"])
            for row in rows
            for b in row
            if "callback_data" in b
        ]

    def __repr__(self) -> str:
        who = "bot" if self.from_bot else "user"
        extra = f" buttons={self.buttons()}" if self.buttons() else ""
        extra += f" edits={self.edits}" if self.edits else ""
        extra += f" document={self.document['file_name']!r}" if self.document else ""
        extra += f" {'/'.join(self.media)}" if self.media else ""
        return f"ChatMessage(#{self.message_id} {who}: {self.text[:80]!r}{extra})"


THINKING = "Thinking..."  # what a client shows for a draft with empty text


@dataclass(frozen=True)
class DraftUpdate:
    """One accepted sendMessageDraft: when (the event loop's clock), which draft, what it shows
    (``THINKING`` for empty text)."""

    at: float
    draft_id: int
    text: str
    parse_mode: str | None
    entities: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------- text parsing
def _u16(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _is_space(c: str) -> bool:  # tdlib's is_space: also true for the terminating NUL
    return c in " \t\r\n\0\v\f"


def _entities_error(detail: str) -> ApiError:
    return _bad(f"can't parse entities: {detail}")


def _checked_link(url: str) -> str:
    url = url.strip()
    if not url or any(c.isspace() for c in url):
        return ""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url):
        return url
    return "http://" + url


def _decode_html_entity(s: str, pos: int) -> tuple[str, int] | None:
    """tdlib's decode_html_entity: &lt; &gt; &amp; &quot; and numeric; None if not an entity."""
    n = len(s)

    def ch(j: int) -> str:
        return s[j] if j < n else "\0"

    end, res = pos + 1, 0
    if ch(pos + 1) == "#":
        end += 1
        if ch(pos + 2) == "x":
            end += 1
            while ch(end) in "0123456789abcdefABCDEF" and ch(end) != "\0":
                res, end = res * 16 + int(ch(end), 16), end + 1
        else:
            while ch(end).isascii() and ch(end).isdigit():
                res, end = res * 10 + int(ch(end)), end + 1
        if res == 0 or res >= 0x10FFFF or end - pos >= 10:
            return None
        decoded = chr(res)
    else:
        while ch(end).isascii() and ch(end).isalpha():
            end += 1
        named = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}.get(s[pos + 1 : end])
        if named is None:
            return None
        decoded = named
    return decoded, end + 1 if ch(end) == ";" else end


_HTML_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_SIMPLE_TAGS = {
    "i": "italic",
    "em": "italic",
    "b": "bold",
    "strong": "bold",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "u": "underline",
    "ins": "underline",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}


def _parse_html(s: str, users: dict[int, dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """A port of tdlib's parse_html (td/telegram/MessageEntity.cpp), same error texts."""
    n = len(s)

    def ch(j: int) -> str:
        return s[j] if j < n else "\0"

    def fail(detail: str) -> ApiError:
        return _entities_error(detail)

    out: list[str] = []
    u16 = 0
    entities: list[dict[str, Any]] = []
    nested: list[tuple[str, str, int, int]] = []  # tag, argument, utf16 offset, out index
    i = 0
    while i < n:
        c = s[i]
        if c == "&" and (decoded := _decode_html_entity(s, i)) is not None:
            out.append(decoded[0])
            u16 += _u16(decoded[0])
            i = decoded[1]
            continue
        if c != "<":
            out.append(c)
            u16 += _u16(c)
            i += 1
            continue
        begin = i
        i += 1
        if ch(i) != "/":
            while not _is_space(ch(i)) and ch(i) != ">":
                i += 1
            if i >= n:
                raise fail(f"Unclosed start tag at byte offset {_byte_offset(s, begin)}")
            tag = s[begin + 1 : i].lower()
            if tag not in _HTML_TAGS:
                raise fail(f'Unsupported start tag "{tag}" at byte offset {_byte_offset(s, begin)}')
            argument = ""
            while ch(i) != ">":
                while i < n and _is_space(ch(i)):
                    i += 1
                if ch(i) == ">":
                    break
                attr_begin = i
                while not _is_space(ch(i)) and ch(i) not in "=>/\"'":
                    i += 1
                name = s[attr_begin:i]
                if not name:
                    raise fail(
                        f'Empty attribute name in the tag "{tag}" at byte offset '
                        f"{_byte_offset(s, begin)}"
                    )
                while i < n and _is_space(ch(i)):
                    i += 1
                if ch(i) != "=":
                    if i >= n:
                        raise fail(
                            f'Unclosed start tag "{tag}" at byte offset {_byte_offset(s, begin)}'
                        )
                    if tag == "blockquote" and name == "expandable":
                        argument = "1"
                    continue
                i += 1
                while i < n and _is_space(ch(i)):
                    i += 1
                if i >= n:
                    raise fail(
                        f'Unclosed start tag "{tag}" at byte offset {_byte_offset(s, begin)}'
                    )
                if ch(i) not in "'\"":
                    token_begin = i
                    while (ch(i).isascii() and ch(i).isalnum()) or ch(i) in ".-":
                        i += 1
                    value = s[token_begin:i].lower()
                    if not _is_space(ch(i)) and ch(i) != ">":
                        raise fail(
                            f"Unexpected end of name token at byte offset "
                            f"{_byte_offset(s, token_begin)}"
                        )
                else:
                    quote, buf = s[i], []
                    i += 1
                    while i < n and s[i] != quote:
                        if s[i] == "&" and (dec := _decode_html_entity(s, i)) is not None:
                            buf.append(dec[0])
                            i = dec[1]
                            continue
                        buf.append(s[i])
                        i += 1
                    if ch(i) == quote:
                        i += 1
                    value = "".join(buf)
                if i >= n:
                    raise fail(f"Unclosed start tag at byte offset {_byte_offset(s, begin)}")
                if (tag, name) in (("a", "href"), ("tg-emoji", "emoji-id")):
                    argument = value
                elif tag == "code" and name == "class" and value.startswith("language-"):
                    argument = value[9:]
                elif tag == "span" and name == "class" and value.startswith("tg-"):
                    argument = value[3:]
                elif tag == "blockquote" and name == "expandable":
                    argument = "1"
            if tag == "span" and argument != "spoiler":
                raise fail(
                    f'Tag "span" must have class "tg-spoiler" at byte offset '
                    f"{_byte_offset(s, begin)}"
                )
            nested.append((tag, argument, u16, len(out)))
        else:
            if not nested:
                raise fail(f"Unexpected end tag at byte offset {_byte_offset(s, begin)}")
            while not _is_space(ch(i)) and ch(i) != ">":
                i += 1
            end_tag = s[begin + 2 : i].lower()
            while i < n and _is_space(ch(i)):
                i += 1
            if ch(i) != ">":
                raise fail(f"Unclosed end tag at byte offset {_byte_offset(s, begin)}")
            tag, argument, offset, out_begin = nested[-1]
            if end_tag and end_tag != tag:
                raise fail(
                    f"Unmatched end tag at byte offset {_byte_offset(s, begin)}, "
                    f'expected "</{tag}>", found "</{end_tag}>"'
                )
            length = u16 - offset
            if length > 0:
                entity: dict[str, Any] = {"offset": offset, "length": length}
                last = entities[-1] if entities else None
                same_span = last is not None and (last["offset"], last["length"]) == (
                    offset,
                    length,
                )
                if tag in _SIMPLE_TAGS:
                    entity["type"] = _SIMPLE_TAGS[tag]
                elif tag == "tg-emoji":
                    if not argument.isdigit() or int(argument) == 0:
                        raise _bad(
                            "can't parse entities: Invalid custom emoji identifier specified"
                        )
                    entity.update(type="custom_emoji", custom_emoji_id=argument)
                elif tag == "a":
                    url = argument or "".join(out[out_begin:])
                    mention = re.fullmatch(r"tg://user\?id=(\d+)", url)
                    if mention and int(mention.group(1)) in users:
                        entity.update(type="text_mention", user=users[int(mention.group(1))])
                    elif checked := _checked_link(url):
                        entity.update(type="text_link", url=checked)
                elif tag == "pre":
                    if (
                        same_span
                        and last is not None
                        and last["type"] == "code"
                        and last.get("language")
                    ):
                        last["type"] = "pre"
                    else:
                        entity["type"] = "pre"
                elif tag == "code":
                    if same_span and last is not None and last["type"] == "pre" and argument:
                        last["language"] = argument
                    else:
                        entity["type"] = "code"
                        if argument:
                            entity["language"] = argument
                else:
                    entity["type"] = "expandable_blockquote" if argument else "blockquote"
                if "type" in entity:
                    entities.append(entity)
            nested.pop()
        i += 1
    if nested:
        raise fail(f'Can\'t find end tag corresponding to start tag "{nested[-1][0]}"')
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    text = "".join(out)
    try:
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        raise _entities_error(
            "Text contains invalid Unicode characters after decoding HTML entities, check for "
            "unmatched surrogate code units"
        ) from None
    return text, entities


_MD2_TYPE_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
    "blockquote": "BlockQuote",
}


def _parse_markdown_v2(s: str) -> tuple[str, list[dict[str, Any]]]:
    """A port of tdlib's parse_markdown_v2 (without link validation), same error texts."""
    n = len(s)

    def ch(j: int) -> str:
        return s[j] if j < n else "\0"

    def reserved(c: str) -> ApiError:
        return _entities_error(
            f"Character '{c}' is reserved and must be escaped with the preceding '\\'"
        )

    def unclosed(kind: str, at: int) -> ApiError:
        return _entities_error(
            f"Can't find end of {_MD2_TYPE_NAMES[kind]} entity at byte offset {_byte_offset(s, at)}"
        )

    def read_url(i: int) -> tuple[str, int]:
        begin, url = i, []
        while i < n and s[i] != ")":
            if s[i] == "\\" and 0 < ord(ch(i + 1)) <= 126:
                url.append(s[i + 1])
                i += 2
                continue
            url.append(s[i])
            i += 1
        if ch(i) != ")":
            raise _entities_error(
                f"Can't find end of a URL at byte offset {_byte_offset(s, begin)}"
            )
        return "".join(url), i

    out: list[str] = []
    u16 = 0
    entities: list[dict[str, Any]] = []
    nested: list[dict[str, Any]] = []
    have_blockquote = False
    i = 0
    while i < n:
        c = s[i]
        if c == "\\" and 0 < ord(ch(i + 1)) <= 126:
            out.append(s[i + 1])
            u16 += 1
            i += 2
            continue
        special = (
            "`" if nested and nested[-1]["type"] in ("code", "pre") else "_*[]()~`>#+-=|{}.!\n"
        )
        if c not in special:
            out.append(c)
            u16 += _u16(c)
            i += 1
            continue
        is_end = False
        if nested:
            top = nested[-1]["type"]
            if have_blockquote and c == "\n" and (i + 1 == n or s[i + 1] != ">"):
                is_end = True
            else:
                is_end = {
                    "bold": c == "*",
                    "italic": c == "_" and ch(i + 1) != "_",
                    "code": c == "`",
                    "pre": c == "`" and ch(i + 1) == "`" and ch(i + 2) == "`",
                    "text_link": c == "]",
                    "underline": c == "_" and ch(i + 1) == "_",
                    "strikethrough": c == "~",
                    "spoiler": c == "|" and ch(i + 1) == "|",
                    "custom_emoji": c == "]",
                    "blockquote": False,
                }[top]
        if not is_end:
            kind: str | None
            argument, start = "", i
            if c == "_":
                kind = "underline" if ch(i + 1) == "_" else "italic"
                i += 1 if kind == "underline" else 0
            elif c == "*":
                kind = "bold"
            elif c == "~":
                kind = "strikethrough"
            elif c == "|":
                if ch(i + 1) != "|":
                    raise reserved(c)
                kind, i = "spoiler", i + 1
            elif c == "[":
                kind = "text_link"
            elif c == "`":
                kind = "code"
                if ch(i + 1) == "`" and ch(i + 2) == "`":
                    kind, i = "pre", i + 3
                    lang_end = i
                    while not _is_space(ch(lang_end)) and ch(lang_end) != "`":
                        lang_end += 1
                    if i != lang_end and lang_end < n and s[lang_end] != "`":
                        argument, i = s[i:lang_end], lang_end
                    if ch(i) in "\r\n":
                        i += 2 if ch(i + 1) in "\r\n" and ch(i) != ch(i + 1) else 1
                    i -= 1
            elif c == "!":
                if ch(i + 1) != "[":
                    raise reserved(c)
                kind, i = "custom_emoji", i + 1
            elif c == "\n":
                out.append("\n")
                u16 += 1
                kind = None
                if ch(i + 1) == ">":
                    i += 1
                    if not have_blockquote:
                        kind, have_blockquote = "blockquote", True
            elif c == ">" and i == 0:
                kind, have_blockquote = "blockquote", True
            else:
                raise reserved(c)
            if kind is not None:
                nested.append(
                    {
                        "type": kind,
                        "argument": argument,
                        "offset": u16,
                        "at": start,
                        "out": len(out),
                    }
                )
            i += 1
            continue
        top_entity = nested[-1]
        kind = top_entity["type"]
        if c == "\n" and kind != "blockquote":
            raise unclosed(kind, top_entity["at"])
        entity: dict[str, Any] = {"type": kind, "offset": top_entity["offset"]}
        skip = u16 == top_entity["offset"]
        if kind in ("underline", "spoiler"):
            i += 1
        elif kind == "pre":
            i += 2
            if top_entity["argument"]:
                entity["language"] = top_entity["argument"]
        elif kind == "text_link":
            if ch(i + 1) != "(":
                url = "".join(out[top_entity["out"] :])
            else:
                url, i = read_url(i + 2)
            url = _checked_link(url)
            skip = skip or not url
            entity["url"] = url
        elif kind == "custom_emoji":
            if ch(i + 1) != "(":
                raise _entities_error("Custom emoji entity must contain a tg://emoji URL")
            url, i = read_url(i + 2)
            emoji = re.fullmatch(r"tg://emoji\?id=(\d+)", url)
            if not emoji:
                raise _entities_error("Invalid custom emoji URL specified")
            entity["custom_emoji_id"] = emoji.group(1)
        elif kind == "blockquote":
            have_blockquote = False
            out.append(s[i])
            u16 += 1
        if not skip:
            entity["length"] = u16 - entity["offset"]
            entities.append(entity)
        nested.pop()
        i += 1
    if have_blockquote and nested and nested[-1]["type"] == "blockquote":
        top_entity = nested.pop()
        if u16 != top_entity["offset"]:
            entities.append(
                {
                    "type": "blockquote",
                    "offset": top_entity["offset"],
                    "length": u16 - top_entity["offset"],
                }
            )
    if nested:
        raise unclosed(nested[-1]["type"], nested[-1]["at"])
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _parse_markdown_v1(s: str) -> tuple[str, list[dict[str, Any]]]:
    """A port of tdlib's legacy parse_markdown ("Markdown")."""
    n, out, u16, entities, i = len(s), [], 0, [], 0
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in "_*`[":
            out.append(s[i + 1])
            u16, i = u16 + 1, i + 2
            continue
        if c not in "_*`[":
            out.append(c)
            u16, i = u16 + _u16(c), i + 1
            continue
        begin, end_char, is_pre, language = i, "]" if c == "[" else c, False, ""
        i += 1
        if c == "`" and s[i : i + 2] == "``":
            i, is_pre = i + 2, True
            lang_end = i
            while lang_end < n and not _is_space(s[lang_end]) and s[lang_end] != "`":
                lang_end += 1
            if i != lang_end and lang_end < n and s[lang_end] != "`":
                language, i = s[i:lang_end], lang_end
            if i < n and s[i] in "\r\n":
                i += 2 if i + 1 < n and s[i + 1] in "\r\n" and s[i] != s[i + 1] else 1
        offset = u16
        while i < n and (s[i] != end_char or (is_pre and s[i + 1 : i + 3] != "``")):
            out.append(s[i])
            u16, i = u16 + _u16(s[i]), i + 1
        if i == n:
            raise _entities_error(
                f"Can't find end of the entity starting at byte offset {_byte_offset(s, begin)}"
            )
        if u16 != offset:
            entity: dict[str, Any] = {"offset": offset, "length": u16 - offset}
            if c == "[":
                url = s[begin + 1 : i]
                if i + 1 < n and s[i + 1] == "(":
                    close = s.find(")", i + 2)
                    url, i = (s[i + 2 : close], close) if close >= 0 else (s[i + 2 :], n)
                if checked := _checked_link(url):
                    entities.append({**entity, "type": "text_link", "url": checked})
            elif c == "`":
                kind = "pre" if is_pre else "code"
                entities.append(
                    {**entity, "type": kind, **({"language": language} if language else {})}
                )
            else:
                entities.append({**entity, "type": "italic" if c == "_" else "bold"})
        i += 3 if is_pre else 1
    return "".join(out), entities


_AUTO_PATTERNS = (
    (
        "bot_command",
        re.compile(r"(?<![\w/<>])/[a-zA-Z0-9_]{1,64}(?:@[a-zA-Z0-9_]{3,32})?(?![\w/<>])"),
    ),
    ("mention", re.compile(r"(?<!\w)@[a-zA-Z0-9_]{2,32}(?!\w)")),
    ("hashtag", re.compile(r"(?<![\w#])#\w*[^\W\d_]\w*")),
    ("email", re.compile(r"(?<![\w.+-])[\w.+-]+@[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*\.[a-zA-Z]{2,}")),
    ("url", re.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]'}]")),
)
_OPAQUE = frozenset({"code", "pre", "text_link", "text_mention", "custom_emoji"})


def _auto_entities(text: str, given: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities Telegram detects by itself (commands, mentions, hashtags, e-mails, URLs)."""
    found: list[dict[str, Any]] = []
    taken = [(e["offset"], e["offset"] + e["length"]) for e in given if e["type"] in _OPAQUE]
    for kind, pattern in _AUTO_PATTERNS:
        for match in pattern.finditer(text):
            start = _u16(text[: match.start()])
            end = start + _u16(match.group())
            if any(a < end and start < b for a, b in taken):
                continue
            taken.append((start, end))
            found.append({"type": kind, "offset": start, "length": end - start})
    return sorted(given + found, key=lambda e: (e["offset"], -e["length"]))


def _strip_text(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Trim surrounding whitespace as Telegram does, moving and clipping the entities."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead, size = _u16(text[: len(text) - len(text.lstrip())]), _u16(stripped)
    kept = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, size)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


# ----------------------------------------------------------------------------- images
def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from a PNG, JPEG, GIF or WebP header; None if it is none of them
    (Telegram then answers IMAGE_PROCESS_FAILED, as it cannot decode the photo)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return struct.unpack("<HH", data[6:10])
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8 " and len(data) >= 30:
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF
        if chunk == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X" and len(data) >= 30:
            return (int.from_bytes(data[24:27], "little") + 1,
                    int.from_bytes(data[27:30], "little") + 1)
        return None
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(data):  # JPEG: walk the segments to the frame header (SOFn)
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _photo_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """The (width, height) of the sizes Telegram keeps of a photo, smallest first: scaled
    copies with long sides of 90/320/800/1280 px below the original, then the original capped
    at 2560 px (the ``s``/``m``/``x``/``y``/``w`` thumbnails of the MTProto API)."""
    long = max(width, height, 1)
    steps = [s for s in _PHOTO_STEPS if s < long] + [min(long, _PHOTO_MAX_SIDE)]
    return [
        (max(1, round(width * step / long)), max(1, round(height * step / long))) for step in steps
    ]


# ----------------------------------------------------------------------------- state
@dataclass
class _Message:
    message_id: int
    from_bot: bool
    text: str
    raw_text: str
    parse_mode: str | None
    entities: list[dict[str, Any]]
    reply_markup: dict[str, Any] | None
    date: float
    document: dict[str, Any] | None = None
    reply_to: int | None = None
    edits: int = 0
    edit_history: list[str] = field(default_factory=list)
    edit_date: float | None = None
    deleted: bool = False
    # What a Message carries besides text (https://core.telegram.org/bots/api#message):
    # {"photo": [PhotoSize, ...]}, {"voice": Voice} or {"sticker": Sticker}; text is the caption.
    media: dict[str, Any] | None = None
    sender: dict[str, Any] | None = None  # the "from" User; in groups only (many senders)


@dataclass
class _CallbackQuery:
    query_id: str
    user_id: int
    message_id: int
    data: str
    answered: bool = False
    answer: dict[str, Any] | None = None


class _Chat:
    """The private chat of one bot with one user (chat.id == user_id)."""

    def __init__(self, bot: _Bot, user: SimUser, burst: int, now: float) -> None:
        self.bot, self.user = bot, user
        self.messages: list[_Message] = []
        self.ids = itertools.count(1)
        self.opened = False
        self.blocked = False
        self.tokens, self.refilled_at = float(burst), now
        # The live draft the client shows (None: none); drafts have their own allowance.
        self.draft: DraftUpdate | None = None
        self.draft_log: list[DraftUpdate] = []
        self.draft_tokens: float | None = None  # filled at the first draft
        self.draft_refilled_at = now

    def find(self, message_id: Any) -> _Message | None:
        return next(
            (m for m in self.messages if m.message_id == message_id and not m.deleted), None
        )

    def message_dict(self, msg: _Message, *, with_reply: bool = True) -> dict[str, Any]:
        return _message_dict(msg, self._sender, self.user.chat_dict(), self.find, with_reply)

    def _sender(self, msg: _Message) -> dict[str, Any]:
        return self.bot.user_dict() if msg.from_bot else self.user.user_dict()


def _message_dict(msg: _Message, sender: Callable[[_Message], dict[str, Any] | None],
                  chat: dict[str, Any], find: Callable[[Any], _Message | None],
                  with_reply: bool) -> dict[str, Any]:
    """A Message object (https://core.telegram.org/bots/api#message) as a chat sends it: a
    replied-to message is included once, without its own reply."""
    out: dict[str, Any] = {"message_id": msg.message_id, "from": sender(msg), "chat": chat,
                           "date": int(msg.date)}
    if msg.edit_date is not None:
        out["edit_date"] = int(msg.edit_date)
    _put_content(out, msg)
    if msg.reply_markup and "inline_keyboard" in msg.reply_markup:
        out["reply_markup"] = copy.deepcopy(msg.reply_markup)
    if with_reply and msg.reply_to is not None and (replied := find(msg.reply_to)):
        out["reply_to_message"] = _message_dict(replied, sender, chat, find, False)
    return out


def _put_content(out: dict[str, Any], msg: _Message) -> None:
    """A Message's content fields: text and entities, or a document / photo / voice / sticker
    with its caption (https://core.telegram.org/bots/api#message)."""
    if msg.media is not None:
        out.update(copy.deepcopy(msg.media))
        if msg.text:
            out["caption"] = msg.text
            if msg.entities:
                out["caption_entities"] = copy.deepcopy(msg.entities)
    elif msg.document is not None:
        out["document"] = {
            k: msg.document[k]
            for k in ("file_id", "file_unique_id", "file_name", "mime_type", "file_size")
        }
        if msg.text:
            out["caption"] = msg.text
            if msg.entities:
                out["caption_entities"] = copy.deepcopy(msg.entities)
    else:
        out["text"] = msg.text
        if msg.entities:
            out["entities"] = copy.deepcopy(msg.entities)


class _GroupChat:
    """A group the users and bots share (Chat.type "group", or "supergroup" for ids of the
    -100… form; https://core.telegram.org/bots/api#chat). Bots in it are members."""

    def __init__(self, group_id: int, title: str, burst: int, now: float) -> None:
        self.id, self.title = group_id, title
        # Supergroup ids are -100 followed by the channel id (the Bot API's convention).
        self.type = "supergroup" if group_id <= -1_000_000_000_000 else "group"
        self.messages: list[_Message] = []
        self.ids = itertools.count(1)
        self.members: dict[str, bool] = {}  # bot token -> admin (privacy mode does not apply)
        self.opened, self.blocked = True, False
        self.tokens, self.refilled_at = float(burst), now

    def chat_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "title": self.title}

    def find(self, message_id: Any) -> _Message | None:
        return next(
            (m for m in self.messages if m.message_id == message_id and not m.deleted), None
        )

    def message_dict(self, msg: _Message, *, with_reply: bool = True) -> dict[str, Any]:
        return _message_dict(msg, lambda m: copy.deepcopy(m.sender), self.chat_dict(),
                             self.find, with_reply)

    def sees(self, bot: _Bot, msg: _Message) -> bool:
        """Whether a member bot gets the message as an update. Privacy mode (on by default,
        off for admins; https://core.telegram.org/bots/features#privacy-mode): only commands
        meant for it (``/cmd`` or ``/cmd@this_bot``) and replies to its own messages."""
        if self.members.get(bot.token):
            return True
        command = re.match(r"/[a-zA-Z0-9_]+(?:@([a-zA-Z0-9_]+))?", msg.text)
        if command and command.group(1) in (None, bot.username):
            return True
        replied = self.find(msg.reply_to) if msg.reply_to is not None else None
        return replied is not None and (replied.sender or {}).get("id") == bot.id


class _Bot:
    def __init__(
        self, token: str, username: str, first_name: str, bot_id: int, first_update: int
    ) -> None:
        self.token, self.username, self.first_name, self.id = token, username, first_name, bot_id
        self.updates: list[dict[str, Any]] = []
        self.update_ids = itertools.count(first_update)
        self.allowed_updates: frozenset[str] = frozenset()  # empty: all but _OPT_IN_UPDATES
        self.long_poll: asyncio.Future[str] | None = None
        self.parked = asyncio.Event()  # set while a long poll waits on the server
        self.webhook_url = ""
        self.commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.window: collections.deque[float] = collections.deque()
        self.callbacks: dict[str, _CallbackQuery] = {}
        self.injected: dict[str, collections.deque[ApiError]] = collections.defaultdict(
            collections.deque
        )
        self.windows: list[_Window] = []  # fail_for / flood, in the order they were set
        self.lost_replies: collections.Counter[str] = collections.Counter()
        self.malformed: dict[str, collections.deque[bool]] = collections.defaultdict(
            collections.deque
        )  # per method: one entry per pending malformed answer, True if processed first
        self.log: list[str] = []
        # Managed bots (Bot API 9.6, https://core.telegram.org/bots/api#managed-bots): the
        # BotFather Mini App toggle "Bot Management Mode" (getMe's can_manage_bots), and for a
        # bot created through another bot, the token of its manager.
        self.can_manage_bots = False
        self.manager: str | None = None

    def user_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def wake(self, reason: str) -> None:
        if self.long_poll is not None and not self.long_poll.done():
            self.long_poll.set_result(reason)

    def __repr__(self) -> str:
        return f"<bot @{self.username} id={self.id} pending_updates={len(self.updates)}>"


@dataclass
class _Window:
    """A stretch of time during which a bot's matching calls fail without being processed."""

    kind: str  # "outage" (fail_for) | "flood"
    until: float  # the event loop's clock
    methods: frozenset[str] | None  # lower-case; None: every method but getUpdates
    chat_id: int | str | None = None
    code: int = 502
    description: str = "Bad Gateway"
    json_body: bool = False

    def matches(self, method: str, params: dict[str, Any]) -> bool:
        name = method.lower()
        if self.methods is None and name == "getupdates":
            return False
        if self.methods is not None and name not in self.methods:
            return False
        return self.chat_id is None or params.get("chat_id") == self.chat_id


class _FrontEndError(Exception):
    """An answer of Telegram's front end (nginx), not of the Bot API: an HTML error page.

    Seen in the wild, e.g. nickoala/telepot#31 and seikur0/PGO-mapscan-opt#179: a 502 whose
    body is ``<html><head><title>502 Bad Gateway</title></head>...<center>nginx/...</center>``.
    python-telegram-bot 22 (``telegram/request/_baserequest.py``, ``_request_wrapper``) cannot
    parse it as JSON and raises ``NetworkError("Bad Gateway (502). Parsing the server response
    b'<html>...' failed")`` (``BadRequest``/``Forbidden``/``InvalidToken``/``Conflict`` for
    400/403/401,404/409) chained from ``TelegramError("Invalid server response")``.
    """

    def __init__(self, code: int, description: str) -> None:
        super().__init__(f"{code} {description}")
        self.code, self.description = code, description

    def page(self) -> str:
        title = f"{self.code} {self.description}"
        return (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
            "</body>\r\n</html>\r\n"
        )


def _int_arg(params: dict[str, Any], key: str, default: int) -> int:
    """An integer argument; like the Bot API, anything unparsable counts as the default."""
    try:
        return int(params[key])
    except (KeyError, TypeError, ValueError):
        return default


def _method_set(methods: Collection[str] | None) -> frozenset[str] | None:
    if isinstance(methods, str):
        methods = [methods]
    return None if methods is None else frozenset(m.lower() for m in methods)


def _now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


# ----------------------------------------------------------------------------- simulated users
class SimUser:
    """A person with a Telegram client, talking to bots in private chats."""

    def __init__(
        self, emulator: TelegramEmulator, user_id: int, first_name: str, username: str | None
    ) -> None:
        self._emu = emulator
        self.user_id, self.first_name, self.username = user_id, first_name, username

    def user_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.user_id,
            "is_bot": False,
            "first_name": self.first_name,
            "language_code": "en",
        }
        if self.username:
            out["username"] = self.username
        return out

    def chat_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.user_id, "type": "private", "first_name": self.first_name}
        if self.username:
            out["username"] = self.username
        return out

    async def send(self, bot: str, text: str) -> int:
        """Type ``text`` into the chat with ``bot``; returns the new message_id."""
        if not text.strip():
            raise ValueError("a Telegram client does not send an empty message")
        plain, entities = _strip_text(text, [])
        return await self._post(bot, plain, _auto_entities(plain, entities), None)

    async def reply(self, bot: str, message_id: int, text: str) -> int:
        """Reply to message ``message_id`` of the chat with ``bot`` (swipe, type ``text``):
        the update's message carries ``reply_to_message``. Returns the new message_id."""
        if not text.strip():
            raise ValueError("a Telegram client does not send an empty message")
        if self._emu._chat(self._emu._bot(bot), self).find(message_id) is None:
            raise AssertionError(f"no message #{message_id} to reply to in the chat with {bot}")
        plain, entities = _strip_text(text, [])
        return await self._post(bot, plain, _auto_entities(plain, entities), None,
                                reply_to=message_id)

    async def start(self, bot: str) -> int:
        return await self.send(bot, "/start")

    def opened_earlier(self, bot: str) -> None:
        """The user pressed Start in the chat with ``bot`` some time ago: the bot may write to
        them, and that /start was consumed long since (no update is waiting for the bot)."""
        chat = self._emu._chat(self._emu._bot(bot), self)
        chat.opened, chat.blocked = True, False

    async def send_document(
        self,
        bot: str,
        file_name: str,
        content: bytes,
        caption: str = "",
        mime_type: str = "application/octet-stream",
    ) -> int:
        """Upload a file into the chat with ``bot`` (a Message update with ``document``)."""
        doc = {**self._emu._store_file(file_name, content, mime_type), "caption": caption}
        return await self._post(bot, caption, _auto_entities(caption, []), doc)

    async def send_photo(self, bot: str, caption: str = "") -> int:
        """Send a photo: a Message with ``photo``, an Array of PhotoSize (the sizes Telegram
        made of it, smallest first; https://core.telegram.org/bots/api#photosize), and an
        optional ``caption``."""
        sizes = []
        for width, height in ((90, 67), (320, 240), (800, 600), (1280, 960)):
            stored = self._emu._store_file(
                f"photo_{width}.jpg", b"\xff\xd8" + bytes(width), "image/jpeg", folder="photos"
            )
            sizes.append({
                "file_id": stored["file_id"], "file_unique_id": stored["file_unique_id"],
                "width": width, "height": height, "file_size": stored["file_size"],
            })
        plain, entities = _strip_text(caption, [])
        return await self._post(bot, plain, _auto_entities(plain, entities), None,
                                media={"photo": sizes})

    async def send_voice(self, bot: str, duration: int = 3) -> int:
        """Record and send a voice note: a Message with ``voice``
        (https://core.telegram.org/bots/api#voice: file_id, file_unique_id, duration,
        mime_type, file_size)."""
        stored = self._emu._store_file("voice.oga", b"OggS" + bytes(duration * 1000),
                                       "audio/ogg", folder="voice")
        voice = {"file_id": stored["file_id"], "file_unique_id": stored["file_unique_id"],
                 "duration": duration, "mime_type": "audio/ogg",
                 "file_size": stored["file_size"]}
        return await self._post(bot, "", [], None, media={"voice": voice})

    async def send_sticker(self, bot: str, emoji: str = "👍") -> int:
        """Send a sticker: a Message with ``sticker`` (https://core.telegram.org/bots/api#sticker:
        a static 512x512 "regular" sticker); stickers carry no caption."""
        stored = self._emu._store_file("sticker.webp", b"RIFF" + bytes(512), "image/webp",
                                       folder="stickers")
        sticker = {"file_id": stored["file_id"], "file_unique_id": stored["file_unique_id"],
                   "type": "regular", "width": 512, "height": 512, "is_animated": False,
                   "is_video": False, "emoji": emoji, "file_size": stored["file_size"]}
        return await self._post(bot, "", [], None, media={"sticker": sticker})

    async def edit(self, bot: str, message_id: int, new_text: str) -> None:
        """Edit one of the user's own messages in the chat with ``bot``: the chat shows the new
        text and the bot gets an ``edited_message`` update, the new version of the message with
        ``edit_date`` (https://core.telegram.org/bots/api#update,
        https://core.telegram.org/bots/api#message). A caption is edited the same way."""
        chat = self._emu._chat(self._emu._bot(bot), self)
        msg = chat.find(message_id)
        if msg is None or msg.from_bot:
            raise AssertionError(
                f"no message #{message_id} of user {self.user_id} in the chat with "
                f"@{chat.bot.username}"
            )
        if set(msg.media or {}) & {"sticker", "voice"}:
            raise ValueError("a Telegram client cannot edit a sticker or a voice note")
        plain, entities = _strip_text(new_text, [])
        if not plain and msg.document is None and msg.media is None:
            raise ValueError("a Telegram client does not save an empty message")
        if plain == msg.text:
            raise ValueError("unchanged: a Telegram client sends no edit")
        msg.edit_history.append(msg.text)
        msg.text = msg.raw_text = plain
        msg.entities = _auto_entities(plain, entities)
        msg.edits, msg.edit_date = msg.edits + 1, time.time()
        self._emu._enqueue(chat.bot, "edited_message", chat.message_dict(msg))
        chat.bot.log.append(
            f"{_now():.3f} user {self.user_id} edited #{message_id}: {plain[:100]!r}"
        )
        await asyncio.sleep(0)

    async def send_in_group(
        self, bot: str, group_id: int, text: str, group_title: str = "Team", *,
        bot_is_admin: bool = True,
    ) -> int:
        """Write ``text`` in a group (``group_id`` < 0) that ``bot`` is a member of (added now
        if it is not): a Message whose chat has type "group" ("supergroup" for a -100… id).
        Every member bot that sees it gets the update: all of them when they are admins (the
        default), else only in privacy mode's cases (see ``_GroupChat.sees``). The bots may
        write there; ``TelegramEmulator.group_messages`` shows the group."""
        if group_id >= 0:
            raise ValueError("group chat ids are negative")
        if not text.strip():
            raise ValueError("a Telegram client does not send an empty message")
        group = self._emu._group(group_id, group_title)
        target = self._emu._bot(bot)
        group.members.setdefault(target.token, bot_is_admin)
        plain, entities = _strip_text(text, [])
        msg = _Message(next(group.ids), False, plain, plain, None,
                       _auto_entities(plain, entities), None, time.time(),
                       sender=self.user_dict())
        group.messages.append(msg)
        for member in (self._emu._bots[token] for token in group.members):
            if group.sees(member, msg):
                self._emu._enqueue(member, "message", group.message_dict(msg))
                member.log.append(f"{_now():.3f} user {self.user_id} wrote in group "
                                  f"{group_id} #{msg.message_id}: {plain[:100]!r}")
        await asyncio.sleep(0)
        return msg.message_id

    async def _post(
        self, bot: str, text: str, entities: list[dict[str, Any]],
        document: dict[str, Any] | None, *, media: dict[str, Any] | None = None,
        reply_to: int | None = None,
    ) -> int:
        chat = self._emu._chat(self._emu._bot(bot), self)
        chat.opened, chat.blocked = True, False
        msg = _Message(
            next(chat.ids), False, text, text, None, entities, None, time.time(), document,
            media=media, sender=self.user_dict(),
        )
        msg.reply_to = reply_to
        chat.messages.append(msg)
        self._emu._enqueue(chat.bot, "message", chat.message_dict(msg))
        chat.bot.log.append(
            f"{_now():.3f} user {self.user_id} sent #{msg.message_id}: {text[:100]!r}"
        )
        await asyncio.sleep(0)
        return msg.message_id

    async def press(self, bot: str, message_id: int, callback_data: str) -> str:
        """Press an inline button of a bot message; returns the callback query id."""
        chat = self._emu._chat(self._emu._bot(bot), self)
        msg = chat.find(message_id)
        if msg is None or not msg.from_bot:
            raise AssertionError(
                f"no visible bot message #{message_id} in the chat with @{chat.bot.username}"
            )
        snapshot = self._snapshot(chat, msg)
        if callback_data not in [data for _, data in snapshot.buttons()]:
            raise AssertionError(
                f"message #{message_id} has no button with callback_data "
                f"{callback_data!r}; it has {snapshot.buttons()}"
            )
        return await self.press_raw(bot, message_id, callback_data)

    async def press_raw(self, bot: str, message_id: int, callback_data: str) -> str:
        """A modified client sends a callback query with any data for a bot message, buttons
        or not: the Bot API warns that "the message originated the query can contain no
        callback buttons with this data" (https://core.telegram.org/bots/api#callbackquery).
        Returns the callback query id."""
        chat = self._emu._chat(self._emu._bot(bot), self)
        msg = chat.find(message_id)
        if msg is None or not msg.from_bot:
            raise AssertionError(
                f"no visible bot message #{message_id} in the chat with @{chat.bot.username}"
            )
        query_id = str(next(self._emu._query_ids))
        chat.bot.callbacks[query_id] = _CallbackQuery(
            query_id, self.user_id, message_id, callback_data
        )
        self._emu._enqueue(
            chat.bot,
            "callback_query",
            {
                "id": query_id,
                "from": self.user_dict(),
                "message": chat.message_dict(msg),
                "chat_instance": str(
                    (chat.bot.id * 1_000_003 + self.user_id) % 9_000_000_000_000_000_000
                ),
                "data": callback_data,
            },
        )
        chat.bot.log.append(
            f"{_now():.3f} user {self.user_id} pressed {callback_data!r} "
            f"on #{message_id} (query {query_id})"
        )
        await asyncio.sleep(0)
        return query_id

    async def create_managed_bot(
        self, bot: str, name: str, username: str, *, message_id: int | None = None
    ) -> str:
        """Press the request_managed_bot button of ``bot``'s message ``message_id`` (default:
        the newest message with one) and confirm the creation of a bot called ``name`` /
        @``username``, as the client's creation screen does (MTProto bots.createBot,
        https://core.telegram.org/api/bots/managed-bots). The manager then gets the
        ``managed_bot`` update and the service message ``managed_bot_created``
        (https://core.telegram.org/bots/api#keyboardbuttonrequestmanagedbot). Returns the new
        bot's username."""
        return await self._emu._create_managed_bot(self, bot, name, username, message_id)

    def delete(self, bot: str, message_id: int) -> None:
        """Delete message ``message_id`` of the chat with ``bot`` for both sides (a private
        chat offers "Also delete for <bot>" for any message, the bot's own included). It is
        gone from the chat; the bot is not told (bots hear of deletions in business chats
        only, https://core.telegram.org/bots/api#update); the bot's edits of it answer 400
        "Bad Request: message to edit not found", e.g. editMessageReplyMarkup
        (https://core.telegram.org/bots/api#editmessagereplymarkup)."""
        chat = self._emu._chat(self._emu._bot(bot), self)
        msg = chat.find(message_id)
        if msg is None:
            raise AssertionError(f"no message #{message_id} in the chat with {bot}")
        msg.deleted = True
        chat.bot.log.append(f"{_now():.3f} user {self.user_id} deleted #{message_id}")

    def block(self, bot: str) -> None:
        """Block the bot: sends answer 403 "bot was blocked by the user" until the user writes."""
        self._emu._chat(self._emu._bot(bot), self).blocked = True

    @staticmethod
    def _snapshot(chat: _Chat | _GroupChat, msg: _Message) -> ChatMessage:
        return ChatMessage(
            msg.message_id,
            msg.from_bot,
            msg.text,
            msg.raw_text,
            msg.parse_mode,
            copy.deepcopy(msg.reply_markup),
            msg.edits,
            list(msg.edit_history),
            msg.date,
            dict(msg.document) if msg.document else None,
            copy.deepcopy(msg.entities),
            msg.reply_to,
            copy.deepcopy(msg.media),
            (msg.sender or {}).get("id"),
        )

    def chat(self, bot: str) -> list[ChatMessage]:
        """The chat as the user sees it now: deleted messages gone, edits applied."""
        chat = self._emu._chat(self._emu._bot(bot), self)
        return [self._snapshot(chat, m) for m in chat.messages if not m.deleted]

    def bot_texts(self, bot: str) -> list[str]:
        return [m.text for m in self.chat(bot) if m.from_bot]

    def visible_draft(self, bot: str) -> str | None:
        """The draft the client shows below the chat now: its text, "Thinking..." for an empty
        one, None when there is none (never sent, expired, or replaced by a message)."""
        return self._emu.visible_draft(bot, self.user_id)

    def draft_log(self, bot: str) -> list[DraftUpdate]:
        """Every draft the bot wrote to this chat, oldest first (what was on screen when)."""
        return list(self._emu._chat(self._emu._bot(bot), self).draft_log)

    async def wait_for_draft(
        self, bot: str, predicate: Callable[[str], bool], timeout: float = 10.0
    ) -> str:
        """Wait until the visible draft satisfies ``predicate``; AssertionError on timeout."""
        deadline = _now() + timeout
        while True:
            shown = self.visible_draft(bot)
            if shown is not None and predicate(shown):
                return shown
            if _now() >= deadline:
                raise AssertionError(
                    f"no matching draft in the chat of user {self.user_id} within {timeout}s; "
                    f"shown: {shown!r}; last writes: {self.draft_log(bot)[-3:]}"
                )
            await asyncio.sleep(0.01)

    async def wait_for(
        self,
        bot: str,
        predicate: Callable[[ChatMessage], bool],
        timeout: float = 10.0,
    ) -> ChatMessage:
        """Wait until a visible message satisfies ``predicate``; AssertionError on timeout."""
        deadline = _now() + timeout
        while True:
            for message in self.chat(bot):
                if predicate(message):
                    return message
            if _now() >= deadline:
                shown = "\n".join(f"  {m!r}" for m in self.chat(bot)) or "  (empty)"
                log = "\n".join(self._emu.bot_log(bot)[-15:])
                raise AssertionError(
                    f"no message in the chat of user {self.user_id} with @"
                    f"{self._emu._bot(bot).username} matched within {timeout}s; "
                    f"chat:\n{shown}\nlast bot log lines:\n{log}"
                )
            await asyncio.sleep(0.02)

    async def wait_for_text(
        self,
        bot: str,
        substring: str,
        timeout: float = 10.0,
    ) -> ChatMessage:
        """Wait for a message *of the bot* containing ``substring`` (the user's own never match)."""
        return await self.wait_for(bot, lambda m: m.from_bot and substring in m.text, timeout)

    def sees(self, bot: str, substring: str) -> bool:
        """Whether the chat shows ``substring`` now: in a message of the bot, or in its live
        draft (a streaming answer is a draft until it is sent as a message)."""
        return substring in (self.visible_draft(bot) or "") or any(
            m.from_bot and substring in m.text for m in self.chat(bot))

    async def wait_to_see(self, bot: str, substring: str, timeout: float = 10.0) -> None:
        """Wait until the chat shows ``substring``, in a message or in the live draft."""
        deadline = _now() + timeout
        while not self.sees(bot, substring):
            if _now() >= deadline:
                raise AssertionError(
                    f"the chat of user {self.user_id} with @{self._emu._bot(bot).username} "
                    f"did not show {substring!r} within {timeout}s; draft: "
                    f"{self.visible_draft(bot)!r}; messages: {self.bot_texts(bot)[-3:]!r}")
            await asyncio.sleep(0.01)

    def __repr__(self) -> str:
        name = f" @{self.username}" if self.username else ""
        return f"SimUser(id={self.user_id} {self.first_name!r}{name})"


# ----------------------------------------------------------------------------- the server
class TelegramEmulator:
    """The Bot API over HTTP on 127.0.0.1, in the caller's event loop."""

    def __init__(
        self,
        *,
        chat_burst: int = 3,
        chat_rate: float = 1.0,
        bot_rate: int = 30,
        draft_rate: float = 10.0,
        draft_burst: int = 10,
        draft_ttl: float = 30.0,
        drafts_supported: bool = True,
    ) -> None:
        """``chat_*`` / ``bot_rate``: the message allowance (see ``_rate``). ``draft_rate`` /
        ``draft_burst``: each private chat's draft allowance (undocumented by Telegram; a
        token bucket of its own). ``draft_ttl``: seconds a draft stays shown after the bot's
        last write (the doc's "30-second preview"; shorter in tests). ``drafts_supported``:
        False answers sendMessageDraft as a server without the method does."""
        self.chat_burst, self.chat_rate, self.bot_rate = chat_burst, chat_rate, bot_rate
        self.draft_rate, self.draft_burst, self.draft_ttl = draft_rate, draft_burst, draft_ttl
        self.drafts_supported = drafts_supported
        self.url = ""
        self.calls: list[Call] = []
        self._bots: dict[str, _Bot] = {}
        self._users: dict[int, SimUser] = {}
        self._chats: dict[tuple[str, int], _Chat] = {}
        self._groups: dict[int, _GroupChat] = {}
        self._files: dict[str, dict[str, Any]] = {}
        self._photo_sets: dict[str, list[dict[str, Any]]] = {}  # a size's file_id -> all sizes
        self._bot_ids = itertools.count(7_000_000_001)
        self._query_ids = itertools.count(4_000_000_000_000_000_001, 7919)
        self._file_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._methods: dict[str, Callable[[_Bot, dict[str, Any]], Awaitable[Any]]] = {
            name[3:].lower(): getattr(self, name) for name in dir(self) if name.startswith("_m_")
        }

    # ---- lifecycle
    async def start(self) -> None:
        app = web.Application(client_max_size=52 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a long poll whose client went away (PTB cancels its pending
        # getUpdates on stop) ends at once instead of lingering as a phantom poller.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._stopping = False

    async def stop(self) -> None:
        self._stopping = True
        for bot in self._bots.values():
            bot.wake("stop")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TelegramEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- set-up and inspection
    def add_bot(self, token: str, username: str, first_name: str | None = None) -> None:
        username = username.lstrip("@")
        prefix = re.match(r"(\d+):", token)
        bot_id = int(prefix.group(1)) if prefix else next(self._bot_ids)
        self._bots[token] = _Bot(
            token,
            username,
            first_name or username,
            bot_id,
            first_update=100_000_000 + 1_000_000 * len(self._bots),
        )

    def add_user(
        self, user_id: int, first_name: str = "User", username: str | None = None
    ) -> SimUser:
        user = self._users.get(user_id)
        if user is None:
            user = self._users[user_id] = SimUser(self, user_id, first_name, username)
        user.first_name, user.username = first_name, username
        return user

    def calls_to(self, bot: str, method: str) -> list[Call]:
        found = self._find_bot(bot)
        token = found.token if found else bot
        return [c for c in self.calls if c.token == token and c.method.lower() == method.lower()]

    def commands(
        self, bot: str, scope: dict[str, Any] | None = None, language_code: str = ""
    ) -> list[tuple[str, str]]:
        key = (json.dumps(scope or {"type": "default"}, sort_keys=True), language_code)
        return [(c["command"], c["description"]) for c in self._bot(bot).commands.get(key, [])]

    def fail_next(
        self,
        bot: str,
        method: str,
        error_code: int,
        description: str,
        retry_after: int | None = None,
        count: int = 1,
    ) -> None:
        queue = self._bot(bot).injected[method.lower()]
        queue.extend(ApiError(error_code, description, retry_after) for _ in range(count))

    def fail_for(
        self,
        bot: str,
        seconds: float,
        *,
        methods: Collection[str] | None = None,
        code: int = 502,
        description: str = "Bad Gateway",
        json_body: bool = False,
    ) -> None:
        """For the next ``seconds``, calls of ``bot`` fail at Telegram's front end, unprocessed.

        ``methods``: the methods hit (None: every method but getUpdates). The answer is HTTP
        ``code`` with nginx's HTML error page (see :class:`_FrontEndError`; python-telegram-bot
        raises ``NetworkError("Bad Gateway (502). Parsing the server response ... failed")``),
        or with ``json_body`` the Bot API's own ``{"ok": false, "error_code": 502,
        "description": "Bad Gateway"}`` (also seen: eternnoir/pyTelegramBotAPI#1780; PTB raises
        ``NetworkError("Bad Gateway")``). Nothing is processed: no message is sent or edited.
        """
        self._bot(bot).windows.append(
            _Window(
                "outage",
                _now() + seconds,
                _method_set(methods),
                code=code,
                description=description,
                json_body=json_body,
            )
        )

    def flood(
        self,
        bot: str,
        seconds: float,
        *,
        chat_id: int | str | None = None,
        methods: Collection[str] | None = None,
    ) -> None:
        """A 429 storm for the next ``seconds``: matching calls of ``bot`` are refused.

        Matching: to ``methods`` (None: every method but getUpdates), and to ``chat_id`` when
        given. Each answer is the Bot API's 429 ``{"ok": false, "error_code": 429,
        "description": "Too Many Requests: retry after N", "parameters": {"retry_after": N}}``
        (https://core.telegram.org/bots/api#responseparameters: "the number of seconds left
        to wait before the request can be repeated") with N = the whole seconds left in the
        storm, at least 1; python-telegram-bot raises ``RetryAfter`` with that ``retry_after``.
        Nothing is processed.
        """
        self._bot(bot).windows.append(
            _Window("flood", _now() + seconds, _method_set(methods), chat_id=chat_id)
        )

    def lose_reply_next(self, bot: str, method: str, count: int = 1) -> None:
        """The next ``count`` calls of ``method`` are processed, then the answer is lost.

        The server does the work (a sendMessage's message appears in the chat) and closes the
        connection without writing a response, as when a connection drops mid-request:
        httpx raises ``RemoteProtocolError("Server disconnected without sending a response.")``
        and python-telegram-bot (``_httpxrequest.py``, ``do_request``) turns it into
        ``NetworkError("httpx.RemoteProtocolError: Server disconnected without sending a
        response.")``. The client cannot tell whether the call took effect.
        """
        self._bot(bot).lost_replies[method.lower()] += count

    def malformed_next(
        self, bot: str, method: str, count: int = 1, processed: bool = False
    ) -> None:
        """The next ``count`` calls of ``method`` are answered HTTP 200 with a non-JSON body.

        ``processed``: the call takes effect first and its answer arrives cut short (a
        truncated JSON document); otherwise nothing is processed and the body is an HTML page
        (what a misbehaving proxy returns). python-telegram-bot's ``parse_json_payload``
        (``_baserequest.py``) raises ``TelegramError("Invalid server response")`` (the base
        class: not a ``NetworkError``).
        """
        self._bot(bot).malformed[method.lower()].extend([processed] * count)

    def group_messages(self, group_id: int) -> list[ChatMessage]:
        """The group as its members see it (users' and bots' messages); empty if no one ever
        wrote there."""
        group = self._groups.get(group_id)
        if group is None:
            return []
        return [SimUser._snapshot(group, m) for m in group.messages if not m.deleted]

    def history(self, bot: str, user_id: int) -> list[ChatMessage]:
        return self._users[user_id].chat(bot)

    def visible_draft(self, bot: str, chat_id: int) -> str | None:
        """What the client of ``chat_id`` shows as ``bot``'s live draft now (see SimUser)."""
        user = self._users.get(chat_id)
        if user is None:
            return None
        chat = self._chat(self._bot(bot), user)
        draft = chat.draft
        if draft is None or _now() - draft.at >= self.draft_ttl:
            return None
        return draft.text

    def bot_log(self, bot: str) -> list[str]:
        """Everything that happened to ``bot``: API calls with their answers, user actions."""
        return list(self._bot(bot).log)

    def callback_answer(self, query_id: str) -> dict[str, Any] | None:
        """What the bot answered to a callback query (text, show_alert, url), None if not yet."""
        for bot in self._bots.values():
            if query_id in bot.callbacks:
                return bot.callbacks[query_id].answer
        raise KeyError(query_id)

    async def wait_until_polling(
        self,
        bot: str,
        timeout: float = 5.0,
    ) -> None:
        """Wait until ``bot`` has a long poll parked on the server, i.e. it is idle, listening."""
        await asyncio.wait_for(self._bot(bot).parked.wait(), timeout)

    def pending_updates(self, bot: str) -> list[dict[str, Any]]:
        """Updates queued for ``bot`` and not yet confirmed by a getUpdates offset."""
        return copy.deepcopy(self._bot(bot).updates)

    def file_bytes(self, file_id: str) -> bytes:
        """The content of a stored file (a bot's upload or a user's attachment), by the
        file_id a Message carries (``ChatMessage.document["file_id"]``,
        ``ChatMessage.photo[-1]["file_id"]``). KeyError for an unknown id. Photos are served as
        uploaded: the emulator does not re-encode them as Telegram does."""
        return bytes(self._files[file_id]["content"])

    def __repr__(self) -> str:
        bots = ", ".join(f"@{b.username}" for b in self._bots.values())
        return (
            f"TelegramEmulator(url={self.url or 'not started'!r}, bots=[{bots}], "
            f"users={sorted(self._users)}, calls={len(self.calls)})"
        )

    # ---- internals
    def _find_bot(self, bot: str) -> _Bot | None:
        name = bot.lstrip("@")
        return self._bots.get(bot) or next(
            (b for b in self._bots.values() if b.username.lower() == name.lower()), None
        )

    def _bot(self, bot: str) -> _Bot:
        found = self._find_bot(bot)
        if found is None:
            raise KeyError(f"no bot {bot!r}; known: {[b.username for b in self._bots.values()]}")
        return found

    def _chat(self, bot: _Bot, user: SimUser) -> _Chat:
        key = (bot.token, user.user_id)
        if key not in self._chats:
            self._chats[key] = _Chat(bot, user, self.chat_burst, _now())
        return self._chats[key]

    def _group(self, group_id: int, title: str) -> _GroupChat:
        if group_id not in self._groups:
            self._groups[group_id] = _GroupChat(group_id, title, self.chat_burst, _now())
        return self._groups[group_id]

    def _enqueue(self, bot: _Bot, kind: str, payload: dict[str, Any]) -> None:
        allowed = bot.allowed_updates
        if (kind not in allowed if allowed else kind in _OPT_IN_UPDATES) or bot.webhook_url:
            bot.log.append(f"{_now():.3f} {kind} update dropped (allowed_updates/webhook)")
            return
        bot.updates.append({"update_id": next(bot.update_ids), kind: copy.deepcopy(payload)})
        bot.wake("update")

    def _store_file(
        self, file_name: str, content: bytes, mime_type: str, *, folder: str = "documents"
    ) -> dict[str, Any]:
        number = next(self._file_ids)
        ext = file_name.rsplit(".", 1)[1] if "." in file_name else "bin"
        doc = {
            "file_id": f"BQACAgIAAx0Emu{number:08d}",
            "file_unique_id": f"AgAD{number:06d}",
            "file_name": file_name,
            "mime_type": mime_type,
            "file_size": len(content),
            "size": len(content),
            "content": content,
            "file_path": f"{folder}/file_{number}.{ext}",
        }
        self._files[doc["file_id"]] = doc
        return doc

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        raw: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                raw.update(
                    {
                        k: json.dumps(v) if isinstance(v, dict | list) else v
                        for k, v in (body or {}).items()
                    }
                )
            else:
                for key, value in (await request.post()).items():
                    if isinstance(value, web.FileField):
                        content = value.file.read()
                        if len(content) > MAX_UPLOAD_BYTES:
                            raise web.HTTPRequestEntityTooLarge(
                                max_size=MAX_UPLOAD_BYTES, actual_size=len(content)
                            )
                        stored = self._store_file(
                            value.filename or key,
                            content,
                            value.content_type or "application/octet-stream",
                        )
                        raw[key] = {k: stored[k] for k in ("file_name", "size", "mime_type")}
                        raw[key]["uploaded_as"] = stored["file_id"]
                    else:
                        raw[key] = value
        params: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, str) and key in _JSON_FIELDS:
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            elif isinstance(value, str) and key in _INT_FIELDS and re.fullmatch(r"-?\d+", value):
                value = int(value)
            elif isinstance(value, str) and key in _BOOL_FIELDS:
                value = value.lower() in ("true", "1")
            elif isinstance(value, str) and key == "chat_id" and re.fullmatch(r"-?\d+", value):
                value = int(value)
            params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        file_match = re.fullmatch(r"/file/bot([^/]+)/(.+)", request.path)
        if file_match:
            return self._serve_file(*file_match.groups())
        match = re.fullmatch(r"/bot([^/]+)/([^/]*)", request.path)
        if not match:
            return web.json_response(ApiError(404, "Not Found").payload(), status=404)
        token, method = match.groups()
        call = Call(token, method, {}, _now())
        self.calls.append(call)
        bot = self._bots.get(token)
        body: dict[str, Any] | None = None
        front_end: _FrontEndError | None = None
        malformed: bool | None = None  # set: answer non-JSON; True: after processing the call
        lose = False
        try:
            try:
                call.params = await self._read_params(request)
            except web.HTTPRequestEntityTooLarge:
                # An upload over 50 MB (https://core.telegram.org/bots/api#senddocument: "Bots
                # can currently send files of any type of up to 50 MB in size") is refused by
                # the front end, nginx's HTML page "413 Request Entity Too Large" (as reported
                # in telegraf/telegraf#222, go-telegram-bot-api/telegram-bot-api#31,
                # eternnoir/pyTelegramBotAPI#4); PTB raises NetworkError("Request Entity Too
                # Large (413). Parsing the server response ... failed").
                raise _FrontEndError(413, "Request Entity Too Large") from None
            if bot is None:
                raise ApiError(401, "Unauthorized")
            self._check_windows(bot, call)
            pending_malformed = bot.malformed.get(method.lower())
            if pending_malformed:
                malformed = pending_malformed.popleft()
                call.fault = "malformed"
            elif bot.lost_replies[method.lower()] > 0:
                bot.lost_replies[method.lower()] -= 1
                lose, call.fault = True, "lost_reply"
            if malformed is False:
                call.status = 200  # nothing processed: the body is not the Bot API's
            else:
                injected = bot.injected.get(method.lower())
                if injected:
                    raise injected.popleft()
                handler = self._methods.get(method.lower())
                if handler is None:
                    raise ApiError(404, "Not Found")
                body = {"ok": True, "result": await handler(bot, call.params)}
                call.status = 200
        except _FrontEndError as error:
            front_end, call.status = error, error.code
        except ApiError as error:
            body, call.status = error.payload(), error.code
        except asyncio.CancelledError:
            call.status = 499  # the client closed the connection before the answer
            if bot is not None:
                bot.log.append(f"{_now():.3f} {method} abandoned by the client")
            raise
        except Exception as error:  # an emulator bug or a request it cannot make sense of
            _LOG.exception("the Telegram emulator failed on %s %s", method, call.params)
            body, call.status = ApiError(500, f"Internal Server Error: {error!r}").payload(), 500
        call.response = body
        if bot is not None:
            if front_end is not None:
                outcome = f"front end: {front_end}"
            elif body is None:
                outcome = "not processed"
            else:
                outcome = "ok" if call.status == 200 and body else (body or {}).get("description")
            fault = f" [{call.fault}]" if call.fault else ""
            took = f" after {_now() - call.at:.2f}s" if method.lower() == "getupdates" else ""
            bot.log.append(
                f"{_now():.3f} {method} {json.dumps(call.params, default=str)[:300]} -> "
                f"{call.status} {outcome}{fault}{took}"
            )
        _LOG.debug("%s %s -> %s %s", method, call.params, call.status, call.fault or "")
        if lose and request.transport is not None:
            # Processed, but the answer never leaves: closing the connection without a
            # response is what httpx reports as RemoteProtocolError (see lose_reply_next).
            request.transport.close()
            return web.Response()
        if front_end is not None:
            return web.Response(
                text=front_end.page(), status=front_end.code, content_type="text/html"
            )
        if malformed is not None:
            if malformed and body is not None:  # the real answer, cut short in transit
                whole = json.dumps(body)
                return web.Response(text=whole[: len(whole) // 2], content_type="application/json")
            return web.Response(text=_PROXY_PAGE, content_type="text/html")
        assert body is not None
        headers = {}
        if call.status == 429 and "parameters" in body:
            headers["Retry-After"] = str(body["parameters"]["retry_after"])
        return web.json_response(body, status=call.status, headers=headers)

    def _check_windows(self, bot: _Bot, call: Call) -> None:
        """Refuse the call if a fail_for outage or a flood covers it (outages win: the front
        end answers before the Bot API could count anything)."""
        now = _now()
        bot.windows = [w for w in bot.windows if w.until > now]
        hits = [w for w in bot.windows if w.matches(call.method, call.params)]
        outage = next((w for w in hits if w.kind == "outage"), None)
        if outage is not None:
            call.fault = "outage"
            if outage.json_body:
                raise ApiError(outage.code, outage.description)
            raise _FrontEndError(outage.code, outage.description)
        flood = next((w for w in hits if w.kind == "flood"), None)
        if flood is not None:
            call.fault = "flood"
            seconds = max(1, math.ceil(flood.until - now - 1e-9))
            raise ApiError(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)

    def _serve_file(self, token: str, path: str) -> web.Response:
        doc = next((f for f in self._files.values() if f["file_path"] == path), None)
        if token not in self._bots or doc is None:
            return web.json_response(ApiError(404, "Not Found").payload(), status=404)
        return web.Response(body=doc["content"], content_type="application/octet-stream")

    # ---- validation helpers
    def _format(
        self, params: dict[str, Any], key: str, *, limit: int, caption: bool = False
    ) -> tuple[str, str, list[dict[str, Any]], str | None]:
        raw = params.get(key)
        raw = "" if raw is None else str(raw)
        if not raw and not caption:
            raise _bad("message text is empty")
        if len(raw.encode("utf-8", "surrogatepass")) > 1 << 15:
            raise _bad("text is too long")
        parse_mode = params.get("parse_mode") or None
        mode = (parse_mode or "").lower()
        if not raw or mode in ("", "none"):
            given = params.get("caption_entities" if caption else "entities")
            text, entities = raw, [dict(e) for e in given] if isinstance(given, list) else []
        elif mode == "html":
            text, entities = _parse_html(
                raw, {u.user_id: u.user_dict() for u in self._users.values()}
            )
        elif mode == "markdownv2":
            text, entities = _parse_markdown_v2(raw)
        elif mode == "markdown":
            text, entities = _parse_markdown_v1(raw)
        else:
            raise _bad("unsupported parse_mode")
        text, entities = _strip_text(text, entities)
        if not text and not caption:
            raise _bad("message must be non-empty")
        if _u16(text) > limit:
            raise _bad("message caption is too long" if caption else "message is too long")
        return raw, text, _auto_entities(text, entities), parse_mode

    @staticmethod
    def _markup(params: dict[str, Any]) -> dict[str, Any] | None:
        markup = params.get("reply_markup")
        if markup is None or markup == "":
            return None
        if isinstance(markup, str):
            raise _bad("can't parse reply keyboard markup JSON object")
        if not isinstance(markup, dict):
            raise _bad("object expected as reply markup")
        if "inline_keyboard" not in markup:
            return (
                markup
                if markup.get("keyboard")
                or markup.get("remove_keyboard")
                or markup.get("force_reply")
                else None
            )
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise _bad(
                'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        for button in (b for row in rows for b in row):
            if not isinstance(button, dict):
                raise _bad(
                    "can't parse inline keyboard button: InlineKeyboardButton must be an Object"
                )
            if not isinstance(button.get("text"), str):
                raise _bad("can't parse inline keyboard button: Can't find field \"text\"")
            if not any(button.get(k) not in (None, "") for k in _BUTTON_ACTIONS):
                raise _bad(
                    "can't parse inline keyboard button: Text buttons are unallowed in the "
                    "inline keyboard"
                )
            if "callback_data" in button and len(str(button["callback_data"]).encode()) > 64:
                raise _bad("BUTTON_DATA_INVALID")
        return markup if any(rows) else None

    def _target_chat(
        self, bot: _Bot, params: dict[str, Any], *, write: bool
    ) -> _Chat | _GroupChat:
        chat_id = params.get("chat_id")
        if chat_id in (None, ""):
            raise _bad("chat_id is empty")
        if isinstance(chat_id, int) and chat_id < 0:
            group = self._groups.get(chat_id)
            if group is None:
                raise _bad("chat not found")
            if bot.token not in group.members:
                raise ApiError(403, f"Forbidden: bot is not a member of the {group.type} chat")
            return group
        user = self._users.get(chat_id) if isinstance(chat_id, int) else None
        if user is None:
            raise _bad("chat not found")
        chat = self._chat(bot, user)
        if write and chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if write and not chat.opened:
            raise ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        return chat

    def _reply_to(self, chat: _Chat | _GroupChat, params: dict[str, Any]) -> int | None:
        reply = params.get("reply_parameters")
        if isinstance(reply, dict):
            target, lenient = (
                reply.get("message_id"),
                bool(reply.get("allow_sending_without_reply")),
            )
        else:
            target = params.get("reply_to_message_id")
            lenient = bool(params.get("allow_sending_without_reply"))
        if target in (None, 0):
            return None
        if chat.find(target) is None:
            if lenient:
                return None
            raise _bad("message to be replied not found")
        return int(target)

    def _rate(self, bot: _Bot, chat: _Chat | _GroupChat) -> None:
        now = _now()
        # "In a group, bots are not able to send more than 20 messages per minute"
        # (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this).
        rate = self.chat_rate if isinstance(chat, _Chat) else min(self.chat_rate, 20 / 60)
        chat.tokens = min(float(self.chat_burst), chat.tokens + (now - chat.refilled_at) * rate)
        chat.refilled_at = now
        while bot.window and now - bot.window[0] >= 1.0:
            bot.window.popleft()
        wait = 0.0
        if chat.tokens < 1.0:
            wait = (1.0 - chat.tokens) / rate
        if len(bot.window) >= self.bot_rate:
            wait = max(wait, bot.window[0] + 1.0 - now)
        if wait > 0:
            seconds = max(1, math.ceil(wait - 1e-9))
            raise ApiError(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
        chat.tokens -= 1.0
        bot.window.append(now)

    def _editable(self, bot: _Bot, chat: _Chat | _GroupChat, params: dict[str, Any]) -> _Message:
        msg = chat.find(params.get("message_id"))
        if msg is None:
            raise _bad("message to edit not found")
        if not msg.from_bot or (msg.sender is not None and msg.sender.get("id") != bot.id):
            raise _bad("message can't be edited")
        return msg

    def _edit_target(self, bot: _Bot, params: dict[str, Any]) -> _Chat | _GroupChat:
        if params.get("chat_id") in (None, "") and params.get("message_id") in (None, ""):
            if params.get("inline_message_id"):
                raise _bad("MESSAGE_ID_INVALID")
            raise _bad("message identifier is not specified")
        return self._target_chat(bot, params, write=False)

    # ---- methods (``_m_<name>`` serves <name>, case-insensitively)
    async def _m_getMe(self, bot: _Bot, params: dict[str, Any]) -> Any:
        return {
            **bot.user_dict(),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
            "can_manage_bots": bot.can_manage_bots,
        }

    async def _m_logOut(self, bot: _Bot, params: dict[str, Any]) -> Any:
        return True

    async def _m_close(self, bot: _Bot, params: dict[str, Any]) -> Any:
        return True

    async def _m_deleteWebhook(self, bot: _Bot, params: dict[str, Any]) -> Any:
        bot.webhook_url = ""
        if params.get("drop_pending_updates"):
            bot.updates.clear()
        return True

    async def _m_setWebhook(self, bot: _Bot, params: dict[str, Any]) -> Any:
        bot.webhook_url = str(params.get("url") or "")
        bot.wake("webhook")
        if params.get("drop_pending_updates"):
            bot.updates.clear()
        return True

    async def _m_getWebhookInfo(self, bot: _Bot, params: dict[str, Any]) -> Any:
        return {
            "url": bot.webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(bot.updates),
        }

    async def _m_getUpdates(self, bot: _Bot, params: dict[str, Any]) -> Any:
        if bot.webhook_url:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        offset = _int_arg(params, "offset", 0)
        limit = min(max(_int_arg(params, "limit", 100), 1), 100)
        timeout = min(max(_int_arg(params, "timeout", 0), 0), 50)
        allowed = params.get("allowed_updates")
        if isinstance(allowed, list):
            bot.allowed_updates = frozenset(allowed)
        if offset < 0:
            del bot.updates[: max(len(bot.updates) + offset, 0)]
        elif offset > 0:
            bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
        if bot.updates or timeout == 0 or self._stopping:
            return copy.deepcopy(bot.updates[:limit])
        bot.wake("conflict")
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        bot.long_poll = future
        bot.parked.set()
        try:
            done, _ = await asyncio.wait({future}, timeout=timeout)
        finally:
            if bot.long_poll is future:
                bot.long_poll = None
                bot.parked.clear()
        if done and future.result() == "conflict":
            raise ApiError(409, _CONFLICT)
        if done and future.result() == "webhook":
            raise ApiError(409, "Conflict: terminated by setWebhook request")
        return copy.deepcopy(bot.updates[:limit])

    async def _m_sendMessage(self, bot: _Bot, params: dict[str, Any]) -> Any:
        raw, text, entities, parse_mode = self._format(params, "text", limit=4096)
        markup = self._markup(params)
        chat = self._target_chat(bot, params, write=True)
        self._check_managed_bot_buttons(bot, chat, markup)
        return self._post(bot, chat, params, (raw, text, entities, parse_mode), markup)

    def _post(self, bot: _Bot, chat: _Chat | _GroupChat, params: dict[str, Any],
              formatted: tuple[str, str, list[dict[str, Any]], str | None],
              markup: dict[str, Any] | None, **content: Any) -> dict[str, Any]:
        """The shared end of every send: the reply target checked, the chat's rate applied,
        the message stored (it replaces the chat's draft, as the client shows) and returned."""
        raw, text, entities, parse_mode = formatted
        reply_to = self._reply_to(chat, params)
        self._rate(bot, chat)
        msg = _Message(next(chat.ids), True, text, raw, parse_mode, entities, markup,
                       time.time(), reply_to=reply_to, sender=bot.user_dict(), **content)
        chat.messages.append(msg)
        self._clear_draft(chat)
        return chat.message_dict(msg)

    async def _m_sendDocument(self, bot: _Bot, params: dict[str, Any]) -> Any:
        document = params.get("document")
        raw, text, entities, parse_mode = self._format(params, "caption", limit=1024, caption=True)
        markup = self._markup(params)
        if isinstance(document, dict):  # a multipart upload, see _read_params
            document = self._files[document["uploaded_as"]]
        elif document in self._files:  # a file_id sent before
            document = self._files[document]
        elif document:
            raise _bad("wrong file identifier/HTTP URL specified")
        else:
            raise _bad("there is no document in the request")
        chat = self._target_chat(bot, params, write=True)
        return self._post(bot, chat, params, (raw, text, entities, parse_mode), markup,
                          document={**document, "caption": text})

    async def _m_sendPhoto(self, bot: _Bot, params: dict[str, Any]) -> Any:
        """https://core.telegram.org/bots/api#sendphoto: a multipart upload or the file_id of a
        photo, a caption of 0-1024 characters after entities parsing. An upload "must be at most
        10 MB in size" (else tdlib's check_full_local_location: "Bad Request: file of size <n>
        bytes is too big for a photo; the maximum size is 10485760 bytes"), its "width and
        height must not exceed 10000 in total" and their "ratio must be at most 20" (else
        "Bad Request: PHOTO_INVALID_DIMENSIONS", as in nickoala/telepot#135, tdlib/td#2544);
        an image that cannot be decoded gets "Bad Request: IMAGE_PROCESS_FAILED". A file_id of
        another kind of file: "Bad Request: can't use file of type Document as Photo". The
        Message carries ``photo``, the PhotoSize array (see ``_photo_sizes``); every size
        serves the uploaded bytes (``file_bytes``)."""
        photo = params.get("photo")
        raw, text, entities, parse_mode = self._format(params, "caption", limit=1024, caption=True)
        markup = self._markup(params)
        if isinstance(photo, dict):  # a multipart upload, see _read_params
            sizes = self._store_photo(self._files[photo["uploaded_as"]])
        elif isinstance(photo, str) and photo in self._files:  # a file_id sent before
            sizes = self._photo_of(self._files[photo])
        elif photo:
            raise _bad("wrong file identifier/HTTP URL specified")
        else:
            raise _bad("there is no photo in the request")
        chat = self._target_chat(bot, params, write=True)
        return self._post(bot, chat, params, (raw, text, entities, parse_mode), markup,
                          media={"photo": sizes})

    def _store_photo(self, upload: dict[str, Any]) -> list[dict[str, Any]]:
        content = upload["content"]
        if len(content) > MAX_PHOTO_UPLOAD_BYTES:
            raise _bad(
                f"file of size {len(content)} bytes is too big for a photo; the maximum size "
                f"is {MAX_PHOTO_UPLOAD_BYTES} bytes"
            )
        dimensions = _image_size(content)
        if dimensions is None:
            raise _bad("IMAGE_PROCESS_FAILED")
        width, height = dimensions
        if (
            min(width, height) < 1
            or width + height > MAX_PHOTO_SIDES
            or max(width, height) > MAX_PHOTO_RATIO * min(width, height)
        ):
            raise _bad("PHOTO_INVALID_DIMENSIONS")
        sizes = []
        for w, h in _photo_sizes(width, height):
            stored = self._store_file("photo.jpg", content, "image/jpeg", folder="photos")
            sizes.append({
                "file_id": stored["file_id"], "file_unique_id": stored["file_unique_id"],
                "file_size": stored["file_size"], "width": w, "height": h,
            })
        for size in sizes:
            self._photo_sets[size["file_id"]] = sizes
        return copy.deepcopy(sizes)

    def _photo_of(self, stored: dict[str, Any]) -> list[dict[str, Any]]:
        """The PhotoSize array a photo's file_id belongs to (resent as is: "There are no
        limits for files sent this way", https://core.telegram.org/bots/api#sending-files)."""
        kind = _FILE_TYPES.get(stored["file_path"].split("/", 1)[0], "Document")
        if kind != "Photo":
            raise _bad(f"can't use file of type {kind} as Photo")
        known = self._photo_sets.get(stored["file_id"])
        if known is not None:
            return copy.deepcopy(known)
        # A user's photo (SimUser.send_photo): its sizes are not recorded, only this one.
        return [{
            "file_id": stored["file_id"], "file_unique_id": stored["file_unique_id"],
            "file_size": stored["file_size"], "width": 1280, "height": 960,
        }]

    @staticmethod
    def _clear_draft(chat: _Chat | _GroupChat) -> None:
        """A message from the bot replaces its live draft: clients delete the draft "when
        receiving a normal message within the same chat" (https://core.telegram.org/api/bots/ai)."""
        if isinstance(chat, _Chat):
            chat.draft = None

    async def _m_sendMessageDraft(self, bot: _Bot, params: dict[str, Any]) -> Any:
        """https://core.telegram.org/bots/api#sendmessagedraft (see the module docstring).

        Checked in the order the official server reads a request (the text and its entities
        before the chat; process_send_message_draft_query in tdlib/telegram-bot-api). The
        errors of Telegram's servers, which the open-source code does not contain, are those
        bots report: a group or supergroup gets 400 "Bad Request: TEXTDRAFT_PEER_INVALID"
        (nullclaw/nullclaw#626); a zero or missing draft_id "Bad Request: RANDOM_ID_INVALID"
        (the MTProto name of the draft id is random_id; text of this error not confirmed by a
        public report, taken as plausible); text over 4096 characters "Bad Request: message is
        too long", as for sendMessage."""
        if not self.drafts_supported:
            raise ApiError(404, "Not Found")  # a server that predates the method
        text, entities, parse_mode = self._draft_text(params)
        chat = self._target_chat(bot, params, write=True)
        if isinstance(chat, _GroupChat):
            raise _bad("TEXTDRAFT_PEER_INVALID")
        draft_id = params.get("draft_id")
        if not isinstance(draft_id, int) or draft_id == 0:
            raise _bad("RANDOM_ID_INVALID")
        self._draft_allowance(chat)
        update = DraftUpdate(_now(), draft_id, text or THINKING, parse_mode, entities)
        chat.draft = update
        chat.draft_log.append(update)
        return True

    def _draft_text(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str | None]:
        """The draft's text after entity parsing, "" for none (the "Thinking..." placeholder):
        same parsers, errors and 4096 limit as sendMessage, but empty text is allowed."""
        raw = params.get("text")
        if raw is None or not str(raw).strip():
            return "", [], params.get("parse_mode") or None
        try:
            _raw, text, entities, parse_mode = self._format(params, "text", limit=4096)
        except ApiError as error:
            if error.description != "Bad Request: message must be non-empty":
                raise
            return "", [], params.get("parse_mode") or None  # only whitespace after parsing
        return text, entities, parse_mode

    def _draft_allowance(self, chat: _Chat) -> None:
        """The chat's draft token bucket: ``draft_rate`` per second, ``draft_burst`` at once."""
        now = _now()
        if chat.draft_tokens is None:
            chat.draft_tokens = float(self.draft_burst)
        chat.draft_tokens = min(
            float(self.draft_burst),
            chat.draft_tokens + (now - chat.draft_refilled_at) * self.draft_rate,
        )
        chat.draft_refilled_at = now
        if chat.draft_tokens < 1.0:
            wait = (1.0 - chat.draft_tokens) / self.draft_rate
            seconds = max(1, math.ceil(wait - 1e-9))
            raise ApiError(429, f"Too Many Requests: retry after {seconds}", retry_after=seconds)
        chat.draft_tokens -= 1.0

    # ---- managed bots (Bot API 9.6)
    def set_bot_management(self, bot: str, enabled: bool = True) -> None:
        """The owner's toggle in the @BotFather Mini App that lets ``bot`` manage other bots
        (getMe: can_manage_bots)."""
        self._bot(bot).can_manage_bots = enabled

    def bot_token(self, bot: str) -> str:
        """The token of ``bot`` (a test checks where a managed bot's token ended up)."""
        return self._bot(bot).token

    def managed_bots(self, bot: str) -> list[str]:
        """Usernames of the bots ``bot`` manages."""
        token = self._bot(bot).token
        return [b.username for b in self._bots.values() if b.manager == token]

    def _check_managed_bot_buttons(
        self, bot: _Bot, chat: _Chat | _GroupChat, markup: dict[str, Any] | None
    ) -> None:
        """KeyboardButton.request_managed_bot: "Available for bots that enabled management
        of other bots in the @BotFather Mini App. Available in private chats only";
        request_id is a signed 32-bit integer unique within the message
        (https://core.telegram.org/bots/api#keyboardbutton). The error texts are the
        MTProto ones the Bot API passes through (BUTTON_TYPE_INVALID, BUTTON_ID_INVALID)."""
        rows = (markup or {}).get("keyboard") or []
        buttons = [b for row in rows if isinstance(row, list) for b in row
                   if isinstance(b, dict) and "request_managed_bot" in b]
        seen: set[int] = set()
        for button in buttons:
            request = button["request_managed_bot"]
            if not isinstance(request, dict) or "request_id" not in request:
                raise _bad("can't parse keyboard button: Field \"request_id\" must be of "
                           "type Number")
            rid = request["request_id"]
            if not isinstance(rid, int) or isinstance(rid, bool) or not -2**31 <= rid < 2**31:
                raise _bad("can't parse keyboard button: Field \"request_id\" must be a "
                           "valid Number")
            if rid in seen:
                raise _bad("BUTTON_ID_INVALID")
            seen.add(rid)
            if not isinstance(chat, _Chat) or not bot.can_manage_bots:
                raise _bad("BUTTON_TYPE_INVALID")

    async def _create_managed_bot(
        self, user: SimUser, bot: str, name: str, username: str, message_id: int | None
    ) -> str:
        manager = self._bot(bot)
        chat = self._chat(manager, user)
        msgs = [m for m in chat.messages if m.from_bot and not m.deleted
                and (message_id is None or m.message_id == message_id)]
        request = next((b["request_managed_bot"] for m in reversed(msgs)
                        for row in (m.reply_markup or {}).get("keyboard") or []
                        for b in row if isinstance(b, dict) and "request_managed_bot" in b),
                       None)
        if request is None:
            raise AssertionError(f"no request_managed_bot button in the chat with {bot}")
        # bots.createBot's errors (https://core.telegram.org/method/bots.createBot).
        if not manager.can_manage_bots:
            raise ApiError(400, "MANAGER_PERMISSION_MISSING")
        username = username.lstrip("@")
        if not 1 <= len(name) <= 64:
            raise ApiError(400, "NAME_INVALID")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{4,31}", username):
            raise ApiError(400, "USERNAME_INVALID")
        if not username.lower().endswith("bot"):
            raise ApiError(400, "USERNAME_SUFFIX_MISSING")
        if self._find_bot(username) is not None:
            raise ApiError(400, "USERNAME_OCCUPIED")
        bot_id = next(self._bot_ids)
        token = f"{bot_id}:{secrets.token_urlsafe(26)[:35]}"
        self.add_bot(token, username, name)
        created = self._bots[token]
        created.manager = manager.token
        chat.opened, chat.blocked = True, False
        self._enqueue(manager, "managed_bot",
                      {"user": user.user_dict(), "bot": created.user_dict()})
        msg = _Message(next(chat.ids), False, "", "", None, [], None, time.time(),
                       media={"managed_bot_created": {"bot": created.user_dict()}},
                       sender=user.user_dict())
        chat.messages.append(msg)
        self._enqueue(manager, "message", chat.message_dict(msg))
        manager.log.append(f"{_now():.3f} user {user.user_id} created managed bot @{username}")
        await asyncio.sleep(0)
        return username

    def _managed_by(self, bot: _Bot, params: dict[str, Any]) -> _Bot:
        """getManagedBotToken / replaceManagedBotToken: only the manager of the bot
        ``user_id`` may call them; anything else is MTProto's BOT_INVALID ("This is not a
        valid bot", https://core.telegram.org/method/bots.exportBotToken)."""
        user_id = params.get("user_id")
        if user_id in (None, ""):
            raise _bad("user_id is empty")
        if not isinstance(user_id, int):
            raise _bad("invalid user_id specified")
        target = next((b for b in self._bots.values() if b.id == user_id), None)
        if target is None or target.manager != bot.token:
            raise _bad("BOT_INVALID")
        return target

    async def _m_getManagedBotToken(self, bot: _Bot, params: dict[str, Any]) -> Any:
        """https://core.telegram.org/bots/api#getmanagedbottoken: the token as a String."""
        return self._managed_by(bot, params).token

    async def _m_replaceManagedBotToken(self, bot: _Bot, params: dict[str, Any]) -> Any:
        """https://core.telegram.org/bots/api#replacemanagedbottoken: the old token stops
        working, the new one is returned."""
        target = self._managed_by(bot, params)
        old = target.token
        target.token = f"{target.id}:{secrets.token_urlsafe(26)[:35]}"
        self._bots[target.token] = self._bots.pop(old)
        target.wake("stop")
        return target.token

    async def _m_getFile(self, bot: _Bot, params: dict[str, Any]) -> Any:
        doc = self._files.get(str(params.get("file_id")))
        if doc is None:
            raise _bad("invalid file_id")
        if doc["file_size"] > MAX_DOWNLOAD_BYTES:
            # https://core.telegram.org/bots/api#getfile: "For the moment, bots can download
            # files of up to 20MB in size." The answer, as reported in tdlib/telegram-bot-api#51
            # and eternnoir/pyTelegramBotAPI#2527: 400 "Bad Request: file is too big".
            raise _bad("file is too big")
        return {k: doc[k] for k in ("file_id", "file_unique_id", "file_size", "file_path")}

    async def _m_editMessageText(self, bot: _Bot, params: dict[str, Any]) -> Any:
        raw, text, entities, parse_mode = self._format(params, "text", limit=4096)
        markup = self._markup(params)
        chat = self._edit_target(bot, params)
        msg = self._editable(bot, chat, params)
        if msg.document is not None:
            raise _bad("there is no text in the message to edit")
        if (msg.text, msg.entities, msg.reply_markup) == (text, entities, markup):
            raise ApiError(400, _NOT_MODIFIED)
        self._rate(bot, chat)
        msg.edit_history.append(msg.text)
        msg.text, msg.raw_text, msg.parse_mode, msg.entities = text, raw, parse_mode, entities
        msg.reply_markup, msg.edits, msg.edit_date = markup, msg.edits + 1, time.time()
        return chat.message_dict(msg)

    async def _m_editMessageReplyMarkup(self, bot: _Bot, params: dict[str, Any]) -> Any:
        markup = self._markup(params)
        chat = self._edit_target(bot, params)
        msg = self._editable(bot, chat, params)
        if msg.reply_markup == markup:
            raise ApiError(400, _NOT_MODIFIED)
        msg.edit_history.append(msg.text)
        msg.reply_markup, msg.edits, msg.edit_date = markup, msg.edits + 1, time.time()
        return chat.message_dict(msg)

    async def _m_deleteMessage(self, bot: _Bot, params: dict[str, Any]) -> Any:
        chat = self._target_chat(bot, params, write=False)
        msg = chat.find(params.get("message_id"))
        if msg is None:
            raise _bad("message to delete not found")
        msg.deleted = True
        return True

    async def _m_sendChatAction(self, bot: _Bot, params: dict[str, Any]) -> Any:
        if params.get("action") not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        self._target_chat(bot, params, write=True)
        return True

    async def _m_answerCallbackQuery(self, bot: _Bot, params: dict[str, Any]) -> Any:
        query = bot.callbacks.get(str(params.get("callback_query_id")))
        if query is None or query.answered:
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        query.answered = True
        query.answer = {
            k: params[k] for k in ("text", "show_alert", "url", "cache_time") if k in params
        }
        return True

    @staticmethod
    def _commands_key(params: dict[str, Any]) -> tuple[str, str]:
        scope = (
            params.get("scope") if isinstance(params.get("scope"), dict) else {"type": "default"}
        )
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    async def _m_setMyCommands(self, bot: _Bot, params: dict[str, Any]) -> Any:
        commands = params.get("commands", [])
        if isinstance(commands, str):
            raise _bad("can't parse commands JSON object")
        if not isinstance(commands, list):
            raise _bad("expected an Array of BotCommand")
        if len(commands) > 100:
            raise _bad("BOT_COMMANDS_TOO_MUCH")
        cleaned = []
        for item in commands:
            if not isinstance(item, dict):
                raise _bad("can't parse BotCommand: expected an Object")
            command = str(item.get("command", "")).strip().removeprefix("/")
            description = str(item.get("description", "")).strip()
            if not command:
                raise _bad("command must be non-empty")
            if len(command) > 32:
                raise _bad("command length must not exceed 32")
            if not description:
                raise _bad("command description must be non-empty")
            if len(description) > 256:
                raise _bad("command description length must not exceed 256")
            if not re.fullmatch(r"[a-z0-9_]+", command):
                raise _bad("BOT_COMMAND_INVALID")
            cleaned.append({"command": command, "description": description})
        bot.commands[self._commands_key(params)] = cleaned
        return True

    async def _m_getMyCommands(self, bot: _Bot, params: dict[str, Any]) -> Any:
        return copy.deepcopy(bot.commands.get(self._commands_key(params), []))

    async def _m_deleteMyCommands(self, bot: _Bot, params: dict[str, Any]) -> Any:
        bot.commands.pop(self._commands_key(params), None)
        return True
