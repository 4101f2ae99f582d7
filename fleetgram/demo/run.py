"""`fleetgram demo` as a component the CLI runs like `up`: start, serve until Ctrl-C, stop."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from aiohttp import web

from fleetgram.checks import StartupError
from fleetgram.demo.server import is_loopback, make_app
from fleetgram.demo.world import ClaudeChoice, DemoWorld

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_WORKERS = 3


def _url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # only displayed
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


class Demo:
    """The demo world and its web page. `start` binds the page's port first (a busy port
    fails at once, before anything else starts), then starts the world and prints the URL."""

    def __init__(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 workers: int = DEFAULT_WORKERS, claude: ClaudeChoice | None = None,
                 out: TextIO | None = None, **world_options: float) -> None:
        self.host, self.port = host, port
        self.world = DemoWorld(workers, claude, **world_options)
        self.out = out or sys.stdout
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        try:
            await self._listen()
            await self.world.start()
        except BaseException:
            await self.stop()
            raise
        claude = ("the real Claude API (ANTHROPIC_API_KEY is set: answers cost money)"
                  if self.world.claude.real else "the Claude emulator (no key needed)")
        exposed = "" if is_loopback(self.host) else (
            f"\n  Listening on {self.host}: anyone who reaches this address can use the demo.")
        print(f"fleetgram demo: open {self.url}\n"
              f"  a master and {self.world.workers} workers on the emulated Telegram; "
              f"Claude: {claude}{exposed}\n  Ctrl-C stops it.", file=self.out, flush=True)

    async def _listen(self) -> None:
        self._runner = web.AppRunner(make_app(self.world, self.host), access_log=None,
                                     shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError("--port", f"cannot listen on {self.host}:{self.port} "
                                         f"({exc.strerror or type(exc).__name__})") from None
        port = self._runner.addresses[0][1]
        self.url = _url(self.host, port)

    async def stop(self) -> None:
        """The page first (no more input), then the world (fleet, then emulators)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.world.stop()


def demo_from_environment(host: str, port: int, workers: int) -> Demo:
    """The demo `fleetgram demo` runs: the real Claude API when ANTHROPIC_API_KEY is set in the
    environment (ANTHROPIC_BASE_URL and CLAUDE_MODEL are honoured too), else the emulator.
    No .env is read: it would hold real bot tokens, and the demo needs none."""
    return Demo(host, port, workers, ClaudeChoice.from_environment(dict(os.environ)))
