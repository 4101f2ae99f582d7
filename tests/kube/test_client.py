"""The async wrapper over the kubernetes client: configuration, answers, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fleetgram.kube.client import Conflict, KubeApiError, KubeClient, NotFound
from fleetgram.kube.objects import BOTTASKS
from tests.emulators.kube_api import KubeEmulator
from tests.kube.support import NS

pytestmark = pytest.mark.k8s


def _task(name: str, prompt: str = "hello") -> dict[str, object]:
    return {
        "apiVersion": "fleetgram.dev/v1alpha1", "kind": "BotTask",
        "metadata": {"name": name},
        "spec": {"prompt": prompt, "userId": 1, "chatId": 2},
    }


async def test_a_kubeconfig_path_and_the_errors(
    kube_emulator: KubeEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG")
    path = kube_emulator.kubeconfig(tmp_path / "elsewhere" / "config")
    kube = await KubeClient.connect(NS, path)
    try:
        created = await kube.create_object(BOTTASKS, _task("t-aaaa2"))
        assert created["metadata"]["namespace"] == NS
        assert created["spec"]["priority"] == 5  # answers are the API server's own JSON
        with pytest.raises(Conflict) as exists:
            await kube.create_object(BOTTASKS, _task("t-aaaa2"))
        assert exists.value.reason == "AlreadyExists"
        with pytest.raises(NotFound):
            await kube.get_object(BOTTASKS, "t-nope2")
        with pytest.raises(NotFound):
            await kube.get_lease("no-such-lease")
        with pytest.raises(KubeApiError) as invalid:
            await kube.create_object(BOTTASKS, _task("t-aaaa3", prompt=""))
        assert invalid.value.status == 422 and "prompt" in invalid.value.message
        # Calls run in threads: the event loop stays free while they wait.
        listed = await asyncio.gather(*(kube.list_objects(BOTTASKS) for _ in range(8)))
        assert all(len(items) == 1 for items in listed)
    finally:
        await kube.close()
