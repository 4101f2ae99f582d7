"""What to do after one Telegram send failed: the pure decision every sender of the fleet uses
(the master's outbox and direct answers, the workers' one-line notes).

A send that failed ambiguously (the request may have been processed: a lost reply, a read
timeout, an unparsable 200) is resent at most once; one that surely was not processed (a 5xx
answer, a failed connection) is retried with backoff; a 429 waits as long as Telegram says.
"""

from __future__ import annotations

import datetime as dtm
import warnings
from dataclasses import dataclass
from enum import StrEnum

import httpx
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.warnings import PTBDeprecationWarning

# Sends that may have reached the chat; one resend after the first is allowed, no more.
MAX_AMBIGUOUS_SENDS = 2
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


class Action(StrEnum):
    DELIVERED = "delivered"  # Telegram accepted it
    WAIT = "wait"  # nothing was processed: try this chat again at `until`
    PLAIN = "plain"  # the HTML was refused: resend the same text without formatting now
    AMBIGUOUS = "ambiguous"  # it may have been shown: count it, resend once at most
    GIVE_UP = "give_up"  # it can never be delivered (blocked, chat gone): log and move on


@dataclass(frozen=True)
class Decision:
    action: Action
    until: float = 0.0  # for WAIT and AMBIGUOUS: when this chat may be tried again
    reason: str = ""


def backoff(failures: int) -> float:
    """Seconds to wait after `failures` consecutive unprocessed failures (1, 2, …)."""
    return min(BACKOFF_MAX, BACKOFF_START * 2 ** max(0, failures - 1))


def retry_after_seconds(error: RetryAfter) -> float:
    """``RetryAfter.retry_after`` in seconds: PTB 22 gives an int (deprecated, with a warning)
    or a ``datetime.timedelta`` (with ``PTB_TIMEDELTA=true``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = error.retry_after
    if isinstance(value, dtm.timedelta):
        return value.total_seconds()
    return float(value)


# PTB wraps the HTTP client's errors as NetworkError("httpx.<Name>: ...") raised from them.
_NEVER_SENT = ("httpx.Connect", "httpx.Proxy", "httpx.PoolTimeout")


def _transport_failure(error: BaseException) -> bool:
    return isinstance(error.__cause__, httpx.HTTPError) or str(error).startswith("httpx.")


def _reached_server(error: BaseException) -> bool | None:
    """For a transport-level failure: False if the request surely never reached Telegram
    (connecting failed, no pooled connection), True/None if it may have."""
    cause = error.__cause__
    if isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return False
    if str(error).startswith(_NEVER_SENT):
        return False
    return None


def maybe_processed(error: BaseException) -> bool:
    """Telegram may have carried out a call that failed this way (the request reached it and
    the answer was lost: a dropped connection, a timeout, a malformed body). A front end's
    5xx page or a refused connection mean it was not."""
    return decide(error, failures=1, html=False, now=0.0).action == Action.AMBIGUOUS


def decide(
    error: BaseException | None, *, failures: int, html: bool, now: float
) -> Decision:
    """What to do after one send. `failures`: unprocessed failures of this notice so far,
    this one included; `html`: the send used HTML; `now`: the loop's monotonic clock."""
    if error is None:
        return Decision(Action.DELIVERED)
    if isinstance(error, RetryAfter):
        # Telegram's own figure (https://core.telegram.org/bots/api#responseparameters):
        # "the number of seconds left to wait before the request can be repeated".
        return Decision(Action.WAIT, now + retry_after_seconds(error) + 0.1, "429")
    if isinstance(error, Forbidden | ChatMigrated):
        return Decision(Action.GIVE_UP, reason=str(error))
    if isinstance(error, BadRequest):
        if html and "parse entities" in str(error).lower():
            return Decision(Action.PLAIN, reason=str(error))
        return Decision(Action.GIVE_UP, reason=str(error))
    if isinstance(error, TimedOut):
        if _reached_server(error) is False:
            return Decision(Action.WAIT, now + backoff(failures), "connect timeout")
        return Decision(Action.AMBIGUOUS, now + backoff(1), "timed out")
    if isinstance(error, NetworkError):
        if _transport_failure(error):
            if _reached_server(error) is False:
                return Decision(Action.WAIT, now + backoff(failures), str(error))
            # The connection broke after the request went out (reset, no answer).
            return Decision(Action.AMBIGUOUS, now + backoff(1), str(error))
        if str(error).startswith("Unknown error in HTTP implementation"):
            return Decision(Action.AMBIGUOUS, now + backoff(1), str(error))
        # Telegram (or its front end) answered with an error status: nothing was processed
        # (a 502 Bad Gateway, a 500): retry with backoff.
        return Decision(Action.WAIT, now + backoff(failures), str(error))
    if type(error) is TelegramError and "invalid server response" in str(error).lower():
        # An HTTP 200 whose body is not JSON: the call may well have been processed.
        return Decision(Action.AMBIGUOUS, now + backoff(1), str(error))
    return Decision(Action.WAIT, now + backoff(failures), repr(error))
