"""Daily budgets and /usage, end to end: the real fleet against the Telegram and Claude
emulators (whose answers carry usage, priced as the real API's), on SQLite and Postgres.

A user whose spend today reached USER_DAILY_BUDGET_USD is refused new tasks; a task that would
cross it is stopped with a note and recorded as failed; other users are not affected. /usage
shows the user's tokens and cost per worker, and admins the fleet's."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetgram.budget import usd
from fleetgram.domain import Task, TaskState, Usage, new_task_id, utcnow
from fleetgram.emulators.telegram_api import SimUser
from fleetgram.fleet import Fleet
from fleetgram.master.usage import tokens
from fleetgram.store import ApiCall
from tests.e2e.agent_world import agent_overrides
from tests.e2e.harness import ADA, MASTER, World, task_id_in, wait_task, worker_bot
from tests.emulators.agent_script import AgentStory, install, say, write

pytestmark = pytest.mark.e2e

BOB = 2222
BOTH = f"{ADA},{BOB}"
REFUSED = "Your daily budget is used up"
STOPPED = "stopped: your daily budget of $0.01 is reached"


async def spent_earlier_today(fleet: Fleet, user_id: int, cost: float) -> None:
    """The user ran a task earlier today that cost `cost` (its record and its ledger row)."""
    now = utcnow()
    task = Task(id=new_task_id(), user_id=user_id, chat_id=user_id, prompt="earlier",
                title="earlier", state=TaskState.COMPLETED, worker="worker1", created_at=now,
                started_at=now, completed_at=now)
    await fleet.store.archive_task(task)
    await fleet.store.record_api_call(
        ApiCall(task.id, "worker1", "claude-sonnet-5-5", Usage(1000, 100, 0, 0, cost)))


async def bob(world: World) -> SimUser:
    user = world.telegram.add_user(BOB, "Bob", "bob")
    await world.open_chats(user)
    return user


async def run_to_completion(world: World, fleet: Fleet, user: SimUser, prompt: str) -> Task:
    await user.send(MASTER, prompt)
    receipt = await user.wait_for(MASTER, lambda m: "🆕" in m.text and prompt in m.text)
    return await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, timeout=30)


async def usage_answer(user: SimUser) -> str:
    await user.send(MASTER, "/usage")
    return (await user.wait_for_text(MASTER, "Your usage")).text


# --- refusing new tasks ---------------------------------------------------------------------------
async def test_a_prompt_to_the_master_over_budget_is_refused_with_spent_budget_and_reset(
    world: World,
) -> None:
    async with world.fleet(USER_DAILY_BUDGET_USD="1") as fleet:
        await world.open_chats(world.ada)
        await spent_earlier_today(fleet, ADA, 1.0)

        await world.ada.send(MASTER, "write a poem about budgets")

        answer = (await world.ada.wait_for_text(MASTER, REFUSED)).text
        assert "you have spent $1.00 of $1.00 today" in answer
        assert "Nothing was queued" in answer and "It resets at midnight (UTC), in " in answer
        assert await fleet.store.count_tasks(list(TaskState), user_id=ADA) == 1  # the earlier


async def test_an_urgent_prompt_over_budget_is_refused_too(world: World) -> None:
    async with world.fleet(USER_DAILY_BUDGET_USD="1") as fleet:
        await world.open_chats(world.ada)
        await spent_earlier_today(fleet, ADA, 1.5)

        await world.ada.send(MASTER, "/urgent fix the build")

        answer = (await world.ada.wait_for_text(MASTER, REFUSED)).text
        assert "you have spent $1.50 of $1.00 today" in answer
        assert await fleet.store.count_tasks(list(TaskState), user_id=ADA) == 1


async def test_a_prompt_in_a_worker_chat_over_budget_is_refused(world: World) -> None:
    async with world.fleet(USER_DAILY_BUDGET_USD="1") as fleet:
        await world.open_chats(world.ada)
        await spent_earlier_today(fleet, ADA, 1.0)

        await world.ada.send(worker_bot(1), "explain the build")

        answer = (await world.ada.wait_for_text(worker_bot(1), REFUSED)).text
        assert "you have spent $1.00 of $1.00 today" in answer
        assert await fleet.store.count_tasks(list(TaskState), user_id=ADA) == 1


async def test_a_per_user_budget_overrides_the_default(world: World) -> None:
    async with world.fleet(ALLOWED_USER_IDS=BOTH, USER_DAILY_BUDGET_USD="100",
                           USER_BUDGETS_USD=f"{ADA}:0.5") as fleet:
        await world.open_chats(world.ada)
        await spent_earlier_today(fleet, ADA, 0.5)

        await world.ada.send(MASTER, "write a poem about budgets")

        answer = (await world.ada.wait_for_text(MASTER, REFUSED)).text
        assert "you have spent $0.50 of $0.50 today" in answer


async def test_another_user_is_not_affected_by_one_users_spent_budget(world: World) -> None:
    async with world.fleet(ALLOWED_USER_IDS=BOTH, USER_DAILY_BUDGET_USD="1") as fleet:
        await world.open_chats(world.ada)
        other = await bob(world)
        await spent_earlier_today(fleet, ADA, 1.0)
        await world.ada.send(MASTER, "ada's prompt is refused")
        await world.ada.wait_for_text(MASTER, REFUSED)

        task = await run_to_completion(world, fleet, other, "bob's prompt runs")

        assert task.user_id == BOB and task.result
        assert not any(REFUSED in text for text in other.bot_texts(MASTER))


# --- stopping a running task ----------------------------------------------------------------------
async def test_a_running_task_that_crosses_the_budget_is_stopped_with_a_note(
    world: World,
) -> None:
    # 3,000 output tokens cost about $0.045 at Sonnet's $15/MTok: far past a $0.01 budget.
    world.claude.script("word " * 3000, when="a very long essay")
    async with world.fleet(USER_DAILY_BUDGET_USD="0.01") as fleet:
        await world.open_chats(world.ada)

        task_id = await world.prompt("a very long essay please")

        task = await wait_task(fleet, task_id, TaskState.FAILED, timeout=30)
        assert task.error == STOPPED
        await world.ada.wait_for_text(worker_bot(1), f"{task_id} failed: {STOPPED}")
        await world.ada.wait_for_text(MASTER, STOPPED)
        assert world.claude.cancelled_streams >= 1  # stopped mid-answer, not at its end
        # What it cost is in the ledger: the day's budget is spent, the next task refused.
        assert task.usage.cost_usd >= 0.01
        await world.ada.send(MASTER, "one more essay")
        await world.ada.wait_for_text(MASTER, REFUSED)


async def test_an_agent_task_that_crosses_the_budget_is_stopped_with_what_it_did_kept(
    world: World, tmp_path: Path,
) -> None:
    install(world.claude, AgentStory("spend a lot", [
        write("one.txt", "1\n"), write("two.txt", "2\n"), write("three.txt", "3\n"),
        say("All three."),
    ]))
    await world.open_chats(world.ada, 1)
    # As in test_agent_mode's TASK_BUDGET_USD test: the CLI's first request costs about
    # $0.055 on the emulator, the second crosses $0.058; Claude Code gets the rest of the
    # day's budget as its max_budget_usd and stops after the first write.
    overrides = agent_overrides(tmp_path, None, USER_DAILY_BUDGET_USD="0.058")
    async with world.fleet(1, **overrides) as fleet:
        task_id = await world.prompt("spend a lot")
        task = await wait_task(fleet, task_id, TaskState.FAILED, timeout=60)
        await world.ada.wait_for_text(
            worker_bot(1), f"{task_id} failed: stopped: your daily budget of $0.058 is reached")
    assert task.error == "stopped: your daily budget of $0.058 is reached"
    workspace = tmp_path / "workspaces" / "worker1" / "repo"
    assert (workspace / "one.txt").exists() and not (workspace / "three.txt").exists()


async def test_a_task_below_the_budget_runs_to_its_end(world: World) -> None:
    async with world.fleet(USER_DAILY_BUDGET_USD="5") as fleet:
        await world.open_chats(world.ada)
        task = await run_to_completion(world, fleet, world.ada, "a short answer please")
        assert task.error is None and task.usage.cost_usd > 0


# --- /usage ---------------------------------------------------------------------------------------
async def test_usage_shows_todays_tokens_and_cost_per_worker(world: World) -> None:
    async with world.fleet() as fleet:
        await world.open_chats(world.ada)
        task = await run_to_completion(world, fleet, world.ada, "count the usage")
        assert task.worker is not None
        u = task.usage

        answer = await usage_answer(world.ada)

        today = answer.split("This month")[0]
        assert (f"• {task.worker}: {usd(u.cost_usd)} · 1 task · in {tokens(u.input_tokens)} · "
                f"out {tokens(u.output_tokens)} · cache {tokens(u.cache_read_tokens)} read, "
                f"{tokens(u.cache_write_tokens)} written") in today
        assert "The fleet" not in answer


async def test_usage_shows_the_daily_budget_left(world: World) -> None:
    async with world.fleet(USER_DAILY_BUDGET_USD="1") as fleet:
        await world.open_chats(world.ada)
        await spent_earlier_today(fleet, ADA, 0.25)

        answer = await usage_answer(world.ada)

        assert "Daily budget: $0.25 of $1.00 spent today ($0.75 left)" in answer


async def test_an_admin_sees_the_fleet_total_and_a_non_admin_does_not(world: World) -> None:
    async with world.fleet(ALLOWED_USER_IDS=BOTH, ADMIN_USER_IDS=str(ADA)) as fleet:
        await world.open_chats(world.ada)
        other = await bob(world)
        ada_task = await run_to_completion(world, fleet, world.ada, "ada asks something")
        bob_task = await run_to_completion(world, fleet, other, "bob asks something")
        total = ada_task.usage.cost_usd + bob_task.usage.cost_usd

        admin_view = await usage_answer(world.ada)
        user_view = await usage_answer(other)

        fleet_part = admin_view.split("The fleet")[1]
        assert f"Today: {usd(total)} · 2 tasks" in fleet_part
        assert f"user {BOB}: {usd(bob_task.usage.cost_usd)} · 1 task" in fleet_part
        assert f"user {ADA} (you): {usd(ada_task.usage.cost_usd)} · 1 task" in fleet_part
        assert "The fleet" not in user_view and str(ADA) not in user_view
