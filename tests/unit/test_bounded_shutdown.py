"""Each shutdown step is bounded: one stuck part cannot keep the process from stopping."""

from __future__ import annotations

import asyncio
import time

import pytest

from fleetgram.aio import bounded


async def test_a_step_that_finishes_in_time_counts_as_done():
    ran = []

    async def step() -> None:
        ran.append(True)

    assert await bounded("quick", step(), 1.0) is True
    assert ran == [True]


async def test_a_step_that_overruns_is_cancelled_and_given_up_on_in_time():
    cancelled = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    began = time.monotonic()
    assert await bounded("stuck", stuck(), 0.2) is False
    assert time.monotonic() - began < 2.0
    await asyncio.wait_for(cancelled.wait(), 2)


async def test_a_step_that_swallows_its_cancellation_is_not_waited_for():
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # refuses to stop

    began = time.monotonic()
    assert await bounded("stubborn", stubborn(), 0.2) is False
    assert time.monotonic() - began < 2.0
    release.set()


async def test_a_failing_step_is_reported_not_raised():
    async def broken() -> None:
        raise RuntimeError("the store was already closed")

    assert await bounded("broken", broken(), 1.0) is False


async def test_the_callers_cancellation_is_passed_on():
    async def slow() -> None:
        await asyncio.sleep(3600)

    caller = asyncio.create_task(bounded("slow", slow(), 60))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
