"""ClusterStore against the emulated Kubernetes API server (tests/emulators/kube_api.py), over
HTTP with the real `kubernetes` client, and the SQL store on a SQLite file for the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetgram.config import Mode, Settings
from fleetgram.kube.queue import ClusterStore
from fleetgram.store import open_store
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.kube.support import NS, POOL

kube_emulator = kube_api.kube_emulator  # the emulator fixture: started, KUBECONFIG set


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        master_bot_token="1000:master-token-abcdef",
        worker_token_pool=(),
        allowed_user_ids=frozenset({100}),
        anthropic_api_key="sk-ant-test",
        database_url=f"sqlite:///{tmp_path / 'fleetgram.db'}",
        mode=Mode.KUBERNETES,
        namespace=NS,
        pool_name=POOL,
        worker_lease_seconds=30.0,
        max_attempts=3,
    )


@pytest.fixture
async def store(kube_emulator: KubeEmulator, settings: Settings) -> AsyncIterator[ClusterStore]:
    """Connects as a pod outside the cluster would: through $KUBECONFIG."""
    cluster = ClusterStore(settings, open_store(settings.database_url))
    await cluster.open()
    try:
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
def emu(kube_emulator: KubeEmulator) -> KubeEmulator:
    return kube_emulator
