"""read_retrying: a read (getFile, a file's download) waits out 5xx and 429 and reads a lost
answer again; a refusal, or the last of its attempts, reaches the caller."""

from __future__ import annotations

import pytest
from telegram.error import BadRequest, NetworkError, RetryAfter

from fleetgram.telegram.retrying import read_retrying


def reader(*outcomes: object):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    async def read() -> object:
        calls.append(1)
        outcome = outcomes[len(calls) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return read, calls


async def test_a_bad_gateway_and_a_429_are_waited_out() -> None:
    read, calls = reader(NetworkError("Bad Gateway (502)"), RetryAfter(0), b"bytes")
    assert await read_retrying(read, max_wait=0.01) == b"bytes"
    assert len(calls) == 3


async def test_a_refusal_is_raised_at_once() -> None:
    read, calls = reader(BadRequest("Wrong file_id"), b"never")
    with pytest.raises(BadRequest):
        await read_retrying(read, max_wait=0.01)
    assert len(calls) == 1


async def test_the_last_failure_is_raised_when_the_attempts_are_spent() -> None:
    read, calls = reader(*[NetworkError("Bad Gateway (502)")] * 3)
    with pytest.raises(NetworkError):
        await read_retrying(read, attempts=3, max_wait=0.01)
    assert len(calls) == 3
