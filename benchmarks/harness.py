"""The benchmark harness: emulated Telegram and Claude in this process, the bots in others.

Why this shape: the fleet (or the single-bot baseline) runs as its own process, started the way
a user starts it (`python -m fleetgram.cli up`, settings from the environment), so its event
loop is not shared with the emulators and its RSS is its own. The emulators and the
measurements live here, on one clock (this event loop's `loop.time()`, which the Telegram
emulator also uses for `Call.at`).

Time stamps, all taken from the outside:
- a prompt is sent: just before `SimUser.send` (the emulator queues the update at once);
- a bot's call to Telegram: `Call.at` in the Telegram emulator's request log (on arrival);
- Claude's tokens: `ClaudeTap`, a pass-through proxy between the bots and the Claude emulator
  that notes when each text delta of a streamed answer passes through it (the Claude
  emulator itself logs requests, not token times).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from fleetgram.emulators.claude_api import ClaudeEmulator, tokenize
from fleetgram.emulators.telegram_api import Call, SimUser, TelegramEmulator

MASTER = "fleet_master_bot"
MASTER_TOKEN = "1000:master-token-abcdef"
SINGLE = "single_bot"
SINGLE_TOKEN = "3000:single-token-abcdef"
ADA = 1111
API_KEY = "sk-ant-bench-key-0001"
MAX_WORKERS = 5
BENCH_DIR = Path(__file__).resolve().parent
WORDS = ("able", "bake", "calm", "dart", "echo", "fern", "gust", "hail", "iris", "jade",
         "kite", "lark", "mint", "nest", "opal", "pine", "quay", "reed", "sage", "tide")
SENDS = frozenset({"sendmessage", "editmessagetext"})  # permanent text (drafts apart)
DRAFT = "sendmessagedraft"


def worker_bot(n: int) -> str:
    return f"fleet_worker{n}_bot"


def worker_token(n: int) -> str:
    return f"{2000 + n}:worker{n}-token-abcdef"


# ----------------------------------------------------------------------------- prompts
def marker(key: str) -> tuple[str, str]:
    """The first and last token of the answer to prompt `key` ("q0007"): unique words of one
    token each (A/Z and the number in base 36) that say when the answer began and when it
    was complete in what a bot sent."""
    number, digits = int(key[1:]), ""
    for _ in range(3):
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
    return f"A{digits}", f"Z{digits}"


def prompt_text(key: str) -> str:
    return f"{key} write a short note about benchmarks"


def answer_text(key: str, tokens: int) -> str:
    """An answer of exactly `tokens` emulator tokens (four-letter words are one token each)."""
    first, last = marker(key)
    middle = [WORDS[i % len(WORDS)] for i in range(max(0, tokens - 2))]
    text = " ".join([first, *middle, last])
    assert len(tokenize(text)) == tokens, (len(tokenize(text)), tokens)
    return text


def key_of_body(body: dict[str, Any]) -> str | None:
    """The prompt key in a Claude request: the last user turn's text starts with it."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        texts = [content] if isinstance(content, str) else [
            b.get("text", "") for b in content or [] if isinstance(b, dict)]
        for text in texts:
            word = text.split(" ", 1)[0] if text else ""
            if word.startswith("q") and word[1:].isdigit():
                return word
        return None
    return None


# ----------------------------------------------------------------------------- Claude
@dataclass
class Stream:
    """What passed through the tap for one streamed answer (loop times)."""

    key: str | None
    requested: float
    first_text: float | None = None
    last_text: float | None = None
    stopped: float | None = None


class ClaudeTap:
    """A pass-through proxy in front of the Claude emulator noting when text passes."""

    def __init__(self, upstream: ClaudeEmulator) -> None:
        self.upstream = upstream
        self.streams: list[Stream] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True,
                                     shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def by_key(self) -> dict[str, Stream]:
        """The last completed stream of each prompt."""
        return {s.key: s for s in self.streams if s.key and s.stopped is not None}

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        loop = asyncio.get_running_loop()
        raw = await request.read()
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        stream = Stream(key_of_body(body) if isinstance(body, dict) else None, loop.time())
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with self._session.request(request.method, self.upstream.url + request.path_qs,
                                         data=raw, headers=headers) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")})
            await response.prepare(request)
            if "text/event-stream" in upstream.headers.get("content-type", ""):
                self.streams.append(stream)
            buffer = b""
            async for chunk in upstream.content.iter_any():
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                await response.write(chunk)
                self._note(stream, events, loop.time())
            await response.write_eof()
        return response

    @staticmethod
    def _note(stream: Stream, events: list[bytes], now: float) -> None:
        for event in events:
            if b'"text_delta"' in event:
                stream.first_text = stream.first_text or now
                stream.last_text = now
            elif b"event: message_stop" in event:
                stream.stopped = now


@dataclass
class Emulated:
    """Telegram and Claude (behind the tap), with the bots and Ada set up."""

    telegram: TelegramEmulator
    claude: ClaudeEmulator
    tap: ClaudeTap
    ada: SimUser
    answer_tokens: dict[str, int] = field(default_factory=dict)
    default_tokens: int = 100

    def answer(self, body: dict[str, Any]) -> str:
        key = key_of_body(body) or "q0000"
        return answer_text(key, self.answer_tokens.get(key, self.default_tokens))


@contextlib.asynccontextmanager
async def emulated(tokens_per_second: float, *, lenient: bool = False):  # type: ignore[no-untyped-def]
    """Emulators for one run. Chat limits are generous (as in the project's e2e tests): the
    figures measure the bots, and how often they call per chat is counted, not throttled.
    `lenient` lifts the per-bot limit too (the master's own receipt throughput)."""
    if lenient:
        telegram = TelegramEmulator(chat_burst=100_000, chat_rate=100_000.0, bot_rate=100_000)
    else:
        telegram = TelegramEmulator(chat_burst=30, chat_rate=20.0)
    claude = ClaudeEmulator(api_key=API_KEY, tokens_per_second=tokens_per_second)
    tap = ClaudeTap(claude)
    await telegram.start()
    await claude.start()
    await tap.start()
    telegram.add_bot(MASTER_TOKEN, MASTER, "Claude Master")
    telegram.add_bot(SINGLE_TOKEN, SINGLE, "Claude")
    for n in range(1, MAX_WORKERS + 1):
        telegram.add_bot(worker_token(n), worker_bot(n), f"Claude Worker {n}")
    world = Emulated(telegram, claude, tap, telegram.add_user(ADA, "Ada", "ada"))
    claude.script(world.answer)
    try:
        yield world
    finally:
        await tap.stop()
        await claude.stop()
        await telegram.stop()


# ----------------------------------------------------------------------------- processes
def base_env(world: Emulated, database_url: str, workers: int) -> dict[str, str]:
    """Settings as a user's .env would hold them, pointed at the emulators. Everything not
    named here keeps its default (poll interval, stream edit interval, heartbeat...). The
    intake limits are raised: they are policy, and the load phases would trip them."""
    return {
        "MASTER_BOT_TOKEN": MASTER_TOKEN,
        "WORKER_TOKEN_POOL": ",".join(worker_token(n) for n in range(1, MAX_WORKERS + 1)),
        "ALLOWED_USER_IDS": str(ADA),
        "ANTHROPIC_API_KEY": API_KEY,
        "ANTHROPIC_BASE_URL": world.tap.url,
        "TELEGRAM_API_URL": world.telegram.url,
        "DATABASE_URL": database_url,
        "MIN_WORKERS": str(workers),
        "MAX_WORKERS": str(workers),
        "PROMPTS_PER_MINUTE": "1000000",
        "MAX_PENDING_PER_USER": "1000000",
        "HEALTH_PORT": "0",
        "METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }


class BotProcess:
    """A child process (`fleetgram up`, `fleetgram master`/`worker`, or the single bot)."""

    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, name: str) -> None:
        self.args, self.env, self.workdir, self.name = args, env, workdir, name
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        _LIVE.add(self)
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")}
        env.update(self.env)
        with open(self.log, "wb") as log:
            # cwd: an empty folder, so no .env of the user's is read and nothing shadows stdlib.
            self.proc = subprocess.Popen([sys.executable, "-P", *self.args], env=env,
                                         cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")

    def rss_mb(self) -> float:
        """Resident set size (VmRSS of /proc/PID/status), in MB (10^6 bytes): what `top` and
        a container's memory limit see, shared libraries included."""
        return self._kib(f"/proc/{self.pid}/status", "VmRSS:") * 1024 / 1e6

    def pss_mb(self) -> float | None:
        """Proportional set size (shared pages split among their users), in MB; None where
        /proc/PID/smaps_rollup is missing."""
        try:
            return self._kib(f"/proc/{self.pid}/smaps_rollup", "Pss:") * 1024 / 1e6
        except (OSError, RuntimeError):
            return None

    @staticmethod
    def _kib(path: str, field_name: str) -> int:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1])
        raise RuntimeError(f"no {field_name} in {path}")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _LIVE.discard(self)


# Bot processes started and not yet ended: killed when the benchmark exits, however it ends.
_LIVE: set[BotProcess] = set()
atexit.register(lambda: [p.kill() for p in list(_LIVE)])


async def stop_all(processes: Iterable[BotProcess], within: float = 8.0) -> None:
    """SIGTERM to all at once (as Ctrl-C would), then wait; whatever is left is killed."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(
            p.proc is not None and p.proc.poll() is None for p in processes):
        await asyncio.sleep(0.05)
    for process in processes:
        process.kill()


def fleet_process(env: dict[str, str], workdir: Path, command: str = "up",
                  name: str = "fleet", extra: Iterable[str] = ()) -> BotProcess:
    return BotProcess(["-m", "fleetgram.cli", command, *extra], env, workdir, name)


def single_bot_process(env: dict[str, str], workdir: Path) -> BotProcess:
    return BotProcess([str(BENCH_DIR / "single_bot.py")], env, workdir, "single")


async def wait_for(predicate: Callable[[], Any], within: float, what: str,
                   alive: Iterable[BotProcess] = ()) -> Any:
    """Poll `predicate` until truthy; fail after `within` s, or at once if a process died."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        for process in alive:
            process.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_polling(world: Emulated, bots: Iterable[str], within: float,
                       processes: Iterable[BotProcess]) -> None:
    """Wait until every bot has a long poll parked (started, idle, listening)."""
    processes = list(processes)
    for bot in bots:
        deadline = time.monotonic() + within
        while True:
            for process in processes:
                process.check_alive()
            with contextlib.suppress(TimeoutError):
                await world.telegram.wait_until_polling(bot, timeout=0.2)
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{bot} did not start polling within {within:g} s")


# ----------------------------------------------------------------------------- the call log
def text_of(call: Call) -> str:
    return str(call.params.get("text", ""))


def to_ada(call: Call) -> bool:
    return str(call.params.get("chat_id", "")) == str(ADA)


def token_of(bot: str) -> str:
    """A bot's token (what `Call.token` names)."""
    if bot == MASTER:
        return MASTER_TOKEN
    if bot == SINGLE:
        return SINGLE_TOKEN
    return worker_token(int(bot.removeprefix("fleet_worker").removesuffix("_bot")))


@dataclass
class Seen:
    """When the user could see each stage of one prompt's answer (loop times)."""

    sent: float
    receipt: float | None = None
    first_message: float | None = None  # the answering bot's first call in the user's chat
    first_text: float | None = None  # first call showing answer text (a draft counts)
    final_text: float | None = None  # first permanent message holding the whole answer
    bot: str | None = None  # the token of the bot that answered


_KEY = re.compile(r"\b(?:(q)(\d{4})|([AZ])([0-9a-z]{3}))\b")


class Watcher:
    """Reads the Telegram emulator's request log incrementally: for each prompt key, when each
    stage reached Telegram. Only calls Telegram accepted (HTTP 200) count as seen."""

    def __init__(self, world: Emulated, answer_bots: Iterable[str]) -> None:
        self.world = world
        self.answer_tokens = {token_of(b) for b in answer_bots}
        self.stages: dict[str, Seen] = {}
        self._pos = 0
        self._pending: list[Call] = []

    def sent(self, key: str, at: float) -> None:
        self.stages[key] = Seen(at)

    def scan(self) -> None:
        calls = self.world.telegram.calls
        waiting, self._pending = self._pending, []
        fresh = calls[self._pos:]
        self._pos = len(calls)
        for call in [*waiting, *fresh]:
            if call.method.lower() == "getupdates":
                continue
            if call.status == 0:
                self._pending.append(call)
            elif call.status == 200 and to_ada(call):
                self._note(call)

    def _note(self, call: Call) -> None:
        text, method = text_of(call), call.method.lower()
        for q, number, kind, digits in set(_KEY.findall(text)):
            kind, key = (q, f"q{number}") if q else (kind, f"q{int(digits, 36):04d}")
            stage = self.stages.get(key)
            if stage is None:
                continue
            if call.token == MASTER_TOKEN:
                if kind == "q" and "🆕" in text:
                    stage.receipt = min(stage.receipt or call.at, call.at)
                continue
            if call.token not in self.answer_tokens:
                continue
            stage.bot = call.token
            stage.first_message = min(stage.first_message or call.at, call.at)
            if kind == "A":
                stage.first_text = min(stage.first_text or call.at, call.at)
            if kind == "Z" and method in SENDS:
                stage.final_text = min(stage.final_text or call.at, call.at)

    def done(self, keys: Iterable[str]) -> bool:
        self.scan()
        return all(self.stages[k].final_text is not None for k in keys)

    def receipts(self, keys: Iterable[str]) -> int:
        self.scan()
        return sum(self.stages[k].receipt is not None for k in keys)


def per_second(times: list[float]) -> float:
    """The most calls within any 1 s window (a window starts at a call)."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + 1.0:
            j += 1
        best = max(best, j - i)
    return float(best)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]
