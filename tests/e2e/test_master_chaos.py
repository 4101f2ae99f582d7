"""The master's notices when Telegram misbehaves as it does in the wild: long 429 storms,
lost replies, 502 bursts, unparsable answers, per-chat flood control; and when the store
cannot write. Every notice arrives, in order, at most twice; other chats are not held up."""

from __future__ import annotations

import time

import pytest

from fleetgram.domain import Task, TaskState
from fleetgram.fleet import Fleet, make_store
from fleetgram.master.views import receipt_payload
from tests.e2e.harness import ADA, MASTER, World, task_id_in, wait_task, wait_until, worker_bot
from tests.faults import FaultyStore

pytestmark = pytest.mark.e2e

BOB = 2222


def notices(world: World, user_id: int, task_id: str) -> list[str]:
    """The master's messages about `task_id` in the user's chat, in order, by kind."""
    kinds = {"🆕": "receipt", "▶️": "started", "✅": "completed", "⏹": "cancelled",
             "❌": "failed"}
    out = []
    for text in [m.text for m in world.telegram.history(MASTER, user_id) if m.from_bot]:
        if task_id in text:
            out.append(next((k for icon, k in kinds.items() if text.startswith(icon)), text))
    return out


async def settled(world: World, user_id: int = ADA) -> None:
    """The master has answered every /start: later chaos hits only the task's notices."""
    await wait_until(
        lambda: any("/workers" in m.text for m in world.telegram.history(MASTER, user_id)
                    if m.from_bot), 10, "the answer to /start",
    )


async def test_a_long_429_storm_on_one_master_chat_loses_nothing_and_holds_up_no_one_else(
    world: World,
) -> None:
    bob = world.telegram.add_user(BOB, "Bob", "bob")
    storm = 12.0  # longer than the old five-retry budget
    async with world.fleet(ALLOWED_USER_IDS=f"{ADA},{BOB}", MIN_WORKERS=2) as fleet:
        await world.open_chats(world.ada, workers=2)
        await world.open_chats(bob, workers=2)
        await settled(world)
        await settled(world, BOB)
        world.telegram.flood(MASTER, storm, chat_id=ADA, methods=["sendMessage"])
        started = time.monotonic()
        await world.ada.send(MASTER, "storm-hit task of ada")
        await bob.send(MASTER, "calm task of bob")
        bob_done = await bob.wait_for_text(MASTER, "done by", timeout=storm - 2)
        assert time.monotonic() - started < storm - 2  # Bob did not wait for Ada's storm
        bob_task = task_id_in(bob_done.text)
        assert notices(world, BOB, bob_task) == ["receipt", "started", "completed"]
        ada_task = (await fleet.store.list_tasks(user_id=ADA))[0]
        assert notices(world, ADA, ada_task.id) == []  # still storming

        await world.ada.wait_for_text(MASTER, "done by", timeout=storm + 15)
        assert time.monotonic() - started >= storm - 1
        await wait_task(fleet, ada_task.id, TaskState.COMPLETED)
        assert notices(world, ADA, ada_task.id) == ["receipt", "started", "completed"]


async def test_lost_replies_show_each_notice_at_most_twice(world: World) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        world.telegram.lose_reply_next(MASTER, "sendMessage", count=3)
        await world.ada.send(MASTER, "a task whose notices lose their replies")
        done = await world.ada.wait_for_text(MASTER, "done by", timeout=20)
        task_id = task_id_in(done.text)
        await wait_task(fleet, task_id, TaskState.COMPLETED)
        # The receipt lost its reply twice: shown twice, then given up on (logged). The
        # started notice lost it once: shown twice. Nothing is shown a third time.
        assert notices(world, ADA, task_id) == [
            "receipt", "receipt", "started", "started", "completed"
        ]


async def test_a_bad_gateway_burst_delays_the_notices_and_loses_none(world: World) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        world.telegram.fail_for(MASTER, 4.0, methods=["sendMessage"])
        await world.ada.send(MASTER, "a task during a bad gateway")
        done = await world.ada.wait_for_text(MASTER, "done by", timeout=30)
        task_id = task_id_in(done.text)
        await wait_task(fleet, task_id, TaskState.COMPLETED)
        assert notices(world, ADA, task_id) == ["receipt", "started", "completed"]


async def test_an_answer_to_a_command_waits_out_a_bad_gateway_burst(world: World) -> None:
    async with world.fleet():
        await world.ada.start(MASTER)
        await settled(world)
        world.telegram.fail_for(MASTER, 3.0, methods=["sendMessage"])
        await world.ada.send(MASTER, "/queue")
        await world.ada.wait_for_text(MASTER, "The queue is empty.", timeout=20)
        assert sum("queue is empty" in t for t in world.ada.bot_texts(MASTER)) == 1


async def test_an_unparsable_answer_to_a_processed_send_shows_the_notice_at_most_twice(
    world: World,
) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        world.telegram.malformed_next(MASTER, "sendMessage", count=1, processed=True)
        await world.ada.send(MASTER, "a task whose receipt answer is cut short")
        done = await world.ada.wait_for_text(MASTER, "done by", timeout=20)
        task_id = task_id_in(done.text)
        await wait_task(fleet, task_id, TaskState.COMPLETED)
        assert notices(world, ADA, task_id) == ["receipt", "receipt", "started", "completed"]


async def test_twenty_prompts_at_once_under_per_chat_flood_control_get_twenty_receipts(
    world: World,
) -> None:
    world.telegram.chat_burst, world.telegram.chat_rate = 3, 1.0  # Telegram's real pace
    world.claude.tokens_per_second = 5
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.ada.start(MASTER)
        await world.ada.start(worker_bot(1))
        for n in range(20):
            await world.ada.send(MASTER, f"flooded prompt {n:02d}")
        await wait_until(
            lambda: sum(t.startswith("🆕") for t in world.ada.bot_texts(MASTER)) >= 20,
            60, "twenty receipts",
        )
        receipts = [t for t in world.ada.bot_texts(MASTER) if t.startswith("🆕")]
        assert [t.split("\n")[1] for t in receipts] == [f"flooded prompt {n:02d}"
                                                          for n in range(20)]
        assert len({task_id_in(t) for t in receipts}) == 20
        assert await fleet.store.count_tasks(list(TaskState)) == 20


async def test_a_store_that_refuses_writes_is_reported_and_nothing_is_queued(
    world: World,
) -> None:
    settings = world.settings()
    store = FaultyStore(make_store(settings))
    fleet = Fleet(settings, store=store)  # type: ignore[arg-type]
    await fleet.start()
    try:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        store.refuse_writes()  # a full disk: every write fails, reads work
        await world.ada.send(MASTER, "a prompt the disk cannot take")
        answer = await world.ada.wait_for_text(MASTER, "Nothing was queued")
        assert "could not save that prompt" in answer.text
        assert "create_task" in store.refused
        assert await store.count_tasks(list(TaskState)) == 0

        store.heal()
        task_id = await world.prompt("the same prompt once the disk has room")
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=20)
        assert await store.count_tasks(list(TaskState)) == 1
    finally:
        await fleet.stop()


async def test_the_nothing_was_queued_answer_survives_a_lost_reply(world: World) -> None:
    settings = world.settings()
    store = FaultyStore(make_store(settings))
    fleet = Fleet(settings, store=store)  # type: ignore[arg-type]
    await fleet.start()
    try:
        await world.open_chats(world.ada, workers=1)
        await settled(world)
        store.refuse_writes()
        world.telegram.malformed_next(MASTER, "sendMessage", processed=False)
        await world.ada.send(MASTER, "a prompt while the disk is full and Telegram garbled")
        answer = await world.ada.wait_for_text(MASTER, "Nothing was queued")
        assert "could not save that prompt" in answer.text
        said = [t for t in world.ada.bot_texts(MASTER) if "Nothing was queued" in t]
        assert len(said) == 1  # the garbled send was not shown; the resend was, once
    finally:
        await fleet.stop()


async def test_a_receipt_written_before_a_restart_is_sent_after_it(world: World) -> None:
    settings = world.settings()
    store = make_store(settings)
    await store.open()
    task = Task(id="t-rstrt", user_id=ADA, chat_id=ADA, prompt="written before the crash",
                title="written before the crash")
    await store.create_task(task, event=("receipt", receipt_payload(task)))
    await store.close()
    await world.ada.start(MASTER)  # the chat was open before the crash
    async with world.fleet():
        receipt = await world.ada.wait_for_text(MASTER, "t-rstrt")
        assert "written before the crash" in receipt.text and "priority 5" in receipt.text
        assert ("Cancel", "cancel:t-rstrt") in receipt.buttons()
