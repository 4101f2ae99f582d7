"""The store additions of agent mode (issue 8), on SQLite and Postgres: a conversation's Claude
Code session, what a running task waits for from its user, the files sent with a prompt, and a
restarted worker keeping its interrupted tasks."""

from __future__ import annotations

import pytest

from fleetgram.domain import Attachment, Task, TaskState
from fleetgram.store import UnstorableText, sql
from fleetgram.store.migrate import load_migrations
from fleetgram.store.sql import SqlStore
from tests.store.support import OpenStore, at, make_task

APPROVAL = "approval: Bash `rm -rf build`"


async def _running(store: SqlStore, worker: str = "worker1") -> Task:
    task = await store.create_task(make_task())
    claimed = await store.claim_next(worker, at(100))
    assert claimed is not None and claimed.id == task.id
    running = await store.mark_running(task.id, worker, at(101))
    assert running is not None
    return running


async def _waiting(store: SqlStore, task_id: str) -> str | None:
    task = await store.get_task(task_id)
    assert task is not None
    return task.waiting


# --- sessions --------------------------------------------------------------------------------


async def test_a_conversation_starts_without_a_session(store: SqlStore) -> None:
    conversation = await store.active_conversation("worker1", 7)
    assert await store.session_of(conversation) is None


async def test_a_session_set_on_a_conversation_is_read_back(store: SqlStore) -> None:
    conversation = await store.active_conversation("worker1", 7)
    await store.set_session(conversation, "0b6c3f5e-session-1")
    assert await store.session_of(conversation) == "0b6c3f5e-session-1"


async def test_a_later_session_replaces_the_earlier_one(store: SqlStore) -> None:
    conversation = await store.active_conversation("worker1", 7)
    await store.set_session(conversation, "session-1")
    await store.set_session(conversation, "session-2")
    assert await store.session_of(conversation) == "session-2"


async def test_a_session_set_to_none_is_forgotten(store: SqlStore) -> None:
    conversation = await store.active_conversation("worker1", 7)
    await store.set_session(conversation, "session-1")
    await store.set_session(conversation, None)
    assert await store.session_of(conversation) is None


async def test_a_new_conversation_starts_without_the_old_ones_session(store: SqlStore) -> None:
    old = await store.active_conversation("worker1", 7)
    await store.set_session(old, "session-1")
    new = await store.new_conversation("worker1", 7)
    assert await store.session_of(new) is None
    assert await store.session_of(old) == "session-1"  # the old conversation keeps its own


async def test_sessions_belong_to_their_own_conversation(store: SqlStore) -> None:
    mine = await store.active_conversation("worker1", 7)
    other = await store.active_conversation("worker2", 7)
    await store.set_session(mine, "session-1")
    assert await store.session_of(other) is None


async def test_the_session_of_an_unknown_conversation_is_none(store: SqlStore) -> None:
    assert await store.session_of(987654) is None


async def test_setting_the_session_of_an_unknown_conversation_raises_key_error(
    store: SqlStore,
) -> None:
    with pytest.raises(KeyError):
        await store.set_session(987654, "session-1")


# --- waiting for the user --------------------------------------------------------------------


async def test_a_running_task_shows_what_it_waits_for(store: SqlStore) -> None:
    task = await _running(store)
    await store.set_waiting(task.id, APPROVAL)
    assert await _waiting(store, task.id) == APPROVAL
    [listed] = await store.list_tasks([TaskState.RUNNING])
    assert listed.waiting == APPROVAL


async def test_a_task_no_longer_waits_once_answered(store: SqlStore) -> None:
    task = await _running(store)
    await store.set_waiting(task.id, APPROVAL)
    await store.set_waiting(task.id, None)
    assert await _waiting(store, task.id) is None


async def test_an_assigned_task_may_wait_too(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    await store.set_waiting(task.id, APPROVAL)
    assert await _waiting(store, task.id) == APPROVAL


async def test_a_pending_task_is_never_marked_waiting(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.set_waiting(task.id, APPROVAL)
    assert await _waiting(store, task.id) is None


async def test_a_finished_task_is_never_marked_waiting(store: SqlStore) -> None:
    task = await _running(store)
    await store.finish_task(task.id, "worker1", TaskState.COMPLETED, at(200), result="ok")
    await store.set_waiting(task.id, APPROVAL)  # a late call, after the finish
    assert await _waiting(store, task.id) is None


async def test_finishing_a_task_clears_what_it_waited_for(store: SqlStore) -> None:
    task = await _running(store)
    await store.set_waiting(task.id, APPROVAL)
    finished = await store.finish_task(task.id, "worker1", TaskState.FAILED, at(200),
                                       error="denied")
    assert finished is not None and finished.waiting is None
    assert await _waiting(store, task.id) is None


async def test_requeueing_a_task_clears_what_it_waited_for(store: SqlStore) -> None:
    task = await _running(store)
    await store.set_waiting(task.id, APPROVAL)
    requeued = await store.requeue_task(task.id, "worker1", at(200), max_attempts=3,
                                        reason="stopped")
    assert requeued is not None and requeued.state is TaskState.PENDING
    assert requeued.waiting is None and await _waiting(store, task.id) is None


async def test_requeueing_a_dead_workers_tasks_clears_what_they_waited_for(
    store: SqlStore,
) -> None:
    task = await _running(store)
    await store.set_waiting(task.id, APPROVAL)
    [requeued] = await store.requeue_worker_tasks("worker1", at(200), max_attempts=3,
                                                  reason="offline")
    assert requeued.waiting is None and await _waiting(store, task.id) is None


async def test_a_task_failed_by_the_requeue_no_longer_waits(store: SqlStore) -> None:
    task = await _running(store)
    await store.set_waiting(task.id, APPROVAL)
    [failed] = await store.requeue_worker_tasks("worker1", at(200), max_attempts=1,
                                                reason="offline")
    assert failed.state is TaskState.FAILED and failed.waiting is None


async def test_what_a_task_waits_for_is_recorded_even_with_a_nul(store: SqlStore) -> None:
    task = await _running(store)
    await store.set_waiting(task.id, "approval: Bash `printf 'a\x00b'`")
    assert await _waiting(store, task.id) == "approval: Bash `printf 'a\ufffdb'`"


async def test_an_archived_task_keeps_what_it_waits_for(store: SqlStore) -> None:
    task = make_task(state=TaskState.RUNNING, worker="worker1", attempts=1, waiting=APPROVAL)
    await store.archive_task(task)
    assert await store.get_task(task.id) == task


# --- attachments -----------------------------------------------------------------------------


async def test_attachments_round_trip_their_bytes_in_the_order_added(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    every_byte = bytes(range(256))  # NUL, 0xFF and everything between: binary, not text
    photo = Attachment("photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0" + every_byte)
    notes = Attachment("notes.txt", None, "héllo ✓\n".encode())
    empty = Attachment("empty.bin", "application/octet-stream", b"")
    await store.add_attachments(task.id, [photo, notes])
    await store.add_attachments(task.id, [empty])
    assert await store.load_attachments(task.id) == [photo, notes, empty]


async def test_a_task_without_attachments_has_none(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    assert await store.load_attachments(task.id) == []


async def test_attachments_belong_to_their_own_task(store: SqlStore) -> None:
    mine = await store.create_task(make_task())
    other = await store.create_task(make_task())
    await store.add_attachments(mine.id, [Attachment("a.txt", "text/plain", b"a")])
    assert await store.load_attachments(other.id) == []


async def test_attachments_may_be_added_before_their_task_is_created(store: SqlStore) -> None:
    task = make_task()
    report = Attachment("report.pdf", "application/pdf", b"%PDF-1.7\n")
    await store.add_attachments(task.id, [report])
    await store.create_task(task)
    assert await store.load_attachments(task.id) == [report]


async def test_a_megabyte_attachment_round_trips(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    big = Attachment("big.bin", None, bytes(range(256)) * 4096)
    await store.add_attachments(task.id, [big])
    assert await store.load_attachments(task.id) == [big]


async def test_an_attachment_name_with_a_nul_is_refused_and_nothing_is_stored(
    store: SqlStore,
) -> None:
    task = await store.create_task(make_task())
    good = Attachment("good.txt", None, b"ok")
    with pytest.raises(UnstorableText) as refused:
        await store.add_attachments(task.id, [good, Attachment("bad\x00.txt", None, b"x")])
    assert refused.value.field == "name"
    assert await store.load_attachments(task.id) == []


async def test_attachments_vanish_when_their_task_is_purged(store: SqlStore) -> None:
    old = await store.create_task(
        make_task(state=TaskState.COMPLETED, worker="worker1", completed_at=at(10))
    )
    recent = await store.create_task(
        make_task(state=TaskState.COMPLETED, worker="worker1", completed_at=at(1000))
    )
    pending = await store.create_task(make_task())
    for task in (old, recent, pending):
        await store.add_attachments(task.id, [Attachment("f.txt", None, task.id.encode())])

    assert await store.purge_finished(at(500)) == 1

    assert await store.load_attachments(old.id) == []
    for kept in (recent, pending):
        assert await store.load_attachments(kept.id) == [
            Attachment("f.txt", None, kept.id.encode())
        ]


async def test_attachments_of_a_task_never_created_are_purged_as_stale(store: SqlStore) -> None:
    # The master adds the files first; had it crashed before create_task, they stay orphaned.
    await store.add_attachments("t-never", [Attachment("f.txt", None, b"x")])
    async with store._write() as tx:  # added long ago
        await tx.execute("UPDATE attachments SET created_at = ?", at(0))
    await store.purge_finished(at(500))
    assert await store.load_attachments("t-never") == []


async def test_attachments_of_a_task_not_yet_created_are_kept_by_the_purge(
    store: SqlStore,
) -> None:
    await store.add_attachments("t-soon1", [Attachment("f.txt", None, b"x")])
    await store.purge_finished(at(500))  # the cutoff is long before they were added
    assert await store.load_attachments("t-soon1") == [Attachment("f.txt", None, b"x")]


# --- a restarted worker keeps its tasks -------------------------------------------------------


async def test_keep_on_worker_pins_the_requeued_tasks_to_that_worker(store: SqlStore) -> None:
    task = await _running(store)
    [requeued] = await store.requeue_worker_tasks(
        "worker1", at(200), max_attempts=3, reason="worker restarted", keep_on_worker=True
    )
    assert (requeued.state, requeued.pinned_worker, requeued.worker) == (
        TaskState.PENDING, "worker1", None,
    )
    assert await store.claim_next("worker2", at(300)) is None  # not for another worker
    again = await store.claim_next("worker1", at(301))
    assert again is not None and (again.id, again.attempts) == (task.id, 2)


async def test_without_keep_on_worker_a_requeued_task_goes_to_any_worker(
    store: SqlStore,
) -> None:
    task = await _running(store)
    [requeued] = await store.requeue_worker_tasks("worker1", at(200), max_attempts=3,
                                                  reason="offline")
    assert requeued.pinned_worker is None
    again = await store.claim_next("worker2", at(300))
    assert again is not None and again.id == task.id


async def test_keep_on_worker_does_not_pin_a_task_that_fails(
    store: SqlStore,
) -> None:
    await _running(store)
    [failed] = await store.requeue_worker_tasks(
        "worker1", at(200), max_attempts=1, reason="worker restarted", keep_on_worker=True
    )
    assert (failed.state, failed.pinned_worker) == (TaskState.FAILED, None)


async def test_requeue_task_keeps_a_tasks_own_pin(store: SqlStore) -> None:
    task = await store.create_task(make_task(pinned_worker="worker1"))
    await store.claim_next("worker1", at(100))
    requeued = await store.requeue_task(task.id, "worker1", at(200), max_attempts=3, reason="x")
    assert requeued is not None and requeued.pinned_worker == "worker1"


# --- the migration ---------------------------------------------------------------------------


async def test_a_version_2_database_is_upgraded_keeping_its_rows(
    open_stores: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    everything = load_migrations()
    monkeypatch.setattr(sql, "load_migrations", lambda: everything[:2])
    old = await open_stores()
    async with old._write() as tx:  # rows as the version-2 release wrote them
        await tx.execute(
            "INSERT INTO tasks (task_id, user_id, chat_id, title, prompt, status, "
            "assigned_worker_id, attempts, created_at) "
            "VALUES ('t-old01', 100, 1000, 'old', 'old prompt', 'running', 'worker1', 1, ?)",
            at(1),
        )
    conversation = await old.active_conversation("worker1", 100)
    await old.close()
    monkeypatch.setattr(sql, "load_migrations", lambda: everything)

    new = await open_stores()

    assert [v for v, _ in await new.applied_migrations()] == [m.version for m in everything]
    task = await new.get_task("t-old01")
    assert task is not None and (task.state, task.waiting) == (TaskState.RUNNING, None)
    assert await new.active_conversation("worker1", 100) == conversation
    assert await new.session_of(conversation) is None
    await new.set_session(conversation, "session-1")
    await new.set_waiting("t-old01", APPROVAL)
    await new.add_attachments("t-old01", [Attachment("f.txt", None, b"x")])
    assert await new.session_of(conversation) == "session-1"
    assert await _waiting(new, "t-old01") == APPROVAL
    assert await new.load_attachments("t-old01") == [Attachment("f.txt", None, b"x")]
