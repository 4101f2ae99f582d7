"""The worker Deployment of a WorkerPool slot, as a plain dict (no I/O, no kopf).

One Deployment per active token slot: one replica, replaced with Recreate (a bot token may be
polled by one process only, so an old and a new pod must never overlap), owned by the
WorkerPool (deleting the pool deletes its workers), and holding only its own token: the
container's WORKER_TOKEN comes from a secretKeyRef to that slot's Secret, and nothing else of
the token pool reaches the pod. Agent workers (WorkerPool `engine: agent`) also get their
workspace volume and settings, and a second container, `agent`, that runs the Claude Code CLI
for the worker without its secrets (fleetgram.operator.agent); every container runs non-root on
a read-only root filesystem, writing only to its /tmp and the workspace.

The pool's `spec.template` carries the pod settings of the chart's `worker.*` values into every
worker Deployment: imagePullSecrets, nodeSelector, tolerations, affinity, priorityClassName,
pod annotations and labels (the operator's own labels win), the pod and container security
contexts (merged key by key over the restrictive defaults below), resources, extra volumes and
mounts (names and paths the operator uses win), envFrom (worker container only: the agent
container gets nothing secret) and the health port (liveness /healthz, readiness /readyz).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fleetgram.kube.objects import (
    ANNOTATION_STARTED_AT,
    ANNOTATION_TEMPLATE_HASH,
    API_VERSION,
    WORKERPOOL_KIND,
    deployment_name,
    iso,
    worker_labels,
)
from fleetgram.operator import agent

CONTAINER_NAME = "worker"
RUN_AS_USER = 10001  # the images' unprivileged user (as in the Helm chart)
# Every container's (the worker's and an agent pod's `agent`); the pod adds the user and
# seccomp. Writable: /tmp and (agent pods) the workspace only; the agent's commands must not
# change the image.
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

# The pod's, merged under the template's podSecurityContext (a key the template sets wins).
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "seccompProfile": {"type": "RuntimeDefault"},
}
DEFAULT_HEALTH_PORT = 8081  # HEALTH_PORT: /healthz (liveness) and /readyz (readiness)
HEALTH_PORT_NAME = "health"
# Copied as they are from spec.template into the pod spec (when set).
_POD_FIELDS = ("nodeSelector", "tolerations", "affinity", "priorityClassName",
               "imagePullSecrets")

# Set by the operator for each slot; a template env entry of the same name is dropped.
# WORKER_TOKEN_POOL and MASTER_BOT_TOKEN never reach a worker: it holds its own token only.
_DROPPED_ENV = frozenset({"WORKER_TOKEN_POOL", "MASTER_BOT_TOKEN"})


def owner_reference(pool: Mapping[str, Any]) -> dict[str, Any]:
    meta = pool["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": WORKERPOOL_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def token_secret(pool: Mapping[str, Any], index: int) -> tuple[str, str]:
    """(Secret name, key) of slot `index` (0-based) of the pool's token pool."""
    entry = pool["spec"]["tokenSecrets"][index]
    return entry["name"], entry.get("key") or "token"


def service_account(pool: Mapping[str, Any], index: int) -> str | None:
    """The ServiceAccount slot `index` runs as: its own (tokenSecrets[i].serviceAccountName,
    so that the API server can tell the workers apart), else the template's shared one."""
    entry = pool["spec"]["tokenSecrets"][index]
    template = pool["spec"].get("template") or {}
    return entry.get("serviceAccountName") or template.get("serviceAccountName") or None


def worker_env(pool: Mapping[str, Any], slot: str, index: int) -> list[dict[str, Any]]:
    """template.env, then the slot's own settings (which win over same-named template ones)."""
    meta, spec = pool["metadata"], pool["spec"]
    template = spec.get("template") or {}
    secret, key = token_secret(pool, index)
    own: list[dict[str, Any]] = [
        {"name": "WORKER_SLOT", "value": slot},
        {"name": "FLEETGRAM_MODE", "value": "kubernetes"},
        {"name": "FLEETGRAM_NAMESPACE", "value": meta.get("namespace") or "default"},
        {"name": "FLEETGRAM_POOL", "value": meta["name"]},
    ]
    if template.get("model"):
        own.append({"name": "CLAUDE_MODEL", "value": str(template["model"])})
    if template.get("maxTokens"):
        own.append({"name": "CLAUDE_MAX_TOKENS", "value": str(template["maxTokens"])})
    own.append({"name": "WORKER_LEASE_SECONDS", "value": str(spec.get("leaseSeconds", 30))})
    own.append({"name": "HEALTH_PORT", "value": str(health_port(pool))})
    own.append({"name": "WORKER_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    own += agent.agent_env(pool)
    taken = {e["name"] for e in own} | _DROPPED_ENV
    inherited = [
        copy.deepcopy(dict(e)) for e in template.get("env") or []
        if isinstance(e, Mapping) and e.get("name") not in taken
    ]
    return inherited + own


def health_port(pool: Mapping[str, Any]) -> int:
    """The worker container's HEALTH_PORT (template.healthPort; 0: no health server, no
    probes)."""
    port = (pool["spec"].get("template") or {}).get("healthPort")
    return DEFAULT_HEALTH_PORT if port is None else int(port)


def health_probes(port: int) -> dict[str, Any]:
    """The worker container's port `health` and its probes (none when the port is 0). The
    liveness probe allows a slow start (Telegram polling must run for /healthz to answer 200)."""
    if not port:
        return {}
    return {
        "ports": [{"name": HEALTH_PORT_NAME, "containerPort": port, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": HEALTH_PORT_NAME},
            "initialDelaySeconds": 20, "periodSeconds": 10, "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": HEALTH_PORT_NAME},
            "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3,
        },
    }


def security_context(template: Mapping[str, Any]) -> dict[str, Any]:
    """A container's: the restrictive defaults, with the keys template.securityContext sets."""
    return {**copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
            **copy.deepcopy(dict(template.get("securityContext") or {}))}


def pod_security_context(template: Mapping[str, Any]) -> dict[str, Any]:
    """The pod's: the defaults, with the keys template.podSecurityContext sets."""
    return {**copy.deepcopy(POD_SECURITY_CONTEXT),
            **copy.deepcopy(dict(template.get("podSecurityContext") or {}))}


def _extra(items: Any, key: str, taken: set[str]) -> list[dict[str, Any]]:
    """Template list entries whose `key` the operator does not use already."""
    return [copy.deepcopy(dict(item)) for item in items or []
            if isinstance(item, Mapping) and item.get(key) not in taken]


def pod_template(pool: Mapping[str, Any], slot: str, index: int) -> dict[str, Any]:
    meta, spec = pool["metadata"], pool["spec"]
    template = spec.get("template") or {}
    labels = {
        **{str(k): str(v) for k, v in (template.get("podLabels") or {}).items()},
        **worker_labels(meta["name"], slot),
        "app.kubernetes.io/name": "fleetgram",
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/part-of": "fleetgram",
        "app.kubernetes.io/managed-by": "fleetgram-operator",
    }
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": template["image"],
        "command": ["fleetgram"],
        "args": ["worker", "--slot", slot],
        "env": worker_env(pool, slot, index),
        "securityContext": security_context(template),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *agent.agent_mounts(pool)],
        **health_probes(health_port(pool)),
    }
    if template.get("envFrom"):
        container["envFrom"] = copy.deepcopy(list(template["envFrom"]))
    container["volumeMounts"] += _extra(template.get("extraVolumeMounts"), "mountPath",
                                        {m["mountPath"] for m in container["volumeMounts"]})
    if template.get("imagePullPolicy"):
        container["imagePullPolicy"] = template["imagePullPolicy"]
    if agent.is_agent(pool):
        # The CLI runs in the agent container, which takes the pool's resources.
        container["resources"] = agent.worker_resources()
    elif template.get("resources"):
        container["resources"] = copy.deepcopy(dict(template["resources"]))
    containers = [container]
    sidecar = agent.agent_container(pool, image=template["image"],
                                    security_context=security_context(template),
                                    image_pull_policy=template.get("imagePullPolicy"))
    if sidecar is not None:
        containers.append(sidecar)
    pod_spec: dict[str, Any] = {
        "containers": containers,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "securityContext": pod_security_context(template),
        "volumes": [{"name": "tmp", "emptyDir": {}}, *agent.agent_volumes(pool, slot)],
    }
    pod_spec["volumes"] += _extra(template.get("extraVolumes"), "name",
                                  {v["name"] for v in pod_spec["volumes"]})
    for field in _POD_FIELDS:
        if template.get(field):
            pod_spec[field] = copy.deepcopy(template[field])
    account = service_account(pool, index)
    if account:
        pod_spec["serviceAccountName"] = account
    if agent.is_agent(pool):
        # Only the worker container mounts the token (agent.service_account_volume), and the
        # agent container sees none of the worker's processes (nor their /proc/<pid>/environ).
        pod_spec["automountServiceAccountToken"] = False
        pod_spec["shareProcessNamespace"] = False
    pod_meta: dict[str, Any] = {"labels": labels}
    if template.get("podAnnotations"):
        pod_meta["annotations"] = {str(k): str(v)
                                   for k, v in template["podAnnotations"].items()}
    return {"metadata": pod_meta, "spec": pod_spec}


def workspace_claim(pool: Mapping[str, Any], slot: str) -> dict[str, Any] | None:
    """The PVC of `slot`'s workspace (agent workers with a persistentVolumeClaim workspace),
    owned by the pool; None otherwise."""
    return agent.workspace_claim(pool, slot, owner_reference(pool))


def template_hash(template: Mapping[str, Any]) -> str:
    blob = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def deployment_manifest(
    pool: Mapping[str, Any], slot: str, index: int, started_at: datetime
) -> dict[str, Any]:
    """The Deployment of slot `slot` (= index `index` of spec.tokenSecrets)."""
    meta = pool["metadata"]
    name = meta["name"]
    template = pod_template(pool, slot, index)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(name, slot),
            "namespace": meta.get("namespace") or "default",
            "labels": agent.worker_object_labels(name, slot),
            "annotations": {
                ANNOTATION_STARTED_AT: iso(started_at),
                ANNOTATION_TEMPLATE_HASH: template_hash(template),
            },
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 2,
            "selector": {"matchLabels": worker_labels(name, slot)},
            "template": template,
        },
    }


def updated_deployment(
    current: Mapping[str, Any], desired: Mapping[str, Any]
) -> dict[str, Any]:
    """`current` with the desired pod template, replicas, strategy and annotations: the body of
    a replace (PUT) carrying current's resourceVersion, so a concurrent change wins."""
    body = copy.deepcopy(dict(current))
    body.pop("status", None)
    meta = body.setdefault("metadata", {})
    meta.setdefault("annotations", {}).update(desired["metadata"]["annotations"])
    meta.setdefault("labels", {}).update(desired["metadata"]["labels"])
    spec = body.setdefault("spec", {})
    spec["replicas"] = 1
    spec["strategy"] = {"type": "Recreate"}
    spec["template"] = copy.deepcopy(desired["spec"]["template"])
    return body
