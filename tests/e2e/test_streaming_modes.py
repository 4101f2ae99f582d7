"""How an answer streams in a worker's private chat, end to end (the real fleet against the
Telegram emulator): as a draft (sendMessageDraft, Bot API 9.5+) that becomes one message when
the answer is done; by editing messages where drafts are unavailable (a server without the
method) or turned off (STREAM_DRAFTS=0). Every way, the final text is the whole answer."""

from __future__ import annotations

import pytest

from tests.e2e.harness import World, worker_bot

pytestmark = pytest.mark.e2e

W1 = worker_bot(1)
ANSWER = "Answer to: stream it. " + " ".join(f"word{i}" for i in range(60)) + " THE END."


def final_of(world: World, task_id: str) -> str:
    (final,) = [t for t in world.ada.bot_texts(W1) if task_id in t and "✅" in t]
    return final


async def test_a_private_chat_sees_a_growing_draft_then_one_message_with_the_whole_answer(
        world: World) -> None:
    world.claude.tokens_per_second = 40
    world.claude.script(ANSWER)
    async with world.fleet(MIN_WORKERS=1, MAX_WORKERS=1):
        await world.open_chats(world.ada, 1)
        task_id = await world.prompt("stream it")
        await world.ada.wait_to_see(W1, "word10")
        assert not any("word10" in t for t in world.ada.bot_texts(W1))  # a draft, no message
        await world.ada.wait_for_text(W1, f"✅ {task_id} done", timeout=20)
    shown = [d.text for d in world.ada.draft_log(W1)]
    assert len(shown) >= 3 and any("word5" in t and "THE END" not in t for t in shown)
    assert "THE END." in final_of(world, task_id)
    answers = [m for m in world.ada.chat(W1) if m.from_bot and task_id in m.text]
    assert len(answers) == 1 and answers[0].edits == 0  # sent once, whole
    assert world.ada.visible_draft(W1) is None  # the message replaced the draft


async def test_where_telegram_has_no_drafts_the_answer_streams_by_edits(world: World) -> None:
    world.telegram.drafts_supported = False
    world.claude.tokens_per_second = 40
    world.claude.script(ANSWER)
    async with world.fleet(MIN_WORKERS=1, MAX_WORKERS=1, STREAM_EDIT_INTERVAL="0.2"):
        await world.open_chats(world.ada, 1)
        task_id = await world.prompt("stream it")
        await world.ada.wait_for_text(W1, f"✅ {task_id} done", timeout=20)
    (answer,) = [m for m in world.ada.chat(W1) if m.from_bot and task_id in m.text]
    assert answer.edits >= 2  # it grew in place
    assert any("word5" in t and "THE END" not in t for t in answer.edit_history)
    assert "THE END." in answer.text
    assert world.ada.draft_log(W1) == []


async def test_stream_drafts_0_streams_by_edits_even_where_drafts_work(world: World) -> None:
    world.claude.tokens_per_second = 40
    world.claude.script(ANSWER)
    async with world.fleet(MIN_WORKERS=1, MAX_WORKERS=1, STREAM_DRAFTS="0",
                           STREAM_EDIT_INTERVAL="0.2"):
        await world.open_chats(world.ada, 1)
        task_id = await world.prompt("stream it")
        await world.ada.wait_for_text(W1, f"✅ {task_id} done", timeout=20)
    (answer,) = [m for m in world.ada.chat(W1) if m.from_bot and task_id in m.text]
    assert answer.edits >= 2 and "THE END." in answer.text
    assert world.telegram.calls_to(W1, "sendMessageDraft") == []
