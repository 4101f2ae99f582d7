"""fleetgram.aio.wait_event: the bounded event wait of the loops that must stop when told."""

from __future__ import annotations

import asyncio

import pytest

from fleetgram.aio import wait_event


async def test_it_says_true_when_the_event_is_set() -> None:
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await wait_event(event, 5.0) is True


async def test_it_says_false_when_the_time_is_up() -> None:
    assert await wait_event(asyncio.Event(), 0.01) is False


async def test_a_cancel_that_meets_the_event_being_set_still_cancels() -> None:
    """The case asyncio.wait_for gets wrong on Python 3.11: the event is set and the waiter
    cancelled in the same turn of the loop; the cancellation must not be lost."""
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_event(event, 10.0))
    await asyncio.sleep(0)  # it is waiting now
    event.set()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter


async def test_a_loop_around_it_stops_when_cancelled_as_its_event_is_set() -> None:
    event, rounds = asyncio.Event(), 0

    async def loop() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await wait_event(event, 10.0)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    await asyncio.wait_for(asyncio.wait({task}), 1.0)
    assert task.cancelled() and rounds == 1
