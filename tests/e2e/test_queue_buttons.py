"""/queue and receipts (issue 11, item 7): Cancel buttons for the user's own tasks, a receipt
whose Cancel button goes when its task ends, priorities read as words."""

from __future__ import annotations

import pytest

from fleetgram.domain import TaskState
from tests.e2e.harness import ADA, MALLORY, MASTER, World, wait_task, wait_until

pytestmark = pytest.mark.e2e


async def test_queue_has_cancel_buttons_for_own_tasks_only_and_pressing_one_cancels_it(
    world: World,
) -> None:
    world.claude.hang_next(1)  # the first task keeps the only worker busy
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120,
                           ALLOWED_USER_IDS=f"{ADA},{MALLORY}") as fleet:
        await world.open_chats(world.ada)
        await world.mallory.start(MASTER)
        blocker = await world.prompt("blocker keeps the worker busy")
        await wait_task(fleet, blocker, TaskState.RUNNING)
        mine = await world.prompt("write the changelog")
        await world.mallory.send(MASTER, "mallory's own task")
        await world.mallory.wait_to_see(MASTER, "🆕")

        await world.ada.send(MASTER, "/queue")

        queue = await world.ada.wait_for(MASTER, lambda m: m.from_bot and "Queue" in m.text)
        assert queue.buttons() == [(f"Cancel {blocker}", f"cancel:{blocker}"),
                                   (f"Cancel {mine}", f"cancel:{mine}")]
        assert "1 pending tasks of other users" in queue.text
        await world.ada.press(MASTER, queue.message_id, f"cancel:{mine}")
        await wait_task(fleet, mine, TaskState.CANCELLED)
        await world.ada.wait_to_see(MASTER, f"⏹ {mine} cancelled before it started")


async def test_a_receipts_cancel_button_is_gone_once_its_task_is_done(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        task_id = await world.prompt("summarise the design")
        receipt = await world.ada.wait_for(MASTER, lambda m: f"🆕 {task_id}" in m.text)
        assert receipt.buttons() == [("Cancel", f"cancel:{task_id}")]

        await wait_task(fleet, task_id, TaskState.COMPLETED)

        def buttons_now() -> bool:
            now = next(m for m in world.ada.chat(MASTER) if m.message_id == receipt.message_id)
            return not now.buttons()

        await wait_until(buttons_now, 10, "the receipt's Cancel button to go")
        assert world.ada.sees(MASTER, f"✅ {task_id} done")


async def test_receipts_and_the_queue_name_priorities_in_words(world: World) -> None:
    world.claude.hang_next(1)
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        blocker = await world.prompt("!9 blocker keeps the worker busy")
        await wait_task(fleet, blocker, TaskState.RUNNING)
        urgent = await world.prompt("!1 fix the build")

        await world.ada.send(MASTER, "/queue")

        receipt = await world.ada.wait_for(MASTER, lambda m: f"🆕 {urgent}" in m.text)
        assert "priority 1 (urgent)" in receipt.text
        queue = await world.ada.wait_for(MASTER, lambda m: m.from_bot and "Queue" in m.text)
        assert f"{blocker} low on worker1" in queue.text
        assert f"1. {urgent} urgent" in queue.text
        assert " p1 " not in queue.text and " p9 " not in queue.text
