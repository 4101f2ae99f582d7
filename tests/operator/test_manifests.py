"""The worker Deployment: one replica, owned by the pool, holding only its own token."""

from __future__ import annotations

import json
from typing import Any

from fleetgram.kube.objects import (
    ANNOTATION_STARTED_AT,
    ANNOTATION_TEMPLATE_HASH,
    LABEL_POOL,
    LABEL_SLOT,
)
from fleetgram.operator.manifests import deployment_manifest, worker_env
from tests.operator.builders import NOW, POOL_UID, pool


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_deployment_mounts_only_its_own_secret() -> None:
    the_pool = pool(3)
    the_pool["spec"]["tokenSecrets"][1] = {"name": "second-token", "key": "bot-token"}
    manifest = deployment_manifest(the_pool, "worker2", 1, NOW)
    env = env_of(manifest)
    assert env["WORKER_TOKEN"] == {"secretKeyRef": {"name": "second-token", "key": "bot-token"}}
    text = json.dumps(manifest)
    assert "token-1" not in text and "token-3" not in text  # no other slot's Secret anywhere
    assert "secretRef" not in text and "envFrom" not in text
    pod = manifest["spec"]["template"]["spec"]
    assert all("secret" not in v for v in pod.get("volumes", []))


def test_the_deployment_is_owned_by_the_pool() -> None:
    manifest = deployment_manifest(pool(3), "worker1", 0, NOW)
    meta = manifest["metadata"]
    assert meta["name"] == "fleetgram-worker1" and meta["namespace"] == "fleetgram"
    assert meta["ownerReferences"] == [{
        "apiVersion": "fleetgram.dev/v1alpha1", "kind": "WorkerPool", "name": "fleetgram",
        "uid": POOL_UID, "controller": True, "blockOwnerDeletion": True}]
    assert meta["labels"][LABEL_POOL] == "fleetgram" and meta["labels"][LABEL_SLOT] == "worker1"
    assert meta["annotations"][ANNOTATION_STARTED_AT] == "2025-03-01T12:00:00Z"
    assert len(meta["annotations"][ANNOTATION_TEMPLATE_HASH]) == 16
    spec = manifest["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # never two pods polling one token
    assert spec["selector"]["matchLabels"] == {LABEL_POOL: "fleetgram", LABEL_SLOT: "worker1"}
    pod_labels = spec["template"]["metadata"]["labels"]
    assert pod_labels[LABEL_SLOT] == "worker1"
    assert pod_labels["app.kubernetes.io/component"] == "worker"  # the chart's metrics Service


def test_the_container_follows_the_template() -> None:
    template = {
        "image": "registry.example/fleetgram-worker:9", "imagePullPolicy": "Always",
        "model": "claude-opus-x", "maxTokens": 8192, "serviceAccountName": "fleetgram-worker",
        "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "512Mi"}},
        "env": [
            {"name": "ALLOWED_USER_IDS", "value": "42"},
            {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}},
            {"name": "CLAUDE_MODEL", "value": "overridden-by-template.model"},
            {"name": "WORKER_TOKEN", "value": "123:not-this-one"},
            {"name": "WORKER_TOKEN_POOL", "value": "1:a,2:b"},
            {"name": "MASTER_BOT_TOKEN", "value": "9:master"},
        ],
    }
    manifest = deployment_manifest(pool(3, template=template, leaseSeconds=45), "worker3", 2,
                                   NOW)
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/fleetgram-worker:9"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"] == template["resources"]
    assert container["command"] == ["fleetgram"]
    assert container["args"] == ["worker", "--slot", "worker3"]
    assert pod["serviceAccountName"] == "fleetgram-worker"
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names))  # no name twice
    env = env_of(manifest)
    assert env["WORKER_SLOT"] == "worker3"
    assert env["FLEETGRAM_MODE"] == "kubernetes"
    assert env["FLEETGRAM_NAMESPACE"] == "fleetgram"
    assert env["FLEETGRAM_POOL"] == "fleetgram"
    assert env["CLAUDE_MODEL"] == "claude-opus-x"
    assert env["CLAUDE_MAX_TOKENS"] == "8192"
    assert env["WORKER_LEASE_SECONDS"] == "45"
    assert env["ALLOWED_USER_IDS"] == "42"
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "db", "key": "url"}}
    assert env["WORKER_TOKEN"] == {"secretKeyRef": {"name": "token-3", "key": "token"}}
    assert "WORKER_TOKEN_POOL" not in env and "MASTER_BOT_TOKEN" not in env


def test_template_env_without_model_is_kept() -> None:
    template = {"image": "w:1", "env": [{"name": "CLAUDE_MODEL", "value": "from-env"}]}
    env = {e["name"]: e.get("value") for e in worker_env(pool(1, template=template), "worker1",
                                                         0)}
    assert env["CLAUDE_MODEL"] == "from-env"
    assert "CLAUDE_MAX_TOKENS" not in env


def test_the_template_hash_follows_the_pod_template_only() -> None:
    a = deployment_manifest(pool(3), "worker1", 0, NOW)
    b = deployment_manifest(pool(3), "worker1", 0, NOW.replace(hour=1))
    c = deployment_manifest(pool(3, template={"image": "w:2"}), "worker1", 0, NOW)
    def hash_of(manifest: dict[str, Any]) -> str:
        value: str = manifest["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
        return value

    assert hash_of(a) == hash_of(b) != hash_of(c)
