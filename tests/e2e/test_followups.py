"""Follow-ups by reply (issue 11, item 3): a Telegram reply to a task's answer, receipt or
notice continues that task's conversation; a plain message to the master starts fresh."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetgram.domain import TaskSource, TaskState
from fleetgram.emulators.telegram_api import ChatMessage, SimUser
from fleetgram.fleet import Fleet
from tests.e2e.agent_world import agent_overrides
from tests.e2e.harness import (
    ADA,
    MASTER,
    World,
    task_id_in,
    wait_task,
    wait_until,
    worker_bot,
)
from tests.emulators.agent_script import AgentStory, bash, install, say

pytestmark = pytest.mark.e2e

WORKER = worker_bot(1)


def request_text(body: dict[str, Any]) -> str:
    """Everything the Messages API request carried in its messages, as one string."""
    return json.dumps(body.get("messages") or [])


def user_turns(body: dict[str, Any]) -> int:
    return sum(1 for m in body.get("messages") or [] if m.get("role") == "user")


def request_for(world: World, marker: str) -> dict[str, Any] | None:
    """The last Claude request whose newest user message contains `marker`."""
    for body in reversed(world.claude.requests):
        messages = body.get("messages") or []
        if messages and marker in json.dumps(messages[-1]):
            return body
    return None


async def bot_message(user: SimUser, bot: str, substring: str) -> ChatMessage:
    return await user.wait_for(bot, lambda m: m.from_bot and substring in m.text, 15)


async def queued_behind_a_busy_worker(world: World, fleet: Any,
                                      prompt: str) -> tuple[str, ChatMessage]:
    """With one worker kept busy by a task that hangs (`world.claude.hang_next(1)` first),
    Ada's `prompt` waits: its task id and its receipt."""
    blocker = await world.prompt("blocker keeps the worker busy")
    await wait_task(fleet, blocker, TaskState.RUNNING)
    waiting = await world.prompt(prompt)
    return waiting, await bot_message(world.ada, MASTER, f"🆕 {waiting}")


async def direct_task(fleet: Fleet, message_id: int) -> str:
    async def find() -> str | None:
        for task in await fleet.store.list_tasks(user_id=ADA):
            if task.source == TaskSource.DIRECT and task.message_id == message_id:
                return task.id
        return None

    return await wait_until(find, 10, f"the task of message #{message_id}")


async def test_a_reply_to_a_worker_answer_continues_that_conversation_on_the_same_worker(
    world: World,
) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        first = await world.ada.send(WORKER, "remember the word aardvark")
        first_id = await direct_task(fleet, first)
        await wait_task(fleet, first_id, TaskState.COMPLETED)
        answer = await bot_message(world.ada, WORKER, "Answer to: remember the word aardvark")
        await world.ada.send(WORKER, "/new")  # a plain message would now start fresh
        await world.ada.wait_to_see(WORKER, "Fresh conversation")

        follow = await world.ada.reply(WORKER, answer.message_id, "which word was it")

        follow_id = await direct_task(fleet, follow)
        done = await wait_task(fleet, follow_id, TaskState.COMPLETED)
        assert done.worker == "worker1"
        body = await wait_until(lambda: request_for(world, "which word was it"), 10,
                                "the follow-up's Claude request")
        assert "remember the word aardvark" in request_text(body)
        await world.ada.wait_to_see(WORKER, f"↪️ follow-up of {first_id}")


async def test_a_reply_to_a_done_notice_while_its_worker_is_busy_runs_elsewhere_with_the_turns(
    world: World,
) -> None:
    async with world.fleet(workers=2, MIN_WORKERS=2, MAX_WORKERS=2,
                               CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada, workers=2)
        first_id = await world.prompt("remember the colour teal")
        first = await wait_task(fleet, first_id, TaskState.COMPLETED)
        assert first.worker is not None
        notice = await bot_message(world.ada, MASTER, f"✅ {first_id} done")
        # The worker that holds the conversation gets a task that never ends.
        world.claude.hang_next(1)
        blocker = await world.ada.send(worker_bot(int(first.worker[-1])), "keep busy please")
        await wait_task(fleet, await direct_task(fleet, blocker), TaskState.RUNNING)

        await world.ada.reply(MASTER, notice.message_id, "which colour was it")

        receipt = await bot_message(world.ada, MASTER, f"↪️ follow-up of {first_id}")
        follow_id = task_id_in(receipt.text)
        done = await wait_task(fleet, follow_id, TaskState.COMPLETED, timeout=20)
        assert done.worker is not None and done.worker != first.worker
        assert f"{first.worker} is busy" in receipt.text
        body = await wait_until(lambda: request_for(world, "which colour was it"), 10,
                                "the follow-up's Claude request")
        assert "remember the colour teal" in request_text(body)


async def test_a_reply_to_the_receipt_of_a_pending_task_is_added_to_its_prompt(
    world: World,
) -> None:
    world.claude.hang_next(1)  # the first task keeps the only worker busy
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        waiting, receipt = await queued_behind_a_busy_worker(
            world, fleet, "write the release notes")

        await world.ada.reply(MASTER, receipt.message_id, "mention the new logo too")

        await world.ada.wait_to_see(MASTER, f"✏️ {waiting} has not started yet")
        task = await fleet.store.get_task(waiting)
        assert task is not None and task.state == TaskState.PENDING
        assert task.prompt == "write the release notes\n\nmention the new logo too"
        assert await fleet.store.count_tasks(list(TaskState)) == 2  # nothing new was queued


async def test_a_plain_message_to_the_master_starts_a_fresh_conversation(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        first = await world.prompt("remember the number 42")
        await wait_task(fleet, first, TaskState.COMPLETED)

        second = await world.prompt("what number was it")

        await wait_task(fleet, second, TaskState.COMPLETED)
        body = await wait_until(lambda: request_for(world, "what number was it"), 10,
                                "the second Claude request")
        assert user_turns(body) == 1
        assert "remember the number 42" not in request_text(body)


async def test_an_agent_follow_up_on_another_worker_says_the_session_stayed_and_gets_the_text(
    world: World, tmp_path: Path,
) -> None:
    install(world.claude,
            AgentStory("remember the word", [say("I will remember: marmalade.")]),
            AgentStory("keep busy", [bash("python3 -c 'import time; time.sleep(60)'")]),
            AgentStory("which word", [say("It was marmalade.")]))
    overrides = agent_overrides(tmp_path, None, MIN_WORKERS=2, MAX_WORKERS=2)
    async with world.fleet(2, **overrides) as fleet:
        await world.open_chats(world.ada, workers=2)
        first_id = await world.prompt("remember the word marmalade")
        first = await wait_task(fleet, first_id, TaskState.COMPLETED, timeout=30)
        assert first.worker is not None
        notice = await bot_message(world.ada, MASTER, f"✅ {first_id} done")
        busy_bot = worker_bot(int(first.worker[-1]))
        blocker = await world.ada.send(busy_bot, "keep busy for a minute")
        await world.ada.wait_to_see(busy_bot, "time.sleep(60)", 30)
        await wait_task(fleet, await direct_task(fleet, blocker), TaskState.RUNNING)

        await world.ada.reply(MASTER, notice.message_id, "which word was it")

        receipt = await bot_message(world.ada, MASTER, f"↪️ follow-up of {first_id}")
        done = await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, timeout=30)
        assert done.worker is not None and done.worker != first.worker
        other = worker_bot(int(done.worker[-1]))
        await world.ada.wait_to_see(
            other, f"its Claude Code session stays in {first.worker}'s workspace", 10)
        asked = request_for(world, "which word was it")
        assert asked is not None and "remember the word marmalade" in request_text(asked)
