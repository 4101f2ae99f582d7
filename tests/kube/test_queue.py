"""The queue on BotTasks: create, list in queue order, claim what the operator assigned, and
mark running with optimistic concurrency."""

from __future__ import annotations

from typing import Any

import pytest

from fleetgram.domain import Task, TaskState
from fleetgram.kube.client import Conflict
from fleetgram.kube.objects import (
    ANNOTATION_CREATED,
    BOTTASKS,
    LABEL_PHASE,
    LABEL_WORKER,
    iso,
    task_of,
)
from fleetgram.kube.queue import ClusterStore
from fleetgram.store import DuplicateTaskError
from tests.emulators.kube_api import KubeEmulator
from tests.kube.support import NS, assign, bottask, labels
from tests.store.support import at, make_task

pytestmark = pytest.mark.k8s


async def test_a_created_task_is_a_pending_bottask_and_a_sql_record(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = make_task(user_id=7, chat_id=70, priority=3, pinned_worker="worker2")
    created = await store.create_task(task, ("queued", {"position": 1}))

    assert created == task
    obj = bottask(emu, task.id)
    assert obj["spec"]["prompt"] == task.prompt
    assert (obj["spec"]["priority"], obj["spec"]["pinnedWorker"]) == (3, "worker2")
    assert obj["status"]["phase"] == "Pending" and obj["status"]["attempts"] == 0
    assert obj["metadata"]["annotations"][ANNOTATION_CREATED] == iso(task.created_at)
    assert labels(emu, task.id) == {LABEL_PHASE: "pending"}
    assert await store.get_task(task.id) == task
    assert await store.inner.get_task(task.id) == task  # the full record, in SQL
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id, event.payload) == (
        "queued", task.id, 70, {"position": 1},
    )


async def test_a_taken_id_is_refused(store: ClusterStore) -> None:
    task = await store.create_task(make_task())
    with pytest.raises(DuplicateTaskError):
        await store.create_task(make_task(id=task.id))


async def test_tasks_list_in_queue_order_and_filter(store: ClusterStore, emu: KubeEmulator) -> None:
    low = await store.create_task(make_task(priority=9))
    old = await store.create_task(make_task(user_id=7))
    new = await store.create_task(make_task())
    urgent = await store.create_task(make_task(priority=1))
    assign(emu, new.id, "worker1", at(500))

    assert [t.id for t in await store.list_tasks()] == [urgent.id, old.id, new.id, low.id]
    assert [t.id for t in await store.list_tasks([TaskState.PENDING])] == [
        urgent.id, old.id, low.id,
    ]
    assert [t.id for t in await store.list_tasks(user_id=7)] == [old.id]
    [mine] = await store.list_tasks(worker="worker1")
    assert (mine.id, mine.state, mine.attempts) == (new.id, TaskState.ASSIGNED, 1)
    assert [t.id for t in await store.list_tasks(limit=2)] == [urgent.id, old.id]
    assert await store.list_tasks([]) == []
    assert await store.queue_position(urgent.id) == 1
    assert await store.queue_position(low.id) == 3
    assert await store.queue_position(new.id) is None  # assigned: not waiting any more
    assert await store.queue_position("t-nope2") is None


async def test_a_task_made_with_kubectl_is_listed_as_pending(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    emu.create({
        "apiVersion": "fleetgram.dev/v1alpha1", "kind": "BotTask",
        "metadata": {"name": "t-kubectl", "namespace": NS},
        "spec": {"prompt": "Hello", "userId": 5, "chatId": 6},
    })
    [task] = await store.list_tasks([TaskState.PENDING])
    assert (task.id, task.state, task.priority, task.user_id) == (
        "t-kubectl", TaskState.PENDING, 5, 5,
    )
    assert await store.queue_position("t-kubectl") == 1


async def test_workers_claim_only_what_the_operator_assigned_to_them(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    first = await store.create_task(make_task(priority=2))
    second = await store.create_task(make_task())
    other = await store.create_task(make_task(priority=1))
    assert await store.claim_next("worker1", at(100)) is None  # pending is not theirs to take

    assign(emu, second.id, "worker1", at(101))
    assign(emu, first.id, "worker1", at(102))
    assign(emu, other.id, "worker2", at(103))

    claimed = await store.claim_next("worker1", at(104))
    assert claimed is not None
    assert (claimed.id, claimed.state, claimed.worker, claimed.attempts, claimed.assigned_at) == (
        first.id, TaskState.ASSIGNED, "worker1", 1, at(102),
    )
    assert (await store.claim_next("worker2", at(104)) or first).id == other.id
    emu.clear_history()
    assert await store.claim_next("worker3", at(104)) is None
    # The API server selects by the worker label: a worker lists its own tasks only.
    [listing] = emu.requests("list", BOTTASKS)
    assert f"{LABEL_WORKER}=worker3" in listing.query["labelSelector"].split(",")


async def test_a_claimed_task_is_claimed_until_it_runs(store: ClusterStore, emu: KubeEmulator
                                                     ) -> None:
    task = await store.create_task(make_task())
    assign(emu, task.id, "worker1", at(100))
    assert (await store.claim_next("worker1", at(101)) or task).id == task.id
    running = await store.mark_running(task.id, "worker1", at(102))
    assert running is not None
    assert (running.state, running.started_at, running.attempts) == (
        TaskState.RUNNING, at(102), 1,
    )
    assert await store.claim_next("worker1", at(103)) is None
    obj = bottask(emu, task.id)
    assert (obj["status"]["phase"], obj["status"]["startedAt"]) == ("Running", iso(at(102)))
    assert labels(emu, task.id) == {LABEL_PHASE: "running", LABEL_WORKER: "worker1"}
    archived = await store.inner.get_task(task.id)
    assert archived is not None and archived.state is TaskState.RUNNING


async def test_mark_running_refuses_what_is_not_assigned_to_the_worker(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task())
    assert await store.mark_running(task.id, "worker1", at(100)) is None  # pending
    assign(emu, task.id, "worker2", at(100))
    assert await store.mark_running(task.id, "worker1", at(101)) is None  # someone else's
    assert await store.mark_running("t-nope2", "worker1", at(101)) is None
    assert bottask(emu, task.id)["status"]["phase"] == "Assigned"


def _change_after_first_read(
    store: ClusterStore, emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch, task_id: str,
    patch: dict[str, Any], subresource: str | None = None,
) -> None:
    """Someone else writes the task just after the store reads it, so the store's conditional
    write carries a stale resourceVersion."""
    real = store.kube.get_object
    done = False

    async def get_object(plural: str, name: str) -> dict[str, Any]:
        nonlocal done
        obj = await real(plural, name)
        if name == task_id and not done:
            done = True
            emu.patch("bottasks", name, patch, namespace=NS, subresource=subresource)
        return obj

    monkeypatch.setattr(store.kube, "get_object", get_object)


def _status_writes(emu: KubeEmulator, task_id: str) -> list[int | None]:
    return [r.status for r in emu.requests("patch", BOTTASKS, task_id, subresource="status")]


async def test_mark_running_with_a_stale_version_gets_409_and_tries_again(
    store: ClusterStore, emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await store.create_task(make_task())
    assign(emu, task.id, "worker1", at(100))
    emu.clear_history()
    # A harmless write meanwhile (the usage shown, say): the store must read again and win.
    _change_after_first_read(store, emu, monkeypatch, task.id,
                             {"status": {"usage": {"inputTokens": 5}}}, "status")

    running = await store.mark_running(task.id, "worker1", at(101))

    assert running is not None and running.state is TaskState.RUNNING
    assert _status_writes(emu, task.id) == [409, 200]
    assert bottask(emu, task.id)["status"]["phase"] == "Running"


async def test_mark_running_loses_to_a_cancel_that_came_in_between(
    store: ClusterStore, emu: KubeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await store.create_task(make_task())
    assign(emu, task.id, "worker1", at(100))
    emu.clear_history()
    _change_after_first_read(store, emu, monkeypatch, task.id, {"spec": {"cancel": True}})

    assert await store.mark_running(task.id, "worker1", at(101)) is None

    assert _status_writes(emu, task.id) == [409]
    assert bottask(emu, task.id)["status"]["phase"] == "Assigned"
    # The worker then finishes it as cancelled, as it does on a single host.
    done = await store.finish_task(task.id, "worker1", TaskState.CANCELLED, at(102),
                                   event=("cancelled", {"by": "user"}))
    assert done is not None and done.state is TaskState.CANCELLED


async def test_the_client_maps_a_stale_write_to_conflict(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task())
    stale = bottask(emu, task.id)["metadata"]["resourceVersion"]
    emu.patch("bottasks", task.id, {"spec": {"priority": 2}}, namespace=NS)
    with pytest.raises(Conflict):
        await store.kube.patch_status(BOTTASKS, task.id, {
            "metadata": {"resourceVersion": stale}, "status": {"phase": "Running"},
        })
    assert task_of(bottask(emu, task.id)).state is TaskState.PENDING


async def test_tasks_round_trip_through_the_bottask(store: ClusterStore) -> None:
    task: Task = make_task(title="x" * 300)
    created = await store.create_task(task)
    assert created.title == "x" * 200  # the CRD's limit; the rest is in the prompt
    assert await store.get_task(task.id) == created
