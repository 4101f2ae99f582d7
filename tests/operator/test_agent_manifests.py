"""Agent workers' Deployments and workspace claims (WorkerPool `engine: agent`), built pure."""

from __future__ import annotations

from typing import Any

from fleetgram.config import EngineKind, PermissionMode, load_settings
from fleetgram.kube.objects import ANNOTATION_TEMPLATE_HASH, LABEL_POOL, LABEL_SLOT
from fleetgram.operator.manifests import deployment_manifest, workspace_claim
from tests.operator.builders import NOW, POOL_UID, pool


def agent_pool(**spec: Any) -> dict[str, Any]:
    return pool(3, engine="agent", **spec)


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def container_of(manifest: dict[str, Any], name: str = "worker") -> dict[str, Any]:
    (container,) = [c for c in pod_of(manifest)["containers"] if c["name"] == name]
    return container


def env_of(manifest: dict[str, Any], name: str = "worker") -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom"))
            for e in container_of(manifest, name).get("env", [])}


def mounts_of(manifest: dict[str, Any], name: str = "worker") -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container_of(manifest, name)["volumeMounts"]}


def volumes_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_of(manifest)["volumes"]}


def test_a_claim_workspace_mounts_the_slots_own_pvc_at_workspace() -> None:
    the_pool = agent_pool(workspace={"type": "persistentVolumeClaim", "size": "20Gi"})
    manifest = deployment_manifest(the_pool, "worker2", 1, NOW)
    mount = mounts_of(manifest)["/workspace"]
    volume = volumes_of(manifest)[mount["name"]]
    assert volume == {"name": mount["name"],
                      "persistentVolumeClaim": {"claimName": "fleetgram-worker2-workspace"}}
    assert not mount.get("readOnly")


def test_an_emptydir_workspace_is_the_default_limited_to_its_size() -> None:
    for workspace in (None, {"type": "emptyDir", "size": "5Gi"}):
        the_pool = agent_pool(**({"workspace": workspace} if workspace else {}))
        manifest = deployment_manifest(the_pool, "worker1", 0, NOW)
        volume = volumes_of(manifest)[mounts_of(manifest)["/workspace"]["name"]]
        size = workspace["size"] if workspace else "10Gi"
        assert volume["emptyDir"] == {"sizeLimit": size}
        assert "persistentVolumeClaim" not in volume


def test_chat_workers_get_no_workspace_nor_agent_settings() -> None:
    the_pool = pool(3, workspace={"type": "persistentVolumeClaim"},
                    agent={"permissionMode": "all"})
    manifest = deployment_manifest(the_pool, "worker1", 0, NOW)
    assert set(mounts_of(manifest)) == {"/tmp"}
    assert not {"WORKER_ENGINE", "WORKSPACE_ROOT", "PERMISSION_MODE", "AGENT_RELAY"} & set(
        env_of(manifest))
    assert workspace_claim(the_pool, "worker1") is None


def test_the_workspace_claim_has_the_size_class_labels_and_the_pool_as_owner() -> None:
    the_pool = agent_pool(workspace={"type": "persistentVolumeClaim", "size": "20Gi",
                                     "storageClassName": "fast-ssd"})
    claim = workspace_claim(the_pool, "worker3")
    assert claim is not None
    meta, spec = claim["metadata"], claim["spec"]
    assert (claim["apiVersion"], claim["kind"]) == ("v1", "PersistentVolumeClaim")
    assert meta["name"] == "fleetgram-worker3-workspace" and meta["namespace"] == "fleetgram"
    assert meta["labels"][LABEL_POOL] == "fleetgram" and meta["labels"][LABEL_SLOT] == "worker3"
    assert meta["ownerReferences"] == [{
        "apiVersion": "fleetgram.dev/v1alpha1", "kind": "WorkerPool", "name": "fleetgram",
        "uid": POOL_UID, "controller": True, "blockOwnerDeletion": True}]
    assert spec["resources"] == {"requests": {"storage": "20Gi"}}
    assert spec["storageClassName"] == "fast-ssd"
    assert spec["accessModes"] == ["ReadWriteOnce"]


def test_a_claim_without_a_storage_class_leaves_it_to_the_cluster_default() -> None:
    the_pool = agent_pool(workspace={"type": "persistentVolumeClaim",
                                     "accessModes": ["ReadWriteOncePod"]})
    claim = workspace_claim(the_pool, "worker1")
    assert claim is not None
    assert "storageClassName" not in claim["spec"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOncePod"]
    assert workspace_claim(agent_pool(workspace={"type": "emptyDir"}), "worker1") is None


def test_the_agent_settings_reach_the_container_as_the_worker_reads_them() -> None:
    the_pool = agent_pool(
        agent={"permissionMode": "edits", "approvalTimeoutSeconds": 600, "taskBudgetUSD": 2.5,
               "taskMaxTurns": 40, "verbose": 0, "sandbox": True,
               "oauthTokenSecret": {"name": "claude-oauth", "key": "oauth"}},
        workspace={"repo": "https://git.example/team/app.git"})
    env = env_of(deployment_manifest(the_pool, "worker1", 0, NOW))
    assert env["WORKER_ENGINE"] == "agent" and env["WORKSPACE_ROOT"] == "/workspace"
    assert env["WORKSPACE_REPO"] == "https://git.example/team/app.git"
    assert (env["PERMISSION_MODE"], env["APPROVAL_TIMEOUT"], env["TASK_BUDGET_USD"],
            env["TASK_MAX_TURNS"], env["AGENT_VERBOSE"], env["AGENT_SANDBOX"]) == (
        "edits", "600", "2.5", "40", "0", "1")
    assert env["CLAUDE_CODE_OAUTH_TOKEN"] == {
        "secretKeyRef": {"name": "claude-oauth", "key": "oauth"}}
    resolved = {k: v for k, v in env.items() if isinstance(v, str)}
    settings = load_settings({**resolved, "WORKER_TOKEN_POOL": "1234:worker-token-1",
                              "ALLOWED_USER_IDS": "42", "CLAUDE_CODE_OAUTH_TOKEN": "oat-1"},
                             dotenv=None, need_master=False)
    assert settings.worker_engine == EngineKind.AGENT
    assert settings.permission_mode == PermissionMode.EDITS
    assert str(settings.workspace_for("worker1")) == "/workspace/worker1"
    assert (settings.approval_timeout, settings.task_budget_usd, settings.task_max_turns,
            settings.agent_verbose, settings.agent_sandbox) == (600.0, 2.5, 40, 0, True)


def test_unset_agent_settings_are_left_to_the_worker_defaults() -> None:
    env = env_of(deployment_manifest(agent_pool(), "worker1", 0, NOW))
    assert env["WORKER_ENGINE"] == "agent"
    assert not {"PERMISSION_MODE", "TASK_BUDGET_USD", "TASK_MAX_TURNS", "WORKSPACE_REPO",
                "WORKSPACE_GIT_CREDENTIALS", "CLAUDE_CODE_OAUTH_TOKEN"} & set(env)


def test_the_repo_secret_is_mounted_read_only_and_named_to_the_worker() -> None:
    the_pool = agent_pool(workspace={"repo": "git@git.example:team/app.git",
                                     "repoSecret": "app-deploy-key"})
    manifest = deployment_manifest(the_pool, "worker1", 0, NOW)
    mount = mounts_of(manifest)["/etc/fleetgram/git"]
    assert mount["readOnly"] is True
    assert volumes_of(manifest)[mount["name"]]["secret"] == {
        "secretName": "app-deploy-key", "defaultMode": 0o400}
    assert env_of(manifest)["WORKSPACE_GIT_CREDENTIALS"] == "/etc/fleetgram/git"


def test_worker_pods_run_non_root_on_a_read_only_root_filesystem() -> None:
    for the_pool in (pool(3), agent_pool(workspace={"type": "persistentVolumeClaim"})):
        manifest = deployment_manifest(the_pool, "worker1", 0, NOW)
        pod = pod_of(manifest)
        assert pod["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"}}
        for container in pod["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]}}
        assert volumes_of(manifest)["tmp"] == {"name": "tmp", "emptyDir": {}}
        assert mounts_of(manifest)["/tmp"]["name"] == "tmp"


def test_the_worker_container_of_an_agent_pod_gets_the_chat_workers_memory() -> None:
    template = {"image": "w:1", "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                              "limits": {"memory": "3Gi"}}}
    for the_pool in (agent_pool(), pool(3, engine="agent", template=template)):
        worker = container_of(deployment_manifest(the_pool, "worker1", 0, NOW))
        assert worker["resources"] == {"requests": {"memory": "128Mi"},
                                       "limits": {"memory": "512Mi"}}


def test_changing_the_agent_settings_changes_the_template_hash() -> None:
    def hash_of(the_pool: dict[str, Any]) -> str:
        value: str = deployment_manifest(the_pool, "worker1", 0, NOW)["metadata"][
            "annotations"][ANNOTATION_TEMPLATE_HASH]
        return value

    chat, agent = hash_of(pool(3)), hash_of(agent_pool())
    stricter = hash_of(agent_pool(agent={"permissionMode": "plan"}))
    assert len({chat, agent, stricter}) == 3  # each change rolls the workers (when idle)
