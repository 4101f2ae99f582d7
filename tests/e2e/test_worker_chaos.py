"""The worker's task path under the faults the real services produce: every task ends (or goes
back to the queue) with the user told in both chats, the worker returns to idle, and nothing
the user should see is lost or doubled."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import telegram

from fleetgram.claude.compaction import SUMMARY_INSTRUCTION
from fleetgram.domain import Task, TaskSource, TaskState, new_task_id, utcnow
from fleetgram.fleet import Fleet
from fleetgram.store import open_store
from fleetgram.worker.bot import WorkerBot
from tests.e2e.harness import (
    ADA,
    MASTER,
    World,
    wait_task,
    wait_until,
    worker_bot,
    worker_token,
)
from tests.faults import FaultyStore

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning"),
]

W1 = worker_bot(1)


@asynccontextmanager
async def one_worker_fleet(world: World, *, faulty: bool = False,
                           **overrides: Any) -> AsyncIterator[Fleet]:
    """A fleet of one worker slot (so every task lands on worker1), optionally on a store
    that can be made to refuse writes (`fleet.store` is then a FaultyStore)."""
    settings = world.settings(workers=1, MIN_WORKERS="1", MAX_WORKERS="1", **overrides)
    store = FaultyStore(open_store(settings.database_url)) if faulty else None
    fleet = Fleet(settings, store=store)
    await fleet.start()
    try:
        await world.ada.start(MASTER)
        await world.ada.start(W1)
        await world.ada.wait_for_text(W1, "one of the fleet's Claude workers", timeout=15)
        yield fleet
    finally:
        await fleet.stop()


def worker_chat(world: World) -> list[str]:
    return world.ada.bot_texts(W1)


def answers_in_worker_chat(world: World, task_id: str) -> list[str]:
    """Worker-chat messages of the bot that show the task (its header or its notes)."""
    return [t for t in worker_chat(world) if task_id in t]


async def worker_idle(fleet: Fleet) -> None:
    async def idle() -> bool:
        slots = {s.name: s for s in await fleet.store.get_slots()}
        return slots["worker1"].current_task is None

    await wait_until(idle, 15, "worker1 to be idle")


def master_texts(world: World, task_id: str) -> list[str]:
    return [t for t in world.ada.bot_texts(MASTER) if task_id in t]


async def completed_everywhere(world: World, fleet: Fleet, task_id: str,
                               timeout: float = 30) -> Task:
    """The task completed; the worker chat shows its answer with the footer exactly once, and
    no stale "…" placeholder; the master chat says done once; the worker is idle again."""
    task = await wait_task(fleet, task_id, TaskState.COMPLETED, timeout)
    final = await world.ada.wait_for_text(W1, f"✅ {task_id} done", timeout=timeout)
    assert final.text.startswith(f"{task_id} · ")
    assert "Answer to:" in final.text
    shown = answers_in_worker_chat(world, task_id)
    assert shown == [final.text], shown
    assert not [t for t in worker_chat(world) if t.endswith("\n…")]
    await world.ada.wait_for_text(MASTER, f"{task_id} done by worker1", timeout=timeout)
    assert len([t for t in master_texts(world, task_id) if "done by" in t]) == 1
    await worker_idle(fleet)
    return task


async def failed_everywhere(world: World, fleet: Fleet, task_id: str, reason: str,
                            timeout: float = 30) -> Task:
    task = await wait_task(fleet, task_id, TaskState.FAILED, timeout)
    assert task.error == reason
    note = await world.ada.wait_for_text(W1, f"❌ {task_id} failed: {reason}", timeout=10)
    assert note.text.startswith(f"{task_id} · ")
    assert len(answers_in_worker_chat(world, task_id)) == 1
    master = await world.ada.wait_for_text(MASTER, f"{task_id} failed: {reason}", timeout=10)
    assert master is not None
    await worker_idle(fleet)
    return task


# ----------------------------------------------------------------------------- Telegram faults
async def test_a_502_burst_on_the_first_message_does_not_stop_the_task(world: World) -> None:
    async with one_worker_fleet(world) as fleet:
        world.telegram.fail_for(W1, 3.0, methods=["sendMessage"])
        task_id = await world.prompt("survive the outage")
        await completed_everywhere(world, fleet, task_id)
        refused = [c for c in world.telegram.calls_to(W1, "sendMessage") if c.status == 502]
        assert refused  # the outage did hit the first message


async def test_an_answer_whose_chat_is_blocked_while_it_streams_comes_to_the_master(
    world: World,
) -> None:
    """The answer streams as a draft; the user blocks the worker bot before it is sent as a
    message: the master chat gets the whole answer instead, once. (Streaming by edits, the
    message already exists: the emulator refuses only new sends to a chat that blocked it.)"""
    world.claude.tokens_per_second = 30
    world.claude.script("Answer to: blocked midway. " + "word " * 150 + "the very end.")
    async with one_worker_fleet(world, STREAM_DRAFTS="1") as fleet:
        task_id = await world.prompt("blocked midway")
        await world.ada.wait_to_see(W1, "Answer to: blocked midway")
        world.claude.tokens_per_second = 0  # Claude pauses: the answer is still streaming
        world.ada.block(W1)
        world.claude.tokens_per_second = 30
        await wait_task(fleet, task_id, TaskState.COMPLETED, 40)
        answer = await world.ada.wait_for_text(MASTER, "the very end.", timeout=15)
        assert answer.text.count("Answer to: blocked midway") == 1
        assert any("could not be shown in worker1's chat" in t
                   for t in world.ada.bot_texts(MASTER))
        assert not any("the very end." in t for t in world.ada.bot_texts(W1))
        await worker_idle(fleet)


async def test_a_worker_chat_that_stays_unreachable_gets_the_answer_to_the_master(
    world: World,
) -> None:
    async with one_worker_fleet(world) as fleet:
        world.telegram.fail_for(W1, 60.0, methods=["sendMessage", "sendMessageDraft"])
        task_id = await world.prompt("answer me anyway")
        await wait_task(fleet, task_id, TaskState.COMPLETED, 40)
        await world.ada.wait_for_text(MASTER, f"{task_id} done by worker1", timeout=10)
        answer = await world.ada.wait_for_text(MASTER, "Answer to: answer me anyway", timeout=10)
        assert answer.text.count("Answer to:") == 1
        assert not answers_in_worker_chat(world, task_id)
        await worker_idle(fleet)


async def test_a_lost_reply_on_the_header_leaves_one_header_and_no_stale_placeholder(
    world: World,
) -> None:
    async with one_worker_fleet(world) as fleet:
        world.telegram.lose_reply_next(W1, "sendMessage")
        task_id = await world.prompt("header lost in transit")
        await completed_everywhere(world, fleet, task_id)
        lost = [c for c in world.telegram.calls_to(W1, "sendMessage") if c.fault == "lost_reply"]
        assert len(lost) == 1


async def test_a_malformed_answer_to_the_final_edit_does_not_lose_the_answer(
    world: World,
) -> None:
    world.claude.script("The whole answer, every word of it.", when="garbled")
    async with one_worker_fleet(world) as fleet:
        # every edit of this task is answered with a proxy's HTML page: the final text must
        # still arrive (as a new message, the stale one removed)
        world.telegram.malformed_next(W1, "editMessageText", count=200)
        task_id = await world.prompt("garbled final flush")
        await wait_task(fleet, task_id, TaskState.COMPLETED, 40)
        final = await world.ada.wait_for_text(W1, f"✅ {task_id} done", timeout=40)
        assert "The whole answer, every word of it." in final.text
        # the stale message is deleted just after the answer is sent anew
        await wait_until(lambda: answers_in_worker_chat(world, task_id) == [final.text], 10,
                         "the stale message to be removed")
        await world.ada.wait_for_text(MASTER, f"{task_id} done by worker1")
        await worker_idle(fleet)


async def test_a_processed_but_garbled_final_edit_is_shown_once(world: World) -> None:
    async with one_worker_fleet(world) as fleet:
        world.telegram.malformed_next(W1, "editMessageText", count=3, processed=True)
        task_id = await world.prompt("processed yet garbled")
        await completed_everywhere(world, fleet, task_id)


# ----------------------------------------------------------------------------- store faults
@pytest.mark.parametrize("refused", [None, {"finish_task"}], ids=["every_write", "finish_task"])
async def test_a_store_refusing_writes_as_the_stream_ends_still_completes_the_task(
    world: World, refused: set[str] | None,
) -> None:
    world.claude.script("Answer to: the disk. " + "word " * 30 + "nearly there and then some more.")
    world.claude.tokens_per_second = 15
    # A lease longer than the refusal: missed heartbeats alone do not make the worker "dead".
    async with one_worker_fleet(world, faulty=True, WORKER_LEASE_SECONDS="15") as fleet:
        store = fleet.store
        assert isinstance(store, FaultyStore)
        task_id = await world.prompt("write while the disk is full")
        await world.ada.wait_to_see(W1, "nearly", timeout=15)
        # the last tokens arrive, then the usage, the turns and the outcome meet a full disk
        store.refuse_writes(3.0, methods=refused)
        await completed_everywhere(world, fleet, task_id, timeout=40)
        end_writes = {"record_api_call", "append_turns", "finish_task"}
        assert end_writes & set(store.refused), store.refused
        task = await fleet.store.get_task(task_id)
        assert task is not None and task.result is not None
        assert task.result.endswith("some more.")
        assert task.usage.output_tokens > 0  # the usage was recorded after all


# ----------------------------------------------------------------------------- Claude faults
async def test_a_trickling_stream_fails_at_claude_timeout_and_frees_the_worker(
    world: World,
) -> None:
    world.claude.trickle_next(ping_every=1.0, text_tokens=3)
    async with one_worker_fleet(world, CLAUDE_TIMEOUT="5") as fleet:
        task_id = await world.prompt("trickle along")
        await failed_everywhere(
            world, fleet, task_id, "Claude took longer than CLAUDE_TIMEOUT (5 s)", timeout=30
        )
        again = await world.prompt("and now a normal one")
        await completed_everywhere(world, fleet, again)


async def test_a_stalled_stream_fails_with_a_reason_a_person_reads(world: World) -> None:
    world.claude.stall_next(after_tokens=5)
    async with one_worker_fleet(world, CLAUDE_STALL_TIMEOUT="2") as fleet:
        task_id = await world.prompt("stall midway")
        await failed_everywhere(world, fleet, task_id, "Claude stopped sending for 2 s")


async def test_an_error_event_mid_stream_fails_the_task_with_its_reason(world: World) -> None:
    world.claude.error_midstream_next(after_tokens=5)
    async with one_worker_fleet(world) as fleet:
        task_id = await world.prompt("break off midway")
        await failed_everywhere(
            world, fleet, task_id, "Claude's stream broke off: Claude is overloaded"
        )


# ----------------------------------------------------------------------------- context
def _user_texts(request: dict[str, Any]) -> list[str]:
    return [
        block["text"]
        for message in request["messages"]
        if message["role"] == "user"
        for block in message["content"]
        if block.get("type") == "text"
    ]


async def test_a_master_task_starts_fresh_and_the_worker_chat_continues_it(world: World) -> None:
    async with one_worker_fleet(world) as fleet:
        await world.ada.send(W1, "my name is Ada")
        await world.ada.wait_for_text(W1, "✅", timeout=15)
        task_id = await world.prompt("what is the capital of France")
        await completed_everywhere(world, fleet, task_id)
        assert _user_texts(world.claude.requests[-1]) == ["what is the capital of France"]
        await world.ada.send(W1, "and of Italy?")
        await wait_until(lambda: len(world.claude.requests) >= 3, 15, "the follow-up")
        assert _user_texts(world.claude.requests[-1]) == [
            "what is the capital of France", "and of Italy?"
        ]
        await wait_until(lambda: sum("✅" in t for t in worker_chat(world)) >= 3, 15, "done")


async def test_a_conversation_that_fills_the_context_window_is_compacted_not_failed(
    world: World,
) -> None:
    world.claude.context_window = 1000
    world.claude.script("Noted. " * 20)
    world.claude.script("Summary: the user sent numbered notes.", when=SUMMARY_INSTRUCTION[:40])
    async with one_worker_fleet(world, CLAUDE_CONTEXT_WINDOW="1000") as fleet:
        for n in range(1, 9):
            await world.ada.send(W1, f"note {n}: " + "lorem ipsum dolor sit amet " * 16)
            await wait_until(
                lambda n=n: sum("✅" in t for t in worker_chat(world)) >= n, 20, f"task {n}"
            )
        tasks = await fleet.store.list_tasks(user_id=ADA)
        assert len(tasks) == 8 and {t.state for t in tasks} == {TaskState.COMPLETED}
        notes = [t for t in worker_chat(world) if t.startswith("🗜")]
        assert notes and all("\n" not in t for t in notes)
        summaries = [r for r in world.claude.requests if SUMMARY_INSTRUCTION in str(r)]
        assert summaries
        last = _user_texts(world.claude.requests[-1])
        assert not any(t.startswith("note 1:") for t in last)  # the oldest turn went
        assert last[-1].startswith("note 8:")
        assert any("Summary: the user sent numbered notes." in t for t in last)


async def test_a_prompt_refused_as_too_long_is_retried_with_the_oldest_turns_dropped(
    world: World,
) -> None:
    # The model's real window is smaller than configured: the API refuses with its 400
    # "prompt is too long" before our own estimate asks for compaction.
    world.claude.context_window = 1000
    world.claude.script("Noted. " * 20)
    async with one_worker_fleet(world, CLAUDE_CONTEXT_WINDOW="20000") as fleet:
        for n in range(1, 9):
            await world.ada.send(W1, f"note {n}: " + "lorem ipsum dolor sit amet " * 16)
            await wait_until(
                lambda n=n: sum("✅" in t for t in worker_chat(world)) >= n, 20, f"task {n}"
            )
        tasks = await fleet.store.list_tasks(user_id=ADA)
        assert len(tasks) == 8 and {t.state for t in tasks} == {TaskState.COMPLETED}
        notes = [t for t in worker_chat(world) if t.startswith("🗜")]
        assert notes and all("let go of the oldest part" in t for t in notes)
        assert not any("failed" in t for t in worker_chat(world))


# ----------------------------------------------------------------------------- restarts
async def test_a_reply_left_by_a_crash_gets_the_interrupted_note_on_restart(world: World) -> None:
    # The state kill -9 leaves: a running task on worker1, its header shown, never finished.
    settings = world.settings(workers=1, MIN_WORKERS="1", MAX_WORKERS="1")
    store = open_store(settings.database_url)
    await store.open()
    try:
        await store.ensure_slots(["worker1"])
        task = await store.create_task(Task(
            id=new_task_id(), user_id=ADA, chat_id=ADA, prompt="half done", title="half done",
            source=TaskSource.MASTER,
        ))
        claimed = await store.claim_next("worker1", task.created_at)
        assert claimed is not None and claimed.id == task.id
        await store.mark_running(task.id, "worker1", task.created_at)
        await world.ada.start(W1)
        async with telegram.Bot(worker_token(1), base_url=f"{world.telegram.url}/bot") as bot:
            header = await bot.send_message(ADA, f"{task.id} · half done\nAnswer to: half")
        await store.remember_reply("worker1", task.id, ADA, header.message_id)
    finally:
        await store.close()

    fleet = Fleet(settings)
    await fleet.start()
    try:
        await world.ada.start(MASTER)
        note = await world.ada.wait_for_text(W1, f"⏸ {task.id} interrupted", timeout=15)
        assert note.reply_to == header.message_id
        assert note.text == (f"⏸ {task.id} interrupted: the worker stopped. "
                             "It runs again when the fleet is back.")
        # it runs again (requeued when the worker started) and completes
        await wait_task(fleet, task.id, TaskState.COMPLETED, 20)
        await world.ada.wait_for_text(W1, f"✅ {task.id} done", timeout=10)

        async def nothing_left() -> bool:
            return await fleet.store.leftover_replies("worker1") == []

        await wait_until(nothing_left, 10, "the finished reply to be forgotten")
        notes = [t for t in worker_chat(world) if t.startswith(f"⏸ {task.id}")]
        assert len(notes) == 1
        await worker_idle(fleet)
    finally:
        await fleet.stop()


async def test_stopping_mid_task_leaves_the_interrupted_note(world: World) -> None:
    world.claude.tokens_per_second = 5
    fleet_cm = one_worker_fleet(world)
    await fleet_cm.__aenter__()
    try:
        task_id = await world.prompt("a slow one")
        await world.ada.wait_to_see(W1, "Answer to:", timeout=15)
    finally:
        stopping = time.monotonic()
        await fleet_cm.__aexit__(None, None, None)
    assert time.monotonic() - stopping < 5  # what the process has after Ctrl-C
    texts = answers_in_worker_chat(world, task_id)
    assert len(texts) == 1
    assert re.search(rf"⏸ {task_id} interrupted: the worker stopped\. It runs again", texts[0])
    store = open_store(world.database_url)
    await store.open()
    try:
        task = await store.get_task(task_id)
        assert task is not None and task.state == TaskState.RUNNING  # requeued on restart
        assert await store.leftover_replies("worker1") == []
    finally:
        await store.close()


# ----------------------------------------------------------------------------- direct messages
async def test_a_document_in_the_worker_chat_is_answered_with_what_is_supported(
    world: World,
) -> None:
    async with one_worker_fleet(world) as fleet:
        await world.ada.send_document(W1, "notes.docx", b"PK\x03\x04 word", caption="summarise")
        reply = await world.ada.wait_for_text(W1, "notes.docx:")
        assert reply.text.startswith("notes.docx: I read photos and images")
        assert await fleet.store.count_tasks(list(TaskState), user_id=ADA) == 0


async def test_a_direct_prompt_remembers_the_message_it_came_from(world: World) -> None:
    async with one_worker_fleet(world) as fleet:
        message_id = await world.ada.send(W1, "tell me about ships")
        await world.ada.wait_for_text(W1, "✅", timeout=15)
        task = await fleet.store.find_task_by_message(ADA, message_id)
        assert task is not None and task.prompt == "tell me about ships"
        assert task.source == TaskSource.DIRECT and task.state == TaskState.COMPLETED


async def test_a_store_that_cannot_start_the_task_requeues_it_until_it_fails_with_notice(
    world: World,
) -> None:
    async with one_worker_fleet(world, faulty=True, MAX_ATTEMPTS="2") as fleet:
        store = fleet.store
        assert isinstance(store, FaultyStore)
        worker = await started_worker(fleet)
        worker.store_retry_seconds = 1.0
        store.refuse_writes(methods={"mark_running"})
        task_id = await world.prompt("never starts")
        task = await wait_task(fleet, task_id, TaskState.FAILED, 30)
        assert task.attempts == 2
        assert task.error is not None
        assert task.error.startswith("the database failed while starting the task (")
        assert task.error.endswith("; gave up after 2 attempts")
        requeued = await world.ada.wait_for_text(MASTER, f"{task_id} went back to the queue")
        assert "the database failed while starting the task" in requeued.text
        await world.ada.wait_for_text(MASTER, f"{task_id} failed")
        assert len([t for t in master_texts(world, task_id) if "went back" in t]) == 1
        assert not answers_in_worker_chat(world, task_id)  # it never started there
        await worker_idle(fleet)
        store.heal()
        again = await world.prompt("runs once the disk has room")
        await completed_everywhere(world, fleet, again)


async def started_worker(fleet: Fleet) -> WorkerBot:
    """worker1 once its start has finished (it polls Telegram a moment before it is listed)."""
    workers = fleet.runtime.workers  # type: ignore[attr-defined]
    await wait_until(lambda: "worker1" in workers, 10, "worker1 to have started")
    return workers["worker1"]


async def test_a_worker_note_whose_replies_keep_getting_lost_is_shown_at_most_twice(
    world: World,
) -> None:
    async with one_worker_fleet(world) as fleet:
        worker = await started_worker(fleet)
        world.telegram.lose_reply_next(W1, "sendMessage", count=5)
        assert await worker.say(ADA, "⏸ a note for Ada") is False
        assert worker_chat(world).count("⏸ a note for Ada") == 2


async def test_a_worker_note_waits_out_a_bad_gateway_burst_and_is_shown_once(
    world: World,
) -> None:
    async with one_worker_fleet(world) as fleet:
        worker = await started_worker(fleet)
        world.telegram.fail_for(W1, 1.5, methods=["sendMessage"])
        assert await worker.say(ADA, "⏸ another note") is True
        assert worker_chat(world).count("⏸ another note") == 1


async def test_a_worker_whose_start_meets_a_store_outage_starts_once_the_store_is_back(
    world: World,
) -> None:
    settings = world.settings(workers=2, MIN_WORKERS="1", MAX_WORKERS="2",
                              WORKER_LEASE_SECONDS="15")
    store = FaultyStore(open_store(settings.database_url))
    fleet = Fleet(settings, store=store)  # type: ignore[arg-type]
    await fleet.start()
    try:
        await world.open_chats(world.ada, workers=2)
        await world.telegram.wait_until_polling(W1, timeout=10)
        now = utcnow()  # what the orchestrator writes when it decides to start a slot
        await store.update_slot("worker2", enabled=True, started_at=now, state_since=now)
        store.refuse_writes()
        await fleet.runtime.start("worker2")
        await wait_until(lambda: "requeue_worker_tasks" in store.refused, 10,
                         "worker2's start to meet the outage")
        store.heal()
        await world.telegram.wait_until_polling(worker_bot(2), timeout=15)
        await world.ada.send(worker_bot(2), "are you there, worker2?")
        await world.ada.wait_for_text(worker_bot(2), "✅", timeout=15)
        # a worker the runtime knows: it can be stopped, scaled down and woken like any other
        assert "worker2" in fleet.runtime.workers  # type: ignore[attr-defined]
    finally:
        await fleet.stop()
