"""What one allowed user can see of another's work (counts, never titles or prompts), and
that the master answers in private chats only."""

from __future__ import annotations

import time

import pytest

from fleetgram.domain import Task, TaskState
from tests.e2e.harness import ADA, MASTER, World, task_id_in, wait_task, wait_until

pytestmark = pytest.mark.e2e

BOB = 2222
GROUP = -1001234567890
SECRET = "BOBSECRET1 my password is hunter2"


def group_message(world: World, text: str, message_id: int = 1) -> None:
    """Ada writes in a group the master bot was added to."""
    emu = world.telegram
    entities = ([{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
                if text.startswith("/") else [])
    emu._enqueue(emu._bot(MASTER), "message", {
        "message_id": message_id, "from": world.ada.user_dict(),
        "chat": {"id": GROUP, "type": "supergroup", "title": "the team"},
        "date": int(time.time()), "text": text, "entities": entities,
    })


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
        group_message(world, "/queue@fleet_master_bot", message_id=1)
        group_message(world, "run this for the whole group", message_id=2)
        await wait_until(lambda: len(sends_to(world, GROUP)) == 2, 10, "two refusals")
        assert sends_to(world, GROUP) == ["I work in private chats; write to me directly."] * 2
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
