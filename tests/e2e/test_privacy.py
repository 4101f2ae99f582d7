"""What one allowed user can see of another's work (counts, never titles or prompts), and
that the master answers in private chats only."""

from __future__ import annotations

import pytest

from fleetgram.domain import Task, TaskState
from tests.e2e.harness import ADA, MASTER, World, task_id_in, wait_task, wait_until

pytestmark = pytest.mark.e2e

BOB = 2222
GROUP = -1001234567890
SECRET = "BOBSECRET1 my password is hunter2"


def bot_texts_in_group(world: World) -> list[str]:
    return [m.text for m in world.telegram.group_messages(GROUP) if m.from_bot]


def sends_to(world: World, chat_id: int) -> list[str]:
    return [str(c.params.get("text")) for c in world.telegram.calls_to(MASTER, "sendMessage")
            if c.params.get("chat_id") == chat_id]


async def test_queue_and_workers_show_others_work_without_titles_or_prompts(
    world: World,
) -> None:
    bob = world.telegram.add_user(BOB, "Bob", "bob")
    world.claude.hang_next(1)
    async with world.fleet(ALLOWED_USER_IDS=f"{ADA},{BOB}", MAX_WORKERS=1,
                           CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(bob, workers=1)
        await world.open_chats(world.ada, workers=1)
        await bob.send(MASTER, SECRET + " (running)")
        bob_running = task_id_in((await bob.wait_for_text(MASTER, "🆕")).text)
        await wait_task(fleet, bob_running, TaskState.RUNNING)
        await bob.send(MASTER, SECRET + " (waiting)")
        await bob.wait_for_text(MASTER, "(waiting)")
        mine = await world.prompt("ada's own visible task")

        await world.ada.send(MASTER, "/queue")
        queue = (await world.ada.wait_for_text(MASTER, "Queue:")).text
        assert "1 running, 2 pending" in queue
        assert mine in queue and "ada's own visible task" in queue
        assert "+1 running and 1 pending tasks of other users" in queue
        assert "BOBSECRET" not in queue and "hunter2" not in queue and bob_running not in queue

        await world.ada.send(MASTER, "/workers")
        workers = (await world.ada.wait_for_text(MASTER, "Workers:")).text
        assert "busy on another user's task" in workers and bob_running not in workers

        await bob.send(MASTER, "/workers")
        own = (await bob.wait_for_text(MASTER, "Workers:")).text
        assert f"busy on {bob_running}" in own


async def test_the_master_refuses_to_work_in_a_group_even_for_queue_at_bot(world: World) -> None:
    async with world.fleet() as fleet:
        await world.ada.start(MASTER)
        await world.prompt("ada's private task")
        await world.ada.send_in_group(MASTER, GROUP, "/queue@fleet_master_bot")
        await world.ada.send_in_group(MASTER, GROUP, "run this for the whole group")
        await wait_until(lambda: len(bot_texts_in_group(world)) == 2, 10, "two refusals")
        assert bot_texts_in_group(world) == ["I work in private chats; write to me directly."] * 2
        assert sends_to(world, GROUP) == bot_texts_in_group(world)  # no failed attempt either
        assert await fleet.store.count_tasks(list(TaskState)) == 1  # only the private one


async def test_an_answer_for_a_task_from_a_group_goes_to_its_users_private_chat(
    world: World,
) -> None:
    async with world.fleet() as fleet:
        await world.ada.start(MASTER)
        await world.ada.wait_for_text(MASTER, "/workers")
        task = await fleet.store.create_task(Task(
            id="t-grp01", user_id=ADA, chat_id=GROUP, prompt="p", title="group-born task",
            state=TaskState.PENDING,
        ))
        await fleet.store.add_event(
            "completed", {"worker": "worker1", "title": task.title, "seconds": 1.0,
                          "result": "THE PRIVATE ANSWER"},
            task_id=task.id, chat_id=GROUP,
        )
        await world.ada.wait_for_text(MASTER, "THE PRIVATE ANSWER")
        assert sends_to(world, GROUP) == []
