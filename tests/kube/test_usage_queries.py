"""Cluster mode: budgets and /usage read the SQL ledger, whose calls carry their BotTask's
user (record_api_call gives the task a SQL record)."""

from __future__ import annotations

import pytest

from fleetgram.domain import Usage
from fleetgram.kube.queue import ClusterStore
from fleetgram.store import ApiCall
from fleetgram.store.base import UsageLine
from tests.emulators.kube_api import KubeEmulator
from tests.kube.support import assign
from tests.store.support import T0, at, make_task

pytestmark = pytest.mark.k8s


async def test_a_bottasks_calls_count_for_its_user_in_the_ledger(
    store: ClusterStore, emu: KubeEmulator
) -> None:
    task = await store.create_task(make_task(user_id=1111))
    assign(emu, task.id, "worker2", at(100))
    await store.mark_running(task.id, "worker2", at(101))
    await store.record_api_call(ApiCall(task.id, "worker2", "claude", Usage(10, 2, 0, 0, 0.25),
                                        at=at(102)))

    assert await store.usage_since(T0.replace(hour=0), user_id=1111) == [
        UsageLine(1111, "worker2", Usage(10, 2, 0, 0, 0.25), tasks=1)]
