"""Shutdown helpers: waiting for children never swallows the caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from fleetgram.aio import wait_ended


async def test_waiting_for_a_cancelled_child_returns_quietly() -> None:
    child = asyncio.create_task(asyncio.sleep(10))
    child.cancel()
    await wait_ended([child])
    assert child.cancelled()


async def test_waiting_for_a_failed_child_returns_quietly() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    child = asyncio.create_task(fail())
    await wait_ended([child])
    assert isinstance(child.exception(), RuntimeError)


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    child = asyncio.create_task(asyncio.sleep(10))

    async def stopper() -> str:
        await wait_ended([child])
        return "carried on"  # the bug this guards against: the caller kept running

    caller = asyncio.create_task(stopper())
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    child.cancel()
