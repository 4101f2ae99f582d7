"""What a demanding user types into the master: odd characters, over-long arguments, crafted
buttons, bad priorities, edits, long pastes, floods of prompts, and things that are not text.
Each answer is one line; nothing is lost, doubled or run that should not be."""

from __future__ import annotations

import re

import pytest

from fleetgram.domain import Task, TaskState
from fleetgram.fleet import Fleet
from fleetgram.telegram.media import STICKER
from fleetgram.transcribe import NOT_CONFIGURED
from tests.e2e.harness import (
    ADA,
    MASTER,
    World,
    task_id_in,
    wait_task,
    wait_until,
    worker_bot,
)

pytestmark = pytest.mark.e2e


async def keep_worker_busy(world: World, fleet: Fleet) -> str:
    """worker1 takes a task whose Claude call never answers, so later tasks stay pending."""
    world.claude.hang_next(1)
    blocker = await world.prompt("blocker keeps the only worker busy")
    await wait_task(fleet, blocker, TaskState.RUNNING)
    return blocker


def receipts(world: World) -> list[str]:
    return [t for t in world.ada.bot_texts(MASTER) if t.startswith("🆕")]


# --- characters a database refuses ----------------------------------------------------------------


async def test_nul_bytes_and_lone_surrogates_are_cleaned_and_the_receipt_says_so(
    world: World,
) -> None:
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        await keep_worker_busy(world, fleet)
        await world.ada.send(MASTER, "nul\x00 inside")
        first = await world.ada.wait_for_text(MASTER, "dropped 1 NUL")
        await world.ada.send(MASTER, "surrogate \ud800 inside")
        second = await world.ada.wait_for_text(MASTER, "replaced 1 invalid character")
        nul_task = await fleet.store.get_task(task_id_in(first.text))
        sur_task = await fleet.store.get_task(task_id_in(second.text))
        assert nul_task is not None and nul_task.prompt == "nul inside"
        assert sur_task is not None and sur_task.prompt == "surrogate \ufffd inside"
        assert nul_task.state == sur_task.state == TaskState.PENDING


# --- arguments and buttons ------------------------------------------------------------------------


async def test_cancel_with_a_4090_character_argument_gets_a_short_answer(world: World) -> None:
    async with world.fleet():
        await world.ada.send(MASTER, "/cancel " + "x" * 4090)
        answer = await world.ada.wait_for_text(MASTER, "is not a task id")
        assert len(answer.text) < 120 and "xxxx" not in answer.text


async def test_crafted_cancel_data_is_refused_without_breaking_anything(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        await keep_worker_busy(world, fleet)
        task_id = await world.prompt("a pending task stays pending")
        receipt = await world.ada.wait_for_text(MASTER, task_id)
        query = await world.ada.press_raw(MASTER, receipt.message_id, "cancel:<b>x")
        await wait_until(lambda: world.telegram.callback_answer(query), 10, "the answer")
        assert world.telegram.callback_answer(query) == {"text": "That button is not one of mine."}
        task = await fleet.store.get_task(task_id)
        assert task is not None and task.state == TaskState.PENDING


async def test_cancelling_a_pending_task_sends_one_message_naming_it(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        await keep_worker_busy(world, fleet)
        task_id = await world.prompt("cancel me before I start")
        receipt = await world.ada.wait_for_text(MASTER, task_id)
        query = await world.ada.press(MASTER, receipt.message_id, f"cancel:{task_id}")
        notice = await world.ada.wait_for_text(MASTER, "cancelled before it started")
        assert task_id in notice.text and "cancel me before I start" in notice.text
        await world.ada.send(MASTER, f"/cancel {task_id}")  # again, by command this time
        await world.ada.wait_for_text(MASTER, "has already finished (cancelled)")
        cancels = [t for t in world.ada.bot_texts(MASTER) if "cancelled" in t]
        assert len(cancels) == 2  # the one notice, then the answer to the second request
        assert world.telegram.callback_answer(query) == {}
        await wait_task(fleet, task_id, TaskState.CANCELLED)


async def test_a_negative_priority_is_refused_not_queued_as_text(world: World) -> None:
    async with world.fleet() as fleet:
        await world.ada.send(MASTER, "!-1 fix the build")
        await world.ada.wait_for_text(MASTER, "Priority must be between 1 and 10, not -1.")
        assert await fleet.store.count_tasks(list(TaskState)) == 0


async def test_a_sticker_and_an_untranscribed_voice_note_get_a_reply_saying_what_works(
    world: World,
) -> None:
    """Photos and documents become tasks (tests/e2e/test_media_chat.py)."""
    async with world.fleet() as fleet:
        await world.ada.start(MASTER)
        await world.ada.send_sticker(MASTER)
        await world.ada.send_voice(MASTER)
        await wait_until(lambda: {STICKER, NOT_CONFIGURED} <= set(world.ada.bot_texts(MASTER)),
                         10, "two answers")
        assert await fleet.store.count_tasks(list(TaskState)) == 0


# --- edits ----------------------------------------------------------------------------------------


async def test_editing_a_pending_prompt_updates_the_task_and_says_so(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        await keep_worker_busy(world, fleet)
        message_id = await world.ada.send(MASTER, "write the dcos")
        task_id = task_id_in((await world.ada.wait_for_text(MASTER, "write the dcos")).text)
        await world.ada.edit(MASTER, message_id, "write the docs")
        await world.ada.wait_for_text(MASTER, f"✏️ {task_id} updated")
        task = await fleet.store.get_task(task_id)
        assert task is not None and task.prompt == "write the docs"
        assert task.title == "write the docs" and task.state == TaskState.PENDING
        assert await fleet.store.count_tasks(list(TaskState)) == 2  # the blocker and this one


async def test_editing_a_running_or_finished_prompt_is_answered_and_runs_nothing_new(
    world: World,
) -> None:
    world.claude.tokens_per_second = 20
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        message_id = await world.ada.send(MASTER, "explain the build")
        task_id = task_id_in((await world.ada.wait_for_text(MASTER, "explain the build")).text)
        await wait_task(fleet, task_id, TaskState.RUNNING)
        await world.ada.edit(MASTER, message_id, "explain the tests")
        await world.ada.wait_for_text(MASTER, "edits are not applied to a running task")
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=30)
        await world.ada.edit(MASTER, message_id, "explain the docs")
        await world.ada.wait_for_text(MASTER, "has already finished (completed)")
        task = await fleet.store.get_task(task_id)
        assert task is not None and task.prompt == "explain the build"
        assert await fleet.store.count_tasks(list(TaskState)) == 1


# --- a long paste ---------------------------------------------------------------------------------


def split_like_an_app(text: str, limit: int = 4096) -> list[str]:
    parts = []
    while text:
        if len(text) <= limit:
            parts.append(text)
            break
        cut = text.rfind(" ", 0, limit)
        parts.append(text[:cut])
        text = text[cut + 1:]
    return parts


async def test_a_50000_character_paste_split_in_13_messages_becomes_one_task(
    world: World,
) -> None:
    paste = " ".join(f"line{i}" for i in range(9000))[:50_000].strip()
    parts = split_like_an_app(paste)
    assert len(parts) == 13
    async with world.fleet(MIN_WORKERS=1, SCALE_UP_THRESHOLD=3) as fleet:
        await world.ada.start(MASTER)
        await world.ada.start(worker_bot(1))  # (a /start in a stopped worker's chat starts it)
        for part in parts:
            await world.ada.send(MASTER, part)
        receipt = await world.ada.wait_for_text(MASTER, "Joined 13 messages", timeout=15)
        task = await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, timeout=30)
        assert task.prompt.replace("\n", " ") == paste
        assert len(receipts(world)) == 1
        assert await fleet.store.count_tasks(list(TaskState)) == 1
        assert fleet.orchestrator is not None
        await fleet.orchestrator.tick()
        assert [s.name for s in await fleet.store.get_slots() if s.enabled] == ["worker1"]


# --- bounds ---------------------------------------------------------------------------------------


async def add_pending(fleet: Fleet, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        await fleet.store.create_task(Task(
            id=f"t-q{i:04d}", user_id=ADA, chat_id=ADA, prompt=f"queued job {i}",
            title=f"queued job {i} with a title long enough to matter in the listing",
        ))


async def test_queue_gives_exact_totals_and_fits_one_message_with_347_then_1000_pending(
    world: World,
) -> None:
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=300) as fleet:
        await world.open_chats(world.ada)
        await keep_worker_busy(world, fleet)
        await add_pending(fleet, 347)
        await world.ada.send(MASTER, "/queue")
        first = await world.ada.wait_for_text(MASTER, "Queue:")
        assert "1 running, 347 pending" in first.text and len(first.text) <= 4096
        # Numbered lines only: the running blocker's random id may start with "t-q" too.
        shown = len(re.findall(r"^\d+\. t-q\d{4} ", first.text, flags=re.MULTILINE))
        assert f"… and {347 - shown} more of yours" in first.text
        await add_pending(fleet, 653, start=347)
        await world.ada.send(MASTER, "/queue")
        second = await world.ada.wait_for_text(MASTER, "1 running, 1000 pending", timeout=20)
        assert len(second.text) <= 4096 and "more of yours" in second.text
        assert sum("Queue:" in t for t in world.ada.bot_texts(MASTER)) == 2  # one message each


async def test_a_user_over_the_pending_limit_is_refused_naming_the_limit(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120, MAX_PENDING_PER_USER=3) as fleet:
        await world.open_chats(world.ada)
        await keep_worker_busy(world, fleet)
        for n in range(4):
            await world.ada.send(MASTER, f"waiting job {n}")
        refusal = await world.ada.wait_for_text(MASTER, "MAX_PENDING_PER_USER")
        assert "3" in refusal.text and "Nothing was queued" in refusal.text
        await wait_until(lambda: len(receipts(world)) == 4, 10, "three receipts and the blocker")
        assert await fleet.store.count_tasks([TaskState.PENDING], user_id=ADA) == 3


async def test_a_user_over_the_prompts_per_minute_is_refused_naming_the_limit(
    world: World,
) -> None:
    async with world.fleet(PROMPTS_PER_MINUTE=3) as fleet:
        await world.open_chats(world.ada)
        for n in range(4):
            await world.ada.send(MASTER, f"quick job {n}")
        refusal = await world.ada.wait_for_text(MASTER, "PROMPTS_PER_MINUTE")
        assert "at most 3 prompts a minute" in refusal.text
        assert "Nothing was queued" in refusal.text
        await wait_until(lambda: len(receipts(world)) == 3, 10, "three receipts")
        assert await fleet.store.count_tasks(list(TaskState)) == 3


# --- order ----------------------------------------------------------------------------------------


async def test_a_burst_of_200_prompts_is_queued_in_the_order_sent(world: World) -> None:
    count = 200
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=300, PROMPTS_PER_MINUTE=1000,
                           MAX_PENDING_PER_USER=1000) as fleet:
        await world.open_chats(world.ada)
        await keep_worker_busy(world, fleet)
        for n in range(count):
            await world.ada.send(MASTER, f"burst {n:04d}")
        await wait_until(lambda: len(receipts(world)) == count + 1, 60, "every receipt")
        pending = await fleet.store.list_tasks([TaskState.PENDING], limit=count + 10)
        assert [t.prompt for t in pending] == [f"burst {n:04d}" for n in range(count)]
        ids = [task_id_in(t) for t in receipts(world)]
        assert len(set(ids)) == count + 1  # one receipt each, none doubled


async def test_a_prompt_whose_new_task_id_is_taken_is_queued_under_another(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fleetgram.master.bot as master_bot

    ids = iter(["t-22222", "t-33333"])
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        await keep_worker_busy(world, fleet)
        taken = Task(id="t-22222", user_id=ADA, chat_id=ADA, prompt="earlier", title="earlier")
        await fleet.store.create_task(taken)
        monkeypatch.setattr(master_bot, "new_task_id", lambda: next(ids))
        await world.ada.send(MASTER, "a prompt unlucky with its id")
        receipt = await world.ada.wait_for(
            MASTER, lambda m: m.text.startswith("🆕") and "unlucky" in m.text, 10)
    assert task_id_in(receipt.text) == "t-33333"
