from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

import pytest

import fleetgram
from fleetgram.domain import TaskState, utcnow
from fleetgram.store.sql import SqlStore
from tests.store.support import OpenStore, at, make_task


async def test_claim_takes_the_most_urgent_then_oldest_task(store: SqlStore) -> None:
    await store.create_task(make_task(priority=5, created_at=at(1)))
    await store.create_task(make_task(priority=2, created_at=at(3)))
    oldest_urgent = await store.create_task(make_task(priority=2, created_at=at(2)))
    claimed = await store.claim_next("worker1", at(100))
    assert claimed is not None
    assert claimed.id == oldest_urgent.id


async def test_claim_assigns_the_task_to_the_worker_and_counts_an_attempt(
    store: SqlStore,
) -> None:
    task = await store.create_task(make_task())
    claimed = await store.claim_next("worker3", at(100))
    assert claimed is not None
    assert (claimed.state, claimed.worker, claimed.attempts, claimed.assigned_at) == (
        TaskState.ASSIGNED,
        "worker3",
        1,
        at(100),
    )
    assert await store.get_task(task.id) == claimed


async def test_claim_on_an_empty_queue_gets_nothing(store: SqlStore) -> None:
    assert await store.claim_next("worker1", at(100)) is None


async def test_a_claimed_task_is_not_claimed_again(store: SqlStore) -> None:
    await store.create_task(make_task())
    assert await store.claim_next("worker1", at(100)) is not None
    assert await store.claim_next("worker2", at(101)) is None


async def test_a_pinned_task_is_passed_over_by_other_workers(store: SqlStore) -> None:
    await store.create_task(make_task(pinned_worker="worker2", priority=1))
    unpinned = await store.create_task(make_task(priority=9))
    claimed = await store.claim_next("worker1", at(100))
    assert claimed is not None
    assert claimed.id == unpinned.id
    assert await store.claim_next("worker1", at(101)) is None


async def test_a_pinned_task_goes_to_its_worker(store: SqlStore) -> None:
    await store.create_task(make_task(priority=9))
    pinned = await store.create_task(make_task(pinned_worker="worker2", priority=1))
    claimed = await store.claim_next("worker2", at(100))
    assert claimed is not None
    assert (claimed.id, claimed.worker) == (pinned.id, "worker2")


async def test_a_cancel_requested_pending_task_is_not_claimed(store: SqlStore) -> None:
    await store.create_task(make_task(cancel_requested=True))
    assert await store.claim_next("worker1", at(100)) is None


async def test_many_concurrent_claimers_never_get_the_same_task(open_stores: OpenStore) -> None:
    stores = [await open_stores() for _ in range(8)]
    tasks = [await stores[0].create_task(make_task()) for _ in range(200)]

    everyone_claimed_once = asyncio.Barrier(len(stores))

    async def claim_until_empty(store: SqlStore, worker: str) -> list[str]:
        claimed: list[str] = []
        while (task := await store.claim_next(worker, utcnow())) is not None:
            claimed.append(task.id)
            if len(claimed) == 1:
                # Every claimer is in the race, however the lock happens to favour one.
                await everyone_claimed_once.wait()
        return claimed

    per_worker = await asyncio.gather(
        *(claim_until_empty(store, f"worker{n}") for n, store in enumerate(stores, 1))
    )
    counts = Counter(task_id for claimed in per_worker for task_id in claimed)
    assert counts == Counter(t.id for t in tasks)
    after = await stores[0].list_tasks(limit=1000)
    assert {(t.state, t.attempts) for t in after} == {(TaskState.ASSIGNED, 1)}
    for worker, claimed in enumerate(per_worker, 1):
        assert {t.id for t in after if t.worker == f"worker{worker}"} == set(claimed)


_PACKAGE_PARENT = str(Path(fleetgram.__file__).resolve().parents[1])

# Run in a child process: `python -c _CLAIMER <package parent> <url> <worker>`. The repository
# root is appended to sys.path, never put first: its operator/ must not shadow the stdlib's.
_CLAIMER = """
import asyncio, sys
sys.path.append(sys.argv[1])
from fleetgram.domain import utcnow
from fleetgram.store import open_store

async def main(url: str, worker: str) -> None:
    store = open_store(url)
    await store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    while (task := await store.claim_next(worker, utcnow())) is not None:
        print(task.id, flush=True)
    await store.close()

asyncio.run(main(sys.argv[2], sys.argv[3]))
"""


async def test_claimers_in_separate_processes_never_get_the_same_task(
    store: SqlStore, database_url: str, tmp_path: Path
) -> None:
    tasks = [await store.create_task(make_task()) for _ in range(100)]
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _CLAIMER,
            _PACKAGE_PARENT,
            database_url,
            f"worker{n}",
            cwd=tmp_path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for n in range(1, 5)
    ]
    for process in processes:  # all connected before any claims
        assert process.stdout is not None
        assert await process.stdout.readline() == b"ready\n"
    outputs = await asyncio.gather(*(process.communicate(b"go\n") for process in processes))
    assert [process.returncode for process in processes] == [0, 0, 0, 0]
    claimed = [line for out, _ in outputs for line in out.decode().split()]
    assert Counter(claimed) == Counter(t.id for t in tasks)


async def test_mark_running_starts_an_assigned_task(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    running = await store.mark_running(task.id, "worker1", at(101))
    assert running is not None
    assert (running.state, running.started_at) == (TaskState.RUNNING, at(101))


async def test_mark_running_refuses_a_cancel_requested_task(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    await store.request_cancel(task.id, task.user_id, at(101))
    assert await store.mark_running(task.id, "worker1", at(102)) is None
    after = await store.get_task(task.id)
    assert after is not None
    assert after.state is TaskState.ASSIGNED


async def test_mark_running_refuses_a_task_of_another_worker(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    assert await store.mark_running(task.id, "worker2", at(101)) is None


async def test_finish_task_completes_the_task_with_its_result_and_event(store: SqlStore) -> None:
    task = await store.create_task(make_task(chat_id=77))
    await store.claim_next("worker1", at(100))
    await store.mark_running(task.id, "worker1", at(101))
    done = await store.finish_task(
        task.id, "worker1", TaskState.COMPLETED, at(130), result="42", event=("completed", {})
    )
    assert done is not None
    assert (done.state, done.result, done.completed_at) == (TaskState.COMPLETED, "42", at(130))
    assert await store.get_task(task.id) == done
    [event] = await store.pending_events()
    assert (event.kind, event.task_id, event.chat_id) == ("completed", task.id, 77)


async def test_finish_task_records_a_failure_and_its_error(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    failed = await store.finish_task(task.id, "worker1", TaskState.FAILED, at(110), error="boom")
    assert failed is not None
    assert (failed.state, failed.error) == (TaskState.FAILED, "boom")


async def test_finish_task_refuses_a_task_of_another_worker(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    claimed = await store.claim_next("worker1", at(100))
    refused = await store.finish_task(
        task.id, "worker2", TaskState.COMPLETED, at(110), result="x", event=("completed", {})
    )
    assert refused is None
    assert await store.get_task(task.id) == claimed
    assert await store.pending_events() == []


async def test_finish_task_refuses_a_task_already_finished(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    await store.finish_task(task.id, "worker1", TaskState.COMPLETED, at(110), result="first")
    again = await store.finish_task(task.id, "worker1", TaskState.FAILED, at(120), error="late")
    assert again is None
    after = await store.get_task(task.id)
    assert after is not None
    assert (after.state, after.result) == (TaskState.COMPLETED, "first")


async def test_finish_task_refuses_a_state_that_is_not_final(store: SqlStore) -> None:
    task = await store.create_task(make_task())
    await store.claim_next("worker1", at(100))
    with pytest.raises(ValueError, match="finished state"):
        await store.finish_task(task.id, "worker1", TaskState.PENDING, at(110))
