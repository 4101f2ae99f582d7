from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import World, emulated_world
from tests.emulators.kube_api import KubeEmulator
from tests.pg import create_database_or_fail, drop_database


@pytest.fixture
def kube_emulator(tmp_path: Path, monkeypatch: Any) -> Iterator[KubeEmulator]:
    """An API server that enforces RBAC, empty but for its namespaces: tests/cluster/harness.py
    installs the chart into it (CRDs included). The test itself (and kubectl-style calls
    through the kubernetes client's default configuration) acts as the cluster's admin."""
    import kubernetes.client
    import kubernetes.config
    import kubernetes.config.kube_config
    emu = KubeEmulator(namespaces=("default", "fleetgram"), rbac=True)
    emu.start_sync()
    try:
        path = emu.kubeconfig(tmp_path / "admin-kubeconfig", namespace="fleetgram")
        monkeypatch.setenv("KUBECONFIG", path)
        monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", path)
        monkeypatch.setattr(kubernetes.config, "KUBE_CONFIG_DEFAULT_LOCATION", path)
        monkeypatch.setattr(kubernetes.client.Configuration, "_default", None)
        kubernetes.config.load_kube_config(config_file=path)
        yield emu
        denied = sorted({(a.user, a.verb, a.group, a.resource, a.subresource or "")
                         for a in emu.denials()})
        assert not denied, f"requests the chart's RBAC denied: {denied}"
        refused = [d.message for d in emu.admission_denials()]
        assert not refused, f"writes the chart's admission policy denied: {refused}"
    finally:
        emu.stop_sync()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    url = await create_database_or_fail("fg_cluster")
    try:
        async with emulated_world(url) as world:
            yield world
    finally:
        await drop_database(url)
