"""SIGTERM and Ctrl-C stop a real `fleetgram up` within 5 s, exit 0, and the task running at
that moment is left with its "interrupted" note in the worker chat and kept for the next start."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from fleetgram.domain import TaskState
from tests.e2e.harness import MASTER, World, task_id_in, worker_bot
from tests.e2e.test_restart import UpProcess, _task, _until_state, up  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e

STOPS_WITHIN = 5.0


async def _worker_chat_with(world: World, text: str, timeout: float) -> str:
    """The worker bot whose chat shows `text` (any of the two slots)."""
    deadline = time.monotonic() + timeout
    while True:
        for n in (1, 2):
            if world.ada.sees(worker_bot(n), text):  # a message, or the streaming draft
                return worker_bot(n)
        if time.monotonic() > deadline:
            chats = {worker_bot(n): world.ada.bot_texts(worker_bot(n)) for n in (1, 2)}
            raise AssertionError(f"no worker chat shows {text!r}: {chats}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
async def test_a_stop_signal_mid_task_exits_within_5s_and_leaves_the_interrupted_note(
    world: World, up: UpProcess, sig: int  # noqa: F811 (the fixture)
) -> None:
    world.claude.tokens_per_second = 4
    await world.open_chats(world.ada, workers=2)
    await up.start()
    await world.ada.send(MASTER, "a long story please")
    task_id = task_id_in((await world.ada.wait_for_text(MASTER, "a long story", 20)).text)
    await _until_state(world, task_id, TaskState.RUNNING, 20)
    chat = await _worker_chat_with(world, task_id, 20)  # its header is in a worker chat

    assert up.proc is not None
    began = time.monotonic()
    up.proc.send_signal(sig)
    code = await asyncio.wait_for(up.proc.wait(), 15)
    took = time.monotonic() - began

    assert code == 0
    assert took < STOPS_WITHIN, f"stopping took {took:.1f}s"
    note = (f"⏸ {task_id} interrupted: the worker stopped. "
            "It runs again when the fleet is back.")
    await world.ada.wait_for_text(chat, note, 5)
    # Nothing lost: the task waits for the next start (running here, requeued at boot).
    task = await _task(world, task_id)
    assert task is not None and task.state in (TaskState.RUNNING, TaskState.PENDING)
    assert task.attempts == 1
