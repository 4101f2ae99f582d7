"""A strict checker for the Telegram HTML that fleetgram produces (used by the tests)."""

from __future__ import annotations

import re

ALLOWED_TAGS = frozenset({"b", "i", "u", "s", "code", "pre", "a", "blockquote", "tg-spoiler"})

_TOKEN = re.compile(
    r"<(?P<close>/?)(?P<name>[a-z-]+)(?P<attrs>(?:\s[^<>]*)?)>"
    r"|&(?:amp|lt|gt|quot);"
    r"|(?P<stray>[<>&])"
    r"|[^<>&]+",
)
_HREF = re.compile(r'^ href="(?:[^"<>&]|&(?:amp|lt|gt|quot);)*"$')
_LANG = re.compile(r'^ class="language-[\w+#.-]+"$')


def html_errors(html: str) -> list[str]:
    """Everything wrong with ``html`` as Telegram Bot API HTML; empty if it is well-formed."""
    errors: list[str] = []
    stack: list[str] = []
    previous = ""
    for match in _TOKEN.finditer(html):
        token = match.group()
        if match.group("stray"):
            errors.append(f"unescaped {token!r} at {match.start()}")
        elif match.group("name"):
            name, attrs = match.group("name"), match.group("attrs")
            if name not in ALLOWED_TAGS:
                errors.append(f"tag <{name}> is not allowed")
            elif match.group("close"):
                if attrs:
                    errors.append(f"closing tag with attributes: {token!r}")
                if not stack or stack[-1] != name:
                    errors.append(f"</{name}> does not close {stack[-1:] or 'anything'}")
                else:
                    stack.pop()
            else:
                errors.extend(_opening_errors(name, attrs, stack, previous))
                stack.append(name)
        previous = token
    if stack:
        errors.append(f"unclosed tags {stack}")
    return errors


def _opening_errors(name: str, attrs: str, stack: list[str], previous: str) -> list[str]:
    errors = []
    if name == "a":
        if not _HREF.match(attrs):
            errors.append(f"<a> needs exactly one quoted href, got {attrs!r}")
        if "a" in stack:
            errors.append("<a> inside <a>")
    elif name == "code" and attrs:
        if not (_LANG.match(attrs) and stack[-1:] == ["pre"] and previous == "<pre>"):
            errors.append(f"<code{attrs}> is only allowed right inside <pre>")
    elif attrs:
        errors.append(f"<{name}> takes no attributes, got {attrs!r}")
    if name == "code" and "code" in stack:
        errors.append("<code> inside <code>")
    if stack and stack[-1] in ("code", "pre") and not (name == "code" and previous == "<pre>"):
        errors.append(f"<{name}> inside <{stack[-1]}>")
    if name in ("pre", "blockquote") and stack:
        errors.append(f"<{name}> nested in {stack}")
    return errors
