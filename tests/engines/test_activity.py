"""What the worker chat shows while the agent works (fleetgram.engines.activity)."""

from __future__ import annotations

from pathlib import Path

from fleetgram.engines.activity import code_span, md_text, result_line, tool_line
from fleetgram.engines.base import ToolCall
from fleetgram.telegram.formatting import markdown_to_html, visible_text

CWD = Path("/ws/repo")


def shown(line: str | None) -> str:
    """What the user sees once the chat renders the line's Markdown."""
    assert line is not None
    return visible_text(markdown_to_html(line))


def line(name: str, verbosity: int = 1, **inp: object) -> str | None:
    return tool_line(ToolCall(name, dict(inp)), verbosity, CWD)


# ----------------------------------------------------------------------------- tool lines
def test_verbosity_0_shows_no_tool_line() -> None:
    assert line("Bash", 0, command="pytest -q") is None


def test_a_command_is_shown_as_code() -> None:
    assert line("Bash", command="pytest -q") == "🔧 `pytest -q`"
    assert markdown_to_html("🔧 `pytest -q`") == "🔧 <code>pytest -q</code>"


def test_verbosity_2_shows_the_same_tool_line_as_1() -> None:
    assert line("Bash", 2, command="pytest -q") == line("Bash", 1, command="pytest -q")


def test_only_the_first_line_of_a_command_is_shown() -> None:
    assert shown(line("Bash", command="cd src\npytest -q")) == "🔧 cd src …"


def test_a_long_command_is_cut_to_120_characters() -> None:
    text = shown(line("Bash", command="echo " + "x" * 300))
    assert text.startswith("🔧 echo xxx") and text.endswith("…")
    assert len(text.removeprefix("🔧 ")) == 120


def test_backticks_inside_a_command_stay_in_the_code() -> None:
    command = "echo `date` ``x``"
    assert markdown_to_html(line("Bash", command=command) or "") == f"🔧 <code>{command}</code>"


def test_a_command_ending_in_a_backtick_or_backslash_stays_in_the_code() -> None:
    for command in ("echo `date`", "echo a \\", "` x `"):
        assert markdown_to_html(code_span(command)) == f"<code>{command}</code>"


def test_writing_a_file_shows_its_path_relative_to_the_workspace_and_its_lines() -> None:
    assert line("Write", file_path="/ws/repo/src/app.py", content="a\nb\nc\n") == (
        "✏️ src/app.py +3"
    )


def test_a_path_outside_the_workspace_is_shown_whole() -> None:
    assert line("Read", file_path="/etc/hosts") == "📖 /etc/hosts"


def test_a_path_that_only_starts_like_the_workspace_is_not_shortened() -> None:
    assert line("Read", file_path="/ws/repo2/a.py") == "📖 /ws/repo2/a.py"


def test_an_edit_shows_lines_added_and_removed() -> None:
    assert line(
        "Edit", file_path="/ws/repo/src/app.py", old_string="a\nb\nc", new_string="x"
    ) == "✏️ src/app.py +1 −3"


def test_an_edit_of_every_match_says_so() -> None:
    text = line("Edit", file_path="/ws/repo/a.py", old_string="a", new_string="b",
                replace_all=True)
    assert text == "✏️ a.py +1 −1 (every match)"


def test_a_multi_edit_adds_up_its_edits() -> None:
    edits = [{"old_string": "a", "new_string": "b\nc"}, {"old_string": "d\ne", "new_string": ""}]
    assert line("MultiEdit", file_path="/ws/repo/a.py", edits=edits) == (
        "✏️ a.py +2 −3 (2 edits)"
    )


def test_a_notebook_edit_shows_the_new_cell_lines() -> None:
    assert line("NotebookEdit", notebook_path="/ws/repo/n.ipynb", new_source="x\ny") == (
        "✏️ n.ipynb +2"
    )


def test_reading_a_file_shows_its_path() -> None:
    assert line("Read", file_path="/ws/repo/README.md") == "📖 README.md"


def test_markdown_characters_in_a_path_are_shown_as_they_are() -> None:
    assert shown(line("Read", file_path="/ws/repo/src/__init__.py")) == "📖 src/__init__.py"
    assert shown(line("Write", file_path="/ws/repo/*a*_[b].md", content="")) == (
        "✏️ *a*_[b].md +0"
    )


def test_a_search_shows_its_pattern_as_code() -> None:
    assert line("Glob", pattern="**/*.py") == "🔎 `**/*.py`"
    assert shown(line("Grep", pattern="def `x`")) == "🔎 def `x`"


def test_a_fetch_shows_its_url() -> None:
    assert line("WebFetch", url="https://example.com/a?b=1") == "🌐 https://example.com/a?b=1"


def test_a_url_with_markdown_characters_is_shown_as_it_is() -> None:
    url = "https://example.com/a_b_c/*x*"
    assert shown(line("WebFetch", url=url)) == f"🌐 {url}"


def test_a_web_search_shows_its_query() -> None:
    assert shown(line("WebSearch", query="python *args")) == "🌐 python *args"


def test_sending_a_file_shows_its_path() -> None:
    assert line("mcp__fleet__send_file", path="out/report.pdf") == "📎 out/report.pdf"


def test_a_plan_update_shows_how_many_items() -> None:
    assert line("TodoWrite", todos=[{"content": "a"}, {"content": "b"}]) == (
        "📝 plan updated (2 items)"
    )


def test_a_subagent_shows_its_description() -> None:
    assert line("Agent", description="Find the tests") == "🤖 Find the tests"
    assert line("Task", description="Find the tests") == "🤖 Find the tests"


def test_another_tool_shows_its_name() -> None:
    assert shown(line("mcp__other__do_it")) == "🧰 mcp__other__do_it"


# ----------------------------------------------------------------------------- result lines
def result(name: str, output: str, is_error: bool = False, verbosity: int = 2) -> str | None:
    return result_line(ToolCall(name, {}), output, is_error, verbosity)


def test_results_are_shown_only_at_verbosity_2() -> None:
    assert result("Bash", "3 passed", verbosity=1) is None
    assert result("Bash", "3 passed", verbosity=0) is None


def test_a_result_shows_the_last_non_empty_line_of_output() -> None:
    assert result("Bash", "collecting\n3 passed in 0.1s\n\n") == "   ↳ 3 passed in 0.1s"


def test_a_long_result_line_is_cut_to_100_characters() -> None:
    text = shown(result("Bash", "y" * 300))
    assert len(text.removeprefix("   ↳ ")) == 100 and text.endswith("…")


def test_an_error_shows_its_first_line() -> None:
    assert result("Bash", "Exit code 1\ntraceback...", is_error=True) == "   ↳ ❌ Exit code 1"


def test_a_read_result_shows_how_many_lines() -> None:
    assert result("Read", "     1\ta\n     2\tb\n") == "   ↳ 2 lines"
    assert result("Grep", "src/a.py") == "   ↳ 1 line"


def test_markdown_in_output_is_shown_as_it_is() -> None:
    assert shown(result("Bash", "**bold** _x_ `y`")) == "   ↳ **bold** _x_ `y`"


def test_md_text_renders_as_itself() -> None:
    text = "a_b *c* [d](e) `f` \\g ~~h~~"
    assert visible_text(markdown_to_html(md_text(text))) == text
