"""Agent mode (WORKER_ENGINE=agent), as the user sees it: Claude Code works in the worker's
workspace on the task's own branch, shows what it does, asks before it acts, takes and gives
files, keeps its session, stops when told or when a limit is reached, and cannot read the
fleet's secrets. The real bundled CLI talks to the Claude emulator; git is real."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest

from fleetgram.domain import TaskState
from tests.e2e.agent_world import agent_overrides, branches, make_origin, request_texts, show
from tests.e2e.harness import (
    ADA,
    MASTER,
    MASTER_TOKEN,
    World,
    task_id_in,
    wait_task,
    wait_until,
    worker_bot,
    worker_token,
)
from tests.emulators.agent_script import (
    AgentStory,
    bash,
    install,
    read,
    say,
    send_file,
    tool_results,
    write,
)
from tests.tools import requiring

pytestmark = pytest.mark.e2e

W1 = worker_bot(1)


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    return make_origin(tmp_path)


def final_of(world: World, bot: str, task_id: str) -> str:
    """The worker chat's message for `task_id` once it carries the footer (or '')."""
    for message in world.ada.chat(bot):
        if message.from_bot and message.text.startswith(task_id) and (
                "✅" in message.text or "❌" in message.text or "⏹" in message.text):
            return message.text
    return ""


async def wait_final(world: World, bot: str, task_id: str, timeout: float = 30.0) -> str:
    return await wait_until(lambda: final_of(world, bot, task_id), timeout,
                            f"the final message of {task_id}")


async def test_create_hello_py_and_run_it_leaves_the_file_on_the_tasks_branch(
    world: World, tmp_path: Path, origin: Path
) -> None:
    install(world.claude, AgentStory("create hello.py", [
        write("hello.py", "print('hello')\n", text="Writing it."),
        bash("python3 hello.py"),
        say("Done: hello.py prints hello."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, origin)) as fleet:
        task_id = await world.prompt("create hello.py and run it")
        final = await wait_final(world, W1, task_id)
        await wait_task(fleet, task_id, TaskState.COMPLETED)
    assert "✏️ hello.py +1" in final
    assert "🔧 python3 hello.py" in final or "python3 hello.py" in final
    assert "Done: hello.py prints hello." in final
    assert f"fleetgram/{task_id}" in final and "1 file changed" in final
    assert show(origin, f"fleetgram/{task_id}", "hello.py") == "print('hello')\n"
    ran = tool_results(world.claude.requests[-1], "create hello.py")
    assert "hello" in json.dumps(ran[1])  # the command really ran in the workspace


async def test_an_approval_is_asked_with_buttons_and_allowed_the_command_runs(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("touch allowed", [
        bash("touch allowed.txt"),
        say("Touched."),
    ]))
    await world.open_chats(world.ada, 1)
    overrides = agent_overrides(tmp_path, None, PERMISSION_MODE="ask")
    async with world.fleet(1, **overrides) as fleet:
        task_id = await world.prompt("touch allowed.txt please")
        question = await world.ada.wait_for(W1, lambda m: "🔐" in m.text and m.buttons(), 30)
        assert "touch allowed.txt" in question.text
        labels = [label for label, _ in question.buttons()]
        assert labels == ["Allow once", "Allow for this task", "Deny"]
        await world.ada.send(MASTER, "/workers")
        await world.ada.wait_for(MASTER, lambda m: "waiting for you" in m.text, 10)
        allow = dict(question.buttons())["Allow once"]
        await world.ada.press(W1, question.message_id, allow)
        await wait_final(world, W1, task_id)
        await wait_task(fleet, task_id, TaskState.COMPLETED)
    workspace = tmp_path / "workspaces" / "worker1" / "repo"
    assert (workspace / "allowed.txt").exists()
    answered = next(m for m in world.ada.chat(W1) if m.message_id == question.message_id)
    assert "✅ Allowed once" in answered.text and not answered.buttons()


async def test_a_denied_command_does_not_run_and_claude_is_told(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("touch denied", [
        bash("touch denied.txt"),
        say("I could not."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None, PERMISSION_MODE="ask")):
        task_id = await world.prompt("touch denied.txt please")
        question = await world.ada.wait_for(W1, lambda m: "🔐" in m.text and m.buttons(), 30)
        await world.ada.press(W1, question.message_id, dict(question.buttons())["Deny"])
        await wait_final(world, W1, task_id)
    assert not (tmp_path / "workspaces" / "worker1" / "repo" / "denied.txt").exists()
    results = tool_results(world.claude.requests[-1], "touch denied")
    assert results and results[0].get("is_error") is True


async def test_an_unanswered_approval_times_out_and_is_denied(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("touch late", [
        bash("touch late.txt"),
        say("No answer, so nothing done."),
    ]))
    await world.open_chats(world.ada, 1)
    overrides = agent_overrides(tmp_path, None, PERMISSION_MODE="ask", APPROVAL_TIMEOUT="1")
    async with world.fleet(1, **overrides) as fleet:
        task_id = await world.prompt("touch late.txt please")
        await wait_final(world, W1, task_id)
        await wait_task(fleet, task_id, TaskState.COMPLETED)
    question = next(m for m in world.ada.chat(W1) if "🔐" in m.text)
    assert "No answer" in question.text and "denied" in question.text
    assert not question.buttons()
    assert not (tmp_path / "workspaces" / "worker1" / "repo" / "late.txt").exists()


async def test_a_photo_sent_with_a_prompt_reaches_the_workspace_and_is_named_to_claude(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("describe the photo", [say("A photo of a cat.")]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        sent = await world.ada.send_photo(W1, caption="describe the photo")
        task = await wait_until(lambda: _direct_task(fleet, sent), 10, "the photo's task")
        await wait_final(world, W1, task.id)
    uploads = tmp_path / "workspaces" / "worker1" / "repo" / ".fleetgram" / "uploads" / task.id
    saved = list(uploads.iterdir())
    assert len(saved) == 1 and saved[0].read_bytes().startswith(b"\xff\xd8")
    told = request_texts(world)[-1]
    assert f".fleetgram/uploads/{task.id}/{saved[0].name}" in told


async def _direct_task(fleet, message_id: int):  # type: ignore[no-untyped-def]
    for task in await fleet.store.list_tasks(user_id=ADA):
        if task.message_id == message_id:
            return task
    return None


async def test_a_file_the_agent_sends_comes_back_as_a_document(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("send me a report", [
        write("report.txt", "all good\n"),
        send_file("report.txt", "the report"),
        say("Sent."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)):
        task_id = await world.prompt("send me a report")
        document = await world.ada.wait_for(W1, lambda m: m.document is not None, 30)
        await wait_final(world, W1, task_id)
    assert document.document is not None
    assert document.document.get("file_name") == "report.txt"
    assert world.telegram.file_bytes(document.document["file_id"]) == b"all good\n"
    assert "the report" in document.text


async def test_cancel_during_a_long_command_stops_it_within_two_seconds(
    world: World, tmp_path: Path
) -> None:
    marker = tmp_path / "slept-through.txt"
    install(world.claude, AgentStory("sleep a minute", [
        bash(f"python3 -c 'import time; time.sleep(60)' && touch {marker}"),
        say("Slept."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        task_id = await world.prompt("sleep a minute")
        await world.ada.wait_to_see(W1, "time.sleep(60)", 30)
        await asyncio.sleep(0.5)  # the command is running
        asked = time.monotonic()
        await world.ada.send(MASTER, f"/cancel {task_id}")
        await wait_task(fleet, task_id, TaskState.CANCELLED, timeout=10)
        stopped = time.monotonic() - asked
        await wait_final(world, W1, task_id)
    assert stopped < 2.0, f"the task took {stopped:.2f}s to stop"
    assert not await _process_running("time.sleep(60)")
    assert not marker.exists()


async def _process_running(pattern: str) -> bool:
    process = await asyncio.create_subprocess_exec(
        "pgrep", "-f", pattern, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return bool(out.strip())


async def test_a_budget_stops_a_task_with_what_it_did_and_says_which_limit(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("spend a lot", [
        write("one.txt", "1\n"),
        write("two.txt", "2\n"),
        write("three.txt", "3\n"),
        say("All three."),
    ]))
    await world.open_chats(world.ada, 1)
    # The CLI's first request (its system prompt and tools, ~20k tokens written to the cache)
    # costs about $0.055 on the emulator; the second crosses $0.058. The CLI checks the budget
    # after each turn, so the first write happens and the second does not.
    overrides = agent_overrides(tmp_path, None, TASK_BUDGET_USD="0.058")
    async with world.fleet(1, **overrides) as fleet:
        task_id = await world.prompt("spend a lot")
        final = await wait_final(world, W1, task_id)
        task = await wait_task(fleet, task_id, TaskState.COMPLETED)
    assert "TASK_BUDGET_USD" in final and "budget" in final
    workspace = tmp_path / "workspaces" / "worker1" / "repo"
    assert (workspace / "one.txt").exists() and not (workspace / "three.txt").exists()
    assert task.usage.cost_usd > 0


async def test_max_turns_stops_a_task_and_names_the_limit(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("many turns", [
        write("a.txt", "a\n"), write("b.txt", "b\n"), write("c.txt", "c\n"), say("Done."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None, TASK_MAX_TURNS="1")):
        task_id = await world.prompt("many turns")
        final = await wait_final(world, W1, task_id)
    assert "TASK_MAX_TURNS" in final


async def test_two_workers_change_one_repository_on_two_branches_at_once(
    world: World, tmp_path: Path, origin: Path
) -> None:
    install(world.claude,
            AgentStory("write the code", [
                write("app.py", "print('app')\n"),
                bash("python3 -c 'import time; time.sleep(1.5)'"),
                say("Code written.")]),
            AgentStory("write the docs", [
                write("DOCS.md", "# docs\n"),
                bash("python3 -c 'import time; time.sleep(1.5)'"),
                say("Docs written.")]))
    await world.open_chats(world.ada, 2)
    overrides = agent_overrides(tmp_path, origin, MIN_WORKERS="2", MAX_WORKERS="2")
    async with world.fleet(2, **overrides) as fleet:
        code = await world.prompt("write the code")
        docs = await world.prompt("write the docs")
        await wait_task(fleet, code, TaskState.COMPLETED, timeout=40)
        await wait_task(fleet, docs, TaskState.COMPLETED, timeout=40)
        tasks = {t.id: t for t in await fleet.store.list_tasks(user_id=ADA)}
    assert {tasks[code].worker, tasks[docs].worker} == {"worker1", "worker2"}
    assert {f"fleetgram/{code}", f"fleetgram/{docs}"} <= set(branches(origin))
    assert show(origin, f"fleetgram/{code}", "app.py") == "print('app')\n"
    assert show(origin, f"fleetgram/{docs}", "DOCS.md") == "# docs\n"
    listing = await _ls_tree(origin, f"fleetgram/{code}")
    assert "DOCS.md" not in listing  # neither branch holds the other's work


async def _ls_tree(origin: Path, ref: str) -> str:
    process = await asyncio.create_subprocess_exec(
        "git", "ls-tree", "-r", "--name-only", ref, cwd=origin, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return out.decode()


async def test_a_restart_resumes_the_claude_code_session_and_new_starts_fresh(
    world: World, tmp_path: Path
) -> None:
    install(world.claude,
            AgentStory("remember the word", [say("I will remember: marmalade.")]),
            AgentStory("what was the word", [say("It was marmalade.")]),
            AgentStory("fresh start", [say("New session.")]))
    world.ada.opened_earlier(W1)
    await world.ada.start(MASTER)
    overrides = agent_overrides(tmp_path, None)
    async with world.fleet(1, **overrides):
        await world.ada.send(W1, "remember the word marmalade")
        await world.ada.wait_for(W1, lambda m: "✅" in m.text and "remember" in m.text, 30)
    async with world.fleet(1, **overrides):
        await world.ada.send(W1, "what was the word?")
        await world.ada.wait_for(W1, lambda m: "✅" in m.text and "what was" in m.text, 30)
        resumed = request_texts(world)[-1]
        await world.ada.send(W1, "/new")
        await world.ada.wait_for(W1, lambda m: "Fresh conversation" in m.text, 10)
        await world.ada.send(W1, "fresh start please")
        await world.ada.wait_for(W1, lambda m: "✅" in m.text and "fresh start" in m.text, 30)
        fresh = request_texts(world)[-1]
    assert "remember the word marmalade" in resumed  # the earlier turn came back with it
    assert "remember the word marmalade" not in fresh


async def test_the_agents_commands_see_no_bot_token_and_no_database_url(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("show env", [bash("env"), say("That is all.")]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)):
        task_id = await world.prompt("show env")
        await wait_final(world, W1, task_id)
    seen = json.dumps(tool_results(world.claude.requests[-1], "show env"))
    assert "HOME=" in seen and str(tmp_path / "workspaces" / "worker1" / "home") in seen
    for secret in (MASTER_TOKEN, worker_token(1), "DATABASE_URL", "WORKER_TOKEN_POOL"):
        assert secret not in seen


async def test_reading_another_workers_workspace_is_denied(
    world: World, tmp_path: Path
) -> None:
    other = tmp_path / "workspaces" / "worker2" / "repo"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("worker2's own notes\n")
    install(world.claude, AgentStory("peek next door", [
        read(str(other / "secret.txt")), say("Done."),
    ]))
    await world.open_chats(world.ada, 2)
    async with world.fleet(2, **agent_overrides(tmp_path, None)):
        task_id = await world.prompt("peek next door")
        await wait_final(world, W1, task_id)
    seen = json.dumps(tool_results(world.claude.requests[-1], "peek next door"))
    assert "worker2's own notes" not in seen


async def test_verbose_zero_shows_only_the_answer_and_two_shows_results(
    world: World, tmp_path: Path
) -> None:
    install(world.claude,
            AgentStory("quiet run", [bash("echo quiet-output"), say("Quiet done.")]),
            AgentStory("chatty run", [bash("echo chatty-output"), say("Chatty done.")]))
    world.ada.opened_earlier(W1)
    await world.ada.start(MASTER)
    async with world.fleet(1, **agent_overrides(tmp_path, None)):
        await world.ada.send(W1, "/verbose 0")
        await world.ada.wait_for(W1, lambda m: "Verbosity 0" in m.text, 10)
        await world.ada.send(W1, "quiet run")
        quiet = await world.ada.wait_for(W1, lambda m: "✅" in m.text and "quiet" in m.text, 30)
        await world.ada.send(W1, "/verbose 2")
        await world.ada.wait_for(W1, lambda m: "Verbosity 2" in m.text, 10)
        await world.ada.send(W1, "chatty run")
        chatty = await world.ada.wait_for(W1, lambda m: "✅" in m.text and "chatty" in m.text,
                                          30)
    assert "🔧" not in quiet.text and "Quiet done." in quiet.text
    assert "🔧" in chatty.text and "↳ chatty-output" in chatty.text


async def test_diff_sends_the_tasks_patch_as_a_file(
    world: World, tmp_path: Path, origin: Path
) -> None:
    install(world.claude, AgentStory("add a greeting", [
        write("greeting.txt", "hello there\n"), say("Added."),
    ]))
    world.ada.opened_earlier(W1)
    await world.ada.start(MASTER)
    async with world.fleet(1, **agent_overrides(tmp_path, origin)) as fleet:
        task_id = await world.prompt("add a greeting")
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=30)
        await world.ada.send(W1, f"/diff {task_id}")
        patch = await world.ada.wait_for(W1, lambda m: m.document is not None, 10)
    assert patch.document is not None and patch.document["file_name"] == f"{task_id}.patch"
    body = world.telegram.file_bytes(patch.document["file_id"]).decode()
    assert "+hello there" in body and "greeting.txt" in body


async def test_a_worker_stopped_mid_task_reruns_it_from_the_branch_as_it_was_left(
    world: World, tmp_path: Path, origin: Path
) -> None:
    once = tmp_path / "slept-once"  # the rerun of the same story does not sleep again
    install(world.claude, AgentStory("long job", [
        write("step1.txt", "first half\n"),
        bash(f"python3 -c \"import os, time; os.path.exists('{once}') or "
             f"(open('{once}', 'w').close(), time.sleep(30))\""),
        say("Finished the long job."),
    ]))
    await world.open_chats(world.ada, 1)
    overrides = agent_overrides(tmp_path, origin)
    async with world.fleet(1, **overrides):
        task_id = await world.prompt("long job")
        await wait_until(once.exists, 30, "the command to run")
    # The fleet stopped mid-task (as on SIGTERM); the work so far is on the task's branch.
    assert show(origin, f"fleetgram/{task_id}", "step1.txt") == "first half\n"
    async with world.fleet(1, **overrides) as fleet:
        await world.ada.wait_for(W1, lambda m: "continues on" in m.text and task_id in m.text,
                                 30)
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=30)
    workspace = tmp_path / "workspaces" / "worker1" / "repo"
    assert (workspace / "step1.txt").read_text() == "first half\n"


async def test_a_document_sent_to_the_master_goes_with_its_task_into_the_workspace(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("summarise the notes", [say("Summarised.")]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        await world.ada.send_document(MASTER, "notes.txt", b"remember the milk\n",
                                      caption="summarise the notes", mime_type="text/plain")
        receipt = await world.ada.wait_for(MASTER, lambda m: "🆕" in m.text, 10)
        task_id = task_id_in(receipt.text)
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=30)
    saved = (tmp_path / "workspaces" / "worker1" / "repo" / ".fleetgram" / "uploads" / task_id
             / "notes.txt")
    assert saved.read_bytes() == b"remember the milk\n"
    assert f".fleetgram/uploads/{task_id}/notes.txt" in request_texts(world)[-1]


async def test_a_file_over_telegrams_download_limit_is_refused_in_one_line(
    world: World, tmp_path: Path
) -> None:
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        await world.ada.send_document(MASTER, "huge.bin", bytes(21 * 1024 * 1024),
                                      caption="look at this")
        refusal = await world.ada.wait_for(MASTER, lambda m: "20 MB" in m.text, 10)
        assert await fleet.store.count_tasks([TaskState.PENDING, TaskState.RUNNING]) == 0
    assert "huge.bin" in refusal.text


async def test_plan_mode_refuses_edits_without_asking(world: World, tmp_path: Path) -> None:
    install(world.claude, AgentStory("plan only", [
        write("plan.txt", "should not exist\n"), say("I may only read here."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None, PERMISSION_MODE="plan")):
        task_id = await world.prompt("plan only")
        await wait_final(world, W1, task_id)
    assert not (tmp_path / "workspaces" / "worker1" / "repo" / "plan.txt").exists()
    assert not any("🔐" in m.text for m in world.ada.chat(W1))


async def test_edits_mode_writes_without_asking_but_asks_before_a_command(
    world: World, tmp_path: Path
) -> None:
    install(world.claude, AgentStory("edit then run", [
        write("notes.txt", "edited freely\n"),
        bash("python3 -c \"open('ran.txt', 'w').close()\""),
        say("Done."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None, PERMISSION_MODE="edits")):
        task_id = await world.prompt("edit then run")
        question = await world.ada.wait_for(W1, lambda m: "🔐" in m.text and m.buttons(), 30)
        workspace = tmp_path / "workspaces" / "worker1" / "repo"
        assert (workspace / "notes.txt").exists()  # written before any question
        assert "open('ran.txt'" in question.text
        await world.ada.press(W1, question.message_id,
                              dict(question.buttons())["Allow for this task"])
        await wait_final(world, W1, task_id)
    assert (workspace / "ran.txt").exists()


async def test_a_session_whose_files_are_gone_starts_fresh_and_says_so(
    world: World, tmp_path: Path
) -> None:

    install(world.claude,
            AgentStory("first visit", [say("Noted.")]),
            AgentStory("second visit", [say("Fresh answer.")]))
    world.ada.opened_earlier(W1)
    await world.ada.start(MASTER)
    overrides = agent_overrides(tmp_path, None)
    async with world.fleet(1, **overrides):
        await world.ada.send(W1, "first visit")
        await world.ada.wait_for(W1, lambda m: "✅" in m.text and "first visit" in m.text, 30)
    # An emptyDir workspace after a pod restart: the CLI's session files are gone.
    shutil.rmtree(tmp_path / "workspaces" / "worker1" / "home")
    async with world.fleet(1, **overrides):
        await world.ada.send(W1, "second visit")
        await world.ada.wait_for(W1, lambda m: "could not be resumed" in m.text, 30)
        done = await world.ada.wait_for(
            W1, lambda m: "✅" in m.text and "second visit" in m.text, 30)
    assert "Fresh answer." in done.text


async def test_a_claude_subscription_token_runs_the_agent_without_an_api_key(
    world: World, tmp_path: Path
) -> None:
    token = "sk-ant-oat01-subscription-token"
    world.claude.api_key = token  # the emulator now takes only this, as an OAuth bearer
    install(world.claude, AgentStory("on my subscription", [
        write("sub.txt", "paid by the plan\n"), say("Done on the subscription."),
    ]))
    await world.open_chats(world.ada, 1)
    overrides = agent_overrides(tmp_path, None, ANTHROPIC_API_KEY="",
                                CLAUDE_CODE_OAUTH_TOKEN=token)
    async with world.fleet(1, **overrides) as fleet:
        task_id = await world.prompt("on my subscription")
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=30)
    assert (tmp_path / "workspaces" / "worker1" / "repo" / "sub.txt").exists()
    sent = world.claude.request_headers[-1]
    assert sent.get("authorization") == f"Bearer {token}" and "x-api-key" not in sent


async def test_claude_code_reads_an_image_sent_with_the_prompt_as_an_image(
    world: World, tmp_path: Path
) -> None:
    from tests.emulators.agent_script import Step
    from tests.emulators.test_telegram_files import png

    def the_upload(cwd: str | None) -> dict[str, str]:
        found = next(Path(str(cwd), ".fleetgram", "uploads").rglob("chart.png"))
        return {"file_path": str(found)}

    install(world.claude, AgentStory("what does the chart show", [
        Step(tool="Read", make_input=the_upload), say("A black square."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        await world.ada.send_document(W1, "chart.png", png(64, 64),
                                      caption="what does the chart show", mime_type="image/png")
        final = await world.ada.wait_for(W1, lambda m: "A black square." in m.text and "✅"
                                         in m.text, 30)
        assert await fleet.store.count_tasks([TaskState.COMPLETED]) == 1
    results = tool_results(world.claude.requests[-1], "what does the chart show")
    blocks = json.dumps(results)
    assert '"type": "image"' in blocks and "image/png" in blocks
    assert "📖" in final.text


MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


async def test_claude_code_reads_a_pdf_sent_with_the_prompt_as_a_document(
    world: World, tmp_path: Path
) -> None:
    from tests.emulators.agent_script import Step

    def the_upload(cwd: str | None) -> dict[str, str]:
        found = next(Path(str(cwd), ".fleetgram", "uploads").rglob("report.pdf"))
        return {"file_path": str(found)}

    install(world.claude, AgentStory("summarise the report", [
        Step(tool="Read", make_input=the_upload), say("An empty page."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)):
        await world.ada.send_document(W1, "report.pdf", MINIMAL_PDF,
                                      caption="summarise the report",
                                      mime_type="application/pdf")
        await world.ada.wait_for(W1, lambda m: "An empty page." in m.text and "✅" in m.text,
                                 30)
    blocks = json.dumps(tool_results(world.claude.requests[-1], "summarise the report"))
    assert '"type": "document"' in blocks and "application/pdf" in blocks


async def test_an_image_the_agent_sends_comes_back_as_a_photo(
    world: World, tmp_path: Path
) -> None:
    from tests.emulators.agent_script import Step
    from tests.emulators.test_telegram_files import png

    image = png(320, 200)

    def the_upload(cwd: str | None) -> dict[str, str]:
        found = next(Path(str(cwd), ".fleetgram", "uploads").rglob("plot.png"))
        return {"path": str(found), "caption": "your plot, back"}

    install(world.claude, AgentStory("send the plot back", [
        Step(tool="mcp__fleet__send_file", make_input=the_upload), say("Sent it back."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)):
        await world.ada.send_document(W1, "plot.png", image, caption="send the plot back",
                                      mime_type="image/png")
        photo = await world.ada.wait_for(W1, lambda m: m.from_bot and m.photo is not None, 30)
    assert photo.photo is not None
    assert world.telegram.file_bytes(photo.photo[-1]["file_id"]) == image
    assert "your plot, back" in photo.text


@requiring("bwrap", "socat")
async def test_with_the_sandbox_a_command_cannot_read_another_workers_workspace(
    world: World, tmp_path: Path
) -> None:
    other = tmp_path / "workspaces" / "worker2" / "repo"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text("worker2's own notes\n")
    install(world.claude, AgentStory("cat next door", [
        bash(f"cat {other / 'secret.txt'}; echo exit=$?"), say("Done."),
    ]))
    await world.open_chats(world.ada, 2)
    # pytest's paths are long: the CLI's TMPDIR moves under /tmp (see cli_tmpdir), or the
    # sandbox could not make its sockets and would run nothing.
    async with world.fleet(2, **agent_overrides(tmp_path, None, AGENT_SANDBOX="1")):
        task_id = await world.prompt("cat next door")
        await wait_final(world, W1, task_id)
    seen = json.dumps(tool_results(world.claude.requests[-1], "cat next door"))
    assert "exit=1" in seen  # the command ran, inside the sandbox
    assert "worker2's own notes" not in seen


async def test_stop_in_the_worker_chat_interrupts_a_running_command(
    world: World, tmp_path: Path
) -> None:
    started = tmp_path / "sleeping"
    marker = tmp_path / "slept-through.txt"
    install(world.claude, AgentStory("nap for a minute", [
        bash(f"touch {started} && python3 -c 'import time; time.sleep(60)' && touch {marker}"),
        say("Napped."),
    ]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        task_id = await world.prompt("nap for a minute")
        await wait_until(started.exists, 30, "the command to start")
        await world.ada.send(W1, "/stop")
        await world.ada.wait_for(W1, lambda m: f"Stopping {task_id}" in m.text, 10)
        await wait_task(fleet, task_id, TaskState.CANCELLED, timeout=5)
        final = await wait_final(world, W1, task_id)
    assert "⏹" in final and not marker.exists()
