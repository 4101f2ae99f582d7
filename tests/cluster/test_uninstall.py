"""`helm uninstall` takes the fleet down: the chart's pre-delete hook runs `fleetgram
uninstall-fleet` (fleetgram/uninstall.py), here in-process with a client of its own, against the
emulated API server with the real kopf operator running (or stopped, as when it is already
gone)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import kubernetes
import pytest

from fleetgram import cli
from fleetgram.uninstall import uninstall_fleet
from tests.cluster.harness import CHART, NS, POOL, Cluster, hook_objects, install, uninstall
from tests.e2e.harness import World
from tests.emulators.kube_api import KubeEmulator

pytestmark = [pytest.mark.k8s, pytest.mark.postgres]


def workers(emu: KubeEmulator) -> list[str]:
    return sorted(d["metadata"]["name"] for d in emu.objects("deployments", NS)
                  if (d["metadata"].get("labels") or {}).get(
                      "app.kubernetes.io/component") == "worker")


async def wait_for_fleet(emu: KubeEmulator) -> None:
    """The operator has taken the pool (its finalizer is on it) and started both workers."""
    await emu.wait_for(lambda: len(workers(emu)) == 2 and bool(
        (emu.get("workerpools", POOL, NS) or {}).get("metadata", {}).get("finalizers")), 15)


def installed(emu: KubeEmulator, world: World) -> Cluster:
    """`helm install` of a values file with two worker slots, both always running."""
    return Cluster(emu, world, tokens=2, minWorkers=2, maxWorkers=2, scaleUpThreshold=0)


async def pre_delete_hook(cluster: Cluster, **options: Any) -> bool:
    """What `helm uninstall` runs first: the hook's ServiceAccount, Role and RoleBinding are
    applied and its Job runs `fleetgram uninstall-fleet` (here in-process, in a thread, with
    the hook account's own token, so its Role is enforced)."""
    hooks = hook_objects(cluster.objects, "pre-delete")
    for obj in hooks:
        if obj["kind"] != "Job":
            cluster.emu.create(obj, namespace=NS)
    (account,) = [o["metadata"]["name"] for o in hooks if o["kind"] == "ServiceAccount"]
    client = kubernetes.config.new_client_from_config(
        config_file=cluster.kubeconfig_for(account))
    done = await asyncio.to_thread(uninstall_fleet, NS, POOL, poll=0.1, api_client=client,
                                   **{"timeout": 20, **options})
    for obj in reversed(hooks):  # hook-delete-policy: hook-succeeded
        if obj["kind"] != "Job" and done:
            cluster.emu.delete(cluster.emu.resource_type(obj["kind"]).plural,
                               obj["metadata"]["name"], NS)
    return done


async def test_uninstall_removes_the_pool_and_its_workers_while_the_operator_runs(
        kube_emulator: KubeEmulator, world: World) -> None:
    cluster = installed(kube_emulator, world)
    with cluster.operator():
        await wait_for_fleet(kube_emulator)
        started = time.monotonic()
        assert await pre_delete_hook(cluster)
        # Well before the timeout: the operator released the pool, nothing was forced.
        assert time.monotonic() - started < 10
        assert kube_emulator.get("workerpools", POOL, NS) is None
        assert workers(kube_emulator) == []
    uninstall(kube_emulator, cluster.objects)
    assert not [d for d in kube_emulator.objects("deployments", NS)]
    assert not kube_emulator.objects("serviceaccounts", NS)


async def test_a_reinstall_after_uninstall_brings_the_workers_back(
        kube_emulator: KubeEmulator, world: World) -> None:
    cluster = installed(kube_emulator, world)
    with cluster.operator():
        await wait_for_fleet(kube_emulator)
        assert await pre_delete_hook(cluster)
    uninstall(kube_emulator, cluster.objects)
    install(kube_emulator, cluster.objects)  # helm install again, same values
    with cluster.operator():  # a new operator
        await wait_for_fleet(kube_emulator)
        assert workers(kube_emulator) == ["fleetgram-worker1", "fleetgram-worker2"]


async def test_without_the_operator_the_hook_removes_the_finalizer_and_workers_itself(
        kube_emulator: KubeEmulator, world: World) -> None:
    cluster = installed(kube_emulator, world)
    with cluster.operator():
        await wait_for_fleet(kube_emulator)
    # The operator is gone: the pool keeps its finalizer and its workers.
    kube_emulator.clear_history()  # from here on, only the hook talks to the API server
    assert await pre_delete_hook(cluster, timeout=1, force_grace=5)
    assert kube_emulator.get("workerpools", POOL, NS) is None
    assert workers(kube_emulator) == []
    used = kube_emulator.used_permissions()
    assert ("fleetgram.dev", "workerpools", "patch", NS) in used  # the forced path ran
    names = {r.name for r in kube_emulator.requests(plural="workerpools")}
    assert names == {POOL}  # the hook's Role names the pool (resourceNames)


def test_the_cli_exits_0_when_there_is_no_fleet_to_remove(
        kube_emulator: KubeEmulator, capsys: pytest.CaptureFixture[str]) -> None:
    kube_emulator.load_crds(sorted((CHART / "crds").glob("*.yaml")))  # the CRDs, no pool
    assert cli.main(["uninstall-fleet", "--namespace", NS, "--pool", POOL,
                     "--timeout", "1"]) == 0
    assert f"WorkerPool {NS}/{POOL} and its workers removed" in capsys.readouterr().out


def test_the_cli_needs_a_pool_name(kube_emulator: KubeEmulator,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FLEETGRAM_POOL", raising=False)
    assert cli.main(["uninstall-fleet"]) == 2
    assert "--pool" in capsys.readouterr().err


def test_the_hook_job_runs_the_command_for_the_releases_pool() -> None:
    from tests.test_chart import NS as CHART_NS
    from tests.test_chart import RELEASE, VALUES, objects, render
    (job,) = [o for o in objects(render(VALUES)) if o["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["fleetgram"]
    assert container["args"] == ["uninstall-fleet", "--namespace", CHART_NS,
                                 "--pool", f"{RELEASE}-fleetgram", "--timeout", "120"]
