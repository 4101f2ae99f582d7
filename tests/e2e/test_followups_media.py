"""Follow-ups by reply (issue 11, item 3) whatever the reply carries: a photo, an album, a
document, a voice note, or a command that queues a prompt (/urgent) continues the task it
replies to, as a text reply does (tests/e2e/test_followups.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetgram.domain import TaskState
from fleetgram.emulators.telegram_api import SimUser
from fleetgram.emulators.transcribe_api import TranscribeEmulator
from tests.e2e.agent_world import agent_overrides
from tests.e2e.harness import MASTER, World, task_id_in, wait_task, wait_until, worker_bot
from tests.e2e.test_followups import (
    bot_message,
    direct_task,
    queued_behind_a_busy_worker,
    request_for,
    request_text,
)
from tests.e2e.test_voice import transcriber, voice_settings  # noqa: F401 (a fixture)
from tests.emulators.agent_script import AgentStory, install, say

pytestmark = pytest.mark.e2e

WORKER = worker_bot(1)


def _photo(user: SimUser, n: int) -> dict[str, Any]:
    """A photo's sizes as Telegram sends them (smallest first), its bytes marked with `n`."""
    sizes = []
    for width, height in ((90, 67), (1280, 960)):
        stored = user._emu._store_file(f"r{n}_{width}.jpg", b"\xff\xd8" + bytes([n]) * width,
                                       "image/jpeg", folder="photos")
        sizes.append({"file_id": stored["file_id"], "file_unique_id": stored["file_unique_id"],
                      "width": width, "height": height, "file_size": stored["file_size"]})
    return {"photo": sizes}


async def reply_with_photo(user: SimUser, bot: str, message_id: int, caption: str) -> int:
    """Swipe to reply to `message_id`, attach a photo, type `caption`."""
    return await user._post(bot, caption, [], None, media=_photo(user, 1), reply_to=message_id)


async def reply_with_album(user: SimUser, bot: str, message_id: int, captions: list[str],
                           group: str) -> list[int]:
    """An album sent as a reply: every part carries the reply (one sendMultiMedia)."""
    return [await user._post(bot, caption, [], None,
                             media={**_photo(user, n), "media_group_id": group},
                             reply_to=message_id)
            for n, caption in enumerate(captions)]


async def reply_with_document(user: SimUser, bot: str, message_id: int, name: str,
                              content: bytes, caption: str, mime: str) -> int:
    document = {**user._emu._store_file(name, content, mime), "caption": caption}
    return await user._post(bot, caption, [], document, reply_to=message_id)


async def reply_with_voice(user: SimUser, bot: str, message_id: int) -> int:
    stored = user._emu._store_file("voice.oga", b"OggS" + bytes(3000), "audio/ogg",
                                   folder="voice")
    voice = {"file_id": stored["file_id"], "file_unique_id": stored["file_unique_id"],
             "duration": 3, "mime_type": "audio/ogg", "file_size": stored["file_size"]}
    return await user._post(bot, "", [], None, media={"voice": voice}, reply_to=message_id)


async def test_a_photo_replying_to_a_done_notice_continues_that_conversation(
    world: World,
) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        first_id = await world.prompt("remember the colour teal")
        await wait_task(fleet, first_id, TaskState.COMPLETED)
        notice = await bot_message(world.ada, MASTER, f"✅ {first_id} done")

        await reply_with_photo(world.ada, MASTER, notice.message_id, "is that colour in here")

        receipt = await bot_message(world.ada, MASTER, f"↪️ follow-up of {first_id}")
        await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, 20)
        body = await wait_until(lambda: request_for(world, "is that colour in here"), 10,
                                "the follow-up's Claude request")
    assert "remember the colour teal" in request_text(body)
    assert [b["type"] for b in world.claude.media_blocks()] == ["image"]


async def test_a_voice_note_replying_to_a_receipt_continues_that_task(
    world: World, transcriber: TranscribeEmulator,  # noqa: F811 (the imported fixture)
) -> None:
    transcriber.script("and now in French")
    async with world.fleet(MAX_WORKERS=1, **voice_settings(transcriber)) as fleet:
        await world.open_chats(world.ada, 1)
        first_id = await world.prompt("say good morning")
        await wait_task(fleet, first_id, TaskState.COMPLETED)
        receipt = await bot_message(world.ada, MASTER, f"🆕 {first_id}")

        await reply_with_voice(world.ada, MASTER, receipt.message_id)

        await world.ada.wait_to_see(MASTER, "🎙 and now in French")
        follow = await bot_message(world.ada, MASTER, f"↪️ follow-up of {first_id}")
        await wait_task(fleet, task_id_in(follow.text), TaskState.COMPLETED, 20)
        body = await wait_until(lambda: request_for(world, "and now in French"), 10,
                                "the follow-up's Claude request")
    assert "say good morning" in request_text(body)


async def test_an_album_replying_to_a_pending_tasks_receipt_adds_its_photos_to_that_task(
    world: World,
) -> None:
    world.claude.hang_next(1)  # the first task keeps the only worker busy
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada, 1)
        waiting, receipt = await queued_behind_a_busy_worker(
            world, fleet, "design the release banner")

        await reply_with_album(world.ada, MASTER, receipt.message_id,
                               ["", "use these two logos"], group="15001")

        note = await bot_message(world.ada, MASTER, f"✏️ {waiting} has not started yet")
        assert "your reply and its 2 files were added to it" in note.text
        task = await fleet.store.get_task(waiting)
        assert task is not None and task.state == TaskState.PENDING
        assert task.prompt == "design the release banner\n\nuse these two logos"
        files = await fleet.store.load_attachments(waiting)
        assert [f.data[2] for f in files] == [0, 1]  # both photos, in the order sent
        assert await fleet.store.count_tasks(list(TaskState)) == 2  # nothing new was queued


async def test_urgent_replying_to_a_done_notice_is_an_urgent_follow_up(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        first_id = await world.prompt("remember the number 42")
        await wait_task(fleet, first_id, TaskState.COMPLETED)
        notice = await bot_message(world.ada, MASTER, f"✅ {first_id} done")

        await world.ada.reply(MASTER, notice.message_id, "/urgent which number was it")

        receipt = await bot_message(world.ada, MASTER, f"↪️ follow-up of {first_id}")
        assert "priority 1 (urgent)" in receipt.text
        await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, 20)
        body = await wait_until(lambda: request_for(world, "which number was it"), 10,
                                "the follow-up's Claude request")
    assert "remember the number 42" in request_text(body)


async def test_urgent_replying_to_a_pending_tasks_receipt_makes_that_task_urgent(
    world: World,
) -> None:
    world.claude.hang_next(1)  # the first task keeps the only worker busy
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        waiting, receipt = await queued_behind_a_busy_worker(world, fleet, "!8 tidy the changelog")

        await world.ada.reply(MASTER, receipt.message_id, "/urgent the release is today")

        note = await bot_message(world.ada, MASTER, f"✏️ {waiting} has not started yet")
        assert "it now has priority 1 (urgent)" in note.text
        task = await fleet.store.get_task(waiting)
        assert task is not None and task.priority == 1
        assert "the release is today" in task.prompt


async def test_a_plain_reply_to_a_pending_task_leaves_its_priority(world: World) -> None:
    world.claude.hang_next(1)
    async with world.fleet(MAX_WORKERS=1, CLAUDE_TIMEOUT=120) as fleet:
        await world.open_chats(world.ada)
        waiting, receipt = await queued_behind_a_busy_worker(world, fleet, "!8 tidy the changelog")

        await world.ada.reply(MASTER, receipt.message_id, "and the readme")

        note = await bot_message(world.ada, MASTER, f"✏️ {waiting} has not started yet")
        assert "priority" not in note.text
        task = await fleet.store.get_task(waiting)
        assert task is not None and task.priority == 8


async def test_a_document_replying_to_a_worker_answer_continues_there(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        first = await world.ada.send(WORKER, "remember the word aardvark")
        first_id = await direct_task(fleet, first)
        await wait_task(fleet, first_id, TaskState.COMPLETED)
        answer = await bot_message(world.ada, WORKER, "Answer to: remember the word aardvark")
        await world.ada.send(WORKER, "/new")  # a plain message would now start fresh
        await world.ada.wait_to_see(WORKER, "Fresh conversation")

        follow = await reply_with_document(world.ada, WORKER, answer.message_id, "list.txt",
                                           b"aardvark\nbadger\n", "is that word in this list",
                                           "text/plain")

        follow_id = await direct_task(fleet, follow)
        done = await wait_task(fleet, follow_id, TaskState.COMPLETED, 20)
        await world.ada.wait_to_see(WORKER, f"↪️ follow-up of {first_id}")
        body = await wait_until(lambda: request_for(world, "is that word in this list"), 10,
                                "the follow-up's Claude request")
    assert done.worker == "worker1"
    assert "remember the word aardvark" in request_text(body)
    assert "badger" in request_text(body)  # the file came with it


async def test_an_album_replying_to_a_worker_answer_is_one_follow_up_there(
    world: World,
) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        first = await world.ada.send(WORKER, "remember the word zebra")
        first_id = await direct_task(fleet, first)
        await wait_task(fleet, first_id, TaskState.COMPLETED)
        answer = await bot_message(world.ada, WORKER, "Answer to: remember the word zebra")
        await world.ada.send(WORKER, "/new")
        await world.ada.wait_to_see(WORKER, "Fresh conversation")

        parts = await reply_with_album(world.ada, WORKER, answer.message_id,
                                       ["which of these shows it", ""], group="15002")

        follow_id = await direct_task(fleet, parts[0])
        await wait_task(fleet, follow_id, TaskState.COMPLETED, 20)
        await world.ada.wait_to_see(WORKER, f"↪️ follow-up of {first_id}")
        body = await wait_until(lambda: request_for(world, "which of these shows it"), 10,
                                "the follow-up's Claude request")
        assert await fleet.store.count_tasks(list(TaskState)) == 2
    assert "remember the word zebra" in request_text(body)
    assert [b["type"] for b in world.claude.media_blocks()] == ["image", "image"]


async def test_an_agent_follow_up_by_photo_continues_the_session_with_the_photo_in_the_workspace(
    world: World, tmp_path: Path,
) -> None:
    install(world.claude, AgentStory("remember the animal", [say("Remembered: otter.")]),
            AgentStory("is it this animal", [say("Yes, an otter.")]))
    async with world.fleet(1, **agent_overrides(tmp_path, None)) as fleet:
        await world.open_chats(world.ada, 1)
        first_id = await world.prompt("remember the animal otter")
        await wait_task(fleet, first_id, TaskState.COMPLETED, 30)
        notice = await bot_message(world.ada, MASTER, f"✅ {first_id} done")

        await reply_with_photo(world.ada, MASTER, notice.message_id, "is it this animal")

        receipt = await bot_message(world.ada, MASTER, f"↪️ follow-up of {first_id}")
        follow_id = task_id_in(receipt.text)
        await wait_task(fleet, follow_id, TaskState.COMPLETED, 30)
    asked = request_for(world, "is it this animal")
    assert asked is not None and "remember the animal otter" in request_text(asked)
    assert f".fleetgram/uploads/{follow_id}/photo_" in request_text(asked)
    saved = tmp_path / "workspaces" / "worker1" / "repo" / ".fleetgram" / "uploads" / follow_id
    assert len(list(saved.iterdir())) == 1
