"""Any exception in a handler is never silence: the user gets one line saying nothing was
queued, and the log says what failed without quoting the prompt (above DEBUG)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fleetgram.domain import TaskState
from fleetgram.master.bot import MasterBot
from fleetgram.telegram.app import HANDLER_FAILED
from fleetgram.worker.bot import WorkerBot
from tests.e2e.harness import MASTER, World, wait_until, worker_bot
from tests.faults import FaultyStore

pytestmark = pytest.mark.e2e

SECRET = "BOBSECRET1 my password is hunter2"


async def _boom(self: Any, update: Any, context: Any) -> None:
    raise RuntimeError(f"handler broke on {SECRET!r}")


def _above_debug_mentions(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    out = []
    for record in caplog.records:
        if record.levelno <= logging.DEBUG:
            continue
        shown = [record.getMessage(), *(str(v) for v in record.__dict__.values())]
        if record.exc_info and record.exc_info[1] is not None:
            shown.append(str(record.exc_info[1]))
        if any(text in s for s in shown):
            out.append(f"{record.levelname} {record.name}: {record.getMessage()}")
    return out


async def test_a_failing_master_command_is_answered_and_logged_without_the_prompt(
    world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(MasterBot, "_on_queue", _boom)
    await world.open_chats(world.ada, workers=1)
    async with world.fleet(workers=1):
        await world.ada.send(MASTER, "/queue")
        await world.ada.wait_for_text(MASTER, HANDLER_FAILED, 10)
    failures = [r for r in caplog.records
                if r.levelno >= logging.ERROR and r.getMessage() == "handler failed"]
    assert len(failures) == 1 and failures[0].__dict__["error"] == "RuntimeError"
    assert _above_debug_mentions(caplog, "hunter2") == []
    assert any("hunter2" in str(r.exc_info[1]) for r in caplog.records
               if r.levelno == logging.DEBUG and r.exc_info)  # the details are at DEBUG


async def test_a_failing_button_handler_answers_the_callback_query(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MasterBot, "_on_cancel_button", _boom)
    world.claude.tokens_per_second = 2
    await world.open_chats(world.ada, workers=1)
    async with world.fleet(workers=1, MAX_WORKERS=1):
        await world.ada.send(MASTER, "something to cancel")
        receipt = await world.ada.wait_for(
            MASTER, lambda m: m.from_bot and "cancel:" in str(m.reply_markup), 10
        )
        data = next(d for _, d in receipt.buttons() if d.startswith("cancel:"))
        query = await world.ada.press(MASTER, receipt.message_id, data)
        answer = await wait_until(lambda: world.telegram.callback_answer(query), 10,
                                  "the callback query to be answered")
        assert answer.get("text") == HANDLER_FAILED


async def test_a_failing_worker_handler_is_answered_in_the_worker_chat(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(WorkerBot, "_on_help", _boom)
    await world.open_chats(world.ada, workers=1)
    async with world.fleet(workers=1) as fleet:
        await wait_until(lambda: "worker1" in getattr(fleet.runtime, "workers", {}), 15,
                         "worker1 to run")
        await world.ada.send(worker_bot(1), "/help")
        await world.ada.wait_for_text(worker_bot(1), HANDLER_FAILED, 10)


async def test_a_stranger_is_refused_once_however_often_they_write(world: World) -> None:
    async with world.fleet(workers=1):
        await world.mallory.send(MASTER, "/queue")
        await world.mallory.wait_for_text(MASTER, "serves its owners only", 10)
        await world.mallory.send(MASTER, "/queue")
        await world.ada.send(MASTER, "/help")  # a later update: Mallory's were all handled
        await world.ada.wait_for(MASTER, lambda m: m.from_bot, 10)
    assert world.mallory.bot_texts(MASTER) == [
        "Sorry, this bot serves its owners only."
    ]


async def test_a_prompt_the_store_cannot_write_is_answered_and_not_queued(
    world: World,
) -> None:
    fleet_settings = world.settings(1)
    from fleetgram.fleet import Fleet, make_store

    store = FaultyStore(make_store(fleet_settings))
    fleet = Fleet(fleet_settings, store=store)  # type: ignore[arg-type]
    await world.open_chats(world.ada, workers=1)
    await fleet.start()
    try:
        store.refuse_writes(methods={"create_task"})
        await world.ada.send(MASTER, "please remember this")
        reply = await world.ada.wait_for(
            MASTER, lambda m: m.from_bot and ("nothing was queued" in m.text.lower()
                                              or "not queued" in m.text.lower()), 10,
        )
        assert "🆕" not in reply.text
        assert store.refused == ["create_task"]
        pending = await store.count_tasks([TaskState.PENDING])
        assert pending == 0
    finally:
        await fleet.stop()
