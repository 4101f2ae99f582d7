"""The single-host fleet (`fleetgram up`), end to end: what the user sees in the chats and
what the store holds. Telegram and Claude are emulated over HTTP."""

from __future__ import annotations

import time

from fleetgram.domain import Task, TaskState
from tests.e2e.harness import MASTER, World, task_id_in, wait_task, wait_until, worker_bot

pytestmark = __import__("pytest").mark.e2e


async def test_prompt_gets_a_receipt_streams_in_a_worker_chat_and_reports_completion(
    world: World,
) -> None:
    world.claude.script("Here is the **plan**:\n1. write code\n2. ship it", when="plan")
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(MASTER, "make a plan for the release")
        receipt = await world.ada.wait_for_text(MASTER, "🆕")
        assert "priority 5" in receipt.text
        task_id = task_id_in(receipt.text)
        assert "position 1" in receipt.text
        assert ("Cancel", f"cancel:{task_id}") in receipt.buttons()

        done = await world.ada.wait_for_text(MASTER, f"{task_id} done by worker1", timeout=15)
        assert "@fleet_worker1_bot" in done.text and "tokens" in done.text and "$" in done.text

        final = await world.ada.wait_for_text(worker_bot(1), f"✅ {task_id} done")
        assert "make a plan for the release" in final.text  # the title heads the answer
        assert "Here is the plan:" in final.text and "ship it" in final.text
        assert final.parse_mode == "HTML" and "<b>plan</b>" in final.raw_text

        task = await wait_task(fleet, task_id, TaskState.COMPLETED)
        assert task.worker == "worker1" and task.attempts == 1
        assert task.result is not None and "ship it" in task.result
        assert task.usage.output_tokens > 0 and task.usage.cost_usd > 0


async def test_three_prompts_run_at_the_same_time_on_three_workers(world: World) -> None:
    world.claude.tokens_per_second = 60  # each answer takes about two seconds
    async with world.fleet(MIN_WORKERS=3) as fleet:
        await world.open_chats(world.ada)
        ids = []
        for prompt in ("write the code", "write the tests", "write the docs"):
            ids.append(await world.prompt(prompt))
        tasks = [await wait_task(fleet, tid, TaskState.COMPLETED, timeout=20) for tid in ids]
        assert sorted(t.worker or "" for t in tasks) == ["worker1", "worker2", "worker3"]
        # They overlapped: each started before any of them finished.
        first_done = min(t.completed_at for t in tasks if t.completed_at)
        assert all(t.started_at and t.started_at < first_done for t in tasks)
        # The outcome is recorded first; the final message is delivered after (no tail).
        for n, task in zip((1, 2, 3), sorted(tasks, key=lambda t: t.worker or ""), strict=True):
            final = await world.ada.wait_for_text(worker_bot(n), f"✅ {task.id} done")
            assert task.title in final.text


async def test_pinned_prompt_runs_on_that_worker_and_starts_it_if_stopped(world: World) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(MASTER, "@worker2 write the tests")
        receipt = await world.ada.wait_for_text(MASTER, "for worker2")
        assert "worker2 is stopped; starting it" in receipt.text
        task = await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, timeout=15)
        assert task.worker == "worker2" and task.pinned_worker == "worker2"
        await world.ada.wait_for_text(worker_bot(2), f"✅ {task.id} done")
        assert not any(task.id in t for t in world.ada.bot_texts(worker_bot(1)))


async def test_pinned_prompt_waits_for_its_busy_worker_while_others_are_idle(world: World) -> None:
    world.claude.tokens_per_second = 40
    async with world.fleet(MIN_WORKERS=2) as fleet:
        await world.open_chats(world.ada)
        first = await world.prompt("@worker1 first long job")
        await wait_task(fleet, first, TaskState.RUNNING)
        await world.ada.send(MASTER, "@worker1 second job")
        receipt = await world.ada.wait_for_text(MASTER, "second job")
        assert "worker1 is busy; it takes this next" in receipt.text
        second = task_id_in(receipt.text)
        await wait_task(fleet, first, TaskState.COMPLETED, timeout=20)
        task = await wait_task(fleet, second, TaskState.COMPLETED, timeout=20)
        assert task.worker == "worker1"


async def test_writing_to_a_worker_directly_runs_there_and_shows_in_the_queue(
    world: World,
) -> None:
    world.claude.tokens_per_second = 30
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(worker_bot(1), "explain the build system")
        task = await wait_until_task_with_title(fleet, "explain the build system")
        await wait_task(fleet, task.id, TaskState.RUNNING)
        await world.ada.send(MASTER, "/queue")
        queue = await world.ada.wait_for_text(MASTER, "Queue:")
        assert task.id in queue.text and "worker1" in queue.text
        done = await wait_task(fleet, task.id, TaskState.COMPLETED, timeout=20)
        assert done.source.value == "direct" and done.worker == "worker1"
        await world.ada.wait_for_text(worker_bot(1), f"✅ {task.id} done")


async def wait_until_task_with_title(fleet, title: str):  # type: ignore[no-untyped-def]
    from tests.e2e.harness import wait_until

    async def find():  # type: ignore[no-untyped-def]
        tasks = await fleet.store.list_tasks()
        return next((t for t in tasks if t.title == title), None)

    return await wait_until(find, 10, f"a task titled {title!r}")


async def test_priorities_order_the_queue_urgent_first_then_by_age(world: World) -> None:
    world.claude.tokens_per_second = 30
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        blocker = await world.prompt("blocker task keeps the worker busy")
        await wait_task(fleet, blocker, TaskState.RUNNING)
        await world.ada.send(MASTER, "!9 low priority chore")
        await world.ada.wait_for_text(MASTER, "low priority chore")
        await world.ada.send(MASTER, "normal task")
        await world.ada.wait_for_text(MASTER, "normal task")
        await world.ada.send(MASTER, "/urgent production is down")
        urgent = await world.ada.wait_for_text(MASTER, "production is down")
        assert "priority 1" in urgent.text and "position 1 of 3" in urgent.text
        await world.ada.send(MASTER, "!0 nonsense")
        await world.ada.wait_for_text(MASTER, "Priority must be between 1 and 10")

        await world.ada.send(MASTER, "/queue")
        queue = (await world.ada.wait_for_text(MASTER, "3 pending")).text
        order = [queue.index(s) for s in ("production is down", "normal task", "low priority")]
        assert order == sorted(order), queue
        assert queue.index(blocker) < order[0]  # running tasks are listed first


async def test_cancel_pending_task_never_runs(world: World) -> None:
    world.claude.tokens_per_second = 30
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada)
        busy = await world.prompt("keep busy")
        await wait_task(fleet, busy, TaskState.RUNNING)
        await world.ada.send(MASTER, "never run me")
        receipt = await world.ada.wait_for_text(MASTER, "never run me")
        pending = task_id_in(receipt.text)
        await world.ada.press(MASTER, receipt.message_id, f"cancel:{pending}")
        await world.ada.wait_for_text(MASTER, "cancelled before it started")
        task = await wait_task(fleet, pending, TaskState.CANCELLED)
        await wait_task(fleet, busy, TaskState.COMPLETED, timeout=20)
        await fleet.orchestrator.tick()
        assert (await fleet.store.get_task(pending)) == task  # still cancelled, never started
        assert task.started_at is None and task.attempts == 0
        assert not any("never run me" in r["messages"][-1]["content"][0]["text"]
                       for r in world.claude.requests)


async def test_cancel_running_task_stops_the_stream_within_two_seconds(world: World) -> None:
    world.claude.tokens_per_second = 10  # a long, slow answer
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        task_id = await world.prompt("write a very long essay")
        await wait_task(fleet, task_id, TaskState.RUNNING)
        await world.ada.wait_to_see(worker_bot(1), "Answer to")
        started = time.monotonic()
        await world.ada.send(MASTER, f"/cancel {task_id}")
        await world.claude.wait_cancelled(1, timeout=2.0)
        assert time.monotonic() - started < 2.0
        await world.ada.wait_for_text(worker_bot(1), f"{task_id} cancelled")
        task = await wait_task(fleet, task_id, TaskState.CANCELLED)
        assert task.usage.input_tokens > 0  # what was spent is still on record
        await world.ada.wait_for_text(MASTER, f"{task_id}</b> cancelled".replace("</b>", ""))


async def test_cancel_explains_bad_arguments_in_one_line(world: World) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        await world.ada.send(MASTER, "/cancel")
        await world.ada.wait_for_text(MASTER, "Usage: /cancel <task id>")
        await world.ada.send(MASTER, "/cancel nosuch")
        await world.ada.wait_for_text(MASTER, "'nosuch' is not a task id")
        await world.ada.send(MASTER, "/cancel t-zzzzz")
        await world.ada.wait_for_text(MASTER, "There is no task t-zzzzz")
        other = Task(id="t-other", user_id=4242, chat_id=4242, prompt="theirs", title="theirs")
        await fleet.store.create_task(other.with_(id="t-abcde"))
        await world.ada.send(MASTER, "/cancel t-abcde")
        await world.ada.wait_for_text(MASTER, "someone else's task")


async def test_help_start_and_command_menu(world: World) -> None:
    async with world.fleet():
        await world.ada.send(MASTER, "/start")
        help_text = (await world.ada.wait_for_text(MASTER, "/workers")).text
        for word in ("/queue", "/cancel", "!1", "@worker2", "/urgent", "/new", "/stop"):
            assert word in help_text
        await world.ada.send(MASTER, "/help")
        await wait_until(lambda: len(world.ada.bot_texts(MASTER)) >= 2)
        assert [c for c, _ in world.telegram.commands(MASTER)] == [
            "queue", "workers", "cancel", "urgent", "usage", "addworker", "help"
        ]
        await wait_until(lambda: world.telegram.commands(worker_bot(1)), 5, "worker menu")
        assert [c for c, _ in world.telegram.commands(worker_bot(1))] == ["new", "stop", "help"]


async def test_workers_shows_every_slot_with_state_task_and_since(world: World) -> None:
    world.claude.tokens_per_second = 20
    async with world.fleet(workers=5) as fleet:
        await world.open_chats(world.ada)
        task_id = await world.prompt("busy work")
        await wait_task(fleet, task_id, TaskState.RUNNING)
        await world.ada.send(MASTER, "/workers")
        text = (await world.ada.wait_for_text(MASTER, "Workers:")).text
        assert "worker1 @fleet_worker1_bot — busy on " + task_id in text
        for n in range(2, 6):
            assert f"worker{n} — stopped" in text
        assert "1 running of 5 slots" in text
