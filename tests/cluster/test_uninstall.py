"""`helm uninstall` takes the fleet down: the chart's pre-delete hook runs `fleetgram
uninstall-fleet` (fleetgram/uninstall.py), here in-process with a client of its own, against the
emulated API server with the real kopf operator running (or stopped, as when it is already
gone)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from fleetgram import cli
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.main import build_registry
from fleetgram.operator.outbox import NullOutbox
from fleetgram.operator.reconcile import OperatorConfig
from fleetgram.uninstall import uninstall_fleet
from tests.emulators import kube_api
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import NS, OperatorThread, make_pool, make_secrets

pytestmark = [pytest.mark.k8s]

kube_emulator = kube_api.kube_emulator  # the fixture
POOL = "fleetgram"


@contextmanager
def operator() -> Iterator[OperatorThread]:
    registry, _ = build_registry(KubernetesApi(), outbox=NullOutbox(),
                                 config=OperatorConfig(interval=0.3))
    with OperatorThread(registry) as thread:
        yield thread


def workers(emu: KubeEmulator) -> list[str]:
    return sorted(d["metadata"]["name"] for d in emu.objects("deployments", NS))


def install(emu: KubeEmulator, secrets: bool = True) -> None:
    if secrets:
        make_secrets(emu, 2)
    make_pool(emu, 2, name=POOL, minWorkers=2, maxWorkers=2)


def wait_for_fleet(emu: KubeEmulator) -> None:
    """The operator has taken the pool (its finalizer is on it) and started both workers."""
    emu.wait_for_sync(lambda: len(workers(emu)) == 2 and bool(
        (emu.get("workerpools", POOL, NS) or {}).get("metadata", {}).get("finalizers")), 15)


def hook_client(emu: KubeEmulator, tmp_path: Path) -> Any:
    """A client of its own, as the hook Job's pod has (its own ServiceAccount's token)."""
    path = emu.kubeconfig(tmp_path / "hook-kubeconfig", namespace=NS)
    return kubernetes.config.new_client_from_config(config_file=path)


def test_uninstall_removes_the_pool_and_its_workers_while_the_operator_runs(
        kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    install(kube_emulator)
    with operator():
        wait_for_fleet(kube_emulator)
        started = time.monotonic()
        done = uninstall_fleet(NS, POOL, timeout=20, poll=0.1,
                               api_client=hook_client(kube_emulator, tmp_path))
        # Well before the timeout: the operator released the pool, nothing was forced.
        assert done and time.monotonic() - started < 10
        assert kube_emulator.get("workerpools", POOL, NS) is None
        assert workers(kube_emulator) == []


def test_a_reinstall_after_uninstall_brings_the_workers_back(
        kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    install(kube_emulator)
    with operator():
        wait_for_fleet(kube_emulator)
        assert uninstall_fleet(NS, POOL, timeout=20, poll=0.1,
                               api_client=hook_client(kube_emulator, tmp_path))
    with operator():  # helm install again: a new operator, the pool applied again
        install(kube_emulator, secrets=False)
        wait_for_fleet(kube_emulator)
        assert workers(kube_emulator) == ["fleetgram-worker1", "fleetgram-worker2"]


def test_without_the_operator_the_command_removes_the_finalizer_and_workers_itself(
        kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    install(kube_emulator)
    with operator():
        wait_for_fleet(kube_emulator)
    # The operator is gone: the pool keeps its finalizer and its workers.
    done = uninstall_fleet(NS, POOL, timeout=1, poll=0.1, force_grace=5,
                           api_client=hook_client(kube_emulator, tmp_path))
    assert done
    assert kube_emulator.get("workerpools", POOL, NS) is None
    assert workers(kube_emulator) == []


def _hook_rules() -> set[tuple[str, str, str]]:
    from tests.test_chart import VALUES, objects, render
    (role,) = [o for o in objects(render(VALUES)) if o["kind"] == "Role"
               and (o["metadata"].get("annotations") or {}).get("helm.sh/hook") == "pre-delete"]
    return {(group, resource, verb) for rule in role["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


def test_the_command_needs_no_more_than_the_hooks_role(
        kube_emulator: KubeEmulator, tmp_path: Path) -> None:
    install(kube_emulator)
    with operator():
        wait_for_fleet(kube_emulator)
    kube_emulator.clear_history()  # from here on, only the command talks to the API server
    assert uninstall_fleet(NS, POOL, timeout=0.5, poll=0.1, force_grace=5,
                           api_client=hook_client(kube_emulator, tmp_path))
    used = kube_emulator.used_permissions()
    assert ("fleetgram.dev", "workerpools", "patch", NS) in used  # the forced path ran
    allowed = _hook_rules()
    for group, resource, verb, namespace in used:
        assert namespace == NS and (group, resource, verb) in allowed, (group, resource, verb)
    names = {r.name for r in kube_emulator.requests(plural="workerpools")}
    assert names == {POOL}  # the Role names the pool (resourceNames)


def test_the_cli_exits_0_when_there_is_no_fleet_to_remove(
        kube_emulator: KubeEmulator, capsys: pytest.CaptureFixture[str]) -> None:
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
