"""What the master says: receipts, /queue, /workers, and the outbox notices."""

from __future__ import annotations

from typing import Any

from fleetgram.domain import Event, TaskState, WorkerSlot, WorkerState
from fleetgram.master.views import (
    QueueCounts,
    queue_view,
    receipt,
    receipt_payload,
    render_event,
    workers_view,
)

from .factories import T0, at, pending_tasks, task


def event(kind: str, task_id: str | None = "t-7k2qf", **payload: Any) -> Event:
    return Event(id=1, kind=kind, task_id=task_id, chat_id=42, payload=payload, created_at=T0)


# --- receipts ---------------------------------------------------------------------------------


def test_a_receipt_gives_the_id_priority_position_and_title():
    payload = receipt_payload(task("t-7k2qf", priority=2, title="write the docs"))
    text = receipt("t-7k2qf", payload, 3, 5)
    assert "t-7k2qf" in text and "priority 2" in text
    assert "position 3 of 5" in text and "write the docs" in text


def test_a_receipt_names_the_pinned_worker_and_the_note():
    payload = receipt_payload(
        task("t-7k2qf", pinned_worker="worker2"), "worker2 is stopped; starting it."
    )
    text = receipt("t-7k2qf", payload, 1, 1)
    assert "for worker2" in text and text.endswith("worker2 is stopped; starting it.")


def test_a_receipt_escapes_the_title_as_html():
    payload = receipt_payload(task("t-7k2qf", title="<b> tag"))
    assert "&lt;b&gt;" in receipt("t-7k2qf", payload, 1, 1)


def test_a_receipt_of_a_task_already_taken_says_queued():
    text = receipt("t-7k2qf", receipt_payload(task("t-7k2qf")), None, 0)
    assert "queued" in text and "position" not in text


def test_a_receipt_says_how_many_messages_of_a_paste_were_joined():
    payload = receipt_payload(task("t-7k2qf"), joined=13)
    assert "Joined 13 messages" in receipt("t-7k2qf", payload, 1, 1)
    assert "Joined" not in receipt("t-7k2qf", receipt_payload(task("t-7k2qf")), 1, 1)


def test_a_receipt_says_what_was_cleaned_from_the_text():
    payload = receipt_payload(task("t-7k2qf"), cleaned="Cleaned your text: dropped 1 NUL.")
    assert "Cleaned your text: dropped 1 NUL." in receipt("t-7k2qf", payload, 1, 1)


# --- /queue -----------------------------------------------------------------------------------


def counts(running: int = 0, pending: int = 0, mine_running: int | None = None,
           mine_pending: int | None = None) -> QueueCounts:
    return QueueCounts(
        running, pending,
        running if mine_running is None else mine_running,
        pending if mine_pending is None else mine_pending,
    )


def test_an_empty_queue_says_so():
    assert queue_view([], [], counts(), T0) == "The queue is empty."


def test_the_queue_lists_running_tasks_then_pending_ones_in_queue_order_with_ids():
    running = [
        task("t-runn1", priority=5, state=TaskState.RUNNING, worker="worker2",
             started_at=at(-90), title="long job"),
    ]
    pending = [task("t-pend1", priority=1, title="urgent fix"), task("t-pend2", title="later")]
    lines = queue_view(running, pending, counts(1, 2), T0).splitlines()
    assert "1 running, 2 pending" in lines[0]
    assert [line.split("</code>")[0].split("<code>")[1] for line in lines[1:]] == [
        "t-runn1",
        "t-pend1",
        "t-pend2",
    ]
    assert "on worker2" in lines[1] and "1m30s" in lines[1] and "long job" in lines[1]
    assert lines[2].startswith("1. ") and "urgent" in lines[2] and "urgent fix" in lines[2]
    assert lines[3].startswith("2. ")


def test_the_queue_shows_a_pin_and_a_retry():
    text = queue_view([], [task("t-pend1", pinned_worker="worker3", attempts=1)],
                      counts(0, 1), T0)
    assert "→ worker3" in text and "(attempt 2)" in text


def test_the_queue_gives_exact_totals_from_the_counts_not_from_the_rows_shown():
    pending = pending_tasks(25)
    text = queue_view([], pending, counts(0, 347), T0)
    assert text.splitlines()[0].endswith("0 running, 347 pending")
    assert text.splitlines()[-1] == "… and 322 more of yours"


def test_other_users_work_is_counted_without_ids_titles_or_prompts():
    theirs = "BOBSECRET1 my password is hunter2"
    mine = [task("t-mine1", title="my own job")]
    text = queue_view([], mine, counts(2, 4, mine_running=0, mine_pending=1), T0)
    assert "my own job" in text and "t-mine1" in text
    assert "+2 running and 3 pending tasks of other users" in text
    assert theirs not in text and "BOBSECRET" not in text


def test_a_queue_of_a_thousand_long_titles_fits_one_telegram_message():
    # Titles of 60 characters that HTML-escape to 240: 25 such lines cannot all fit.
    pending = [task(f"t-p{i:04d}", title="<&>" * 20, attempts=2, pinned_worker="worker5")
               for i in range(25)]
    text = queue_view([], pending, counts(3, 1000, mine_running=0, mine_pending=1000), T0)
    assert len(text) <= 4096
    last = text.splitlines()[-1]
    assert last == "+3 running and 0 pending tasks of other users"
    shown = sum(1 for line in text.splitlines() if "<code>t-p" in line)
    assert 5 < shown < 25
    assert f"… and {1000 - shown} more of yours" in text


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
    header, w1, w2, w3, w4 = workers_view(slots, states, T0, {"t-7k2qf"}).splitlines()
    assert "2 running of 4 slots" in header
    assert "worker1 @acme_w1_bot" in w1 and "idle for 10s" in w1
    assert "worker2 @acme_w2_bot" in w2 and "busy on <code>t-7k2qf</code> for 1m05s" in w2
    assert "worker3" in w3 and "error: Unauthorized: &lt;bad token&gt;" in w3
    assert "worker4" in w4 and "stopped" in w4


def test_an_offline_worker_shows_how_long_since_its_last_heartbeat():
    slots = [WorkerSlot("worker1", enabled=True, heartbeat_at=at(-45), state_since=at(-600))]
    line = workers_view(slots, {"worker1": WorkerState.OFFLINE}, T0).splitlines()[1]
    assert "offline for 45s" in line


def test_a_worker_busy_on_another_users_task_does_not_name_it():
    slots = [WorkerSlot("worker1", enabled=True, current_task="t-bob01", state_since=at(-5))]
    line = workers_view(slots, {"worker1": WorkerState.BUSY}, T0, {"t-mine1"}).splitlines()[1]
    assert "busy on another user's task for 5s" in line and "t-bob01" not in line


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


def test_a_pending_task_cancelled_by_its_user_says_it_will_not_run():
    text = render_event(event("cancelled", by="user", title="never run me")) or ""
    assert "t-7k2qf</b> cancelled before it started; it will not run" in text
    assert "never run me" in text


def test_a_running_task_cancelled_names_its_worker_and_title():
    text = render_event(event("cancelled", by="user", worker="worker1", title="essay")) or ""
    assert "cancelled on worker1" in text and "essay" in text


def test_a_requeue_notice_carries_the_title():
    text = render_event(event("requeued", reason="worker1 stopped", attempts=1, title="docs"))
    assert text is not None and "docs" in text and "attempt 1 lost" in text


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


def test_a_blocked_notice_for_an_unreachable_chat_does_not_ask_to_press_start() -> None:
    text = render_event(event("blocked", worker="worker2", username="acme_w2_bot",
                              reason="unreachable"))
    assert text is not None
    assert "worker2's chat is unreachable" in text and "press Start" not in text
    assert "its answer will come here" in text
