"""The worker's task path as plain decisions: how a run ends, what each chat is told, how long
store writes are retried, and which direct messages are refused. No I/O here.

A run goes claimed -> running -> completed | failed | cancelled | requeued (or interrupted,
when the worker itself stops: the task stays running in the store and is requeued when the
worker starts again). `fleetgram.worker.run` performs the steps; every step's failure maps to
one of these endings, and the worker returns to idle whatever happens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum

from fleetgram.claude.runner import describe_error


class Phase(StrEnum):
    CLAIMED = "claimed"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"
    INTERRUPTED = "interrupted"  # the worker stopped; requeued when it starts again


class Step(StrEnum):
    """The steps of a run, in order; a failure names the step it happened in."""

    SLOT = "marking the worker busy"
    MARK_RUNNING = "starting the task"
    ANNOUNCE = "announcing the start"
    FIRST_MESSAGE = "opening the worker chat"
    CONVERSATION = "loading the conversation"
    CLAUDE = "asking Claude"
    TURNS = "saving the conversation"
    FINISH = "recording the outcome"
    FLUSH = "showing the answer"


@dataclass(frozen=True)
class Ending:
    phase: Phase
    reason: str | None = None


class StepFailed(Exception):
    """A step that may not fail silently gave up (its retries spent)."""

    def __init__(self, step: Step, cause: BaseException) -> None:
        super().__init__(f"{step.value}: {describe_error(cause)}")
        self.step = step
        self.cause = cause


# Steps whose failure sends the task back to the queue (nothing of it ran yet, or what ran
# can run again); any other failure ends it as failed.
_REQUEUE_STEPS = frozenset({Step.SLOT, Step.MARK_RUNNING, Step.CONVERSATION})


def ending_for(
    error: BaseException | None, *, cancelled_by_user: bool = False, shutting_down: bool = False
) -> Ending:
    """How a run ends, from what stopped it (None: Claude answered)."""
    if shutting_down:
        return Ending(Phase.INTERRUPTED, "the worker stopped")
    if cancelled_by_user:
        return Ending(Phase.CANCELLED)
    if error is None:
        return Ending(Phase.COMPLETED)
    if isinstance(error, StepFailed):
        if error.step in _REQUEUE_STEPS:
            return Ending(Phase.REQUEUED, f"the database failed while {error.step.value} "
                                          f"({describe_error(error.cause)})")
        return Ending(Phase.FAILED, str(error))
    return Ending(Phase.FAILED, describe_error(error))


# --- what the worker chat is told -----------------------------------------------------------
def interrupted_note(task_id: str) -> str:
    return f"⏸ {task_id} interrupted: the worker stopped. It runs again when the fleet is back."


def cancelled_note(task_id: str) -> str:
    return f"⏹ {task_id} cancelled."


def failed_note(task_id: str, reason: str) -> str:
    return f"❌ {task_id} failed: {reason}"


def requeued_note(task_id: str, reason: str) -> str:
    return f"🔁 {task_id} went back to the queue: {reason}"


def limit_note(task_id: str, limit: str) -> str:
    """A task the agent stopped at a per-task limit (TASK_MAX_TURNS or TASK_BUDGET_USD)."""
    what = {"TASK_MAX_TURNS": "its turn limit", "TASK_BUDGET_USD": "its budget"}.get(
        str(limit), str(limit))
    return (f"⚠️ {task_id} stopped at {what} ({limit}): above is what it did so far. "
            "Reply with a new prompt to go on.")


def unrecorded_note(task_id: str) -> str:
    return (
        f"⚠️ {task_id}: the answer is complete, but I could not record it (the database "
        "refused writes); it may run again."
    )


# --- store writes ---------------------------------------------------------------------------
def retry_delays(budget: float, *, first: float = 0.2, cap: float = 2.0) -> Iterator[float]:
    """Waits between attempts of a store write: doubling from `first` up to `cap`, until
    their sum would pass `budget` seconds."""
    spent, delay = 0.0, first
    while spent + delay <= budget:
        yield delay
        spent += delay
        delay = min(delay * 2, cap)


# --- direct messages in a worker's chat -----------------------------------------------------
GROUP_REFUSAL = "I answer in private chats only: write to me directly."
NOT_TEXT = "I take text, photos, PDFs, text files and voice notes; that message is none of them."


def direct_refusal(chat_type: str | None, has_text: bool) -> str | None:
    """Why a message to a worker is not taken as a prompt (one line), or None."""
    if chat_type != "private":
        return GROUP_REFUSAL
    if not has_text:
        return NOT_TEXT
    return None


def prompt_rate_refusal(limit: int, wait: float) -> str:
    """The answer to a prompt over PROMPTS_PER_MINUTE (the master's wording)."""
    return (f"Slow down: at most {limit} prompts a minute (PROMPTS_PER_MINUTE). Nothing was "
            f"queued; try again in {max(1, math.ceil(wait))} s.")
