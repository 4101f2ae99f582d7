"""The worker's task path as decisions: how a run ends, the notes, store retries, refusals."""

from __future__ import annotations

import sqlite3

import anthropic
import httpx

from fleetgram.claude.deadline import ClaudeDeadline, ClaudeStalled
from fleetgram.worker.steps import (
    GROUP_REFUSAL,
    NOT_TEXT,
    Ending,
    Phase,
    Step,
    StepFailed,
    direct_refusal,
    ending_for,
    interrupted_note,
    retry_delays,
)


def test_an_answer_completes_the_run():
    assert ending_for(None) == Ending(Phase.COMPLETED)


def test_the_worker_stopping_interrupts_whatever_else_happened():
    assert ending_for(RuntimeError("x"), cancelled_by_user=True, shutting_down=True).phase == (
        Phase.INTERRUPTED
    )


def test_a_user_cancel_cancels():
    assert ending_for(None, cancelled_by_user=True) == Ending(Phase.CANCELLED)


def test_a_stalled_stream_fails_with_its_human_reason():
    assert ending_for(ClaudeStalled(60)) == Ending(Phase.FAILED, "Claude stopped sending for 60 s")


def test_a_deadline_fails_with_its_human_reason():
    assert ending_for(ClaudeDeadline(600)) == Ending(
        Phase.FAILED, "Claude took longer than CLAUDE_TIMEOUT (600 s)"
    )


def test_a_store_failure_before_the_claude_call_requeues():
    for step in (Step.SLOT, Step.MARK_RUNNING, Step.CONVERSATION):
        ending = ending_for(StepFailed(step, sqlite3.OperationalError("database or disk is full")))
        assert ending.phase == Phase.REQUEUED
        assert ending.reason is not None and "database or disk is full" in ending.reason


def test_a_store_failure_after_the_claude_call_fails_rather_than_runs_again():
    ending = ending_for(StepFailed(Step.FINISH, OSError(28, "No space left on device")))
    assert ending.phase == Phase.FAILED
    assert ending.reason == "recording the outcome: OSError: [Errno 28] No space left on device"


def test_an_exception_without_a_message_still_has_a_reason():
    request = httpx.Request("POST", "https://api.anthropic.com/v1/messages")
    ending = ending_for(anthropic.APITimeoutError(request))
    assert ending.reason == "Claude API timed out (after retries)"
    assert ending_for(TimeoutError()).reason == "timed out"


def test_store_retries_double_up_to_a_cap_within_the_budget():
    assert list(retry_delays(10, first=0.5, cap=2)) == [0.5, 1, 2, 2, 2, 2]
    assert sum(retry_delays(20)) <= 20
    assert list(retry_delays(0.1)) == []


def test_group_chats_are_refused_with_one_line():
    assert direct_refusal("group", True) == GROUP_REFUSAL
    assert direct_refusal("supergroup", False) == GROUP_REFUSAL
    assert direct_refusal("channel", True) == GROUP_REFUSAL
    assert "\n" not in GROUP_REFUSAL


def test_a_message_without_text_is_answered_with_what_is_supported():
    assert direct_refusal("private", False) == NOT_TEXT
    assert "text" in NOT_TEXT and "photos" in NOT_TEXT and "voice" in NOT_TEXT


def test_a_private_text_message_is_a_prompt():
    assert direct_refusal("private", True) is None


def test_the_interrupted_note_says_it_runs_again():
    assert interrupted_note("t-7k2qf") == (
        "⏸ t-7k2qf interrupted: the worker stopped. It runs again when the fleet is back."
    )
