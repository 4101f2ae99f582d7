"""Taking prompts in: cleaning text, stamps in arrival order, per-user rate windows, and
joining the parts of a paste that a Telegram app split."""

from __future__ import annotations

import itertools
from datetime import timedelta

from fleetgram.intake import (
    PASTE_PART_MIN,
    Part,
    SlidingWindow,
    Stamper,
    clean_text,
    continues,
    join_parts,
    may_continue,
    utf16_len,
)

from .factories import T0

# --- cleaning ---------------------------------------------------------------------------------


def test_clean_text_leaves_ordinary_text_alone_and_says_nothing():
    cleaned = clean_text("fix the build 🚀")
    assert cleaned.text == "fix the build 🚀" and cleaned.note == ""


def test_nul_characters_are_dropped_and_the_note_says_how_many():
    cleaned = clean_text("fix\x00 the\x00 build")
    assert cleaned.text == "fix the build"
    assert cleaned.note == "Cleaned your text: dropped 2 NUL character(s)."


def test_lone_surrogates_become_the_replacement_character_and_the_note_says_so():
    cleaned = clean_text("bad \ud800 text \udfff")
    assert cleaned.text == "bad \ufffd text \ufffd"
    cleaned.text.encode("utf-8")  # storable now
    assert "replaced 2 invalid character(s)" in cleaned.note


def test_both_problems_are_named_in_one_line():
    note = clean_text("a\x00b\ud800").note
    assert "NUL" in note and "invalid" in note and "\n" not in note


# --- stamps -----------------------------------------------------------------------------------


def test_stamps_strictly_increase_even_when_the_clock_stands_still_or_goes_back():
    times = iter([T0, T0, T0 - timedelta(seconds=1), T0 + timedelta(seconds=5)])
    stamp = Stamper(lambda: next(times))
    got = [stamp() for _ in range(4)]
    assert got[0] == T0
    assert got[1] == T0 + timedelta(microseconds=1)
    assert got[2] == T0 + timedelta(microseconds=2)
    assert got[3] == T0 + timedelta(seconds=5)
    assert got == sorted(set(got))


# --- per-user rate ----------------------------------------------------------------------------


def test_a_user_may_send_the_limit_within_a_minute_and_then_must_wait():
    window = SlidingWindow(3, 60.0)
    assert [window.take(1, t) for t in (0.0, 1.0, 2.0)] == [0.0, 0.0, 0.0]
    assert window.take(1, 30.0) == 30.0  # the first one leaves the window at 60 s
    assert window.take(1, 60.0) == 0.0


def test_a_refused_prompt_does_not_count():
    window = SlidingWindow(1, 60.0)
    assert window.take(1, 0.0) == 0.0
    for t in (10.0, 20.0, 59.0):
        assert window.take(1, t) > 0
    assert window.take(1, 60.0) == 0.0


def test_users_have_separate_windows():
    window = SlidingWindow(1, 60.0)
    assert window.take(1, 0.0) == 0.0
    assert window.take(2, 0.0) == 0.0
    assert window.take(1, 1.0) == 59.0


# --- split pastes -----------------------------------------------------------------------------


def part(text: str, at: float, message_id: int = 1) -> Part:
    return Part(text, message_id, at, T0)


def test_telegram_counts_length_in_utf16_units():
    assert utf16_len("abc") == 3 and utf16_len("🚀") == 2 and utf16_len("é") == 1


def test_only_a_message_near_the_4096_limit_may_be_followed_by_more_of_its_paste():
    assert may_continue(part("x" * PASTE_PART_MIN, 0))
    assert not may_continue(part("x" * (PASTE_PART_MIN - 1), 0))
    assert may_continue(part("🚀" * (PASTE_PART_MIN // 2), 0))  # astral: two units each


def test_the_next_message_within_the_window_continues_a_long_one():
    long = part("x" * 4096, 10.0)
    assert continues(long, part("tail", 11.0), 1.5)
    assert not continues(long, part("tail", 11.6), 1.5)  # too late
    assert not continues(part("short", 10.0), part("tail", 10.1), 1.5)  # not a split


def test_joining_puts_a_line_break_back_where_the_app_cut_and_keeps_existing_whitespace():
    parts = [part("alpha", 0), part("beta", 0.1), part("\ngamma", 0.2), part(" delta", 0.3)]
    assert join_parts(parts) == "alpha\nbeta\ngamma delta"


def test_a_50000_character_paste_split_in_13_parts_joins_back_whole():
    words = " ".join(f"w{i}" for i in range(9000))[:50_000]
    parts, rest = [], words
    while rest:  # split as an app does: at the last space before 4096, dropping it
        if len(rest) <= 4096:
            chunk, rest = rest, ""
        else:
            cut = rest.rfind(" ", 0, 4096)
            chunk, rest = rest[:cut], rest[cut + 1:]
        parts.append(part(chunk, len(parts) * 0.05))
    assert len(parts) == 13
    assert all(continues(a, b, 1.5) for a, b in itertools.pairwise(parts))
    assert join_parts(parts).replace("\n", " ") == words
