"""Wake-ups instead of polls, and no tail between tasks.

- A `fleetgram worker` process on a shared Postgres (its own store) claims a new task at once,
  and the master delivers the notices that worker writes at once: POLL_INTERVAL is 30 s here,
  so only the LISTEN/NOTIFY wake-up can meet the tests' 10 s deadlines.
- A worker takes its next task while the previous answer's last message is still being
  delivered, and the chat still shows the two answers in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from fleetgram.domain import TaskState
from fleetgram.emulators.telegram_api import Call, TelegramEmulator
from fleetgram.fleet import MasterOnly, WorkerOnly
from tests.e2e.harness import ADA, MASTER, World, wait_task, wait_until, worker_bot

WORKER = worker_bot(1)
SHOWING = ("sendmessage", "sendmessagedraft", "editmessagetext")
LONG_POLL = "30"  # seconds: far beyond every deadline below


def shown_calls(telegram: TelegramEmulator, bot: str, needle: str) -> list[Call]:
    """Accepted calls of `bot` that put text holding `needle` on the user's screen, in the
    order they reached Telegram."""
    calls = [c for method in SHOWING for c in telegram.calls_to(bot, method)
             if c.status == 200 and needle in str(c.params.get("text", ""))]
    return sorted(calls, key=lambda c: c.at)


def on_screen(telegram: TelegramEmulator, bot: str, needle: str) -> Callable[[], bool]:
    return lambda: bool(shown_calls(telegram, bot, needle))


ON_POSTGRES = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


@pytest.fixture
async def split_fleet(world: World) -> AsyncIterator[World]:
    """`fleetgram master` and `fleetgram worker --slot worker1` as two processes would run
    them: each with its own store on the shared Postgres, both polling every 30 s."""
    settings = world.settings(workers=1, MIN_WORKERS=1, MAX_WORKERS=1,
                              POLL_INTERVAL=LONG_POLL)
    master, worker = MasterOnly(settings), WorkerOnly(settings, "worker1")
    await master.start()
    try:
        await worker.start()
        try:
            await world.open_chats(world.ada, workers=1)
            await world.telegram.wait_until_polling(WORKER, timeout=10)
            yield world
        finally:
            await worker.stop()
    finally:
        await master.stop()


@ON_POSTGRES
async def test_a_separate_worker_on_postgres_starts_a_new_task_without_waiting_for_its_poll(
    split_fleet: World,
) -> None:
    world = split_fleet
    task_id = await world.prompt("wake up and answer")
    await wait_until(on_screen(world.telegram, WORKER, task_id), 10,
                     "the worker's first message of the task")


@ON_POSTGRES
async def test_the_master_sends_a_notice_written_by_another_process_without_waiting_for_its_poll(
    split_fleet: World,
) -> None:
    world = split_fleet
    task_id = await world.prompt("tell the master")
    # "started" is written by the worker's store, never by the master's own: only the
    # notification can wake the master's outbox before its 30 s poll.
    await world.ada.wait_for(MASTER, lambda m: f"{task_id}" in m.text and "started" in m.text,
                             10)


async def test_the_next_task_starts_while_the_previous_answer_is_delivered_in_order(
    world: World,
) -> None:
    telegram = world.telegram
    world.claude.script("The first answer, " + "long enough to stream a while. " * 30,
                        when="first job")
    world.claude.script("The second answer.", when="second job")
    async with world.fleet(MIN_WORKERS=1, MAX_WORKERS=1):
        await world.open_chats(world.ada, workers=1)
        first = await world.prompt("first job")
        second = await world.prompt("second job")
        await wait_until(on_screen(telegram, WORKER, first), 10, "the first task's header")
        # Telegram holds every call to the worker chat for a while: the first answer's last
        # message cannot be delivered until then.
        telegram.flood(WORKER, 6.0, chat_id=ADA)
        done_first = f"✅ {first} done"
        await wait_until(lambda: len(world.claude.requests) >= 2, 15,
                         "the second task's Claude request")
        assert not shown_calls(telegram, WORKER, done_first), (
            "the second task waited for the first one's final message")

        await wait_until(on_screen(telegram, WORKER, f"✅ {second} done"), 20,
                         "the second answer's final text")
        last_of_first = shown_calls(telegram, WORKER, done_first)[-1]
        first_of_second = shown_calls(telegram, WORKER, second)[0]
        assert last_of_first.at <= first_of_second.at
        chat = [m.text for m in world.ada.chat(WORKER) if m.from_bot]
        ends_first = max(i for i, text in enumerate(chat) if done_first in text)
        starts_second = min(i for i, text in enumerate(chat) if second in text)
        assert ends_first < starts_second


async def test_a_final_answer_cut_short_by_a_stop_is_marked_when_the_worker_starts_again(
    world: World,
) -> None:
    telegram = world.telegram
    world.claude.script("An answer " + "that streams for a while. " * 30, when="cut short")
    async with world.fleet(MIN_WORKERS=1, MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, workers=1)
        task_id = await world.prompt("cut short")
        await wait_until(on_screen(telegram, WORKER, task_id), 10, "the task's header")
        telegram.flood(WORKER, 5.0, chat_id=ADA)  # the final message cannot land meanwhile
        await wait_task(fleet, task_id, TaskState.COMPLETED, 15)
    # The fleet stopped while the final message was still waiting: nothing said it was shown.
    assert not shown_calls(telegram, WORKER, f"✅ {task_id} done")
    async with world.fleet(MIN_WORKERS=1, MAX_WORKERS=1):
        note = await world.ada.wait_for(
            WORKER, lambda m: m.from_bot and task_id in m.text and "may be missing" in m.text,
            20)
    assert "completed" in note.text


async def test_in_one_process_a_task_starts_and_its_notices_arrive_without_waiting_for_the_poll(
    world: World,
) -> None:
    async with world.fleet(MIN_WORKERS=1, MAX_WORKERS=1, POLL_INTERVAL=LONG_POLL):
        await world.open_chats(world.ada, workers=1)
        await world.telegram.wait_until_polling(WORKER, timeout=10)
        task_id = await world.prompt("all in one process")
        await wait_until(on_screen(world.telegram, WORKER, task_id), 10,
                         "the worker's first message of the task")
        await world.ada.wait_for(MASTER, lambda m: task_id in m.text and "done by" in m.text, 10)
