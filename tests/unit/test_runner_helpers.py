"""Request helpers of the Claude runner: the user turn and the prompt-cache breakpoint."""

from __future__ import annotations

import copy

from fleetgram.claude.runner import user_turn, with_cache_breakpoint

CACHE = {"type": "ephemeral"}


def assistant(*texts: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": t} for t in texts]}


def test_a_user_turn_is_one_text_block():
    assert user_turn("hello") == {"role": "user", "content": [{"type": "text", "text": "hello"}]}


def test_the_breakpoint_lands_on_the_last_block_before_the_newest_user_turn():
    messages = [user_turn("first"), assistant("part one", "part two"), user_turn("second")]
    marked = with_cache_breakpoint(messages)
    assert marked[1]["content"][-1]["cache_control"] == CACHE
    assert "cache_control" not in marked[1]["content"][0]


def test_only_one_block_gets_the_breakpoint():
    messages = [user_turn("a"), assistant("b"), user_turn("c"), assistant("d"), user_turn("e")]
    marked = with_cache_breakpoint(messages)
    flagged = [
        (i, j)
        for i, message in enumerate(marked)
        for j, block in enumerate(message["content"])
        if "cache_control" in block
    ]
    assert flagged == [(3, 0)]


def test_the_newest_user_turn_is_not_marked():
    marked = with_cache_breakpoint([user_turn("a"), assistant("b"), user_turn("c")])
    assert "cache_control" not in marked[-1]["content"][0]


def test_string_content_becomes_a_marked_text_block():
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        user_turn("c"),
    ]
    marked = with_cache_breakpoint(messages)
    assert marked[1]["content"] == [{"type": "text", "text": "b", "cache_control": CACHE}]


def test_the_breakpoint_lands_on_a_tool_result_block_in_agent_mode():
    tool_results = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
    }
    tool_use = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_2", "name": "ls", "input": {}}],
    }
    messages = [user_turn("go"), tool_use, tool_results]
    marked = with_cache_breakpoint(messages)
    assert marked[1]["content"][-1]["cache_control"] == CACHE


def test_the_input_messages_are_not_mutated():
    messages = [user_turn("first"), assistant("answer"), user_turn("second")]
    before = copy.deepcopy(messages)
    with_cache_breakpoint(messages)
    assert messages == before


def test_string_content_in_the_input_is_not_mutated():
    messages = [{"role": "assistant", "content": "b"}, user_turn("c")]
    with_cache_breakpoint(messages)
    assert messages[0]["content"] == "b"


def test_a_lone_first_turn_has_nothing_to_cache():
    messages = [user_turn("hello")]
    assert with_cache_breakpoint(messages) == [user_turn("hello")]


# --- describe_error: one line, never empty ----------------------------------------------------
def test_an_exception_with_an_empty_message_is_described_by_what_it_is():
    import httpx

    from fleetgram.claude.runner import describe_error

    assert describe_error(httpx.ReadTimeout("")) == "the connection timed out (no data)"
    assert describe_error(TimeoutError()) == "timed out"
    assert describe_error(KeyError()) == "KeyError (no details)"


def test_a_described_error_is_one_line_of_at_most_200_characters_of_detail():
    from fleetgram.claude.runner import describe_error

    reason = describe_error(ValueError("first line\nsecond line " + "x" * 500))
    assert "\n" not in reason
    assert reason.startswith("ValueError: first line second line")
    assert len(reason) <= len("ValueError: ") + 200
