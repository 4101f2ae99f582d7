"""What a user sees writing directly in a worker's chat: edits of a prompt, a group the worker
was added to, things that are not text, and the prompts-per-minute limit. Each answer is one
line; nothing runs that should not, nothing is queued twice."""

from __future__ import annotations

import pytest

from fleetgram.domain import Task, TaskSource, TaskState, utcnow
from fleetgram.fleet import Fleet
from fleetgram.telegram.media import STICKER
from fleetgram.transcribe import NOT_CONFIGURED
from fleetgram.worker.steps import GROUP_REFUSAL
from tests.e2e.harness import ADA, MASTER, World, task_id_in, wait_task, wait_until, worker_bot

pytestmark = pytest.mark.e2e

WORKER = worker_bot(1)
GROUP = -4012345


async def direct_task_of(fleet: Fleet, message_id: int, state: TaskState) -> str:
    """The id of the task made from Ada's message `message_id` in worker1's chat, once it is
    in `state`."""
    async def find() -> str | None:
        live = await fleet.store.list_tasks(user_id=ADA)
        for task in live:
            if task.source == TaskSource.DIRECT and task.message_id == message_id:
                return task.id if task.state == state else None
        return None

    return await wait_until(find, 10, f"the task of message #{message_id} to be {state.value}")


async def counted(fleet: Fleet, states: list[TaskState], expected: int) -> bool:
    return await fleet.store.count_tasks(states) == expected


async def test_editing_a_pending_direct_prompt_updates_the_task_and_says_so(
    world: World,
) -> None:
    world.claude.hang_next(1)  # the first prompt keeps worker1 busy: the second waits
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        first = await world.ada.send(WORKER, "blocker keeps the worker busy")
        await direct_task_of(fleet, first, TaskState.RUNNING)
        message_id = await world.ada.send(WORKER, "write the dcos")
        queued = await world.ada.wait_for_text(WORKER, "queued (position 1)")
        task_id = task_id_in(queued.text)

        await world.ada.edit(WORKER, message_id, "write the docs")

        await world.ada.wait_for_text(WORKER, f"✏️ {task_id} updated: it runs with your edit.")
        task = await fleet.store.get_task(task_id)
        assert task is not None and task.state == TaskState.PENDING
        assert (task.prompt, task.title) == ("write the docs", "write the docs")
        assert await fleet.store.count_tasks(list(TaskState)) == 2  # the blocker and this one
        assert not any("Edits are not applied" in t for t in world.ada.bot_texts(WORKER))


async def test_editing_a_running_direct_prompt_is_answered_and_runs_nothing_new(
    world: World,
) -> None:
    world.claude.tokens_per_second = 20  # slow enough to edit while it runs
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        message_id = await world.ada.send(WORKER, "explain the build")
        task_id = await direct_task_of(fleet, message_id, TaskState.RUNNING)

        await world.ada.edit(WORKER, message_id, "explain the tests")

        answer = await world.ada.wait_for_text(WORKER, "Edits are not applied to a running task")
        assert task_id in answer.text
        task = await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=60)
        assert task.prompt == "explain the build"
        assert await fleet.store.count_tasks(list(TaskState)) == 1
        asked = [r for r in world.claude.requests if "explain the" in str(r["messages"])]
        assert len(asked) == 1 and "explain the tests" not in str(asked[0]["messages"])
        assert not any("updated" in t for t in world.ada.bot_texts(WORKER))


async def test_an_edit_in_the_worker_chat_never_touches_a_master_task_with_the_same_message_id(
    world: World,
) -> None:
    """A private chat's id is the user's id in every bot's chat and message ids count per
    chat, so the master's chat can hold a task made from a message with the same id."""
    world.claude.hang_next(1)
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        first = await world.ada.send(WORKER, "blocker keeps the worker busy")
        await direct_task_of(fleet, first, TaskState.RUNNING)
        message_id = await world.ada.send(WORKER, "second direct mesage")
        direct = task_id_in((await world.ada.wait_for_text(WORKER, "queued (position")).text)
        # Ada's message #message_id in the master's chat became a task too (newer).
        await fleet.store.create_task(Task(
            id="t-mst01", user_id=ADA, chat_id=ADA, prompt="the master's task keeps its prompt",
            title="the master's task", message_id=message_id, created_at=utcnow(),
        ))

        await world.ada.edit(WORKER, message_id, "second direct message")

        await world.ada.wait_for_text(WORKER, f"✏️ {direct} updated")
        master_task = await fleet.store.get_task("t-mst01")
        assert master_task is not None
        assert master_task.prompt == "the master's task keeps its prompt"
        edited = await fleet.store.get_task(direct)
        assert edited is not None and edited.prompt == "second direct message"


async def test_a_message_in_a_group_gets_the_one_line_refusal_and_no_task(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        await world.telegram.wait_until_polling(WORKER, timeout=10)

        await world.ada.send_in_group(WORKER, GROUP, "@fleet_worker1_bot summarise the thread")

        await wait_until(
            lambda: [m.text for m in world.telegram.group_messages(GROUP) if m.from_bot],
            10, "the refusal in the group",
        )
        said = [m.text for m in world.telegram.group_messages(GROUP) if m.from_bot]
        assert said == [GROUP_REFUSAL]
        assert world.ada.bot_texts(WORKER) == []  # nothing in the private chat either
        assert await fleet.store.count_tasks(list(TaskState)) == 0


async def test_a_sticker_and_an_untranscribed_voice_note_each_get_a_one_line_answer(
    world: World,
) -> None:
    """Photos and documents become tasks (tests/e2e/test_media_chat.py); a sticker carries no
    prompt, and a voice note needs TRANSCRIBE_URL, which this fleet does not have."""
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        await world.ada.send_voice(WORKER)
        await world.ada.send_sticker(WORKER)

        await wait_until(lambda: sorted(world.ada.bot_texts(WORKER)) ==
                         sorted([NOT_CONFIGURED, STICKER]), 10, "two one-line answers")
        assert await fleet.store.count_tasks(list(TaskState)) == 0
        assert world.claude.requests == []


async def test_prompts_per_minute_applies_across_worker_chats_naming_the_setting(
    world: World,
) -> None:
    async with world.fleet(MIN_WORKERS=2, MAX_WORKERS=2, PROMPTS_PER_MINUTE=3) as fleet:
        await world.open_chats(world.ada)
        await world.telegram.wait_until_polling(worker_bot(1), timeout=10)
        await world.telegram.wait_until_polling(worker_bot(2), timeout=10)
        await world.ada.send(worker_bot(1), "quick job 1")
        await world.ada.send(worker_bot(1), "quick job 2")
        await world.ada.send(worker_bot(2), "quick job 3")
        await wait_until(lambda: counted(fleet, list(TaskState), 3), 10, "three tasks")
        await world.ada.send(worker_bot(2), "quick job 4")

        refusal = await world.ada.wait_for_text(worker_bot(2), "PROMPTS_PER_MINUTE")
        assert "at most 3 prompts a minute" in refusal.text
        assert "Nothing was queued" in refusal.text
        await wait_until(lambda: counted(fleet, [TaskState.COMPLETED], 3), 30, "three answers")
        tasks = await fleet.store.list_tasks(user_id=ADA)
        assert sorted(t.prompt for t in tasks) == ["quick job 1", "quick job 2", "quick job 3"]
        asked = [r for r in world.claude.requests if "quick job 4" in str(r["messages"])]
        assert asked == []


async def test_prompts_per_minute_counts_the_master_and_the_worker_chats_together(
    world: World,
) -> None:
    async with world.fleet(MIN_WORKERS=1, MAX_WORKERS=1, PROMPTS_PER_MINUTE=3) as fleet:
        await world.open_chats(world.ada)
        await world.telegram.wait_until_polling(worker_bot(1), timeout=10)
        await world.prompt("master job 1")
        await world.prompt("master job 2")
        await world.ada.send(worker_bot(1), "worker job 3")
        await wait_until(lambda: counted(fleet, list(TaskState), 3), 10, "three tasks")
        await world.ada.send(MASTER, "master job 4")

        refusal = await world.ada.wait_for_text(MASTER, "PROMPTS_PER_MINUTE")
        assert "Nothing was queued" in refusal.text
        await wait_until(lambda: counted(fleet, [TaskState.COMPLETED], 3), 30, "three answers")
        tasks = await fleet.store.list_tasks(user_id=ADA)
        assert sorted(t.prompt for t in tasks) == ["master job 1", "master job 2",
                                                   "worker job 3"]
