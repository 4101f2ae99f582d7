"""What users type: `[@workerN] [!P] prompt`, /cancel ids, and task titles."""

from __future__ import annotations

import pytest

from fleetgram.parsing import (
    PROMPT_MAX,
    TITLE_MAX,
    ParseError,
    PromptRequest,
    make_title,
    parse_cancel_data,
    parse_priority,
    parse_prompt,
    parse_task_id,
)

SLOTS = ["worker1", "worker2", "worker3"]
USERNAMES = {"acme_helper_bot": "worker2"}


def parse(text: str, **kwargs) -> PromptRequest:
    return parse_prompt(text, SLOTS, USERNAMES, **kwargs)


def refusal(text: str, **kwargs) -> str:
    with pytest.raises(ParseError) as caught:
        parse(text, **kwargs)
    return str(caught.value)


# --- priority ---------------------------------------------------------------------------------


def test_a_plain_prompt_gets_the_default_priority_5_and_no_pin():
    assert parse("write the docs") == PromptRequest("write the docs", 5, None)


@pytest.mark.parametrize("priority", [1, 2, 5, 9, 10])
def test_a_bang_priority_from_1_to_10_sets_the_priority(priority):
    assert parse(f"!{priority} fix the build") == PromptRequest("fix the build", priority, None)


@pytest.mark.parametrize("token", ["!0", "!11", "!100", "!-1", "!-5", "!+11", "!99999999999"])
def test_a_priority_outside_1_to_10_is_refused_with_a_one_line_message(token):
    message = refusal(f"{token} fix the build")
    assert "\n" not in message
    assert "1" in message and "10" in message


def test_a_negative_priority_is_refused_with_the_range_not_queued_as_text():
    assert refusal("!-1 fix") == "Priority must be between 1 and 10, not -1."


def test_parse_priority_refuses_what_is_not_a_bang_number():
    with pytest.raises(ParseError):
        parse_priority("!high")


def test_a_bang_word_that_is_not_a_number_is_part_of_the_prompt():
    assert parse("!important do it").prompt == "!important do it"


def test_a_priority_with_nothing_after_it_is_refused():
    assert "prompt" in refusal("!1")


def test_a_priority_given_twice_is_refused():
    assert "once" in refusal("!1 !2 fix the build")


def test_the_urgent_command_priority_applies_to_a_plain_prompt():
    assert parse("fix the build", priority=1) == PromptRequest("fix the build", 1, None)


def test_a_bang_priority_inside_the_prompt_is_left_alone():
    assert parse("explain what !1 means") == PromptRequest("explain what !1 means", 5, None)


# --- pinning ----------------------------------------------------------------------------------


def test_at_worker_pins_the_task_to_that_slot():
    assert parse("@worker2 write the tests") == PromptRequest("write the tests", 5, "worker2")


def test_pin_then_priority():
    assert parse("@worker2 !1 write the tests") == PromptRequest("write the tests", 1, "worker2")


def test_priority_then_pin():
    assert parse("!1 @worker2 write the tests") == PromptRequest("write the tests", 1, "worker2")


def test_the_slot_name_is_case_insensitive():
    assert parse("@Worker3 go").pinned_worker == "worker3"


def test_a_workers_bot_username_resolves_to_its_slot():
    assert parse("@acme_helper_bot write the tests").pinned_worker == "worker2"


def test_a_workers_bot_username_is_case_insensitive():
    assert parse("@Acme_Helper_Bot write the tests").pinned_worker == "worker2"


def test_an_unknown_worker_slot_is_refused_with_the_slot_range():
    message = refusal("@worker9 write the tests")
    assert "worker9" in message
    assert "worker1..worker3" in message


def test_an_unknown_mention_is_refused_pointing_at_workers():
    message = refusal("@somebody write the tests")
    assert "@somebody" in message and "/workers" in message


def test_a_pin_with_no_prompt_after_it_is_refused():
    message = refusal("@worker2")
    assert "@worker2" in message


def test_a_pin_and_priority_with_no_prompt_is_refused():
    with pytest.raises(ParseError):
        parse("@worker2 !1   ")


def test_the_prompt_keeps_its_own_line_breaks_after_the_prefix():
    assert parse("@worker2 !3 line one\nline two").prompt == "line one\nline two"


def test_a_prompt_longer_than_the_limit_is_refused():
    assert "limit" in refusal("x" * (PROMPT_MAX + 1))


def test_a_joined_paste_of_50000_characters_is_one_prompt():
    assert len(parse("x" * 50_000).prompt) == 50_000


# --- /cancel ids ------------------------------------------------------------------------------


def test_cancel_takes_the_first_argument_as_a_task_id():
    assert parse_task_id(["t-7k2qf"]) == "t-7k2qf"


def test_cancel_accepts_an_id_typed_in_capitals():
    assert parse_task_id(["T-7K2QF"]) == "t-7k2qf"


def test_cancel_without_arguments_explains_the_usage():
    with pytest.raises(ParseError) as caught:
        parse_task_id([])
    assert "/cancel" in str(caught.value) and "t-7k2qf" in str(caught.value)


@pytest.mark.parametrize("bad", ["7k2qf", "t-7k2q", "t-7k2qf9", "t_7k2qf", "task1"])
def test_cancel_with_a_malformed_id_explains_what_ids_look_like(bad):
    with pytest.raises(ParseError) as caught:
        parse_task_id([bad])
    assert bad in str(caught.value) and "t-7k2qf" in str(caught.value)


def test_cancel_with_an_over_long_argument_answers_briefly_without_echoing_it():
    with pytest.raises(ParseError) as caught:
        parse_task_id(["x" * 4090])
    message = str(caught.value)
    assert len(message) < 100 and "xxxx" not in message and "t-7k2qf" in message


def test_a_cancel_button_carries_a_task_id():
    assert parse_cancel_data("cancel:t-7k2qf") == "t-7k2qf"


@pytest.mark.parametrize("data", ["cancel:<b>x", "cancel:", "cancel:t-7k2qf<b>", "stop:t-7k2qf",
                                  "cancel:t-7k2qf\n", "cancel:T-7K2QF"])
def test_crafted_cancel_button_data_is_not_a_task_id(data):
    assert parse_cancel_data(data) is None


# --- titles -----------------------------------------------------------------------------------


def test_a_short_prompt_is_its_own_title():
    assert make_title("write the docs") == "write the docs"


def test_the_title_is_the_first_non_blank_line_with_spaces_collapsed():
    assert make_title("\n\n  write   the\tdocs  \nsecond line") == "write the docs"


def test_a_title_of_exactly_60_characters_is_kept_whole():
    assert TITLE_MAX == 60
    assert make_title("a" * 60) == "a" * 60


def test_a_longer_title_is_cut_to_60_characters_ending_in_an_ellipsis():
    title = make_title("b" * 61)
    assert len(title) == 60
    assert title == "b" * 59 + "…"


def test_a_cut_title_does_not_end_in_a_space_before_the_ellipsis():
    title = make_title("word " * 20)
    assert title.endswith("word…")
    assert len(title) <= 60


def test_a_priority_the_user_gave_is_told_from_the_default() -> None:
    assert parse_prompt("!3 fix it", ["worker1"]).priority_given
    assert parse_prompt("fix it", ["worker1"], priority=1).priority_given  # /urgent
    assert not parse_prompt("fix it", ["worker1"]).priority_given
