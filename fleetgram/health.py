"""Liveness and readiness over HTTP (HEALTH_PORT): `GET /healthz` and `GET /readyz`.

The server runs in its own thread, so it can see the event loop it watches hang: `/healthz`
asks the loop to run the registered checks and answers 503 when the loop does not answer
within LOOP_TIMEOUT (a coroutine blocking in a sync call, a CPU-bound handler), or when a
check names a reason (the master's or a worker's Telegram polling has stopped). `/readyz` is
200 once the component has started, 503 before and while it stops. Independent of
METRICS_PORT: the probes work with metrics off.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

LOOP_TIMEOUT = 1.0  # seconds the event loop has to run the checks
# A check returns None when all is well, else a short reason (one line).
Check = Callable[[], str | None]


def polling(app: Any) -> Check:
    """A check that fails when the PTB Application's updater no longer polls Telegram."""

    def check() -> str | None:
        updater = app.updater
        if updater is None or not updater.running:
            return "Telegram polling stopped"
        return None

    return check


class Health:
    def __init__(self, loop_timeout: float = LOOP_TIMEOUT) -> None:
        self.loop_timeout = loop_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checks: dict[str, Check] = {}
        self._ready = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ registration
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch `loop` (the component's event loop)."""
        self._loop = loop

    def add_checks(self, checks: dict[str, Check]) -> None:
        self._checks.update(checks)

    def set_ready(self, ready: bool) -> None:
        self._ready = ready

    # ------------------------------------------------------------------ answers
    async def _evaluate(self) -> str | None:
        for name, check in list(self._checks.items()):
            try:
                reason = check()
            except Exception as exc:  # a broken check is a failed one
                reason = f"check failed ({type(exc).__name__})"
            if reason:
                return f"{name}: {reason}"
        return None

    def liveness(self) -> tuple[int, str]:
        """(HTTP status, one line). Called from the server's thread."""
        loop = self._loop
        if loop is None:
            return 200, "ok: starting"
        if loop.is_closed():
            return 503, "event loop closed"
        try:
            future = asyncio.run_coroutine_threadsafe(self._evaluate(), loop)
        except RuntimeError:
            return 503, "event loop closed"
        try:
            reason = future.result(timeout=self.loop_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return 503, f"event loop blocked: no answer within {self.loop_timeout:g} s"
        except concurrent.futures.CancelledError:
            return 503, "event loop stopping"
        if reason:
            return 503, reason
        return 200, "ok"

    def readiness(self) -> tuple[int, str]:
        return (200, "ready") if self._ready else (503, "not ready: starting or stopping")

    # ------------------------------------------------------------------ server
    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Listen on `port` (0: any free one) in a daemon thread; returns the port.
        Raises OSError when the port cannot be had."""
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    status, line = health.liveness()
                elif path == "/readyz":
                    status, line = health.readiness()
                else:
                    status, line = 404, "not found: /healthz or /readyz"
                body = (line + "\n").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # probes every few seconds: not worth a log line

        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="health",
                                        daemon=True)
        self._thread.start()
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
