"""Agent mode on Kubernetes, as plain dicts (no I/O): what a WorkerPool with `engine: agent`
adds to its worker Deployments, and the per-slot PersistentVolumeClaim of its workspace.

An agent worker runs Claude Code in `/workspace/<slot>` (WORKSPACE_ROOT=/workspace): a volume
of its own, either a PVC `<pool>-<slot>-workspace` (kept across restarts: clones and Claude
Code sessions survive) or an emptyDir (gone with the pod). The repository's credentials come
from a Secret mounted read-only at /etc/fleetgram/git. Chat workers get none of this.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetgram.kube.objects import worker_labels

WORKSPACE_MOUNT = "/workspace"
GIT_CREDENTIALS_MOUNT = "/etc/fleetgram/git"
WORKSPACE_VOLUME = "workspace"
GIT_CREDENTIALS_VOLUME = "git-credentials"
DEFAULT_SIZE = "10Gi"
DEFAULT_ACCESS_MODES = ("ReadWriteOnce",)
# The Claude Code CLI alone takes ~230-275 MB RSS, before the commands it runs.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"memory": "512Mi"},
    "limits": {"memory": "1Gi"},
}


def is_agent(pool: Mapping[str, Any]) -> bool:
    return (pool["spec"].get("engine") or "chat") == "agent"


def _agent(pool: Mapping[str, Any]) -> Mapping[str, Any]:
    return pool["spec"].get("agent") or {}


def _workspace(pool: Mapping[str, Any]) -> Mapping[str, Any]:
    return pool["spec"].get("workspace") or {}


def uses_claim(pool: Mapping[str, Any]) -> bool:
    """True when the pool's agent workers keep their workspace on a PVC per slot."""
    return is_agent(pool) and _workspace(pool).get("type") == "persistentVolumeClaim"


def worker_object_labels(pool: str, slot: str) -> dict[str, str]:
    """The labels of every object the operator makes for a worker slot (Deployment, PVC)."""
    return {
        **worker_labels(pool, slot),
        "app.kubernetes.io/name": "fleetgram",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/part-of": "fleetgram",
        "app.kubernetes.io/managed-by": "fleetgram-operator",
    }


def claim_name(pool: str, slot: str) -> str:
    return f"{pool}-{slot}-workspace"


def _number(value: Any) -> str:
    """A number for an env var: 600 not 600.0, 2.5 as 2.5 (the CRD may hold either)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def agent_env(pool: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The agent settings as the worker reads them (fleetgram.config); [] for chat workers."""
    if not is_agent(pool):
        return []
    agent, workspace = _agent(pool), _workspace(pool)
    env: list[dict[str, Any]] = [
        {"name": "WORKER_ENGINE", "value": "agent"},
        {"name": "WORKSPACE_ROOT", "value": WORKSPACE_MOUNT},
    ]
    if workspace.get("repo"):
        env.append({"name": "WORKSPACE_REPO", "value": str(workspace["repo"])})
    if workspace.get("repoSecret"):
        env.append({"name": "WORKSPACE_GIT_CREDENTIALS", "value": GIT_CREDENTIALS_MOUNT})
    plain = (("permissionMode", "PERMISSION_MODE"), ("approvalTimeoutSeconds", "APPROVAL_TIMEOUT"),
             ("taskBudgetUSD", "TASK_BUDGET_USD"), ("taskMaxTurns", "TASK_MAX_TURNS"),
             ("verbose", "AGENT_VERBOSE"))
    for field, name in plain:
        if agent.get(field) is not None and agent.get(field) != "":
            env.append({"name": name, "value": _number(agent[field])})
    if agent.get("sandbox") is not None:
        env.append({"name": "AGENT_SANDBOX", "value": "1" if agent["sandbox"] else "0"})
    token = agent.get("oauthTokenSecret") or {}
    if token.get("name"):
        env.append({"name": "CLAUDE_CODE_OAUTH_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": token["name"], "key": token.get("key") or "token"}}})
    return env


def agent_volumes(pool: Mapping[str, Any], slot: str) -> list[dict[str, Any]]:
    """The workspace volume (and the git credentials) of an agent worker's pod."""
    if not is_agent(pool):
        return []
    workspace = _workspace(pool)
    if uses_claim(pool):
        volumes: list[dict[str, Any]] = [{
            "name": WORKSPACE_VOLUME,
            "persistentVolumeClaim": {"claimName": claim_name(pool["metadata"]["name"], slot)},
        }]
    else:
        volumes = [{"name": WORKSPACE_VOLUME,
                    "emptyDir": {"sizeLimit": str(workspace.get("size") or DEFAULT_SIZE)}}]
    if workspace.get("repoSecret"):
        # 0400: with the pod's fsGroup the kubelet makes it 0440, readable by the worker's
        # group only (ssh accepts a key owned by root that is not world-readable).
        volumes.append({"name": GIT_CREDENTIALS_VOLUME, "secret": {
            "secretName": str(workspace["repoSecret"]), "defaultMode": 0o400}})
    return volumes


def agent_mounts(pool: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not is_agent(pool):
        return []
    mounts: list[dict[str, Any]] = [{"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_MOUNT}]
    if _workspace(pool).get("repoSecret"):
        mounts.append({"name": GIT_CREDENTIALS_VOLUME, "mountPath": GIT_CREDENTIALS_MOUNT,
                       "readOnly": True})
    return mounts


def agent_resources(resources: Mapping[str, Any] | None) -> dict[str, Any]:
    """The template's resources, with the agent's memory defaults where it names none."""
    out: dict[str, Any] = {k: dict(v) for k, v in (resources or {}).items()
                           if isinstance(v, Mapping)}
    for kind, values in DEFAULT_RESOURCES.items():
        for key, value in values.items():
            out.setdefault(kind, {}).setdefault(key, value)
    return out


def workspace_claim(pool: Mapping[str, Any], slot: str,
                    owner: Mapping[str, Any]) -> dict[str, Any] | None:
    """The PVC of `slot`'s workspace, or None when the pool keeps no workspace on a claim.
    Owned by the WorkerPool (deleting the pool deletes the workspaces with it)."""
    if not uses_claim(pool):
        return None
    meta, workspace = pool["metadata"], _workspace(pool)
    spec: dict[str, Any] = {
        "accessModes": list(workspace.get("accessModes") or DEFAULT_ACCESS_MODES),
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": str(workspace.get("size") or DEFAULT_SIZE)}},
    }
    if workspace.get("storageClassName"):
        spec["storageClassName"] = str(workspace["storageClassName"])
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": claim_name(meta["name"], slot),
            "namespace": meta.get("namespace") or "default",
            "labels": worker_object_labels(meta["name"], slot),
            "ownerReferences": [dict(owner)],
        },
        "spec": spec,
    }
