"""Kubernetes mode, agent workers, through the chart installed from a values file into the
RBAC-enforcing emulated API server, with the real kopf operator running as its ServiceAccount.
A values file with `worker.engine: agent` and a persistentVolumeClaim workspace gives one claim
per slot, and each worker Deployment mounts its own claim at /workspace in two containers: the
worker (with its secrets, the ServiceAccount token and the git credentials) and `agent`, the
relay that runs the CLI with none of them (no pods run: the agent itself is tested on a single
host; this is what the cluster must carry)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.harness import COMPONENT_LABEL, NS, Cluster
from tests.e2e.harness import World
from tests.emulators.kube_api import KubeEmulator

pytestmark = [pytest.mark.k8s, pytest.mark.postgres]

SLOTS = ("worker1", "worker2")
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
AGENT_VALUES = {"worker": {
    "engine": "agent",
    "agent": {"permissionMode": "edits", "taskBudgetUSD": 2.5},
    "workspace": {"type": "persistentVolumeClaim", "size": "20Gi",
                  "repo": "https://git.example/team/app.git", "repoSecret": "app-git"},
}}


def live(emu: KubeEmulator, plural: str) -> dict[str, dict[str, Any]]:
    """Objects not being deleted; of Deployments, the operator's worker ones only."""
    return {o["metadata"]["name"]: o for o in emu.objects(plural, NS)
            if not o["metadata"].get("deletionTimestamp")
            and (plural != "deployments"
                 or (o["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "worker")}


async def test_an_agent_pool_gets_a_claim_per_slot_mounted_at_workspace(
        kube_emulator: KubeEmulator, world: World) -> None:
    emu = kube_emulator
    cluster = Cluster(emu, world, tokens=2, values=AGENT_VALUES, minWorkers=2, maxWorkers=2,
                      scaleUpThreshold=0)
    pool = emu.get("workerpools", "fleetgram", NS)
    with cluster.operator():
        await emu.wait_for(lambda: len(live(emu, "deployments")) == 2
                           and len(live(emu, "persistentvolumeclaims")) == 2, 20)
        claims = live(emu, "persistentvolumeclaims")
        assert sorted(claims) == [f"fleetgram-{s}-workspace" for s in SLOTS]
        for claim in claims.values():
            assert claim["metadata"]["ownerReferences"][0]["uid"] == pool["metadata"]["uid"]
            assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
        for slot in SLOTS:
            pod = live(emu, "deployments")[f"fleetgram-{slot}"]["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False
            assert pod["serviceAccountName"] == f"fleetgram-worker-{slot[-1]}"  # its own
            containers = {c["name"]: c for c in pod["containers"]}
            assert list(containers) == ["worker", "agent"]
            worker, agent = containers["worker"], containers["agent"]
            mounts = {m["mountPath"]: m["name"] for m in worker["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert volumes[mounts["/workspace"]]["persistentVolumeClaim"] == {
                "claimName": f"fleetgram-{slot}-workspace"}
            assert volumes[mounts["/etc/fleetgram/git"]]["secret"]["secretName"] == "app-git"
            assert "projected" in volumes[mounts[SA_MOUNT]]
            env = {e["name"]: e.get("value") for e in worker["env"]}
            assert (env["WORKER_ENGINE"], env["WORKSPACE_ROOT"], env["PERMISSION_MODE"],
                    env["TASK_BUDGET_USD"], env["AGENT_RELAY"]) == (
                "agent", "/workspace", "edits", "2.5", "127.0.0.1:7777")
            assert "WORKER_TOKEN" in env
            # The agent container: the relay, the same workspace, nothing secret.
            assert (agent["command"], agent["args"]) == (
                ["fleetgram"], ["agent-relay", "--listen", "127.0.0.1:7777"])
            assert agent["image"] == worker["image"]
            agent_mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
            assert agent_mounts == {"/tmp": "agent-tmp", "/workspace": mounts["/workspace"]}
            assert agent["env"] == [{"name": "HOME", "value": "/tmp"}]
            assert "envFrom" not in agent
            assert agent["resources"]["limits"]["memory"] == "1Gi"
            for container in (worker, agent):
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
        created = [c.name for c in emu.changes("persistentvolumeclaims") if c.type == "ADDED"]
        assert sorted(created) == sorted(claims)  # each made once, over many rounds

        emu.delete("workerpools", "fleetgram", NS)
        await emu.wait_for(lambda: not live(emu, "persistentvolumeclaims")
                           and not live(emu, "deployments"), 10)
