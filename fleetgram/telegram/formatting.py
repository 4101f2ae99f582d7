"""Claude's Markdown -> Telegram Bot API HTML (``parse_mode="HTML"``).

Pure functions, no I/O. The converter is written for *streaming*: it is called again and again
on a growing, possibly cut-off text, so it must always return well-formed Telegram HTML. That
is guaranteed by construction: every tag is emitted together with its closing tag around an
inner part that is itself rendered recursively, and everything else goes through ``escape``.
Markup that is not closed (yet) stays literal text; an unclosed code fence renders the rest of
the text as a code block.

Only these tags are produced: b, i, s, code, pre, ``<pre><code class="language-x">``, a href,
blockquote. No construct makes the visible text longer than the Markdown source (measured in
UTF-16 code units), which ``splitting`` relies on to stay under Telegram's 4096 limit.
"""

from __future__ import annotations

import html
import re
import string
from typing import NamedTuple

__all__ = [
    "FenceState",
    "closes_fence",
    "escape",
    "escape_attr",
    "fence_opening",
    "markdown_to_html",
    "open_fence",
    "utf16_len",
    "visible_length",
    "visible_text",
]

_PUNCT = frozenset(string.punctuation)
_MAX_DEPTH = 6  # nesting of emphasis/links; deeper markup stays literal
_MAX_URL = 2048

_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$")
_HR = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(.*)$")
_NUMBERED = re.compile(r"^([ \t]*)(\d{1,9}[.)])[ \t]+(.*)$")
_QUOTE = re.compile(r"^ {0,3}>[ ]?")
_SAFE_URL = re.compile(r"^(?:https?://|tg://|ftp://|mailto:)[^\s]+$", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
# a bare URL, as Telegram will link it by itself: its "_" and "*" are not emphasis; trailing
# punctuation (and a closing bracket) is left to the text around it
_BARE_URL = re.compile(
    r"(?<![\w/])(?:https?|ftp)://[^\s<>`\[\]]*[^\s<>`\[\].,:;!?*_~)'\"]", re.IGNORECASE
)

_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})


def escape(text: str) -> str:
    """Escape text for Telegram HTML (``&``, ``<``, ``>``)."""
    return text.translate(_ESCAPES)


def escape_attr(text: str) -> str:
    """Escape an attribute value (also ``"``)."""
    return text.translate(_ATTR_ESCAPES)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's text limits."""
    return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)


def visible_text(html_text: str) -> str:
    """The text Telegram shows for ``html_text``: tags removed, entities decoded."""
    return html.unescape(_TAG.sub("", html_text))


def visible_length(html_text: str) -> int:
    """UTF-16 length of the text Telegram shows for ``html_text`` (tags removed, entities
    decoded) -- what the 4096 limit is measured on."""
    return utf16_len(visible_text(html_text))


# ----------------------------------------------------------------------------- code fences
class FenceState(NamedTuple):
    """An open fenced code block: its opening marker (e.g. "```") and language ("" if none)."""

    marker: str
    lang: str


def fence_opening(line: str) -> tuple[FenceState, int] | None:
    """If ``line`` opens a fenced code block: its state and indentation."""
    m = _FENCE_OPEN.match(line)
    if m is None:
        return None
    marker = m.group(2)
    lang = re.sub(r"[^\w+#.-]", "", m.group(3))[:32]
    return FenceState(marker, lang), len(m.group(1))


def closes_fence(line: str, marker: str) -> bool:
    """``line`` closes a code block opened with ``marker``."""
    stripped = line.strip()
    return (
        len(line) - len(line.lstrip(" ")) <= 3
        and len(stripped) >= len(marker)
        and stripped == marker[0] * len(stripped)
    )


def open_fence(md: str) -> FenceState | None:
    """The fenced code block still open at the end of ``md`` (as ``markdown_to_html`` reads
    it), or None."""
    state: FenceState | None = None
    for line in _lines(md):
        if state is None:
            opening = fence_opening(line)
            if opening is not None:
                state = opening[0]
        elif closes_fence(line, state.marker):
            state = None
    return state


def _lines(md: str) -> list[str]:
    return md.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _pre(code: str, lang: str) -> str:
    if not code:
        return ""  # an empty entity would only confuse; render nothing
    if lang:
        return f'<pre><code class="language-{escape_attr(lang)}">{escape(code)}</code></pre>'
    return f"<pre>{escape(code)}</pre>"


# ----------------------------------------------------------------------------- blocks
def markdown_to_html(md: str) -> str:
    """Convert (possibly partial) Markdown to well-formed Telegram HTML."""
    lines = _lines(md)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        opening = fence_opening(line)
        if opening is not None:
            state, indent = opening
            body: list[str] = []
            i += 1
            while i < len(lines) and not closes_fence(lines[i], state.marker):
                body.append(_dedent(lines[i], indent))
                i += 1
            i += 1  # the closing line (or past the end)
            out.append(_pre("\n".join(body), state.lang))
            continue
        if _QUOTE.match(line):
            quoted: list[str] = []
            while i < len(lines) and _QUOTE.match(lines[i]):
                inner = lines[i]
                while (m := _QUOTE.match(inner)) is not None:
                    inner = inner[m.end() :]
                quoted.append(_line(inner))
                i += 1
            inner_html = "\n".join(quoted)
            if inner_html.strip():
                out.append(f"<blockquote>{inner_html}</blockquote>")
            else:
                out.append(inner_html)
            continue
        out.append(_line(line))
        i += 1
    return "\n".join(out)


def _dedent(line: str, indent: int) -> str:
    n = 0
    while n < indent and n < len(line) and line[n] == " ":
        n += 1
    return line[n:]


def _line(line: str) -> str:
    if _HR.match(line):
        width = len(line.strip())
        return "─" * max(3, min(width, 16))  # never wider than the source line
    m = _HEADING.match(line)
    if m is not None:
        text = (m.group(2) or "").strip()
        return f"<b>{_inline(text)}</b>" if text else escape(line)
    m = _BULLET.match(line)
    if m is not None:
        return f"{escape(m.group(1))}• {_inline(m.group(2))}"
    m = _NUMBERED.match(line)
    if m is not None:
        return f"{escape(m.group(1))}{m.group(2)} {_inline(m.group(3))}"
    return _inline(line)


# ----------------------------------------------------------------------------- inline
class _Scan:
    """Per-string precomputation: code spans and matching brackets, in linear time."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.spans: dict[int, tuple[int, int, int]] = {}  # start -> (content from, to, end)
        self.urls: dict[int, int] = {}  # bare URLs, start -> end: no emphasis inside them
        self.brackets: dict[int, int] = {}
        self._code_spans()
        self._bare_urls()
        self._bracket_pairs()
        self.failed: dict[tuple[str, int], int] = {}
        self.link_budget = 4 * len(s) + 256  # characters link parsing may scan: linear time

    def _code_spans(self) -> None:
        s = self.s
        runs: list[tuple[int, int]] = []
        i = 0
        while i < len(s):
            if s[i] == "\\":
                i += 2
                continue
            if s[i] == "`":
                j = i
                while j < len(s) and s[j] == "`":
                    j += 1
                runs.append((i, j))
                i = j
                continue
            i += 1
        # next run of the same length after each run (backwards pass); backticks inside a span
        # are content, so a run starts a span only if it is not consumed by an earlier span
        nxt: list[int | None] = [None] * len(runs)
        latest: dict[int, int] = {}
        for k in range(len(runs) - 1, -1, -1):
            length = runs[k][1] - runs[k][0]
            nxt[k] = latest.get(length)
            latest[length] = k
        consumed = 0
        for k, (a, b) in enumerate(runs):
            if a < consumed:
                continue
            close = nxt[k]
            if close is None:
                continue
            c, d = runs[close]
            if c == b:  # nothing between the runs
                continue
            self.spans[a] = (b, c, d)
            consumed = d

    def _bare_urls(self) -> None:
        code = sorted((a, d) for a, (_b, _c, d) in self.spans.items())
        k = 0
        for m in _BARE_URL.finditer(self.s):
            while k < len(code) and code[k][1] <= m.start():
                k += 1
            if k < len(code) and code[k][0] <= m.start():
                continue  # inside a code span
            self.urls[m.start()] = m.end()

    def _bracket_pairs(self) -> None:
        s = self.s
        stack: list[int] = []
        i = 0
        while i < len(s):
            c = s[i]
            if c == "\\":
                i += 2
                continue
            if i in self.spans:
                i = self.spans[i][2]
                continue
            if i in self.urls:
                i = self.urls[i]
                continue
            if c == "[":
                stack.append(i)
            elif c == "]" and stack:
                self.brackets[stack.pop()] = i
            i += 1


def _is_space(c: str) -> bool:
    return c == "" or c.isspace()


def _is_punct(c: str) -> bool:
    return c in _PUNCT or (c != "" and not c.isalnum() and not c.isspace() and ord(c) > 127)


def _run_end(s: str, i: int) -> int:
    c = s[i]
    j = i
    while j < len(s) and s[j] == c:
        j += 1
    return j


def _can_open(s: str, i: int, j: int) -> bool:
    """The delimiter run s[i:j] is left-flanking (and, for "_", not inside a word)."""
    before = s[i - 1] if i > 0 else ""
    after = s[j] if j < len(s) else ""
    if _is_space(after):
        return False
    if _is_punct(after) and not (_is_space(before) or _is_punct(before)):
        return False
    if s[i] == "_" and before.isalnum():  # snake_case
        return False
    return not _intraword(s[i], j - i, before, after)


def _intraword(ch: str, length: int, before: str, after: str) -> bool:
    """A single "*" between two letters or digits (2*3*4, a*b) is not emphasis."""
    return ch == "*" and length == 1 and before.isalnum() and after.isalnum()


def _can_close(s: str, i: int, j: int) -> bool:
    """The delimiter run s[i:j] is right-flanking (and, for "_", not inside a word)."""
    before = s[i - 1] if i > 0 else ""
    after = s[j] if j < len(s) else ""
    if _is_space(before):
        return False
    if _is_punct(before) and not (_is_space(after) or _is_punct(after)):
        return False
    if s[i] == "_" and after.isalnum():
        return False
    return not _intraword(s[i], j - i, before, after)


def _find_closer(scan: _Scan, start: int, ch: str, length: int) -> int | None:
    key = (ch, length)
    failed_from = scan.failed.get(key)
    if failed_from is not None and start >= failed_from:
        return None
    s = scan.s
    j = start
    while j < len(s):
        c = s[j]
        if c == "\\":
            j += 2
            continue
        if j in scan.spans:
            j = scan.spans[j][2]
            continue
        if j in scan.urls:
            j = scan.urls[j]
            continue
        if c == ch:
            k = _run_end(s, j)
            if k - j == length and _can_close(s, j, k):
                return j
            j = k
            continue
        j += 1
    scan.failed[key] = start if failed_from is None else min(start, failed_from)
    return None


_EMPHASIS = {
    ("*", 1): ("<i>", "</i>"),
    ("_", 1): ("<i>", "</i>"),
    ("*", 2): ("<b>", "</b>"),
    ("_", 2): ("<b>", "</b>"),
    ("*", 3): ("<b><i>", "</i></b>"),
    ("_", 3): ("<b><i>", "</i></b>"),
    ("~", 2): ("<s>", "</s>"),
}


def _match_link(scan: _Scan, i: int) -> tuple[str, str, int] | None:
    """``[text](url)`` at i: (text, url, end) or None."""
    s = scan.s
    close = scan.brackets.get(i)
    if close is None or close + 1 >= len(s) or s[close + 1] != "(" or scan.link_budget <= 0:
        return None
    found = _link_destination(s, close + 2)
    scan.link_budget -= found[1] - close
    if found[0] is None:
        return None
    return s[i + 1 : close], found[0], found[1]


def _link_destination(s: str, j: int) -> tuple[str | None, int]:
    """``url)`` or ``<url> "title")`` from j: (url or None, the index after it)."""
    limit = min(len(s), j + _MAX_URL)
    while j < limit and s[j] in " \t":
        j += 1
    if j < limit and s[j] == "<":
        end = s.find(">", j + 1, limit)
        if end < 0:
            return None, limit
        url = s[j + 1 : end]
        j = end + 1
    else:
        begin, depth = j, 0
        while j < limit and not s[j].isspace():
            if s[j] == "\\" and j + 1 < limit:
                j += 2
                continue
            if s[j] == "(":
                depth += 1
            elif s[j] == ")":
                if depth == 0:
                    break
                depth -= 1
            j += 1
        url = s[begin:j]
    while j < limit and s[j] in " \t":
        j += 1
    if j < limit and s[j] in "\"'":  # an optional title, dropped
        end = s.find(s[j], j + 1, limit)
        if end < 0:
            return None, limit
        j = end + 1
        while j < limit and s[j] in " \t":
            j += 1
    if j >= limit or s[j] != ")":
        return None, j
    return url, j + 1


def _link(text: str, url: str, depth: int) -> str:
    inner = _inline(text, depth + 1, links=False) if text else ""
    if _SAFE_URL.match(url):
        return f'<a href="{escape_attr(url)}">{inner or escape(url)}</a>'
    if not url:
        return inner
    return f"{inner} ({escape(url)})" if inner else escape(url)


def _inline(s: str, depth: int = 0, *, links: bool = True) -> str:
    """Inline Markdown of one line (or part of one) -> balanced HTML."""
    scan = _Scan(s)
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in _PUNCT:
            out.append(escape(s[i + 1]))
            i += 2
            continue
        if c == "`":
            span = scan.spans.get(i)
            if span is None:
                j = _run_end(s, i)
                out.append(escape(s[i:j]))
                i = j
                continue
            a, b, end = span
            code = s[a:b]
            if len(code) > 2 and code[0] == " " and code[-1] == " " and code.strip():
                code = code[1:-1]
            out.append(f"<code>{escape(code)}</code>")
            i = end
            continue
        if i in scan.urls:
            out.append(escape(s[i : scan.urls[i]]))
            i = scan.urls[i]
            continue
        if c == "[" and links and depth < _MAX_DEPTH:
            link = _match_link(scan, i)
            if link is not None:
                text, url, i = link
                out.append(_link(text, url, depth))
                continue
        if c in "*_~":
            j = _run_end(s, i)
            tags = _EMPHASIS.get((c, j - i))
            if tags is not None and depth < _MAX_DEPTH and _can_open(s, i, j):
                close = _find_closer(scan, j, c, j - i)
                if close is not None:
                    inner = _inline(s[j:close], depth + 1, links=links)
                    out.append(f"{tags[0]}{inner}{tags[1]}")
                    i = close + (j - i)
                    continue
            out.append(escape(s[i:j]))
            i = j
            continue
        out.append(escape(c))
        i += 1
    return "".join(out)
