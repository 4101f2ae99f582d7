"""The single-bot baseline: one bot, no master, no queue, one Claude call at a time.

What a user would run instead of the fleet: a python-telegram-bot bot that answers each text
message of an allowed user in that chat, one message after another. It uses the fleet's own
parts for everything that is not orchestration, so only the orchestration differs:
the Telegram client (`build_application`), the streaming rules (`reply_for`: the worker's
`StreamingReply`, drafts, header, edit interval and footer shape) and the Claude call path
(`runner_factory` → `ClaudeRunner.run`, with the chat engine's call limits). Settings come
from the same environment the fleet gets (`load_settings`); SINGLE_BOT_TOKEN is its token.

    SINGLE_BOT_TOKEN=... python -P benchmarks/single_bot.py   # (the harness starts it)
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from telegram import Update
from telegram.ext import ContextTypes, MessageHandler, filters

from fleetgram.claude.deadline import CallLimits
from fleetgram.claude.runner import UsageMeter
from fleetgram.config import load_settings
from fleetgram.fleet import runner_factory
from fleetgram.parsing import make_title
from fleetgram.telegram.app import build_application, install_allowlist
from fleetgram.telegram.replies import reply_for


async def main() -> None:
    settings = load_settings(dict(os.environ), dotenv=None)
    runner = runner_factory(settings)()
    runner.limits = CallLimits(wall=settings.claude_timeout, stall=settings.claude_stall_timeout)
    app = build_application(os.environ["SINGLE_BOT_TOKEN"], settings)
    install_allowlist(app, settings.allowed_user_ids)
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()

    async def on_text(update: Update, _: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_chat is not None and update.message and update.message.text:
            queue.put_nowait((update.effective_chat.id, update.message.text))

    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))

    async def answer_one_at_a_time() -> None:
        number = 0
        while True:
            chat_id, prompt = await queue.get()
            number += 1
            started = time.monotonic()
            reply = reply_for(app.bot, chat_id, settings,
                              header=f"#{number} · {make_title(prompt)}")
            await reply.start()
            meter = UsageMeter(None, "single")
            await runner.run([], prompt, on_text=reply.append, meter=meter)
            usage = meter.total
            await reply.finish(f"✅ done in {time.monotonic() - started:.1f}s · "
                               f"{usage.total_tokens:,} tokens · ${usage.cost_usd:.4f}")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await app.initialize()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=10, allowed_updates=[])
    await app.start()
    worker = asyncio.create_task(answer_one_at_a_time())
    await stop.wait()
    worker.cancel()
    await app.updater.stop()
    await app.stop()
    await app.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
