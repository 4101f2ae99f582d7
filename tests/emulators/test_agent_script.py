"""Scripted stories drive the real Claude Code CLI (bundled in claude-agent-sdk) through the
Claude emulator: its tools really run in a temporary working directory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    PermissionResultAllow,
    PermissionResultDeny,
    ResultMessage,
)

from fleetgram.emulators.claude_api import ClaudeEmulator
from tests.emulators.agent_script import (
    AgentStory,
    bash,
    cwd_of,
    install,
    result_text,
    say,
    tool_results,
    write,
)

pytestmark = pytest.mark.timeout(60)
e2e = pytest.mark.e2e  # the tests that run the real CLI

API_KEY = "sk-ant-test-key-0001"


@dataclass
class Agent:
    emulator: ClaudeEmulator
    cwd: Path
    home: Path
    deny: set[str] = field(default_factory=set)  # tool names the permission callback denies
    asked: list[str] = field(default_factory=list)

    async def can_use_tool(self, name: str, inp: dict[str, Any], ctx: Any) -> Any:
        self.asked.append(name)
        if name in self.deny:
            return PermissionResultDeny(message="The user denied this tool call.")
        return PermissionResultAllow()

    def options(self) -> ClaudeAgentOptions:
        return ClaudeAgentOptions(
            cwd=str(self.cwd),
            can_use_tool=self.can_use_tool,
            max_turns=10,
            env={
                "ANTHROPIC_BASE_URL": self.emulator.url,
                "ANTHROPIC_API_KEY": API_KEY,
                "HOME": str(self.home),
                "CLAUDE_CONFIG_DIR": str(self.home / ".claude"),
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "CLAUDE_CODE_MAX_RETRIES": "0",
                "ENABLE_TOOL_SEARCH": "false",
            },
        )

    async def ask(self, *prompts: str) -> list[ResultMessage]:
        """Send each prompt in turn to one CLI process; the result of each."""
        results: list[ResultMessage] = []
        async with ClaudeSDKClient(self.options()) as client:
            for prompt in prompts:
                await client.query(prompt)
                async for message in client.receive_response():
                    if isinstance(message, ResultMessage):
                        results.append(message)
        return results

    def last_body(self) -> dict[str, Any]:
        return self.emulator.requests[-1]


@pytest.fixture
async def agent(tmp_path: Path) -> AsyncIterator[Agent]:
    emulator = ClaudeEmulator(api_key=API_KEY, tokens_per_second=float("inf"))
    await emulator.start()
    cwd, home = tmp_path / "repo", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    try:
        yield Agent(emulator, cwd, home)
    finally:
        await emulator.stop()


HELLO = AgentStory(
    "create hello.py",
    [
        write("hello.py", "print('hello')\n", text="Writing hello.py."),
        bash("python3 hello.py"),
        say("Done: hello.py prints hello."),
    ],
)


@e2e
async def test_a_story_writes_a_file_runs_it_and_answers(agent: Agent) -> None:
    install(agent.emulator, HELLO)

    [result] = await asyncio.wait_for(agent.ask("please create hello.py and run it"), 20)

    assert (agent.cwd / "hello.py").read_text() == "print('hello')\n"
    ran = tool_results(agent.last_body(), HELLO.marker)[-1]
    assert "hello" in result_text(ran) and not ran.get("is_error")
    assert result.result == "Done: hello.py prints hello."


@e2e
async def test_the_working_directory_is_read_from_the_request(agent: Agent) -> None:
    install(agent.emulator, HELLO)

    await asyncio.wait_for(agent.ask("create hello.py"), 20)

    assert cwd_of(agent.emulator.requests[0]) == str(agent.cwd)


@e2e
async def test_a_denied_command_does_not_run_and_its_result_is_an_error(agent: Agent) -> None:
    story = AgentStory("touch it", [bash("touch touched.txt"), say("I could not touch it.")])
    install(agent.emulator, story)
    agent.deny.add("Bash")

    [result] = await asyncio.wait_for(agent.ask("touch it please"), 20)

    [denied] = tool_results(agent.last_body(), story.marker)
    assert denied.get("is_error") is True
    assert "denied" in result_text(denied)
    assert not (agent.cwd / "touched.txt").exists()
    assert agent.asked == ["Bash"]
    assert result.result == "I could not touch it."


@e2e
async def test_two_stories_on_one_emulator_do_not_mix(agent: Agent) -> None:
    first = AgentStory("story one", [write("one.txt", "1\n"), say("one done")])
    second = AgentStory("story two", [bash("echo two > two.txt"), say("two done")])
    install(agent.emulator, first, second)

    results = await asyncio.wait_for(agent.ask("run story one", "now story two"), 20)

    assert [r.result for r in results] == ["one done", "two done"]
    assert sorted(p.name for p in agent.cwd.iterdir()) == ["one.txt", "two.txt"]
    assert (agent.cwd / "two.txt").read_text() == "two\n"
    assert len(tool_results(agent.last_body(), second.marker)) == 1


# ----------------------------------------------------------------------------- pure
def _prompt(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def _call(tool_id: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": tool_id, "name": "Bash", "input": {}}],
    }


def _result(tool_id: str, content: str, *extra_text: str) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "tool_result", "tool_use_id": tool_id, "content": content}
    ]
    blocks += [{"type": "text", "text": text} for text in extra_text]
    return {"role": "user", "content": blocks}


STEPS = AgentStory("marker", [bash("one"), bash("two"), say("end")])


def test_text_merged_into_a_result_turn_does_not_change_the_step() -> None:
    body = {
        "messages": [
            _prompt("do the marker thing"),
            _call("t1"),
            _result("t1", "denied", "[Request interrupted by user for tool use]"),
        ]
    }

    assert STEPS.reply(body) == {
        "tool_use": {"name": "Bash", "input": {"command": "two", "description": "two"}}
    }


def test_a_marker_echoed_in_a_tool_result_does_not_restart_the_story() -> None:
    body = {
        "messages": [
            _prompt("do the marker thing"),
            _call("t1"),
            _result("t1", "output that mentions the marker"),
            _call("t2"),
            _result("t2", "ok"),
        ]
    }

    assert STEPS.reply(body) == "end"


def test_relative_paths_are_made_absolute_with_the_stated_working_directory() -> None:
    body = {
        "system": [{"type": "text", "text": " - Primary working directory: /ws/repo\n - x"}],
        "messages": [_prompt("write marker")],
    }
    story = AgentStory("marker", [write("src/a.py", "x = 1\n")])

    assert story.reply(body) == {
        "tool_use": {
            "name": "Write",
            "input": {"file_path": "/ws/repo/src/a.py", "content": "x = 1\n"},
        }
    }
