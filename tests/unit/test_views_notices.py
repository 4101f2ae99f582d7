"""Every notice names its task's title; priorities read as words; /queue's Cancel buttons."""

from __future__ import annotations

from typing import Any

import pytest

from fleetgram.domain import Event, TaskState
from fleetgram.master.views import (
    QUEUE_BUTTONS,
    priority_label,
    priority_word,
    queue_buttons,
    receipt,
    render_event,
)
from tests.unit.factories import T0, task

BASE: dict[str, Any] = {"title": "write the docs", "worker": "worker2", "username": "w2_bot"}
KINDS: list[tuple[str, dict[str, Any]]] = [
    ("started", {}),
    ("completed", {"seconds": 1.5, "usage": {}}),
    ("failed", {"error": "boom"}),
    ("cancelled", {}),
    ("cancelled", {"worker": None}),
    ("requeued", {"reason": "worker died", "attempts": 1}),
    ("undelivered", {"result": "the answer"}),
    ("blocked", {"reason": "unreachable"}),
    ("blocked", {}),
]


@pytest.mark.parametrize(("kind", "extra"), KINDS)
def test_every_notice_names_the_tasks_title(kind: str, extra: dict[str, Any]) -> None:
    event = Event(1, kind, "t-aaaaa", 42, {**BASE, **extra}, T0)
    text = render_event(event)
    assert text is not None and "write the docs" in text and "t-aaaaa" in text


@pytest.mark.parametrize(("priority", "word"), [
    (1, "urgent"), (2, "urgent"), (3, "high"), (4, "high"), (5, "normal"), (7, "normal"),
    (8, "low"), (10, "low"),
])
def test_priorities_read_as_words(priority: int, word: str) -> None:
    assert priority_word(priority) == word
    assert priority_label(priority) == f"priority {priority} ({word})"


def test_a_receipt_explains_its_priority_and_names_what_it_follows_up() -> None:
    text = receipt("t-bbbbb", {"title": "more", "priority": 5, "follow_up_of": "t-aaaaa"}, 1, 1)
    assert "priority 5 (normal)" in text and "↪️ follow-up of t-aaaaa" in text


def test_queue_buttons_cancel_the_first_tasks_and_the_text_says_how_to_cancel_the_rest() -> None:
    running = [task("t-run00", state=TaskState.RUNNING)]
    pending = [task(f"t-p{i:04d}") for i in range(12)]
    buttons, note = queue_buttons(running, pending, more=3)
    assert len(buttons) == QUEUE_BUTTONS
    assert buttons[0] == ("Cancel t-run00", "cancel:t-run00")
    assert "/cancel &lt;id&gt;" in note and "other 6" in note


def test_a_short_queue_has_a_button_per_task_and_no_note() -> None:
    buttons, note = queue_buttons([], [task("t-p0001")])
    assert buttons == [("Cancel t-p0001", "cancel:t-p0001")] and note == ""
