"""Splitting a long answer into Telegram messages: where it cuts, the limits it keeps, code
blocks carried across messages, and prefix stability (what streaming relies on)."""

from __future__ import annotations

import random
import re

import pytest

from fleetgram.telegram.formatting import markdown_to_html, utf16_len, visible_length
from fleetgram.telegram.splitting import MIN_LIMIT, TELEGRAM_LIMIT, split_for_telegram

from .html_check import html_errors


def _words(count: int, rng: random.Random | None = None) -> str:
    rng = rng or random.Random(count)
    vocabulary = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    return " ".join(rng.choice(vocabulary) for _ in range(count))


# ----------------------------------------------------------------------------- basics
def test_empty_text_gives_no_chunks() -> None:
    assert split_for_telegram("") == []


def test_text_within_the_limit_is_one_chunk() -> None:
    text = "short **answer**\n\nwith two paragraphs"
    assert split_for_telegram(text) == [text]


def test_text_of_exactly_the_limit_is_one_chunk() -> None:
    assert split_for_telegram("x" * 100, limit=100) == ["x" * 100]


def test_a_limit_below_the_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        split_for_telegram("text", limit=MIN_LIMIT - 1)


def test_chunks_put_back_together_give_the_text() -> None:
    text = "\n\n".join(_words(n) for n in range(5, 400, 7))
    chunks = split_for_telegram(text, limit=500)
    assert len(chunks) > 5
    assert "".join(chunks) == text


# ----------------------------------------------------------------------------- where to cut
def test_cuts_after_a_blank_line_rather_than_a_newline() -> None:
    first = _words(10) + "\n\n" + _words(6) + "\n" + _words(3)
    text = first + "\n" + _words(40)
    chunks = split_for_telegram(text, limit=len(first) + 5)
    assert chunks[0] == _words(10) + "\n\n"


def test_cuts_after_a_newline_when_there_is_no_blank_line() -> None:
    text = _words(12) + "\n" + _words(4) + " " + _words(30)
    chunks = split_for_telegram(text, limit=len(_words(12)) + 20)
    assert chunks[0] == _words(12) + "\n"


def test_cuts_after_a_space_when_there_is_no_newline() -> None:
    text = _words(50)
    chunks = split_for_telegram(text, limit=100)
    assert all(chunk.endswith(" ") for chunk in chunks[:-1])
    assert "".join(chunks) == text


def test_cuts_hard_inside_a_word_longer_than_the_limit() -> None:
    assert split_for_telegram("x" * 250, limit=100) == ["x" * 100, "x" * 100, "x" * 50]


def test_does_not_cut_in_the_first_half_to_reach_a_nicer_break() -> None:
    text = "a\n\n" + "word " * 100
    chunks = split_for_telegram(text, limit=100)
    assert len(chunks[0]) >= 50


def test_the_limit_counts_utf16_code_units() -> None:
    chunks = split_for_telegram("😀" * 100, limit=64)
    assert [utf16_len(chunk) for chunk in chunks] == [64, 64, 64, 8]


# ----------------------------------------------------------------------------- code blocks
def test_a_code_block_cut_in_two_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"print({i})  # line {i}" for i in range(40))
    text = f"Intro\n```python\n{code}\n```\nOutro"
    chunks = split_for_telegram(text, limit=300)
    assert len(chunks) > 2
    for chunk in chunks[:-1]:
        assert chunk.endswith("\n```")
    for chunk in chunks[1:]:
        assert chunk.startswith("```python\n")
    for chunk in chunks:
        html = markdown_to_html(chunk)
        assert html_errors(html) == []
        assert '<pre><code class="language-python">' in html


def test_the_code_survives_the_cut_line_by_line() -> None:
    lines = [f"x{i} = {i}" for i in range(60)]
    text = "```\n" + "\n".join(lines) + "\n```"
    chunks = split_for_telegram(text, limit=120)
    seen: list[str] = []
    for chunk in chunks:
        body = chunk.split("\n")
        seen.extend(line for line in body if line and not line.startswith("```"))
    assert seen == lines


def test_a_text_after_a_code_block_is_not_taken_for_code() -> None:
    text = "```sh\nls\n```\n\n" + _words(80)
    chunks = split_for_telegram(text, limit=200)
    assert all("<pre>" not in markdown_to_html(chunk) for chunk in chunks[1:])


# ----------------------------------------------------------------------------- properties
_PIECES = [
    *"ab c😀<&>*_`[]()~#-",
    "\n",
    "\n\n",
    " ",
    "word ",
    "**",
    "```",
    "\n```py\n",
    "\n````\n",
    "\n```\n",
    "\n~~~\n",
    "[x](http://e.com)",
    "\n> ",
    "\n- ",
    "\n---\n",
    "x" * 50,
]


def _random_markdown(rng: random.Random, pieces: int) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, pieces)))


def test_every_chunk_fits_in_a_telegram_message() -> None:
    rng = random.Random(4096)
    for _ in range(60):
        text = _random_markdown(rng, 3000)
        for chunk in split_for_telegram(text):
            html = markdown_to_html(chunk)
            assert visible_length(html) <= TELEGRAM_LIMIT
            assert html_errors(html) == []


def test_every_chunk_keeps_a_small_limit() -> None:
    rng = random.Random(64)
    for _ in range(300):
        text = _random_markdown(rng, 400)
        limit = rng.choice([64, 100, 250])
        for chunk in split_for_telegram(text, limit=limit):
            assert visible_length(markdown_to_html(chunk)) <= limit, chunk
            closer = re.search(r"\n([`~]{3,})$", chunk)
            assert utf16_len(chunk) <= limit + (len(closer.group()) if closer else 0), chunk


def test_texts_without_code_fences_split_without_losing_a_character() -> None:
    rng = random.Random(1)
    for _ in range(300):
        text = _random_markdown(rng, 300).replace("`", "").replace("~", "")
        assert "".join(split_for_telegram(text, limit=100)) == text


def test_split_is_prefix_stable() -> None:
    """All chunks but the last of split(t) are the first chunks of split(t + u)."""
    rng = random.Random(2024)
    for _ in range(150):
        full = _random_markdown(rng, 500)
        limit = rng.choice([64, 128, 300])
        whole = split_for_telegram(full, limit=limit)
        for cut in sorted(rng.sample(range(len(full) + 1), min(25, len(full) + 1))):
            part = split_for_telegram(full[:cut], limit=limit)
            settled = part[:-1]
            assert whole[: len(settled)] == settled, (full[:cut], limit)


def test_a_streamed_answer_never_rewrites_a_full_message() -> None:
    rng = random.Random(5)
    text = ""
    settled: list[str] = []
    for _ in range(700):
        text += "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 4)))
        chunks = split_for_telegram(text, limit=200)
        assert chunks[: len(settled)] == settled
        settled = chunks[:-1]
    assert len(settled) > 5
