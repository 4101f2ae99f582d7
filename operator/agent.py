"""Agent mode on Kubernetes, as plain dicts (no I/O): what a WorkerPool with `engine: agent`
adds to its worker Deployments, and the per-slot PersistentVolumeClaim of its workspace.

An agent worker runs Claude Code in `/workspace/<slot>` (WORKSPACE_ROOT=/workspace): a volume
of its own, either a PVC `<pool>-<slot>-workspace` (kept across restarts: clones and Claude
Code sessions survive) or an emptyDir (gone with the pod). The repository's credentials come
from a Secret mounted read-only at /etc/fleetgram/git. Chat workers get none of this.

The CLI does not run in the worker container: the pod has a second container, `agent`
(`fleetgram agent-relay --listen 127.0.0.1:7777`), which the worker reaches at AGENT_RELAY and
which starts the CLI for each task. That container shares the workspace and nothing secret: no
ServiceAccount token (the pod does not automount it; the worker container alone mounts the same
projected volume Kubernetes would inject), no git credentials (git runs in the worker), no bot
token, database URL or API key in its env (the worker passes the task's key over the relay).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fleetgram.kube.objects import worker_labels

WORKSPACE_MOUNT = "/workspace"
GIT_CREDENTIALS_MOUNT = "/etc/fleetgram/git"
WORKSPACE_VOLUME = "workspace"
GIT_CREDENTIALS_VOLUME = "git-credentials"
DEFAULT_SIZE = "10Gi"
DEFAULT_ACCESS_MODES = ("ReadWriteOnce",)
AGENT_CONTAINER = "agent"
AGENT_TMP_VOLUME = "agent-tmp"
RELAY_HOST = "127.0.0.1"  # the pod's loopback: only the pod's own containers reach the relay
RELAY_PORT = 7777  # the default of `fleetgram agent-relay --listen`
SERVICE_ACCOUNT_VOLUME = "kube-api-access"
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
# The agent container's: the Claude Code CLI alone takes ~230-275 MB RSS, before the commands
# it runs.
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"memory": "512Mi"},
    "limits": {"memory": "1Gi"},
}
# The worker container of an agent pod no longer runs the CLI: it gets the chat worker's memory
# (the chart's default worker.resources), whatever the pool's template.resources (which, for an
# agent pool, sizes the agent container).
WORKER_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"memory": "128Mi"},
    "limits": {"memory": "512Mi"},
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


def relay_address(port: int = RELAY_PORT) -> str:
    return f"{RELAY_HOST}:{port}"


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
        {"name": "AGENT_RELAY", "value": relay_address()},
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
    """The volumes an agent worker's pod adds: the workspace, the ServiceAccount token (the
    worker's), the agent container's /tmp and the git credentials (the worker's)."""
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
    volumes.append(service_account_volume())
    volumes.append({"name": AGENT_TMP_VOLUME, "emptyDir": {}})
    if workspace.get("repoSecret"):
        # 0400: with the pod's fsGroup the kubelet makes it 0440, readable by the worker's
        # group only (ssh accepts a key owned by root that is not world-readable).
        volumes.append({"name": GIT_CREDENTIALS_VOLUME, "secret": {
            "secretName": str(workspace["repoSecret"]), "defaultMode": 0o400}})
    return volumes


def service_account_volume() -> dict[str, Any]:
    """The ServiceAccount token volume, as Kubernetes itself injects it into a pod that
    automounts the token (the ServiceAccount admission controller's `kube-api-access-<random>`:
    a bound token that the kubelet rotates, the cluster's CA and the pod's namespace).
    Kubernetes docs, "Managing Service Accounts", Bound service account token volume mechanism:
    https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-token-volume
    and "Configure Service Accounts for Pods", Opt out of API credential automounting:
    https://kubernetes.io/docs/tasks/configure-pod-container/configure-service-account/#opt-out-of-api-credential-automounting
    An agent pod sets automountServiceAccountToken: false and mounts this in the worker
    container only, so the worker's in-cluster config works unchanged and the agent container
    has no token."""
    return {"name": SERVICE_ACCOUNT_VOLUME, "projected": {
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    }}


def agent_mounts(pool: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The worker container's extra mounts in an agent pod: the workspace, the ServiceAccount
    token and the git credentials (git runs in the worker)."""
    if not is_agent(pool):
        return []
    mounts: list[dict[str, Any]] = [
        {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_MOUNT},
        {"name": SERVICE_ACCOUNT_VOLUME, "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": True},
    ]
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


def worker_resources() -> dict[str, Any]:
    """The worker container's resources in an agent pod (see WORKER_RESOURCES)."""
    return {kind: dict(values) for kind, values in WORKER_RESOURCES.items()}


def agent_container(pool: Mapping[str, Any], *, image: str, security_context: Mapping[str, Any],
                    image_pull_policy: str | None = None) -> dict[str, Any] | None:
    """The `agent` container of an agent worker's pod (None for chat pools): the same image and
    restrictions as the worker, running the relay that starts the CLI for the worker. It
    mounts the workspace and a /tmp of its own, and its env holds nothing secret: HOME only
    (the worker gives each task its HOME, its key and its settings over the relay)."""
    if not is_agent(pool):
        return None
    template = pool["spec"].get("template") or {}
    container: dict[str, Any] = {
        "name": AGENT_CONTAINER,
        "image": image,
        "command": ["fleetgram"],
        "args": ["agent-relay", "--listen", relay_address()],
        "env": [{"name": "HOME", "value": "/tmp"}],
        "securityContext": copy.deepcopy(dict(security_context)),
        "volumeMounts": [
            {"name": AGENT_TMP_VOLUME, "mountPath": "/tmp"},
            {"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_MOUNT},
        ],
        "resources": agent_resources(template.get("resources")),
    }
    if image_pull_policy:
        container["imagePullPolicy"] = image_pull_policy
    return container


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
