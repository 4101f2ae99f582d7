"""The demo's world: the real fleet, the emulated Telegram with one demo user, and the emulated
Claude (or the real API). Everything the web page shows or does goes through here, and only
through the emulator's public test API (add_user, add_bot, SimUser's send/press/chat)."""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetgram.config import Settings, load_settings
from fleetgram.emulators.claude_api import ClaudeEmulator
from fleetgram.emulators.telegram_api import ChatMessage, SimUser, TelegramEmulator
from fleetgram.fleet import Fleet

MASTER = "fleetgram_master_bot"
USER_ID = 4242
USER_NAME = "You"
MAX_TEXT = 4096  # what a Telegram client lets one type into one message
# Entity fields the page needs to draw formatting (the rest is client detail).
_ENTITY_KEYS = ("type", "offset", "length", "url", "language")
# How many answered button presses the page is told about (it shows each one once, as a toast).
_KEPT_ANSWERS = 20


def worker_bot(n: int) -> str:
    return f"fleetgram_worker{n}_bot"


@dataclass(frozen=True)
class Chat:
    """One chat on the page: the demo user's private chat with one bot."""

    bot: str
    title: str
    role: str  # "master" or "worker"


@dataclass(frozen=True)
class ClaudeChoice:
    """Where the workers' Claude is: the emulator (no key) or the real API."""

    api_key: str | None = None
    base_url: str | None = None
    model: str | None = None

    @property
    def real(self) -> bool:
        return bool(self.api_key)

    @classmethod
    def from_environment(cls, env: dict[str, str]) -> ClaudeChoice:
        key = env.get("ANTHROPIC_API_KEY", "").strip() or None
        if key is None:
            return cls()
        return cls(key, env.get("ANTHROPIC_BASE_URL", "").strip() or None,
                   env.get("CLAUDE_MODEL", "").strip() or None)


class DemoError(Exception):
    """What the visitor asked cannot be done (unknown chat, empty text, no such button)."""


def _last_user_text(body: dict[str, Any]) -> str:
    messages = body.get("messages") or []
    content = messages[-1].get("content", "") if messages else ""
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content
                    if isinstance(block, dict) and block.get("type") == "text")


def demo_answer(body: dict[str, Any]) -> str:
    """The emulated Claude's answer in the demo: a short, plausible Markdown answer shaped by
    the prompt, long enough to watch it stream."""
    prompt = " ".join(_last_user_text(body).split())[:200] or "your request"
    lower = prompt.lower()
    if "test" in lower:
        body_md = ("Here are tests for it, one behaviour each:\n\n```python\n"
                   "def test_greets_by_name():\n    assert greet(\"Ada\") == \"Hello, Ada!\"\n\n"
                   "def test_refuses_an_empty_name():\n    with pytest.raises(ValueError):\n"
                   "        greet(\"\")\n```\n\n"
                   "Run them with `pytest -q`; both should pass against the code above.")
    elif "doc" in lower:
        body_md = ("A first cut of the **README** section:\n\n"
                   "**greet(name)** returns a friendly greeting. It refuses an empty name with "
                   "a `ValueError`, so callers find their mistake early.\n\n"
                   "Example: `greet(\"Ada\")` gives `Hello, Ada!`.\n\n"
                   "I kept it short: one sentence on what it does, one on how it fails, "
                   "one example.")
    elif "code" in lower:
        body_md = ("Here is a small, complete version:\n\n```python\n"
                   "def greet(name: str) -> str:\n    if not name:\n"
                   "        raise ValueError(\"name must not be empty\")\n"
                   "    return f\"Hello, {name}!\"\n```\n\n"
                   "It validates its input first and keeps the happy path on one line. "
                   "Tell me if you want it async or with a logger.")
    else:
        body_md = ("Let me work through it step by step.\n\n"
                   "1. **Understand** what is asked and what done looks like.\n"
                   "2. **Plan** the smallest change that gets there.\n"
                   "3. **Do it**, then check the result against the goal.\n\n"
                   "Each step is short, so you can follow along as the answer streams in.")
    return (f"You asked: _{prompt}_\n\n{body_md}\n\n"
            "(This answer comes from the Claude API emulator: the demo runs without a key.)")


def _message_view(message: ChatMessage) -> dict[str, Any]:
    """A message as the page draws it: plain text plus entities (the page formats them with
    DOM nodes, never as HTML), inline buttons, and whether it was edited (streaming)."""
    rows = (message.reply_markup or {}).get("inline_keyboard") or []
    buttons = [[{"text": str(b.get("text", "")), "data": b.get("callback_data"),
                 "url": b.get("url")} for b in row] for row in rows]
    attachment = None
    if message.document:
        attachment = f"📎 {message.document.get('file_name') or 'file'}"
    elif message.media:
        attachment = f"[{', '.join(sorted(message.media))}]"
    return {
        "id": message.message_id,
        "from_bot": message.from_bot,
        "text": message.text,
        "entities": [{k: e[k] for k in _ENTITY_KEYS if k in e} for e in message.entities],
        "buttons": buttons,
        "edits": message.edits,
        "reply_to": message.reply_to,
        "attachment": attachment,
    }


class DemoWorld:
    """Emulated Telegram and Claude, the fleet against them, and the demo user who opened
    every chat. `start` then `snapshot`/`send`/`press`; `stop` ends it all."""

    def __init__(self, workers: int = 3, claude: ClaudeChoice | None = None, *,
                 tokens_per_second: float = 30.0, stream_edit_interval: float = 0.5) -> None:
        if not 1 <= workers <= 9:
            raise ValueError("workers must be between 1 and 9")
        self.workers = workers
        self.claude = claude or ClaudeChoice()
        self.tokens_per_second = tokens_per_second
        self.stream_edit_interval = stream_edit_interval
        self.telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
        self.claude_emulator: ClaudeEmulator | None = None
        self.fleet: Fleet | None = None
        self.user: SimUser | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        # Made up per run: nothing outside this process knows them, and they are never shown.
        self._tokens = {MASTER: f"1000:demo-{secrets.token_hex(12)}"}
        for n in range(1, workers + 1):
            self._tokens[worker_bot(n)] = f"{2000 + n}:demo-{secrets.token_hex(12)}"
        self._presses: list[tuple[str, str]] = []  # (bot, callback query id), newest last
        self._emulator_key = f"sk-ant-demo-{secrets.token_hex(12)}"

    @property
    def chats(self) -> list[Chat]:
        return [Chat(MASTER, "Master", "master"),
                *(Chat(worker_bot(n), f"Worker {n}", "worker")
                  for n in range(1, self.workers + 1))]

    @property
    def log_secrets(self) -> tuple[str, ...]:
        """What logs must never show."""
        key = self.claude.api_key or self._emulator_key
        return tuple(s for s in (*self._tokens.values(), key) if s)

    def settings(self, data_dir: Path) -> Settings:
        if self.claude.real:
            key, base_url = self.claude.api_key or "", self.claude.base_url
        else:
            assert self.claude_emulator is not None
            key, base_url = self.claude_emulator.api_key, self.claude_emulator.url
        env = {
            "MASTER_BOT_TOKEN": self._tokens[MASTER],
            "WORKER_TOKEN_POOL": ",".join(self._tokens[worker_bot(n)]
                                          for n in range(1, self.workers + 1)),
            "ALLOWED_USER_IDS": str(USER_ID),
            "ANTHROPIC_API_KEY": key,
            "TELEGRAM_API_URL": self.telegram.url,
            "DATABASE_URL": f"sqlite:///{data_dir / 'fleet.sqlite3'}",
            "DATA_DIR": str(data_dir),
            # Every worker up from the start: three prompts in a row run at once.
            "MIN_WORKERS": str(self.workers),
            "MAX_WORKERS": str(self.workers),
            "POLL_INTERVAL": "0.2",
            "STREAM_EDIT_INTERVAL": str(self.stream_edit_interval),
            "HEALTH_PORT": "0",
            "METRICS_PORT": "0",
        }
        if base_url:
            env["ANTHROPIC_BASE_URL"] = base_url
        if self.claude.model:
            env["CLAUDE_MODEL"] = self.claude.model
        return load_settings(env, dotenv=None)

    async def start(self) -> None:
        """Start the emulators, then the fleet; the demo user then presses Start in the
        master's chat (its welcome is the first thing the page shows). On failure, whatever
        was started is stopped again."""
        try:
            self._tmp = tempfile.TemporaryDirectory(prefix="fleetgram-demo-")
            await self.telegram.start()
            if not self.claude.real:
                self.claude_emulator = ClaudeEmulator(
                    api_key=self._emulator_key, tokens_per_second=self.tokens_per_second)
                self.claude_emulator.script(demo_answer)
                await self.claude_emulator.start()
            for chat in self.chats:
                self.telegram.add_bot(self._tokens[chat.bot], chat.bot,
                                      f"Claude {chat.title}")
            self.user = self.telegram.add_user(USER_ID, USER_NAME, "demo_user")
            for chat in self.chats[1:]:
                # As if the user had opened every worker's chat: workers may write there.
                self.user.opened_earlier(chat.bot)
            self.fleet = Fleet(self.settings(Path(self._tmp.name)))
            await self.fleet.start()
            await self.user.start(MASTER)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """The fleet first (its workers still write their last words), then the emulators."""
        fleet, self.fleet = self.fleet, None
        if fleet is not None:
            await fleet.stop()
        if self.claude_emulator is not None:
            await self.claude_emulator.stop()
            self.claude_emulator = None
        await self.telegram.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ---- what the page reads and does
    def _chat(self, bot: str) -> Chat:
        for chat in self.chats:
            if chat.bot == bot:
                return chat
        raise DemoError(f"no chat {bot!r}")

    def _user(self) -> SimUser:
        if self.user is None:
            raise DemoError("the demo is not running")
        return self.user

    def _draft(self, bot: str) -> str | None:
        """The chat's live draft (sendMessageDraft: how workers stream an answer), if any."""
        return self._user().visible_draft(bot)

    def snapshot(self) -> dict[str, Any]:
        """Every chat as the user's Telegram client shows it now, and the toasts of the
        buttons pressed lately."""
        user = self._user()
        chats = [{"bot": c.bot, "title": c.title, "role": c.role,
                  "messages": [_message_view(m) for m in user.chat(c.bot)],
                  "draft": self._draft(c.bot)} for c in self.chats]
        return {"mode": "anthropic" if self.claude.real else "emulator",
                "chats": chats, "toasts": self._toasts()}

    def _toasts(self) -> list[dict[str, str]]:
        toasts = []
        for bot, query_id in self._presses:
            answer = self.telegram.callback_answer(query_id)
            if answer and answer.get("text"):
                toasts.append({"id": query_id, "chat": bot, "text": str(answer["text"])})
        return toasts

    async def send(self, bot: str, text: str) -> int:
        """The user types `text` into the chat with `bot`; the new message's id."""
        self._chat(bot)
        if not text.strip():
            raise DemoError("an empty message is not sent")
        if len(text) > MAX_TEXT:
            raise DemoError(f"a message holds at most {MAX_TEXT} characters")
        return await self._user().send(bot, text)

    async def press(self, bot: str, message_id: int, data: str) -> str:
        """The user presses the inline button carrying `data` under a bot message."""
        self._chat(bot)
        try:
            query_id = await self._user().press(bot, message_id, data)
        except AssertionError as exc:  # the emulator's "no such message or button"
            raise DemoError(str(exc).split(";")[0]) from None
        self._presses = [*self._presses, (bot, query_id)][-_KEPT_ANSWERS:]
        return query_id
