"""A worker's background deliveries (fleetgram.worker.run.Deliveries): the final messages of
ended tasks, one chain per chat, never lost silently."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleetgram.worker.run import Deliveries


async def test_a_delivery_in_a_chat_starts_after_the_previous_one_of_that_chat_ended() -> None:
    deliveries = Deliveries("worker1")
    shown: list[str] = []
    release = asyncio.Event()

    async def first() -> None:
        await release.wait()
        shown.append("first")

    async def second() -> None:
        shown.append("second")

    deliveries.add(1, "t-1", first())
    last = deliveries.add(1, "t-2", second())
    await asyncio.sleep(0)
    assert shown == []
    release.set()
    await last
    assert shown == ["first", "second"]


async def test_a_chat_waits_only_for_its_own_deliveries() -> None:
    deliveries = Deliveries("worker1")
    held = asyncio.Event()
    deliveries.add(1, "t-1", held.wait())
    await asyncio.wait_for(deliveries.wait_chat(2), 1)  # another chat: nothing to wait for
    waiting = asyncio.create_task(deliveries.wait_chat(1))
    await asyncio.sleep(0)
    assert not waiting.done()
    held.set()
    await asyncio.wait_for(waiting, 1)


async def test_a_failed_delivery_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    deliveries = Deliveries("worker1")

    async def failing() -> None:
        raise RuntimeError("Telegram said no")

    async def fine() -> None:
        return None

    caplog.set_level(logging.ERROR)
    deliveries.add(1, "t-1", failing())
    job = deliveries.add(1, "t-2", fine())  # the chain goes on after a failure
    await job
    assert deliveries.failures == 1 and deliveries.delivered == 1
    assert "could not deliver a final answer" in caplog.text


async def test_draining_waits_for_deliveries_and_cancelling_cuts_the_rest_short() -> None:
    deliveries = Deliveries("worker1")
    forever = asyncio.Event()
    deliveries.add(1, "t-1", asyncio.sleep(0.01))
    deliveries.add(2, "t-2", forever.wait())
    assert await deliveries.drain(0.5) is False
    assert deliveries.pending == 1  # the quick one ended, the stuck one is still there
    await deliveries.cancel()
    assert deliveries.pending == 0 and deliveries.failures == 0
