"""`fleetgram demo` over HTTP: the page, its state endpoint and its send/press endpoints, with
the real fleet behind them on the emulated Telegram and Claude."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from html.parser import HTMLParser
from typing import Any

import aiohttp
import pytest

from fleetgram.demo.run import Demo
from fleetgram.demo.world import MASTER, ClaudeChoice, worker_bot
from fleetgram.emulators.claude_api import ClaudeEmulator
from tests.demo.conftest import chat_of, make_demo, page_state, wait_state

pytestmark = pytest.mark.e2e

WORKERS = [worker_bot(n) for n in (1, 2, 3)]


async def send(http: aiohttp.ClientSession, demo: Demo, chat: str, text: str) -> dict[str, Any]:
    async with http.post(f"{demo.url}/api/send", json={"chat": chat, "text": text}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def bot_message(state: dict[str, Any], bot: str, *parts: str) -> dict[str, Any] | None:
    return next((m for m in chat_of(state, bot)["messages"]
                 if m["from_bot"] and all(part in m["text"] for part in parts)), None)


def answer_anywhere(state: dict[str, Any], *parts: str) -> tuple[str, dict[str, Any]] | None:
    for bot in WORKERS:
        message = bot_message(state, bot, *parts)
        if message is not None:
            return bot, message
    return None


def addresses_in(page: str) -> list[str]:
    """Every src= and href= of the page's HTML tags (what the browser would load)."""
    found: list[str] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found.extend(v or "" for k, v in attrs if k in ("src", "href"))

    Tags().feed(page)
    return found


async def test_the_page_is_one_self_contained_html_page_saying_it_runs_on_emulators(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{demo.url}/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        page = await response.text()
    assert "Runs against emulators" in page
    addresses = addresses_in(page)
    assert addresses and all(a.startswith("data:") for a in addresses), \
        f"no external assets: {addresses}"
    assert not re.search(r"@import|\burl\(", page), "no external assets in the CSS"
    assert (await page_state(http, demo))["mode"] == "emulator"


async def test_the_page_shows_the_master_and_every_worker_chat_and_the_masters_welcome(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    state = await wait_state(http, demo, lambda s: bot_message(s, MASTER, "fleet") and s,
                             "the master's welcome")
    assert [(c["bot"], c["role"]) for c in state["chats"]] == [
        (MASTER, "master"), *((bot, "worker") for bot in WORKERS)]


async def test_a_prompt_gets_a_receipt_with_cancel_in_the_master_chat_and_an_answer_in_a_worker(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    await send(http, demo, MASTER, "write the code")
    receipt = await wait_state(http, demo,
                               lambda s: bot_message(s, MASTER, "🆕", "write the code"),
                               "the receipt")
    assert receipt["buttons"][0][0]["text"] == "Cancel"
    bot, answer = await wait_state(
        http, demo, lambda s: answer_anywhere(s, "You asked: write the code", "emulator"),
        "the answer in a worker chat")
    assert bot in WORKERS
    assert {"type": "pre", "language": "python"}.items() <= next(
        e for e in answer["entities"] if e["type"] == "pre").items()


async def test_a_message_written_to_a_worker_chat_is_answered_there(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    await send(http, demo, worker_bot(2), "write the docs")
    await wait_state(http, demo,
                     lambda s: bot_message(s, worker_bot(2), "You asked: write the docs"),
                     "worker2's answer")


async def test_a_worker_chat_shows_the_draft_while_the_answer_streams(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    assert demo.world.claude_emulator is not None
    demo.world.claude_emulator.tokens_per_second = 10.0
    await send(http, demo, MASTER, "write the tests")
    bot = await wait_state(
        http, demo, lambda s: next((c["bot"] for c in s["chats"]
                                    if "You asked: write the tests" in (c["draft"] or "")), None),
        "the growing answer in a draft")
    assert bot in WORKERS


async def test_pressing_a_receipts_cancel_button_cancels_the_task(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    assert demo.world.claude_emulator is not None
    demo.world.claude_emulator.tokens_per_second = 0  # Claude pauses: the task stays running
    await send(http, demo, MASTER, "write the changelog")
    receipt = await wait_state(http, demo,
                               lambda s: bot_message(s, MASTER, "🆕", "write the changelog"),
                               "the receipt")
    data = receipt["buttons"][0][0]["data"]
    async with http.post(f"{demo.url}/api/press", json={
            "chat": MASTER, "message_id": receipt["id"], "data": data}) as response:
        assert response.status == 200
    await wait_state(http, demo, lambda s: bot_message(s, MASTER, "⏹", "cancelled"),
                     "the cancellation notice")


async def test_bot_output_reaches_the_page_as_text_never_as_markup(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    await send(http, demo, MASTER, "<b>not bold</b> & more")
    receipt = await wait_state(http, demo,
                               lambda s: bot_message(s, MASTER, "🆕", "<b>not bold</b> & more"),
                               "the receipt, showing the tags as typed")
    assert not any(e["type"] == "bold" and receipt["text"][e["offset"]:][:8] == "not bold"
                   for e in receipt["entities"])


async def test_what_cannot_be_sent_or_pressed_is_refused_with_a_reason(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    cases: list[tuple[str, Any, int, str]] = [
        ("send", {"chat": "someone_else_bot", "text": "hi"}, 400, "no chat"),
        ("send", {"chat": MASTER, "text": "   "}, 400, "empty"),
        ("send", {"chat": MASTER, "text": "x" * 4097}, 400, "4096"),
        ("send", {"chat": MASTER}, 400, "chat and text"),
        ("press", {"chat": MASTER, "message_id": 999, "data": "cancel:t-aaaaa"}, 400,
         "no visible bot message"),
        ("press", {"chat": MASTER, "message_id": "1", "data": "x"}, 400, "message_id"),
    ]
    for endpoint, body, status, reason in cases:
        async with http.post(f"{demo.url}/api/{endpoint}", json=body) as response:
            assert response.status == status, body
            assert reason in (await response.json())["error"], body


async def test_posts_must_be_json_so_another_site_cannot_submit_a_form_to_the_demo(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{demo.url}/api/send",
                         data={"chat": MASTER, "text": "write the code"}) as response:
        assert response.status == 415
    assert bot_message(await page_state(http, demo), MASTER, "🆕") is None


async def test_a_foreign_host_name_is_refused_so_dns_rebinding_cannot_reach_the_demo(
        demo: Demo, http: aiohttp.ClientSession) -> None:
    port = demo.url.rsplit(":", 1)[1]
    async with http.get(f"{demo.url}/api/state",
                        headers={"Host": f"attacker.example:{port}"}) as response:
        assert response.status == 403
    async with http.get(f"{demo.url}/api/state",
                        headers={"Host": f"localhost:{port}"}) as response:
        assert response.status == 200


async def test_with_an_api_key_the_workers_use_that_api_and_no_claude_emulator_starts(
        http: aiohttp.ClientSession) -> None:
    # An emulator stands in for the real Anthropic API: its address is the key's base URL.
    async with ClaudeEmulator(api_key="sk-ant-real-key-0001", tokens_per_second=500) as real:
        real.script("Hello from the real API.")
        demo = make_demo(ClaudeChoice.from_environment(
            {"ANTHROPIC_API_KEY": "sk-ant-real-key-0001", "ANTHROPIC_BASE_URL": real.url}))
        await demo.start()
        try:
            assert demo.world.claude_emulator is None
            assert (await page_state(http, demo))["mode"] == "anthropic"
            await send(http, demo, MASTER, "say hello")
            await wait_state(http, demo, lambda s: answer_anywhere(s, "Hello from the real API"),
                             "the answer of the configured API")
        finally:
            await demo.stop()


def test_without_a_key_in_the_environment_the_demo_uses_the_claude_emulator() -> None:
    assert not ClaudeChoice.from_environment({"ANTHROPIC_API_KEY": " "}).real
    assert ClaudeChoice.from_environment({"ANTHROPIC_API_KEY": "sk-ant-x"}).real


async def test_a_busy_port_is_named_and_nothing_keeps_running(demo: Demo) -> None:
    from fleetgram.checks import StartupError

    port = int(demo.url.rsplit(":", 1)[1])
    second = Demo("127.0.0.1", port, 3, ClaudeChoice())
    try:
        await second.start()
    except StartupError as exc:
        assert exc.setting == "--port"
    else:
        await second.stop()
        raise AssertionError("a second demo on the same port started")
    assert second.world.fleet is None


async def test_fleetgram_demo_prints_the_url_serves_the_page_and_stops_on_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-P", "-m", "fleetgram.cli", "demo", "--port", "0",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, line
        async with aiohttp.ClientSession() as http, http.get(url.group(0)) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 10)
        assert code == 0, (await process.stderr.read()).decode() if process.stderr else code
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
