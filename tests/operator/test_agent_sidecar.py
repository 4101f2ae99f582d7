"""An agent worker's pod runs the Claude Code CLI in a second container, `agent` (the relay),
which holds nothing secret: no ServiceAccount token, no git credentials, no bot token, no
database URL, no API key. The worker keeps its secrets and reaches the relay at AGENT_RELAY.
Built pure, from plain data."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate

from fleetgram.config import load_settings
from fleetgram.operator.manifests import deployment_manifest
from tests.operator.builders import NOW, pool

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
SECRET_POOL_TEMPLATE = {
    "image": "ghcr.io/fleetgram/worker:1", "imagePullPolicy": "IfNotPresent",
    "serviceAccountName": "fleetgram-worker",
    "env": [
        {"name": "ALLOWED_USER_IDS", "value": "42"},
        {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
        {"name": "ANTHROPIC_API_KEY",
         "valueFrom": {"secretKeyRef": {"name": "anthropic", "key": "key"}}},
    ],
}


def agent_manifest(**spec: Any) -> dict[str, Any]:
    spec.setdefault("template", dict(SECRET_POOL_TEMPLATE))
    spec.setdefault("workspace", {"type": "persistentVolumeClaim",
                                  "repo": "git@git.example:team/app.git",
                                  "repoSecret": "app-deploy-key"})
    spec.setdefault("agent", {"oauthTokenSecret": {"name": "claude-oauth"}})
    return deployment_manifest(pool(3, engine="agent", **spec), "worker1", 0, NOW)


def pod_of(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def container_of(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    (container,) = [c for c in pod_of(manifest)["containers"] if c["name"] == name]
    return container


def mounts_of(container: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}


def volumes_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_of(manifest)["volumes"]}


def test_an_agent_pod_has_the_worker_then_the_agent_container() -> None:
    names = [c["name"] for c in pod_of(agent_manifest())["containers"]]
    assert names == ["worker", "agent"]  # the worker first: `kubectl logs` shows it


def test_the_agent_pod_does_not_automount_the_service_account_token() -> None:
    assert pod_of(agent_manifest())["automountServiceAccountToken"] is False


def test_the_agent_pod_does_not_share_its_process_namespace() -> None:
    # Else the agent's commands could read the worker's /proc/<pid>/environ.
    assert pod_of(agent_manifest())["shareProcessNamespace"] is False


def test_the_token_volume_is_the_one_kubernetes_would_inject() -> None:
    assert volumes_of(agent_manifest())["kube-api-access"] == {
        "name": "kube-api-access",
        "projected": {"defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt",
                           "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]}}


def test_only_the_worker_container_mounts_the_token_read_only() -> None:
    manifest = agent_manifest()
    mounted = {c["name"]: [m for m in c["volumeMounts"] if m["name"] == "kube-api-access"]
               for c in pod_of(manifest)["containers"]}
    assert mounted == {"worker": [{"name": "kube-api-access", "mountPath": SA_MOUNT,
                                   "readOnly": True}],
                       "agent": []}


def test_the_agent_container_has_no_secret_env() -> None:
    agent = container_of(agent_manifest(), "agent")
    assert "envFrom" not in agent
    assert agent["env"] == [{"name": "HOME", "value": "/tmp"}]
    assert "secretKeyRef" not in json.dumps(agent) and "valueFrom" not in json.dumps(agent)
    assert not [e for e in agent["env"] if "TOKEN" in e["name"] or "KEY" in e["name"]]


def test_the_agent_container_mounts_no_token_nor_git_credentials() -> None:
    manifest = agent_manifest()
    agent_mounts = mounts_of(container_of(manifest, "agent"))
    volumes = volumes_of(manifest)
    assert not {"kube-api-access", "git-credentials"} & set(agent_mounts.values())
    assert SA_MOUNT not in agent_mounts and "/etc/fleetgram/git" not in agent_mounts
    assert not [n for n in agent_mounts.values()
                if "secret" in volumes[n] or "projected" in volumes[n]]


def test_the_agent_container_shares_the_workspace_and_has_a_tmp_of_its_own() -> None:
    manifest = agent_manifest()
    worker, agent = container_of(manifest, "worker"), container_of(manifest, "agent")
    assert mounts_of(agent) == {"/tmp": "agent-tmp", "/workspace": "workspace"}
    assert mounts_of(worker)["/workspace"] == "workspace"
    assert mounts_of(worker)["/tmp"] == "tmp"
    assert volumes_of(manifest)["agent-tmp"] == {"name": "agent-tmp", "emptyDir": {}}
    assert not [m for m in agent["volumeMounts"] if m.get("readOnly")]


def test_the_agent_container_runs_the_relay_on_the_pods_loopback() -> None:
    manifest = agent_manifest()
    worker, agent = container_of(manifest, "worker"), container_of(manifest, "agent")
    assert worker["command"] == agent["command"] == ["fleetgram"]
    assert agent["args"] == ["agent-relay", "--listen", "127.0.0.1:7777"]
    assert (agent["image"], agent["imagePullPolicy"]) == (
        worker["image"], worker["imagePullPolicy"])
    assert "ports" not in agent  # loopback only: nothing outside the pod connects


def test_the_agent_container_is_as_restricted_as_the_worker() -> None:
    manifest = agent_manifest()
    agent = container_of(manifest, "agent")
    assert agent["securityContext"] == container_of(manifest, "worker")["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    assert pod_of(manifest)["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"}}


def test_the_worker_is_given_the_relay_and_keeps_its_secrets() -> None:
    worker = container_of(agent_manifest(), "worker")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in worker["env"]}
    assert env["AGENT_RELAY"] == "127.0.0.1:7777"
    assert env["WORKER_TOKEN"] == {"secretKeyRef": {"name": "token-1", "key": "token"}}
    assert {"DATABASE_URL", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN",
            "WORKSPACE_GIT_CREDENTIALS"} <= set(env)
    assert mounts_of(worker)["/etc/fleetgram/git"] == "git-credentials"
    resolved = {k: v for k, v in env.items()
                if isinstance(v, str) and k != "WORKSPACE_GIT_CREDENTIALS"}  # not mounted here
    settings = load_settings(resolved | {"WORKER_TOKEN_POOL": "1234:worker-token-1",
                                         "ANTHROPIC_API_KEY": "sk-test"},
                             dotenv=None, need_master=False)
    assert settings.agent_relay == "127.0.0.1:7777"


def test_the_agent_container_takes_the_agent_memory_defaults() -> None:
    manifest = agent_manifest(template={"image": "w:1"})
    assert container_of(manifest, "agent")["resources"] == {
        "requests": {"memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def test_the_pools_resources_land_on_the_agent_container() -> None:
    resources = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"}}
    manifest = agent_manifest(template={"image": "w:1", "resources": resources})
    assert container_of(manifest, "agent")["resources"] == resources
    assert container_of(manifest, "worker")["resources"] == {
        "requests": {"memory": "128Mi"}, "limits": {"memory": "512Mi"}}


def test_the_agent_container_fills_in_the_memory_the_pool_leaves_out() -> None:
    manifest = agent_manifest(template={"image": "w:1", "resources": {"requests": {"cpu": "2"}}})
    assert container_of(manifest, "agent")["resources"] == {
        "requests": {"cpu": "2", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def test_the_template_env_reaches_the_worker_only() -> None:
    manifest = agent_manifest(template={**SECRET_POOL_TEMPLATE, "env": [
        *SECRET_POOL_TEMPLATE["env"], {"name": "CLAUDE_SYSTEM_PROMPT", "value": "be brief"}]})
    names = {e["name"] for e in container_of(manifest, "worker")["env"]}
    assert "CLAUDE_SYSTEM_PROMPT" in names and "DATABASE_URL" in names
    assert [e["name"] for e in container_of(manifest, "agent")["env"]] == ["HOME"]


def test_chat_pods_are_unchanged() -> None:
    manifest = deployment_manifest(pool(3, template=dict(SECRET_POOL_TEMPLATE)),
                                   "worker1", 0, NOW)
    pod = pod_of(manifest)
    assert [c["name"] for c in pod["containers"]] == ["worker"]
    assert "automountServiceAccountToken" not in pod and "shareProcessNamespace" not in pod
    assert set(volumes_of(manifest)) == {"tmp"}
    assert mounts_of(pod["containers"][0]) == {"/tmp": "tmp"}
    assert "resources" not in pod["containers"][0]  # the template names none


def test_the_agent_deployment_is_a_valid_kubernetes_object() -> None:
    for manifest in (agent_manifest(), agent_manifest(workspace={"type": "emptyDir"})):
        kubernetes_validate.validate(manifest, "1.30", strict=True)
