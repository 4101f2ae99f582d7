"""Scaling: decide_scaling and quiet_since, driven with plain snapshots.

Seed rules (defaults MIN=1, MAX=5, SCALE_UP_THRESHOLD=3, SCALE_DOWN_DELAY=60 s):
more than 3 pending and no idle worker -> start one; more than 2 idle and nothing pending for
the delay -> stop one idle; never below MIN nor above MAX nor above the tokens; a task pinned
to a stopped worker starts that worker.
"""

from __future__ import annotations

from datetime import datetime

from fleetgram.domain import Task, WorkerState
from fleetgram.policy import (
    FleetView,
    ScaleAction,
    ScaleDecision,
    ScalingSettings,
    decide_scaling,
    quiet_since,
    split_pending,
)

from .factories import T0, at, fleet, pending_tasks, task

STOPPED = WorkerState.STOPPED
STARTING = WorkerState.STARTING
IDLE = WorkerState.IDLE
BUSY = WorkerState.BUSY
OFFLINE = WorkerState.OFFLINE
ERROR = WorkerState.ERROR

DEFAULTS = ScalingSettings()


def decide(
    states: dict[str, WorkerState],
    pending: list[Task] | None = None,
    *,
    quiet_for: float | None = None,
    settings: ScalingSettings = DEFAULTS,
    wanted: frozenset[str] = frozenset(),
    fresh: frozenset[str] = frozenset(),
) -> ScaleDecision:
    """Decide at T0; `quiet_for` is how many seconds the queue has been empty (None: not quiet).
    The view counts the open pending tasks and lists the pinned ones, as the orchestrators
    read them from the store."""
    since: datetime | None = None if quiet_for is None else at(-quiet_for)
    open_count, pinned = split_pending(pending or [])
    return decide_scaling(FleetView(states, open_count, pinned, since, T0, wanted, fresh),
                          settings)


def started(slot: str):
    return (ScaleAction.START, slot)


def stopped(slot: str):
    return (ScaleAction.STOP, slot)


NOTHING = (ScaleAction.NONE, None)


def outcome(decision: ScaleDecision):
    return (decision.action, decision.slot)


# --- the defaults -----------------------------------------------------------------------------


def test_scaling_defaults_are_the_seeds_min_1_max_5_threshold_3_delay_60():
    assert DEFAULTS == ScalingSettings(
        min_workers=1, max_workers=5, scale_up_threshold=3, scale_down_delay=60.0
    )


def test_a_steady_fleet_gets_no_decision():
    decision = decide(fleet(BUSY, STOPPED), pending_tasks(1))
    assert outcome(decision) == NOTHING


# --- scaling up -------------------------------------------------------------------------------


def test_scales_up_when_more_than_threshold_pending_and_no_idle_worker():
    decision = decide(fleet(BUSY, STOPPED, STOPPED), pending_tasks(4))
    assert outcome(decision) == started("worker2")
    assert "threshold" in decision.reason


def test_scale_up_starts_the_first_stopped_slot_in_pool_order():
    decision = decide(fleet(BUSY, STOPPED, BUSY, STOPPED), pending_tasks(4))
    assert outcome(decision) == started("worker2")


def test_does_not_scale_up_with_exactly_threshold_pending():
    assert outcome(decide(fleet(BUSY, STOPPED), pending_tasks(3))) == NOTHING


def test_does_not_scale_up_when_one_worker_is_idle():
    assert outcome(decide(fleet(BUSY, IDLE, STOPPED), pending_tasks(4))) == NOTHING


def test_does_not_scale_up_at_max_workers():
    settings = ScalingSettings(max_workers=2)
    decision = decide(fleet(BUSY, BUSY, STOPPED), pending_tasks(10), settings=settings)
    assert outcome(decision) == NOTHING


def test_starting_and_offline_workers_count_towards_max_workers():
    settings = ScalingSettings(max_workers=3)
    decision = decide(fleet(BUSY, STARTING, OFFLINE, STOPPED), pending_tasks(10), settings=settings)
    assert outcome(decision) == NOTHING


def test_does_not_scale_up_beyond_the_token_pool_when_max_exceeds_it():
    settings = ScalingSettings(max_workers=5)
    decision = decide(fleet(BUSY, BUSY, BUSY), pending_tasks(10), settings=settings)
    assert outcome(decision) == NOTHING


def test_scale_up_skips_error_slots_and_uses_the_next_token():
    decision = decide(fleet(BUSY, ERROR, STOPPED), pending_tasks(4))
    assert outcome(decision) == started("worker3")


def test_does_not_scale_up_when_the_only_remaining_tokens_are_in_error():
    decision = decide(fleet(BUSY, ERROR, ERROR), pending_tasks(10))
    assert outcome(decision) == NOTHING


def test_scale_up_threshold_comes_from_the_settings():
    settings = ScalingSettings(scale_up_threshold=1)
    decision = decide(fleet(BUSY, STOPPED), pending_tasks(2), settings=settings)
    assert outcome(decision) == started("worker2")


# --- MIN_WORKERS ------------------------------------------------------------------------------


def test_starts_the_first_slot_when_no_worker_runs_and_min_is_one():
    assert outcome(decide(fleet(STOPPED, STOPPED))) == started("worker1")


def test_starts_a_worker_while_below_min_workers_even_with_nothing_pending():
    settings = ScalingSettings(min_workers=2)
    decision = decide(fleet(IDLE, STOPPED, STOPPED), settings=settings)
    assert outcome(decision) == started("worker2")
    assert "MIN_WORKERS" in decision.reason


def test_below_min_skips_error_slots_and_uses_the_next_token():
    assert outcome(decide(fleet(ERROR, STOPPED))) == started("worker2")


def test_min_workers_is_capped_by_the_usable_tokens():
    settings = ScalingSettings(min_workers=3)
    decision = decide(fleet(IDLE, IDLE, ERROR), settings=settings)
    assert outcome(decision) == NOTHING


def test_min_workers_zero_leaves_an_empty_fleet_stopped():
    settings = ScalingSettings(min_workers=0)
    assert outcome(decide(fleet(STOPPED, STOPPED), settings=settings)) == NOTHING


# --- scaling down -----------------------------------------------------------------------------


def test_scales_down_the_highest_numbered_idle_worker_after_the_quiet_delay():
    decision = decide(fleet(IDLE, BUSY, IDLE, IDLE, STOPPED), quiet_for=60)
    assert outcome(decision) == stopped("worker4")
    assert "idle" in decision.reason


def test_does_not_scale_down_before_the_delay_has_elapsed():
    assert outcome(decide(fleet(IDLE, IDLE, IDLE), quiet_for=59)) == NOTHING


def test_does_not_scale_down_with_exactly_two_idle_workers():
    assert outcome(decide(fleet(IDLE, IDLE, BUSY), quiet_for=3600)) == NOTHING


def test_does_not_scale_down_while_a_task_is_pending():
    waiting = task("t-wait1", pinned_worker="worker4")
    decision = decide(fleet(IDLE, IDLE, IDLE, BUSY), [waiting], quiet_for=None)
    assert outcome(decision) == NOTHING


def test_does_not_scale_down_when_the_queue_was_never_seen_quiet():
    assert outcome(decide(fleet(IDLE, IDLE, IDLE), quiet_for=None)) == NOTHING


def test_never_scales_down_below_min_workers():
    settings = ScalingSettings(min_workers=3)
    decision = decide(fleet(IDLE, IDLE, IDLE), quiet_for=3600, settings=settings)
    assert outcome(decision) == NOTHING


def test_scales_down_while_above_min_workers():
    settings = ScalingSettings(min_workers=3)
    decision = decide(fleet(IDLE, IDLE, IDLE, IDLE), quiet_for=3600, settings=settings)
    assert outcome(decision) == stopped("worker4")


def test_scale_down_delay_comes_from_the_settings():
    settings = ScalingSettings(scale_down_delay=5)
    decision = decide(fleet(IDLE, IDLE, IDLE), quiet_for=5, settings=settings)
    assert outcome(decision) == stopped("worker3")


def test_stops_an_idle_worker_when_more_run_than_max_workers():
    settings = ScalingSettings(max_workers=2)
    decision = decide(fleet(IDLE, IDLE, BUSY), pending_tasks(1), settings=settings)
    assert outcome(decision) == stopped("worker2")


# --- pinned tasks -----------------------------------------------------------------------------


def test_a_task_pinned_to_a_stopped_worker_starts_that_worker():
    pinned = task("t-pin01", pinned_worker="worker3")
    decision = decide(fleet(BUSY, STOPPED, STOPPED), [*pending_tasks(4), pinned])
    assert outcome(decision) == started("worker3")
    assert "t-pin01" in decision.reason


def test_a_pinned_task_starts_its_worker_even_when_the_queue_is_short():
    pinned = task("t-pin01", pinned_worker="worker2")
    decision = decide(fleet(IDLE, STOPPED), [pinned])
    assert outcome(decision) == started("worker2")


def test_a_task_pinned_to_a_running_worker_starts_nothing():
    pinned = task("t-pin01", pinned_worker="worker1")
    assert outcome(decide(fleet(BUSY, STOPPED), [pinned])) == NOTHING


def test_a_task_pinned_to_an_error_worker_starts_nothing():
    pinned = task("t-pin01", pinned_worker="worker2")
    assert outcome(decide(fleet(IDLE, ERROR), [pinned])) == NOTHING


def test_at_max_a_pinned_task_makes_room_by_stopping_the_highest_idle_worker():
    settings = ScalingSettings(max_workers=3)
    pinned = task("t-pin01", pinned_worker="worker4")
    decision = decide(fleet(IDLE, IDLE, BUSY, STOPPED), [pinned], settings=settings)
    assert outcome(decision) == stopped("worker2")
    assert decision.reason.startswith("making room")


def test_making_room_spares_an_idle_worker_another_task_is_pinned_to():
    settings = ScalingSettings(max_workers=3)
    tasks = [task("t-pin01", pinned_worker="worker4"), task("t-pin02", pinned_worker="worker2")]
    decision = decide(fleet(IDLE, IDLE, BUSY, STOPPED), tasks, settings=settings)
    assert outcome(decision) == stopped("worker1")


def test_at_max_with_no_spare_idle_worker_the_pinned_task_waits():
    settings = ScalingSettings(max_workers=2)
    pinned = task("t-pin01", pinned_worker="worker3")
    decision = decide(fleet(BUSY, BUSY, STOPPED), [pinned], settings=settings)
    assert outcome(decision) == NOTHING


def test_after_making_room_the_next_tick_starts_the_pinned_worker():
    settings = ScalingSettings(max_workers=2)
    pinned = task("t-pin01", pinned_worker="worker3")
    first = decide(fleet(IDLE, IDLE, STOPPED), [pinned], settings=settings)
    assert outcome(first) == stopped("worker2")
    second = decide(fleet(IDLE, STOPPED, STOPPED), [pinned], settings=settings)
    assert outcome(second) == started("worker3")


# --- quiet_since ------------------------------------------------------------------------------


def test_quiet_since_starts_now_when_the_queue_is_first_seen_empty():
    assert quiet_since(None, 0, T0) == T0


def test_quiet_since_keeps_its_start_while_the_queue_stays_empty():
    assert quiet_since(at(-30), 0, T0) == at(-30)


def test_quiet_since_resets_when_something_is_pending():
    assert quiet_since(at(-30), 1, T0) is None


def test_a_pending_task_restarts_the_scale_down_delay():
    states = fleet(IDLE, IDLE, IDLE)
    since = quiet_since(None, 0, at(-100))  # quiet from T0-100s ...
    since = quiet_since(since, 1, at(-50))  # ... a task arrives at T0-50s and is taken ...
    since = quiet_since(since, 0, at(-30))  # ... quiet again from T0-30s
    decision = decide_scaling(FleetView(states, 0, [], since, T0), DEFAULTS)
    assert since == at(-30)
    assert outcome(decision) == NOTHING


def test_no_second_start_while_a_started_worker_is_still_starting():
    assert outcome(decide(fleet(BUSY, STARTING, STOPPED), pending_tasks(10))) == NOTHING


def test_tasks_pinned_to_a_busy_worker_do_not_count_towards_scaling_up():
    waiting = [task(f"t-pin{i}", pinned_worker="worker1") for i in range(5)]
    assert outcome(decide(fleet(BUSY, STOPPED), waiting)) == NOTHING


def test_split_pending_counts_open_tasks_and_lists_pinned_ones_in_queue_order():
    late = task("t-pin02", pinned_worker="worker2", created_at=at(5))
    early = task("t-pin01", pinned_worker="worker3", created_at=at(1))
    open_count, pinned = split_pending([*pending_tasks(3), late, early])
    assert open_count == 3
    assert [t.id for t in pinned] == ["t-pin01", "t-pin02"]


def test_many_open_pending_tasks_scale_up_by_their_count_alone():
    view = FleetView(fleet(BUSY, STOPPED), 10_000, [], None, T0)
    assert outcome(decide_scaling(view, DEFAULTS)) == started("worker2")


# --- a message waiting in a stopped worker's chat -----------------------------------------


def test_a_message_waiting_in_a_stopped_workers_chat_starts_that_worker():
    settings = ScalingSettings(min_workers=3)
    states = fleet(IDLE, IDLE, IDLE, STOPPED, STOPPED)
    decision = decide(states, settings=settings, quiet_for=10, wanted=frozenset({"worker5"}))
    assert outcome(decision) == started("worker5")
    assert "worker5's chat" in decision.reason


def test_a_wanted_worker_that_already_runs_starts_nothing():
    decision = decide(fleet(IDLE, STOPPED), wanted=frozenset({"worker1"}))
    assert outcome(decision) == NOTHING


def test_a_wanted_worker_in_error_starts_nothing():
    decision = decide(fleet(IDLE, ERROR), wanted=frozenset({"worker2"}))
    assert outcome(decision) == NOTHING


def test_pinned_tasks_go_before_wanted_workers():
    pinned = task("t-pin01", pinned_worker="worker2")
    decision = decide(fleet(IDLE, STOPPED, STOPPED), [pinned], wanted=frozenset({"worker3"}))
    assert outcome(decision) == started("worker2")


def test_at_max_a_wanted_worker_makes_room_like_a_pinned_task():
    settings = ScalingSettings(max_workers=2)
    decision = decide(fleet(IDLE, IDLE, STOPPED), settings=settings,
                      wanted=frozenset({"worker3"}))
    assert outcome(decision) == stopped("worker2")
    assert decision.reason.startswith("making room for worker3")


def test_making_room_spares_an_idle_worker_a_pinned_task_waits_for():
    settings = ScalingSettings(max_workers=2)
    pinned = task("t-pin01", pinned_worker="worker2")
    decision = decide(fleet(IDLE, IDLE, STOPPED), [pinned], settings=settings,
                      wanted=frozenset({"worker3"}))
    assert outcome(decision) == stopped("worker1")


def test_at_max_with_every_worker_busy_the_wanted_worker_waits():
    settings = ScalingSettings(max_workers=2)
    decision = decide(fleet(BUSY, BUSY, STOPPED), settings=settings,
                      wanted=frozenset({"worker3"}))
    assert outcome(decision) == NOTHING


# --- a worker bot just added with /addworker ---------------------------------------------


def test_a_just_added_worker_starts_when_the_fleet_has_room() -> None:
    states = {"worker1": IDLE, "worker2": STOPPED, "worker6": STOPPED}
    decision = decide(states, fresh=frozenset({"worker6"}))
    assert (decision.action, decision.slot) == started("worker6")
    assert "added" in decision.reason


def test_a_just_added_worker_does_not_push_out_a_running_one_at_max_workers() -> None:
    states = {f"worker{i}": IDLE for i in range(1, 6)} | {"worker6": STOPPED}
    decision = decide(states, fresh=frozenset({"worker6"}))
    assert (decision.action, decision.slot) == NOTHING


def test_a_pinned_task_starts_its_worker_before_a_just_added_one() -> None:
    states = {"worker1": BUSY, "worker2": STOPPED, "worker6": STOPPED}
    decision = decide(states, [task("t-1", pinned_worker="worker2")], fresh=frozenset({"worker6"}))
    assert (decision.action, decision.slot) == started("worker2")
