"""The single-host fleet, end to end: conversations, scaling, access, failures, restarts."""

from __future__ import annotations

import pytest

from fleetgram.domain import TaskState
from tests.e2e.harness import (
    ADA,
    MASTER,
    World,
    wait_task,
    wait_until,
    worker_bot,
    worker_token,
)

pytestmark = pytest.mark.e2e


def _last_user_texts(request: dict) -> list[str]:
    return [
        block["text"]
        for message in request["messages"]
        if message["role"] == "user"
        for block in (message["content"] if isinstance(message["content"], list) else [])
        if block.get("type") == "text"
    ]


async def test_worker_conversation_continues_across_tasks_and_new_starts_fresh(
    world: World,
) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(worker_bot(1), "my name is Ada")
        await world.ada.wait_for_text(worker_bot(1), "✅")
        await world.ada.send(worker_bot(1), "what is my name?")
        await wait_until(lambda: len(world.claude.requests) >= 2)
        await wait_until(
            lambda: sum("✅" in t for t in world.ada.bot_texts(worker_bot(1))) >= 2, 10, "2nd"
        )
        second = world.claude.requests[-1]
        assert _last_user_texts(second) == ["my name is Ada", "what is my name?"]
        assert second["messages"][1]["role"] == "assistant"
        assert "cache_control" in second["messages"][1]["content"][-1]  # history is cached

        await world.ada.send(worker_bot(1), "/new")
        await world.ada.wait_for_text(worker_bot(1), "Fresh conversation")
        await world.ada.send(worker_bot(1), "who am I?")
        await wait_until(lambda: len(world.claude.requests) >= 3)
        assert _last_user_texts(world.claude.requests[-1]) == ["who am I?"]
        await wait_until(
            lambda: sum("✅" in t for t in world.ada.bot_texts(worker_bot(1))) >= 3, 10, "3rd"
        )
        assert fleet is not None


async def test_conversation_survives_a_restart(world: World) -> None:
    async with world.fleet():
        await world.open_chats(world.ada)
        await world.ada.send(worker_bot(1), "remember the word heliotrope")
        await world.ada.wait_for_text(worker_bot(1), "✅")
    async with world.fleet():
        await world.ada.send(worker_bot(1), "which word?")
        await wait_until(lambda: len(world.claude.requests) >= 2)
        assert _last_user_texts(world.claude.requests[-1]) == [
            "remember the word heliotrope", "which word?"
        ]


async def test_second_turn_is_billed_mostly_as_cache_reads(world: World) -> None:
    world.claude.script("A long answer. " * 200)
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(worker_bot(1), "first question")
        await world.ada.wait_for_text(worker_bot(1), "✅", timeout=15)
        await world.ada.send(worker_bot(1), "second question")
        await wait_until(
            lambda: sum("✅" in t for t in world.ada.bot_texts(worker_bot(1))) >= 2, 15, "2nd"
        )
        tasks = await fleet.store.list_tasks([TaskState.COMPLETED])
        second = max(tasks, key=lambda t: t.created_at)
        assert second.usage.cache_read_tokens > second.usage.input_tokens


async def test_stop_in_a_worker_chat_cancels_what_it_is_doing(world: World) -> None:
    world.claude.tokens_per_second = 10
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(worker_bot(1), "a slow job")
        await world.ada.wait_to_see(worker_bot(1), "Answer to")
        await world.ada.send(worker_bot(1), "/stop")
        await world.ada.wait_for_text(worker_bot(1), "cancelled")
        tasks = await fleet.store.list_tasks([TaskState.CANCELLED])
        assert [t.title for t in tasks] == ["a slow job"]


async def test_fleet_scales_up_past_the_threshold_and_down_after_the_delay(world: World) -> None:
    world.claude.tokens_per_second = 25
    async with world.fleet(SCALE_DOWN_DELAY="1.5") as fleet:
        await world.open_chats(world.ada)
        await wait_until(lambda: world.telegram.commands(worker_bot(1)), 5, "worker1 up")
        for i in range(8):
            await world.ada.send(MASTER, f"job number {i}")
        await wait_until(
            lambda: sum("job number" in t for t in world.ada.bot_texts(MASTER)) >= 8, 10
        )

        async def running() -> int:
            slots = await fleet.store.get_slots()
            return sum(1 for s in slots if s.enabled)

        assert await wait_until(lambda: _at_least(running, 4), 20, "scale up to 4+")
        assert await running() <= 5
        await wait_until(
            lambda: _count(fleet, TaskState.COMPLETED, 8), 40, "all eight jobs done"
        )
        # Idle with nothing pending: stops workers down to two idle (the seed: > 2 idle).
        await wait_until(lambda: _at_most(running, 2), 15, "scale down")
        assert await running() >= 1


async def _at_least(fn, n):  # type: ignore[no-untyped-def]
    return await fn() >= n


async def _at_most(fn, n):  # type: ignore[no-untyped-def]
    return await fn() <= n


async def _count(fleet, state, n):  # type: ignore[no-untyped-def]
    return len(await fleet.store.list_tasks([state])) >= n


async def test_bad_worker_token_marks_the_slot_error_and_the_next_token_is_used(
    world: World,
) -> None:
    # worker1's token is not known to Telegram.
    pool = ",".join(["9999:revoked-token-xyz", worker_token(2), worker_token(3)])
    async with world.fleet(workers=3, WORKER_TOKEN_POOL=pool) as fleet:
        await world.open_chats(world.ada, workers=3)
        task_id = await world.prompt("hello fleet")
        task = await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=15)
        assert task.worker == "worker2"
        await world.ada.send(MASTER, "/workers")
        text = (await world.ada.wait_for_text(MASTER, "Workers:")).text
        assert "worker1 — error: token refused by Telegram" in text


async def test_strangers_get_one_refusal_and_nothing_is_stored(world: World) -> None:
    async with world.fleet() as fleet:
        for text in ("hello", "do my homework", "/queue"):
            await world.mallory.send(MASTER, text)
        await world.mallory.send(worker_bot(1), "psst")
        await world.ada.send(MASTER, "/queue")  # a request after theirs, to know they're handled
        await world.ada.wait_for_text(MASTER, "queue is empty")
        await wait_until(lambda: world.mallory.bot_texts(worker_bot(1)), 5, "worker refusal")
        assert world.mallory.bot_texts(MASTER) == ["Sorry, this bot serves its owners only."]
        assert await fleet.store.list_tasks() == []


async def test_worker_that_cannot_message_the_user_makes_master_say_which_bot_to_open(
    world: World,
) -> None:
    world.claude.script("The answer is 42.", when="meaning")
    async with world.fleet() as fleet:
        await world.ada.start(MASTER)  # but never opens any worker bot
        task_id = await world.prompt("the meaning of life")
        notice = await world.ada.wait_for_text(MASTER, "can't message you")
        assert "@fleet_worker1_bot" in notice.text and "t.me/fleet_worker1_bot" in notice.text
        await wait_task(fleet, task_id, TaskState.COMPLETED)
        await world.ada.wait_for_text(MASTER, "The answer is 42.")


async def test_claude_failure_after_retries_fails_the_task_with_the_reason_in_both_chats(
    world: World,
) -> None:
    world.claude.inject(529, count=10, retry_after=0.05)
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        task_id = await world.prompt("doomed request")
        task = await wait_task(fleet, task_id, TaskState.FAILED, timeout=15)
        assert task.error == "Claude API error: overloaded (after retries)"
        await world.ada.wait_for_text(MASTER, f"{task_id} failed: Claude API error: overloaded")
        await world.ada.wait_for_text(worker_bot(1), "failed: Claude API error: overloaded")
        assert len(world.claude.requests) == 4  # the first try and CLAUDE_MAX_RETRIES=3


async def test_claude_rate_limit_is_retried_and_the_task_completes(world: World) -> None:
    world.claude.inject(429, count=2, retry_after=0.05)
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        task_id = await world.prompt("retry me")
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=15)


async def test_long_answer_streams_into_several_messages_under_real_chat_limits(
    world: World,
) -> None:
    answer = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 12
                         for i in range(40))
    world.claude.script(answer, when="long")
    world.claude.tokens_per_second = 3000
    world.telegram.chat_burst, world.telegram.chat_rate = 3, 1.0  # Telegram's own pace
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(worker_bot(1), "a long essay")
        await world.ada.wait_for_text(worker_bot(1), "✅", timeout=40)
        messages = [m for m in world.ada.chat(worker_bot(1)) if m.from_bot]
        body = "".join(m.text for m in messages)
        assert len(messages) >= 3
        assert all(len(m.text) <= 4096 for m in messages)
        for i in range(40):
            assert f"Paragraph {i}:" in body
        assert ADA and fleet
