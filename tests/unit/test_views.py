"""What the master says: receipts, /queue, /workers, and the outbox notices."""

from __future__ import annotations

from typing import Any

from fleetgram.domain import Event, TaskState, WorkerSlot, WorkerState
from fleetgram.master.views import queue_view, receipt, render_event, workers_view

from .factories import T0, at, task


def event(kind: str, task_id: str | None = "t-7k2qf", **payload: Any) -> Event:
    return Event(id=1, kind=kind, task_id=task_id, chat_id=42, payload=payload, created_at=T0)


# --- receipts ---------------------------------------------------------------------------------


def test_a_receipt_gives_the_id_priority_position_and_title():
    text = receipt(task("t-7k2qf", priority=2, title="write the docs"), 3, 5)
    assert "t-7k2qf" in text and "priority 2" in text
    assert "position 3 of 5" in text and "write the docs" in text


def test_a_receipt_names_the_pinned_worker_and_the_note():
    text = receipt(
        task("t-7k2qf", pinned_worker="worker2"), 1, 1, "worker2 is stopped; starting it."
    )
    assert "for worker2" in text and text.endswith("worker2 is stopped; starting it.")


def test_a_receipt_escapes_the_title_as_html():
    assert "&lt;b&gt;" in receipt(task("t-7k2qf", title="<b> tag"), 1, 1)


# --- /queue -----------------------------------------------------------------------------------


def test_an_empty_queue_says_so():
    assert queue_view([task("t-done1", state=TaskState.COMPLETED)], T0) == "The queue is empty."


def test_the_queue_lists_running_tasks_then_pending_ones_in_queue_order_with_ids():
    tasks = [  # as the store returns them: in queue order, running and pending mixed
        task("t-pend1", priority=1, title="urgent fix"),
        task(
            "t-runn1",
            priority=5,
            state=TaskState.RUNNING,
            worker="worker2",
            started_at=at(-90),
            title="long job",
        ),
        task("t-pend2", priority=5, title="later"),
    ]
    lines = queue_view(tasks, T0).splitlines()
    assert "1 running, 2 pending" in lines[0]
    assert [line.split("</code>")[0].split("<code>")[1] for line in lines[1:]] == [
        "t-runn1",
        "t-pend1",
        "t-pend2",
    ]
    assert "on worker2" in lines[1] and "1m30s" in lines[1] and "long job" in lines[1]
    assert lines[2].startswith("1. ") and "p1" in lines[2] and "urgent fix" in lines[2]
    assert lines[3].startswith("2. ")


def test_the_queue_counts_assigned_tasks_as_running():
    tasks = [task("t-asg01", state=TaskState.ASSIGNED, worker="worker1", assigned_at=at(-5))]
    text = queue_view(tasks, T0)
    assert "1 running, 0 pending" in text and "t-asg01" in text and "on worker1" in text


def test_the_queue_shows_a_pin_and_a_retry():
    text = queue_view([task("t-pend1", pinned_worker="worker3", attempts=1)], T0)
    assert "→ worker3" in text and "(attempt 2)" in text


def test_the_queue_leaves_out_finished_tasks():
    tasks = [task("t-pend1"), task("t-fail1", state=TaskState.FAILED)]
    assert "t-fail1" not in queue_view(tasks, T0)


# --- /workers ---------------------------------------------------------------------------------


def test_workers_without_slots_points_at_the_token_pool():
    assert "WORKER_TOKEN_POOL" in workers_view([], {}, T0)


def test_workers_shows_each_slots_state_username_current_task_and_error():
    slots = [
        WorkerSlot("worker1", enabled=True, username="acme_w1_bot", state_since=at(-10)),
        WorkerSlot(
            "worker2",
            enabled=True,
            username="acme_w2_bot",
            current_task="t-7k2qf",
            state_since=at(-65),
        ),
        WorkerSlot("worker3", error="Unauthorized: <bad token>"),
        WorkerSlot("worker4"),
    ]
    states = {
        "worker1": WorkerState.IDLE,
        "worker2": WorkerState.BUSY,
        "worker3": WorkerState.ERROR,
        "worker4": WorkerState.STOPPED,
    }
    header, w1, w2, w3, w4 = workers_view(slots, states, T0).splitlines()
    assert "2 running of 4 slots" in header
    assert "worker1 @acme_w1_bot" in w1 and "idle for 10s" in w1
    assert "worker2 @acme_w2_bot" in w2 and "busy on <code>t-7k2qf</code> for 1m05s" in w2
    assert "worker3" in w3 and "error: Unauthorized: &lt;bad token&gt;" in w3
    assert "worker4" in w4 and "stopped" in w4


def test_an_offline_worker_shows_how_long_since_its_last_heartbeat():
    slots = [WorkerSlot("worker1", enabled=True, heartbeat_at=at(-45), state_since=at(-600))]
    line = workers_view(slots, {"worker1": WorkerState.OFFLINE}, T0).splitlines()[1]
    assert "offline for 45s" in line


def test_a_starting_worker_is_shown_as_starting():
    slots = [WorkerSlot("worker1", enabled=True, state_since=at(-3))]
    line = workers_view(slots, {"worker1": WorkerState.STARTING}, T0).splitlines()[1]
    assert "starting for 3s" in line


# --- outbox notices ---------------------------------------------------------------------------


def test_a_completed_notice_names_the_worker_duration_tokens_and_cost():
    text = render_event(
        event(
            "completed",
            worker="worker2",
            username="acme_w2_bot",
            seconds=12.34,
            title="docs",
            usage={
                "input_tokens": 1000,
                "output_tokens": 234,
                "cache_read_tokens": 500,
                "cache_write_tokens": 0,
                "cost_usd": 0.01234,
            },
        )
    )
    assert text is not None
    assert "t-7k2qf" in text and "worker2 (@acme_w2_bot)" in text
    assert "12.3s" in text
    assert "1,734 tokens" in text
    assert "$0.0123" in text
    assert "docs" in text


def test_a_completed_notice_says_the_answer_follows_when_there_is_one():
    assert "answer follows" in render_event(event("completed", worker="worker1", result="42"))


def test_a_failed_notice_gives_the_reason():
    text = render_event(event("failed", error="Claude is overloaded (529)", title="docs"))
    assert text is not None and "t-7k2qf" in text and "failed: Claude is overloaded (529)" in text


def test_a_failed_notice_escapes_the_reason_as_html():
    assert "&lt;html&gt;" in render_event(event("failed", error="<html> in the error"))


def test_a_blocked_notice_says_which_bot_to_open_with_its_link():
    text = render_event(event("blocked", worker="worker2", username="acme_w2_bot"))
    assert text is not None
    assert "worker2" in text and "open @acme_w2_bot" in text
    assert "https://t.me/acme_w2_bot" in text and "t-7k2qf" in text


def test_started_cancelled_and_requeued_notices_name_the_task():
    for kind, payload in [
        ("started", {"worker": "worker1"}),
        ("cancelled", {}),
        ("requeued", {"reason": "worker1 stopped responding", "attempts": 1}),
    ]:
        text = render_event(event(kind, **payload))
        assert text is not None and "t-7k2qf" in text


def test_events_the_master_does_not_announce_render_as_none():
    assert render_event(event("heartbeat")) is None


def test_blocked_notice_without_a_known_username_links_nowhere() -> None:
    from datetime import UTC, datetime

    from fleetgram.domain import Event
    from fleetgram.master.views import render_event

    event = Event(1, "blocked", "t-abcde", 1, {"worker": "worker2", "username": None},
                  datetime.now(UTC))
    text = render_event(event) or ""
    assert "open worker2's bot and press Start" in text and "t.me" not in text
