"""PERMISSION_MODE as decisions, and the approval texts (fleetgram.engines.permissions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetgram.config import PermissionMode
from fleetgram.engines.base import ApprovalChoice, ToolCall
from fleetgram.engines.permissions import (
    EDIT_TOOLS,
    READ_ONLY_TOOLS,
    Verdict,
    approval_outcome,
    approval_text,
    decide,
    denial_message,
    plan_denial_message,
    sdk_permission_mode,
)

ASK, EDITS, ALL, PLAN = (
    PermissionMode.ASK,
    PermissionMode.EDITS,
    PermissionMode.ALL,
    PermissionMode.PLAN,
)
NOTHING: frozenset[str] = frozenset()
CWD = Path("/ws/repo")
BASH = ToolCall("Bash", {"command": "pytest -q"})
WRITE = ToolCall("Write", {"file_path": "/ws/repo/a.py", "content": "x = 1\n"})


# ----------------------------------------------------------------------------- decide
@pytest.mark.parametrize("mode", list(PermissionMode))
@pytest.mark.parametrize("name", sorted(READ_ONLY_TOOLS))
def test_read_only_tools_are_allowed_in_every_mode(mode: PermissionMode, name: str) -> None:
    assert decide(mode, ToolCall(name), NOTHING) is Verdict.ALLOW


def test_sending_a_file_to_the_chat_is_never_asked() -> None:
    assert decide(ASK, ToolCall("mcp__fleet__send_file", {"path": "a"}), NOTHING) is Verdict.ALLOW


def test_ask_mode_asks_for_a_command() -> None:
    assert decide(ASK, BASH, NOTHING) is Verdict.ASK


@pytest.mark.parametrize("name", sorted(EDIT_TOOLS))
def test_ask_mode_asks_for_an_edit(name: str) -> None:
    assert decide(ASK, ToolCall(name), NOTHING) is Verdict.ASK


@pytest.mark.parametrize("name", sorted(EDIT_TOOLS))
def test_edits_mode_allows_edits(name: str) -> None:
    assert decide(EDITS, ToolCall(name), NOTHING) is Verdict.ALLOW


def test_edits_mode_asks_for_a_command() -> None:
    assert decide(EDITS, BASH, NOTHING) is Verdict.ASK


@pytest.mark.parametrize("mode", [ASK, EDITS])
@pytest.mark.parametrize("name", ["WebFetch", "WebSearch"])
def test_reaching_the_network_is_asked(mode: PermissionMode, name: str) -> None:
    assert decide(mode, ToolCall(name), NOTHING) is Verdict.ASK


@pytest.mark.parametrize("call", [BASH, WRITE, ToolCall("WebFetch"), ToolCall("mcp__x__y")])
def test_all_mode_allows_everything(call: ToolCall) -> None:
    assert decide(ALL, call, NOTHING) is Verdict.ALLOW


@pytest.mark.parametrize("call", [BASH, WRITE, ToolCall("Edit"), ToolCall("Agent")])
def test_plan_mode_denies_what_could_change_something(call: ToolCall) -> None:
    assert decide(PLAN, call, NOTHING) is Verdict.DENY


def test_plan_mode_asks_before_reaching_the_network() -> None:
    assert decide(PLAN, ToolCall("WebFetch"), NOTHING) is Verdict.ASK


def test_plan_mode_does_not_let_the_model_leave_it() -> None:
    assert decide(PLAN, ToolCall("ExitPlanMode", {"plan": "1. x"}), NOTHING) is Verdict.DENY


def test_leaving_plan_mode_outside_plan_mode_changes_nothing_and_is_allowed() -> None:
    assert decide(ASK, ToolCall("ExitPlanMode"), NOTHING) is Verdict.ALLOW


@pytest.mark.parametrize("mode", [ASK, EDITS])
def test_a_tool_allowed_for_the_task_is_not_asked_again(mode: PermissionMode) -> None:
    assert decide(mode, BASH, frozenset({"Bash"})) is Verdict.ALLOW


def test_allowing_another_tool_for_the_task_still_asks_for_this_one() -> None:
    assert decide(ASK, BASH, frozenset({"Write"})) is Verdict.ASK


def test_a_tool_allowed_for_the_task_is_still_denied_in_plan_mode() -> None:
    assert decide(PLAN, BASH, frozenset({"Bash"})) is Verdict.DENY


def test_a_network_tool_allowed_for_the_task_is_allowed_in_plan_mode() -> None:
    assert decide(PLAN, ToolCall("WebFetch"), frozenset({"WebFetch"})) is Verdict.ALLOW


# ----------------------------------------------------------------------------- SDK mode
@pytest.mark.parametrize(
    ("mode", "sdk"),
    [(ASK, "default"), (ALL, "default"), (EDITS, "acceptEdits"), (PLAN, "plan")],
)
def test_sdk_permission_mode_never_bypasses_permissions(mode: PermissionMode, sdk: str) -> None:
    assert sdk_permission_mode(mode) == sdk


# ----------------------------------------------------------------------------- texts
def test_a_command_approval_shows_the_whole_command() -> None:
    text = approval_text(ToolCall("Bash", {"command": "rm -rf build\nmake"}), CWD)
    assert text == "🔐 Allow this command?\nrm -rf build\nmake"


def test_a_command_approval_shows_the_commands_description() -> None:
    call = ToolCall("Bash", {"command": "make", "description": "Build it"})
    assert approval_text(call, CWD) == "🔐 Allow this command?\nmake\n(Build it)"


def test_a_command_approval_names_the_task() -> None:
    text = approval_text(BASH, CWD, task_id="t-42")
    assert text.splitlines()[0] == "🔐 Allow this command? (task t-42)"


def test_a_long_command_is_cut_to_1000_characters() -> None:
    text = approval_text(ToolCall("Bash", {"command": "x" * 5000}), CWD)
    command = text.split("\n", 1)[1]
    assert len(command) == 1000 and command.endswith("…")


def test_a_write_approval_shows_the_path_and_the_content() -> None:
    assert approval_text(WRITE, CWD) == "🔐 Allow writing a.py?\nx = 1\n"


def test_a_write_approval_shows_at_most_600_characters_of_content() -> None:
    call = ToolCall("Write", {"file_path": "/ws/repo/a.py", "content": "y" * 5000})
    preview = approval_text(call, CWD).split("\n", 1)[1]
    assert len(preview) == 600 and preview.endswith("…")


def test_an_edit_approval_shows_the_lines_removed_and_added() -> None:
    call = ToolCall(
        "Edit", {"file_path": "/ws/repo/a.py", "old_string": "x = 1", "new_string": "x = 2"}
    )
    assert approval_text(call, CWD) == "🔐 Allow writing a.py?\n- x = 1\n+ x = 2"


def test_another_tool_approval_shows_its_input_as_json() -> None:
    call = ToolCall("WebFetch", {"url": "https://example.com", "prompt": "summary"})
    assert approval_text(call, CWD) == (
        '🔐 Allow WebFetch?\n{"url":"https://example.com","prompt":"summary"}'
    )


@pytest.mark.parametrize(
    ("choice", "text"),
    [
        (ApprovalChoice.ONCE, "✅ Allowed once"),
        (ApprovalChoice.TASK, "✅ Allowed for the rest of this task"),
        (ApprovalChoice.DENY, "⛔ Denied"),
        (ApprovalChoice.TIMEOUT, "⌛ No answer in 10 min: denied"),
    ],
)
def test_the_outcome_of_an_approval(choice: ApprovalChoice, text: str) -> None:
    assert approval_outcome(choice, 10) == text


def test_a_short_timeout_is_said_in_seconds() -> None:
    assert approval_outcome(ApprovalChoice.TIMEOUT, 0.05) == "⌛ No answer in 3 s: denied"


def test_the_agent_is_told_the_user_denied() -> None:
    assert denial_message(ApprovalChoice.DENY).startswith("The user denied this tool call.")


def test_the_agent_is_told_nobody_answered_in_time() -> None:
    assert denial_message(ApprovalChoice.TIMEOUT).startswith(
        "No answer from the user in time: denied."
    )


def test_an_allowed_choice_is_no_denial() -> None:
    with pytest.raises(ValueError):
        denial_message(ApprovalChoice.ONCE)


def test_the_agent_is_told_plan_mode_is_read_only() -> None:
    assert "plan mode (read only)" in plan_denial_message(BASH)
