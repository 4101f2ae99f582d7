"""Chat mode: photos, image and PDF documents, text files and albums become tasks whose Claude
request carries them; what Claude cannot take gets one line and no task."""

from __future__ import annotations

from typing import Any

import pytest

from fleetgram.domain import Task, TaskState
from fleetgram.emulators.telegram_api import SimUser
from fleetgram.fleet import Fleet
from fleetgram.telegram.media import STICKER
from tests.e2e.harness import ADA, MASTER, World, task_id_in, wait_task, wait_until, worker_bot
from tests.unit.test_media import pdf, png

pytestmark = pytest.mark.e2e

W1 = worker_bot(1)


async def send_album(user: SimUser, bot: str, captions: list[str], group: str) -> list[int]:
    """Photos sent together as an album: one Message each, sharing ``media_group_id``
    (https://core.telegram.org/bots/api#message), the caption on whichever part it was typed."""
    emu = user._emu
    ids = []
    for n, caption in enumerate(captions):
        sizes = []
        for width, height in ((90, 67), (1280, 960)):
            stored = emu._store_file(f"a{n}_{width}.jpg", b"\xff\xd8" + bytes([n]) * width,
                                     "image/jpeg", folder="photos")
            sizes.append({"file_id": stored["file_id"], "file_unique_id": stored["file_unique_id"],
                          "width": width, "height": height, "file_size": stored["file_size"]})
        ids.append(await user._post(bot, caption, [], None,
                                    media={"photo": sizes, "media_group_id": group}))
    return ids


async def direct_task(fleet: Fleet, message_id: int) -> Task | None:
    return await fleet.store.find_task_by_message(ADA, message_id)


async def run_in_worker_chat(world: World, fleet: Fleet, message_id: int) -> Task:
    task = await wait_until(lambda: direct_task(fleet, message_id), 10, "the direct task")
    return await wait_task(fleet, task.id, TaskState.COMPLETED, 20)


def media(world: World, request: int = -1) -> list[dict[str, Any]]:
    return world.claude.media_blocks(request)


def prompt_text(world: World, request: int = -1) -> str:
    return world.claude.user_blocks(request)[-1]["text"]


async def test_a_photo_with_a_caption_to_the_master_runs_on_a_worker_with_the_image(
    world: World,
) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        await world.ada.send_photo(MASTER, caption="what is on this whiteboard?")
        receipt = await world.ada.wait_for_text(MASTER, "🆕")
        assert "what is on this whiteboard?" in receipt.text
        await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, 20)
    sent = next(m for m in world.ada.chat(MASTER) if not m.from_bot and m.photo)
    largest = world.telegram.file_bytes(sent.photo[-1]["file_id"])  # type: ignore[index]
    [block] = media(world)
    assert block["type"] == "image"
    assert block["source"]["media_type"] == "image/jpeg"
    assert block["bytes"] == largest
    assert prompt_text(world) == "what is on this whiteboard?"


async def test_a_photo_without_caption_asks_claude_to_look_at_it(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        sent = await world.ada.send_photo(W1)
        await run_in_worker_chat(world, fleet, sent)
    assert [b["type"] for b in media(world)] == ["image"]
    assert prompt_text(world) == "Look at the attached file."


async def test_a_pdf_in_a_worker_chat_reaches_claude_as_a_document(world: World) -> None:
    report = pdf(3)
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        sent = await world.ada.send_document(W1, "report.pdf", report, caption="summarise it",
                                             mime_type="application/pdf")
        task = await run_in_worker_chat(world, fleet, sent)
        assert task.worker == "worker1"
    [block] = media(world)
    assert (block["type"], block["title"]) == ("document", "report.pdf")
    assert block["source"]["media_type"] == "application/pdf" and block["bytes"] == report
    assert prompt_text(world) == "summarise it"


async def test_an_image_document_goes_as_an_image_of_its_real_type(world: World) -> None:
    chart = png(800, 600)
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        sent = await world.ada.send_document(W1, "chart.png", chart, caption="read the chart",
                                             mime_type="image/png")
        await run_in_worker_chat(world, fleet, sent)
    [block] = media(world)
    assert block["source"]["media_type"] == "image/png" and block["bytes"] == chart


async def test_an_album_of_three_photos_is_one_task_with_three_images(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        await send_album(world.ada, MASTER, ["", "compare these three", ""], group="13001")
        receipt = await world.ada.wait_for_text(MASTER, "🆕")
        await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, 20)
        assert await fleet.store.count_tasks(list(TaskState)) == 1
    assert [b["type"] for b in media(world)] == ["image"] * 3
    assert [b["bytes"][2] for b in media(world)] == [0, 1, 2]  # in the order sent
    assert prompt_text(world) == "compare these three"
    assert len([t for t in world.ada.bot_texts(MASTER) if t.startswith("🆕")]) == 1


async def test_an_oversized_image_gets_one_line_and_no_task(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.ada.start(MASTER)
        await world.ada.send_document(MASTER, "panorama.png", png(9000, 1200),
                                      caption="what city is this?", mime_type="image/png")
        answer = await world.ada.wait_for_text(MASTER, "panorama.png")
        assert answer.text == ("panorama.png is 9000×1200 pixels; Claude takes images up to "
                               "8000×8000.")
        assert await fleet.store.count_tasks(list(TaskState)) == 0
    assert world.claude.requests == []


async def test_a_text_file_is_inlined_in_the_prompt(world: World) -> None:
    source = b"def add(a, b):\n    return a - b\n"
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        sent = await world.ada.send_document(W1, "calc.py", source, caption="find the bug",
                                             mime_type="text/x-python")
        await run_in_worker_chat(world, fleet, sent)
    assert media(world) == []
    blocks = world.claude.user_blocks()
    assert blocks[0]["text"] == '<file name="calc.py">\ndef add(a, b):\n    return a - b\n</file>'
    assert blocks[-1]["text"] == "find the bug"


async def test_an_unsupported_document_is_answered_with_what_is_supported(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.ada.start(MASTER)
        await world.ada.send_document(MASTER, "budget.xlsx", b"PK\x03\x04", caption="sum it",
                                      mime_type="application/vnd.ms-excel")
        answer = await world.ada.wait_for_text(MASTER, "budget.xlsx")
        assert answer.text.startswith("budget.xlsx: I read photos and images (JPEG, PNG, GIF, ")
        assert await fleet.store.count_tasks(list(TaskState)) == 0


async def test_a_sticker_gets_a_one_line_answer_and_no_task(world: World) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.ada.start(MASTER)
        await world.open_chats(world.ada, 1)
        await world.ada.send_sticker(MASTER)
        await world.ada.send_sticker(W1)
        await world.ada.wait_for_text(MASTER, STICKER)
        await world.ada.wait_for_text(W1, STICKER)
        assert await fleet.store.count_tasks(list(TaskState)) == 0


async def test_a_follow_up_keeps_a_placeholder_and_does_not_resend_the_image(
    world: World,
) -> None:
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        sent = await world.ada.send_photo(W1, caption="what colour is the car?")
        await run_in_worker_chat(world, fleet, sent)
        follow = await world.ada.send(W1, "and the house?")
        await run_in_worker_chat(world, fleet, follow)
    assert len(media(world, 0)) == 1
    assert media(world, -1) == []
    history = world.claude.requests[-1]["messages"]
    assert history[0]["content"][0]["text"] == (
        f"[image: photo_{sent}.jpg]\n\nwhat colour is the car?")


async def test_a_photo_whose_download_meets_a_502_burst_still_becomes_a_task(
    world: World,
) -> None:
    """Telegram's front end answers 502 to getFile for a moment: the download is retried
    (python-telegram-bot's network retries, then ours) and the task runs with the image."""
    async with world.fleet(MAX_WORKERS=1) as fleet:
        await world.open_chats(world.ada, 1)
        world.telegram.fail_for(MASTER, 1.5, methods=["getFile"])
        await world.ada.send_photo(MASTER, caption="read the whiteboard")
        receipt = await world.ada.wait_for_text(MASTER, "🆕", timeout=20)
        await wait_task(fleet, task_id_in(receipt.text), TaskState.COMPLETED, 20)
    assert [c for c in world.telegram.calls_to(MASTER, "getFile") if c.status == 502]
    [block] = media(world)
    assert block["type"] == "image"
