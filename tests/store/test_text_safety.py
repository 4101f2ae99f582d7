"""Text that a database cannot keep (a NUL: Postgres refuses it; a lone surrogate: not UTF-8)
is refused with UnstorableText before the database is touched, never with the engine's own
error; text the fleet produced itself is stored with U+FFFD in its place."""

from __future__ import annotations

import pytest

from fleetgram.domain import TaskState
from fleetgram.store import UnstorableText
from fleetgram.store.sql import SqlStore
from tests.store.support import at, make_task

NUL = "before\x00after"
SURROGATE = "emoji half \ud83d here"


@pytest.mark.parametrize(
    ("field", "text", "words"),
    [
        ("prompt", NUL, "NUL character (U+0000)"),
        ("prompt", SURROGATE, "lone surrogate (U+D83D)"),
        ("title", NUL, "NUL character"),
        ("title", SURROGATE, "lone surrogate"),
    ],
)
async def test_a_task_with_unstorable_text_is_refused_and_nothing_is_stored(
    store: SqlStore, field: str, text: str, words: str
) -> None:
    with pytest.raises(UnstorableText) as refused:
        await store.create_task(make_task(**{field: text}), ("queued", {}))
    assert refused.value.field == field
    assert words in str(refused.value) and f"the {field} cannot be stored" in str(refused.value)
    assert isinstance(refused.value, ValueError)
    assert await store.list_tasks() == []
    assert await store.pending_events() == []


@pytest.mark.parametrize("text", [NUL, SURROGATE], ids=["nul", "surrogate"])
async def test_an_edit_with_unstorable_text_is_refused_and_changes_nothing(
    store: SqlStore, text: str
) -> None:
    task = await store.create_task(make_task())
    with pytest.raises(UnstorableText):
        await store.update_pending_prompt(task.id, text, "title")
    assert await store.get_task(task.id) == task


async def test_text_that_can_be_stored_is_kept_exactly(store: SqlStore) -> None:
    prompt = "tabs\tand\nnewlines, emoji 🚀, RTL עברית, zero-width\u200bspace, \ufffd"
    task = await store.create_task(make_task(prompt=prompt, title=prompt[:20]))
    again = await store.get_task(task.id)
    assert again is not None and again.prompt == prompt


async def test_an_answer_with_unstorable_text_is_stored_with_replacement_characters(
    store: SqlStore,
) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    finished = await store.finish_task(
        task.id, "worker1", TaskState.FAILED, at(200), result=NUL, error=SURROGATE
    )
    assert finished is not None
    assert (finished.result, finished.error) == ("before\ufffdafter", "emoji half \ufffd here")
    assert await store.get_task(task.id) == finished


async def test_an_archived_record_with_unstorable_text_is_kept_with_replacement_characters(
    store: SqlStore,
) -> None:
    # A BotTask made with kubectl reaches SQL only through archive_task, unchecked.
    await store.archive_task(make_task(id="t-kubec", prompt=NUL, title=SURROGATE))
    archived = await store.get_task("t-kubec")
    assert archived is not None
    assert (archived.prompt, archived.title) == ("before\ufffdafter", "emoji half \ufffd here")


async def test_a_slot_error_with_unstorable_text_is_kept_with_replacement_characters(
    store: SqlStore,
) -> None:
    await store.update_slot("worker1", error=NUL)
    [slot] = await store.get_slots()
    assert slot.error == "before\ufffdafter"
