"""Agent mode (WORKER_ENGINE=agent): an album (a Telegram media group) is one task, in the
master's chat and in a worker's, and every file of it lands in the task's upload folder of the
worker's workspace, named to Claude Code in the order sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetgram.domain import Task, TaskState
from fleetgram.fleet import Fleet
from tests.e2e.agent_world import agent_overrides, request_texts
from tests.e2e.harness import ADA, MASTER, World, task_id_in, wait_task, wait_until, worker_bot
from tests.e2e.test_media_chat import send_album
from tests.emulators.agent_script import AgentStory, install, say

pytestmark = pytest.mark.e2e

W1 = worker_bot(1)


def uploads(tmp_path: Path, task_id: str) -> Path:
    return tmp_path / "workspaces" / "worker1" / "repo" / ".fleetgram" / "uploads" / task_id


def album_part(n: int) -> bytes:
    """What send_album stores as part `n`'s largest photo size (the one downloaded)."""
    return b"\xff\xd8" + bytes([n]) * 1280


async def direct_task(fleet: Fleet, message_id: int) -> Task | None:
    return await fleet.store.find_task_by_message(ADA, message_id, made_in="worker1")


async def test_an_album_to_the_master_is_one_task_with_every_photo_in_the_workspace(
    world: World, tmp_path: Path,
) -> None:
    install(world.claude, AgentStory("compare these three", [say("They differ.")]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        sent = await send_album(world.ada, MASTER, ["", "compare these three", ""],
                                group="14001")
        receipt = await world.ada.wait_for(MASTER, lambda m: m.from_bot and "🆕" in m.text, 10)
        task_id = task_id_in(receipt.text)
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=30)
        assert await fleet.store.count_tasks(list(TaskState)) == 1
    assert len([t for t in world.ada.bot_texts(MASTER) if "🆕" in t]) == 1
    names = [f"photo_{message_id}.jpg" for message_id in sent]
    saved = uploads(tmp_path, task_id)
    assert {p.name for p in saved.iterdir()} == set(names)
    assert [(saved / name).read_bytes() for name in names] == [album_part(n) for n in range(3)]
    told = request_texts(world)[-1]
    assert "compare these three" in told and "The user attached 3 files" in told
    places = [told.index(f".fleetgram/uploads/{task_id}/{name}") for name in names]
    assert places == sorted(places)  # named in the order sent


async def test_an_album_in_a_worker_chat_is_one_task_there_with_every_photo(
    world: World, tmp_path: Path,
) -> None:
    install(world.claude, AgentStory("which is sharper", [say("The second.")]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        first, second = await send_album(world.ada, W1, ["which is sharper", ""], group="14002")
        task = await wait_until(lambda: direct_task(fleet, first), 10, "the album's task")
        done = await wait_task(fleet, task.id, TaskState.COMPLETED, timeout=30)
        assert await fleet.store.count_tasks(list(TaskState)) == 1
    assert done.worker == "worker1" and done.prompt == "which is sharper"
    saved = uploads(tmp_path, task.id)
    assert {p.name for p in saved.iterdir()} == {f"photo_{first}.jpg", f"photo_{second}.jpg"}
    assert "The user attached 2 files" in request_texts(world)[-1]


async def test_an_audio_file_is_a_file_to_work_on_not_a_voice_note(
    world: World, tmp_path: Path,
) -> None:
    install(world.claude, AgentStory("trim the silence", [say("Trimmed.")]))
    await world.open_chats(world.ada, 1)
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        await world.ada.send_document(MASTER, "memo.mp3", b"ID3" + bytes(64),
                                      caption="trim the silence", mime_type="audio/mpeg")
        receipt = await world.ada.wait_for(MASTER, lambda m: m.from_bot and "🆕" in m.text, 10)
        task_id = task_id_in(receipt.text)
        await wait_task(fleet, task_id, TaskState.COMPLETED, timeout=30)
    assert (uploads(tmp_path, task_id) / "memo.mp3").read_bytes() == b"ID3" + bytes(64)
    assert not any(t.startswith("🎙") for t in world.ada.bot_texts(MASTER))
