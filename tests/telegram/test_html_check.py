"""The checker the property tests rely on does reject what Telegram would refuse."""

from __future__ import annotations

import pytest

from .html_check import html_errors


@pytest.mark.parametrize(
    "html",
    [
        "<b>bold</b> <i>it</i> <s>x</s> <u>y</u> <tg-spoiler>z</tg-spoiler>",
        '<a href="https://e.com/?a=1&amp;b=&quot;c&quot;">link</a>',
        '<pre><code class="language-python">x &lt; 1</code></pre>',
        "<blockquote>q <b>b</b></blockquote>",
        "a &amp; b &lt; c &gt; d",
    ],
)
def test_well_formed_telegram_html_passes(html: str) -> None:
    assert html_errors(html) == []


@pytest.mark.parametrize(
    "html",
    [
        "a < b",
        "a & b",
        "a > b",
        "<b>unclosed",
        "closed</b>",
        "<b><i>crossed</b></i>",
        "<div>no</div>",
        "<b class='x'>attr</b>",
        "<a>no href</a>",
        '<a href="x">one <a href="y">two</a></a>',
        "<code><b>no</b></code>",
        '<code class="language-py">outside pre</code>',
        "<blockquote><blockquote>no</blockquote></blockquote>",
    ],
)
def test_malformed_or_forbidden_html_is_reported(html: str) -> None:
    assert html_errors(html) != []
