"""The store additions of agent mode (issue 8) on BotTasks, behaving as the SQL store's do
(tests/store/test_agent_store.py): what a running task waits for is its status.waitingFor,
sessions and attachments live in the shared SQL database, and a restarted worker keeps its
interrupted tasks by pinning them (spec.pinnedWorker)."""

from __future__ import annotations

from typing import Any

import pytest

from fleetgram.domain import Attachment, Task, TaskState
from fleetgram.kube.objects import BOTTASKS
from fleetgram.kube.queue import WAITING_MAX, ClusterStore
from tests.emulators.kube_api import KubeEmulator
from tests.kube.support import NS, assign, bottask
from tests.store.support import at, make_task

pytestmark = pytest.mark.k8s

APPROVAL = "approval: Bash `rm -rf build`"


async def _running(store: ClusterStore, emu: KubeEmulator, worker: str = "worker1",
                   **fields: object) -> Task:
    task = await store.create_task(make_task(**fields))
    assign(emu, task.id, worker, at(100))
    running = await store.mark_running(task.id, worker, at(101))
    assert running is not None
    return running


async def _waiting(store: ClusterStore, task_id: str) -> str | None:
    task = await store.get_task(task_id)
    assert task is not None
    return task.waiting


# --- waiting for the user --------------------------------------------------------------------


async def test_waiting_is_written_to_the_bottask_status_and_read_back(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.set_waiting(task.id, APPROVAL)
    assert bottask(emu, task.id)["status"]["waitingFor"] == APPROVAL
    assert await _waiting(store, task.id) == APPROVAL
    [listed] = await store.list_tasks([TaskState.RUNNING])
    assert listed.waiting == APPROVAL


async def test_waiting_is_recorded_in_sql_with_the_task(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.set_waiting(task.id, APPROVAL)
    archived = await store.inner.get_task(task.id)
    assert archived is not None and archived.waiting == APPROVAL


async def test_an_answered_task_no_longer_carries_waiting_for(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.set_waiting(task.id, APPROVAL)
    await store.set_waiting(task.id, None)
    assert "waitingFor" not in bottask(emu, task.id)["status"]
    assert await _waiting(store, task.id) is None


async def test_a_pending_task_is_never_marked_waiting(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task())
    await store.set_waiting(task.id, APPROVAL)
    assert "waitingFor" not in bottask(emu, task.id)["status"]


async def test_finishing_a_task_removes_waiting_for(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.set_waiting(task.id, APPROVAL)
    finished = await store.finish_task(task.id, "worker1", TaskState.COMPLETED, at(200),
                                       result="done")
    assert finished is not None and finished.waiting is None
    assert "waitingFor" not in bottask(emu, task.id)["status"]


async def test_requeueing_a_task_removes_waiting_for(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.set_waiting(task.id, APPROVAL)
    requeued = await store.requeue_task(task.id, "worker1", at(200), max_attempts=3,
                                        reason="stopped")
    assert requeued is not None and requeued.waiting is None
    assert "waitingFor" not in bottask(emu, task.id)["status"]


async def test_requeueing_a_restarting_workers_tasks_removes_waiting_for(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.set_waiting(task.id, APPROVAL)
    [requeued] = await store.requeue_worker_tasks("worker1", at(200), max_attempts=3,
                                                  reason="restarted")
    assert requeued.waiting is None
    assert "waitingFor" not in bottask(emu, task.id)["status"]


async def test_a_waiting_for_left_on_a_task_the_operator_requeued_is_not_shown(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.set_waiting(task.id, APPROVAL)
    # The operator's requeue (a Lease expired) writes the phase and leaves waitingFor be.
    emu.patch("bottasks", task.id, {"status": {"phase": "Pending", "worker": None}},
              namespace=NS, subresource="status")
    assert await _waiting(store, task.id) is None


async def test_a_long_waiting_text_is_cut_to_the_crds_limit(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    await store.set_waiting(task.id, "approval: Bash `" + "x" * 5000 + "`")
    waiting = bottask(emu, task.id)["status"]["waitingFor"]
    assert len(waiting) == WAITING_MAX and waiting.endswith("…")


# --- sessions and attachments: the SQL store's -------------------------------------------------


async def test_sessions_are_kept_in_the_sql_store(store: ClusterStore) -> None:
    conversation = await store.active_conversation("worker1", 7)
    assert await store.session_of(conversation) is None
    await store.set_session(conversation, "session-1")
    assert await store.session_of(conversation) == "session-1"
    assert await store.inner.session_of(conversation) == "session-1"
    new = await store.new_conversation("worker1", 7)
    assert await store.session_of(new) is None


async def test_attachments_are_kept_in_the_sql_store(store: ClusterStore) -> None:
    task = await store.create_task(make_task())
    files = [Attachment("photo.jpg", "image/jpeg", bytes(range(256))),
             Attachment("notes.txt", None, b"notes")]
    await store.add_attachments(task.id, files)
    assert await store.load_attachments(task.id) == files
    assert await store.inner.load_attachments(task.id) == files


async def test_attachments_vanish_when_their_task_is_purged(store: ClusterStore) -> None:
    task = await store.create_task(
        make_task(state=TaskState.COMPLETED, worker="worker1", completed_at=at(10))
    )
    await store.add_attachments(task.id, [Attachment("f.txt", None, b"x")])
    assert await store.purge_finished(at(500)) == 1
    assert await store.load_attachments(task.id) == []


# --- a restarted worker keeps its tasks -------------------------------------------------------


async def test_keep_on_worker_pins_the_requeued_bottask_to_that_worker(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    [requeued] = await store.requeue_worker_tasks(
        "worker1", at(200), max_attempts=3, reason="worker restarted", keep_on_worker=True
    )
    assert (requeued.state, requeued.pinned_worker, requeued.worker) == (
        TaskState.PENDING, "worker1", None,
    )
    obj = bottask(emu, task.id)
    assert (obj["spec"]["pinnedWorker"], obj["status"]["phase"]) == ("worker1", "Pending")
    archived = await store.inner.get_task(task.id)
    assert archived is not None and archived.pinned_worker == "worker1"


async def test_without_keep_on_worker_the_requeued_bottask_is_not_pinned(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    [requeued] = await store.requeue_worker_tasks("worker1", at(200), max_attempts=3,
                                                  reason="offline")
    assert requeued.pinned_worker is None
    assert "pinnedWorker" not in bottask(emu, task.id)["spec"]


async def test_keep_on_worker_does_not_pin_a_task_that_fails(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await _running(store, emu)
    [failed] = await store.requeue_worker_tasks(
        "worker1", at(200), max_attempts=1, reason="worker restarted", keep_on_worker=True
    )
    assert (failed.state, failed.pinned_worker) == (TaskState.FAILED, None)
    assert "pinnedWorker" not in bottask(emu, task.id)["spec"]


async def test_keep_on_worker_pins_after_a_concurrent_change(
    store: ClusterStore, emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await _running(store, emu)
    real = store.kube.patch_object
    changed = False

    async def patch_object(plural: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        nonlocal changed
        if plural == BOTTASKS and not changed:  # someone writes the task just before the pin
            changed = True
            emu.patch("bottasks", name, {"metadata": {"annotations": {"x": "y"}}}, namespace=NS)
        return await real(plural, name, patch)

    monkeypatch.setattr(store.kube, "patch_object", patch_object)
    [requeued] = await store.requeue_worker_tasks(
        "worker1", at(200), max_attempts=3, reason="worker restarted", keep_on_worker=True
    )
    assert changed and requeued.pinned_worker == "worker1"
    assert bottask(emu, task.id)["spec"]["pinnedWorker"] == "worker1"
