"""The demo's web page and its JSON API (aiohttp).

GET  /            the page (one self-contained HTML file: inline CSS and JS, no external assets)
GET  /api/state   every chat as the demo user's client shows it (the page polls it)
POST /api/send    {"chat": bot username, "text": ...}: the user types a message there
POST /api/press   {"chat": ..., "message_id": ..., "data": callback_data}: presses a button

The page never receives HTML from the server: bot output travels as text plus entities and
the page draws it with DOM nodes (textContent), so nothing a bot writes can become markup.
POSTs must be JSON (a cross-site form cannot send that without a CORS preflight, which is never
granted), and on a loopback address the Host header must be a loopback name (no DNS
rebinding): another web page cannot drive the demo, which may be spending a real API key.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from fleetgram.demo.world import DemoError, DemoWorld

WORLD: web.AppKey[DemoWorld] = web.AppKey("world", DemoWorld)
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_MAX_BODY = 64 * 1024  # a message is at most 4096 characters; JSON escapes make it longer
_SECURITY_HEADERS = {
    # Everything the page needs is inline or same-origin; nothing may be loaded from elsewhere.
    "Content-Security-Policy": ("default-src 'none'; script-src 'unsafe-inline'; "
                                "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' "
                                "data:; base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page_html() -> str:
    return resources.files("fleetgram.demo").joinpath("page.html").read_text("utf-8")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in _LOOPBACK_NAMES


def _host_name(header: str) -> str:
    """The name part of a Host header: "[::1]:8080" -> "::1", "localhost:8080" -> "localhost"."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


def guard(bound_host: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware: security headers on every answer; on a loopback bind, only loopback Host
    headers are served."""
    check_host = is_loopback(bound_host)

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if check_host and not is_loopback(_host_name(request.headers.get("Host", ""))):
            return _error(403, "this demo answers on its loopback address only")
        response = await handler(request)
        response.headers.update(_SECURITY_HEADERS)
        return response

    return middleware


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text='{"ok": false, "error": "send JSON"}',
                                           content_type="application/json")
    try:
        body = json.loads(await request.text())
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"ok": false, "error": "the body must be a JSON object"}',
                                 content_type="application/json")
    return body


async def index(request: web.Request) -> web.Response:
    return web.Response(text=page_html(), content_type="text/html", charset="utf-8")


async def state(request: web.Request) -> web.Response:
    try:
        return web.json_response(request.app[WORLD].snapshot())
    except DemoError as exc:  # still starting, or stopping
        return _error(503, str(exc))


async def send(request: web.Request) -> web.Response:
    body = await _json_body(request)
    chat, text = body.get("chat"), body.get("text")
    if not isinstance(chat, str) or not isinstance(text, str):
        return _error(400, "give chat and text as strings")
    try:
        message_id = await request.app[WORLD].send(chat, text)
    except DemoError as exc:
        return _error(400, str(exc))
    return web.json_response({"ok": True, "message_id": message_id})


async def press(request: web.Request) -> web.Response:
    body = await _json_body(request)
    chat, message_id, data = body.get("chat"), body.get("message_id"), body.get("data")
    if not isinstance(chat, str) or not isinstance(data, str) or \
            not isinstance(message_id, int) or isinstance(message_id, bool):
        return _error(400, "give chat, message_id (a number) and data")
    try:
        await request.app[WORLD].press(chat, message_id, data)
    except DemoError as exc:
        return _error(400, str(exc))
    return web.json_response({"ok": True})


def make_app(world: DemoWorld, bound_host: str = "127.0.0.1") -> web.Application:
    app = web.Application(client_max_size=_MAX_BODY, middlewares=[guard(bound_host)])
    app[WORLD] = world
    app.router.add_get("/", index)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/send", send)
    app.router.add_post("/api/press", press)
    return app
