"""Claude's Markdown -> Telegram HTML: what each construct becomes, and that the output is
always well-formed, also for cut-off text in the middle of a stream."""

from __future__ import annotations

import random
import time

from fleetgram.telegram.formatting import (
    markdown_to_html,
    open_fence,
    utf16_len,
    visible_length,
    visible_text,
)

from .html_check import html_errors


# ----------------------------------------------------------------------------- text
def test_plain_text_passes_through_unchanged() -> None:
    assert markdown_to_html("Hello, world.\nSecond line.") == "Hello, world.\nSecond line."


def test_ampersand_and_angle_brackets_are_escaped() -> None:
    assert markdown_to_html("a < b && c > d <br>") == "a &lt; b &amp;&amp; c &gt; d &lt;br&gt;"


def test_existing_entities_in_the_text_are_shown_literally() -> None:
    assert markdown_to_html("&amp; &lt;") == "&amp;amp; &amp;lt;"


def test_backslash_escaped_markers_are_literal() -> None:
    assert markdown_to_html(r"\*not italic\* and \_ \`") == "*not italic* and _ `"


# ----------------------------------------------------------------------------- emphasis
def test_double_asterisks_make_bold() -> None:
    assert markdown_to_html("a **bold** word") == "a <b>bold</b> word"


def test_double_underscores_make_bold() -> None:
    assert markdown_to_html("a __bold__ word") == "a <b>bold</b> word"


def test_single_asterisks_make_italic() -> None:
    assert markdown_to_html("an *italic* word") == "an <i>italic</i> word"


def test_single_underscores_make_italic() -> None:
    assert markdown_to_html("an _italic_ word") == "an <i>italic</i> word"


def test_triple_asterisks_make_bold_italic() -> None:
    assert markdown_to_html("***both***") == "<b><i>both</i></b>"


def test_bold_and_italic_nest() -> None:
    assert markdown_to_html("*a **b** c*") == "<i>a <b>b</b> c</i>"


def test_snake_case_words_are_not_italic() -> None:
    text = "call my_long_function_name and read MAX_RETRY_COUNT"
    assert markdown_to_html(text) == text


def test_asterisks_between_digits_are_arithmetic_not_italic() -> None:
    assert markdown_to_html("2*3*4 = 24") == "2*3*4 = 24"


def test_asterisks_surrounded_by_spaces_are_literal() -> None:
    assert markdown_to_html("a * b * c") == "a * b * c"


def test_double_tildes_strike_through() -> None:
    assert markdown_to_html("~~old~~ new") == "<s>old</s> new"


def test_a_single_tilde_is_literal() -> None:
    assert markdown_to_html("~/src and ~5 min") == "~/src and ~5 min"


def test_unclosed_bold_stays_literal() -> None:
    assert markdown_to_html("this is **half done") == "this is **half done"


def test_unclosed_italic_stays_literal() -> None:
    assert markdown_to_html("this is *half") == "this is *half"


# ----------------------------------------------------------------------------- code
def test_inline_code_is_escaped_and_not_formatted() -> None:
    assert markdown_to_html("use `a<b && **c**`") == "use <code>a&lt;b &amp;&amp; **c**</code>"


def test_inline_code_with_double_backticks_may_contain_a_backtick() -> None:
    assert markdown_to_html("``a`b``") == "<code>a`b</code>"


def test_an_unmatched_backtick_is_literal() -> None:
    assert markdown_to_html("it`s") == "it`s"


def test_fenced_code_block_with_language() -> None:
    md = "Look:\n```python\nif a < b:\n    print('x')\n```\nDone."
    assert markdown_to_html(md) == (
        'Look:\n<pre><code class="language-python">if a &lt; b:\n'
        "    print('x')</code></pre>\nDone."
    )


def test_fenced_code_block_without_language() -> None:
    assert markdown_to_html("```\nls -l\n```") == "<pre>ls -l</pre>"


def test_markdown_inside_a_code_block_is_not_formatted() -> None:
    assert markdown_to_html("```\n**x** _y_ [a](http://b)\n# no\n```") == (
        "<pre>**x** _y_ [a](http://b)\n# no</pre>"
    )


def test_tilde_fences_are_code_blocks_too() -> None:
    assert markdown_to_html("~~~sh\necho hi\n~~~") == (
        '<pre><code class="language-sh">echo hi</code></pre>'
    )


def test_a_shorter_fence_does_not_close_a_longer_one() -> None:
    assert markdown_to_html("````md\n```\ninner\n```\n````") == (
        '<pre><code class="language-md">```\ninner\n```</code></pre>'
    )


def test_an_unclosed_fence_renders_the_rest_as_code() -> None:
    assert markdown_to_html("Here:\n```js\nlet a = 1 < 2;\n**no**") == (
        'Here:\n<pre><code class="language-js">let a = 1 &lt; 2;\n**no**</code></pre>'
    )


def test_a_fence_that_has_just_opened_shows_no_empty_block() -> None:
    assert markdown_to_html("Here:\n```python\n") == "Here:\n"


def test_open_fence_reports_the_block_left_open() -> None:
    assert open_fence("a\n```py\nx = 1\n") == ("```", "py")
    assert open_fence("a\n```py\nx = 1\n```\n") is None


# ----------------------------------------------------------------------------- links
def test_link_becomes_an_anchor() -> None:
    assert markdown_to_html("[docs](https://example.com/x)") == (
        '<a href="https://example.com/x">docs</a>'
    )


def test_link_url_is_escaped_in_the_attribute() -> None:
    assert markdown_to_html('[q](https://e.com/?a=1&b="2")') == (
        '<a href="https://e.com/?a=1&amp;b=&quot;2&quot;">q</a>'
    )


def test_link_url_may_contain_balanced_parentheses() -> None:
    assert markdown_to_html("[w](https://en.wikipedia.org/wiki/A_(b))") == (
        '<a href="https://en.wikipedia.org/wiki/A_(b)">w</a>'
    )


def test_link_text_is_formatted() -> None:
    assert markdown_to_html("[**b**](http://x.y)") == '<a href="http://x.y"><b>b</b></a>'


def test_link_to_a_relative_path_is_shown_as_text() -> None:
    assert markdown_to_html("[main.py](src/main.py)") == "main.py (src/main.py)"


def test_link_to_a_script_url_is_not_a_link() -> None:
    assert "<a" not in markdown_to_html("[x](javascript:alert(1))")


def test_unfinished_link_stays_literal() -> None:
    assert markdown_to_html("see [the docs](https://exa") == "see [the docs](https://exa"


def test_underscores_in_a_bare_url_are_not_emphasis() -> None:
    text = "see https://example.com/_private_/x_y now"
    assert markdown_to_html(text) == text


def test_a_bare_url_inside_bold_stays_bold() -> None:
    assert markdown_to_html("**https://e.com/a_b**") == "<b>https://e.com/a_b</b>"


def test_a_link_whose_text_is_its_url() -> None:
    assert markdown_to_html("[https://e.com](https://e.com)") == (
        '<a href="https://e.com">https://e.com</a>'
    )


# ----------------------------------------------------------------------------- blocks
def test_heading_becomes_a_bold_line() -> None:
    assert markdown_to_html("## Plan & steps\ntext") == "<b>Plan &amp; steps</b>\ntext"


def test_closing_hashes_of_a_heading_are_dropped() -> None:
    assert markdown_to_html("# Title #") == "<b>Title</b>"


def test_a_hashtag_is_not_a_heading() -> None:
    assert markdown_to_html("#hashtag") == "#hashtag"


def test_dash_and_star_bullets_become_bullet_points() -> None:
    assert markdown_to_html("- one\n* two\n+ three") == "• one\n• two\n• three"


def test_a_star_bullet_with_italic_in_it() -> None:
    assert markdown_to_html("* an *item*") == "• an <i>item</i>"


def test_nested_bullets_keep_their_indentation() -> None:
    assert markdown_to_html("- a\n  - b") == "• a\n  • b"


def test_numbered_lists_are_kept() -> None:
    assert markdown_to_html("1. first **x**\n2) second") == "1. first <b>x</b>\n2) second"


def test_blockquote_lines_become_one_blockquote() -> None:
    assert markdown_to_html("> one *x*\n> two\nafter") == (
        "<blockquote>one <i>x</i>\ntwo</blockquote>\nafter"
    )


def test_horizontal_rules_become_a_line() -> None:
    assert markdown_to_html("a\n\n---\n\nb") == "a\n\n───\n\nb"
    assert markdown_to_html("* * *") == "─────"


def test_crlf_line_ends_are_understood() -> None:
    assert markdown_to_html("# T\r\n```\r\nx\r\n```") == "<b>T</b>\n<pre>x</pre>"


# ----------------------------------------------------------------------------- visible length
def test_visible_length_ignores_tags_and_decodes_entities() -> None:
    assert visible_length('<b>a&amp;b</b> <a href="http://x">&lt;</a>') == 5


def test_visible_length_counts_utf16_code_units() -> None:
    assert visible_length("😀é") == 3
    assert utf16_len("😀é") == 3


def test_visible_text_is_what_the_user_reads() -> None:
    assert visible_text(markdown_to_html("**a** & `b`")) == "a & b"


# ----------------------------------------------------------------------------- properties
_PIECES = [
    *"abc xyz<&>*_`[]()~#>-+.1\"'\\/:😀é",
    "\n",
    "\n\n",
    "**",
    "__",
    "~~",
    "```",
    "```py\n",
    "\n```\n",
    "[x](http://e.com/a_b)",
    "](",
    "http://",
    " https://e.com/_a_*b*",
    "# ",
    "\n> ",
    "\n- ",
    "\n* ",
    "\n1. ",
    "\n---\n",
    "&amp;",
    "<b>",
    "</i>",
]

_DOCUMENT = """# Plan for **fleetgram**

Steps, with *care* and a [link](https://example.com/a_(b)?x=1&y=2):

1. read `config.py` & the `.env` file
2. call `run_task()` -- see ~~old~~ new
- item with snake_case_name and 2*3*4
* another _one_

> quoted **text**
> more

---

```python
def f(a, b):
    return a < b and b > 0 & 1  # **not bold**
```

Done. ``a`b`` and `c`
"""


def _random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, size)))


def test_random_markdown_always_gives_well_formed_html() -> None:
    rng = random.Random(20240601)
    for _ in range(3000):
        md = _random_text(rng, 40)
        out = markdown_to_html(md)
        assert html_errors(out) == [], (md, out)


def test_every_prefix_of_a_document_gives_well_formed_html() -> None:
    for end in range(len(_DOCUMENT) + 1):
        out = markdown_to_html(_DOCUMENT[:end])
        assert html_errors(out) == [], (_DOCUMENT[:end], out)


def test_conversion_never_makes_the_visible_text_longer_than_the_markdown() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        md = _random_text(rng, 40)
        assert visible_length(markdown_to_html(md)) <= utf16_len(md), md


def test_telegrams_own_html_parser_accepts_the_output() -> None:
    """Cross-check with the emulator's port of tdlib's parser (same text as visible_text)."""
    from fleetgram.emulators import telegram_api as emulator

    parse_html = emulator._parse_html
    rng = random.Random(99)
    for _ in range(1500):
        md = _random_text(rng, 40)
        out = markdown_to_html(md)
        text, _entities = parse_html(out, {})
        assert text == visible_text(out), (md, out)


def test_pathological_input_is_converted_quickly() -> None:
    started = time.monotonic()
    for md in ("*a" * 20000, "[a](" * 20000, "`" * 40000, "[[[]]](" * 10000, "_*~" * 20000):
        out = markdown_to_html(md)
        assert html_errors(out) == []
    assert time.monotonic() - started < 5.0
