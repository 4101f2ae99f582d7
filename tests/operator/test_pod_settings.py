"""The WorkerPool template's pod settings reach every worker Deployment (built pure): what the
chart's worker.* values put into spec.template, the operator copies into pod and containers,
keeping its own labels, volumes and restrictive defaults."""

from __future__ import annotations

from typing import Any

from fleetgram.kube.objects import ANNOTATION_TEMPLATE_HASH, LABEL_POOL, LABEL_SLOT
from fleetgram.operator.manifests import deployment_manifest
from tests.operator.builders import NOW, POOL, pool

IMAGE = "registry.example.com/fleetgram-worker:1"


def manifest(engine: str = "chat", **template: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"engine": engine} if engine != "chat" else {}
    body = pool(3, template={"image": IMAGE, **template}, **spec)
    return deployment_manifest(body, "worker2", 1, NOW)


def pod_of(dep: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = dep["spec"]["template"]["spec"]
    return spec


def container_of(dep: dict[str, Any], name: str = "worker") -> dict[str, Any]:
    (container,) = [c for c in pod_of(dep)["containers"] if c["name"] == name]
    return container


def env_of(dep: dict[str, Any], name: str = "worker") -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom"))
            for e in container_of(dep, name).get("env", [])}


def test_scheduling_and_pull_settings_are_copied_into_the_pod_spec() -> None:
    settings: dict[str, Any] = {
        "imagePullSecrets": [{"name": "regcred"}],
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "bots", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "priorityClassName": "fleet-high",
    }
    pod = pod_of(manifest(**settings))
    assert {key: pod[key] for key in settings} == settings


def test_without_pod_settings_the_pod_spec_has_none_of_them() -> None:
    pod = pod_of(manifest())
    assert not {"imagePullSecrets", "nodeSelector", "tolerations", "affinity",
                "priorityClassName"} & set(pod)
    assert "annotations" not in manifest()["spec"]["template"]["metadata"]


def test_pod_annotations_and_labels_are_added_but_the_operators_labels_win() -> None:
    dep = manifest(podAnnotations={"prometheus.io/scrape": "true"},
                   podLabels={"team": "bots", LABEL_POOL: "someone-else",
                              "app.kubernetes.io/component": "x"})
    meta = dep["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"prometheus.io/scrape": "true"}
    assert meta["labels"]["team"] == "bots"
    assert meta["labels"][LABEL_POOL] == POOL and meta["labels"][LABEL_SLOT] == "worker2"
    assert meta["labels"]["app.kubernetes.io/component"] == "worker"
    assert dep["spec"]["selector"]["matchLabels"].items() <= meta["labels"].items()


def test_the_restrictive_defaults_hold_when_the_template_sets_no_security_context() -> None:
    dep = manifest()
    assert pod_of(dep)["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert container_of(dep)["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}


def test_the_pod_security_context_is_merged_key_by_key_over_the_defaults() -> None:
    pod = pod_of(manifest(podSecurityContext={"runAsUser": 20002,
                                              "fsGroupChangePolicy": "OnRootMismatch"}))
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 20002, "runAsGroup": 10001, "fsGroup": 10001,
        "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}


def test_the_container_security_context_is_merged_into_worker_and_agent_containers() -> None:
    dep = manifest("agent", securityContext={"readOnlyRootFilesystem": False,
                                             "runAsUser": 20002})
    for name in ("worker", "agent"):
        assert container_of(dep, name)["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": False,
            "capabilities": {"drop": ["ALL"]}, "runAsUser": 20002}


def test_extra_volumes_and_mounts_are_added_but_the_operators_own_win() -> None:
    dep = manifest(
        extraVolumes=[{"name": "ca", "configMap": {"name": "corp-ca"}},
                      {"name": "tmp", "hostPath": {"path": "/"}}],
        extraVolumeMounts=[{"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True},
                           {"name": "ca", "mountPath": "/tmp"}])
    volumes = {v["name"]: v for v in pod_of(dep)["volumes"]}
    assert volumes["ca"] == {"name": "ca", "configMap": {"name": "corp-ca"}}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    mounts = container_of(dep)["volumeMounts"]
    assert {"name": "ca", "mountPath": "/etc/ssl/corp", "readOnly": True} in mounts
    assert [m["name"] for m in mounts if m["mountPath"] == "/tmp"] == ["tmp"]


def test_env_from_reaches_the_worker_container_only() -> None:
    refs = [{"configMapRef": {"name": "fleet-settings"}},
            {"secretRef": {"name": "proxy"}, "prefix": "HTTP_"}]
    dep = manifest("agent", envFrom=refs)
    assert container_of(dep)["envFrom"] == refs
    assert "envFrom" not in container_of(dep, "agent")


def test_the_worker_container_is_probed_on_its_health_port() -> None:
    container = container_of(manifest())
    assert container["ports"] == [{"name": "health", "containerPort": 8081, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert env_of(manifest())["HEALTH_PORT"] == "8081"


def test_the_health_port_follows_the_template_and_wins_over_a_template_env() -> None:
    dep = manifest(healthPort=9100, env=[{"name": "HEALTH_PORT", "value": "1"}])
    container = container_of(dep)
    assert container["ports"][0]["containerPort"] == 9100
    assert [e for e in container["env"] if e["name"] == "HEALTH_PORT"] == [
        {"name": "HEALTH_PORT", "value": "9100"}]


def test_health_port_zero_turns_the_probes_off() -> None:
    dep = manifest(healthPort=0)
    container = container_of(dep)
    assert not {"ports", "livenessProbe", "readinessProbe"} & set(container)
    assert env_of(dep)["HEALTH_PORT"] == "0"


def test_the_agent_container_has_no_health_port_nor_probes() -> None:
    agent = container_of(manifest("agent"), "agent")
    assert not {"ports", "livenessProbe", "readinessProbe", "startupProbe"} & set(agent)
    assert "HEALTH_PORT" not in env_of(manifest("agent"), "agent")


def test_a_change_of_pod_settings_changes_the_template_hash() -> None:
    before = manifest()["metadata"]["annotations"][ANNOTATION_TEMPLATE_HASH]
    after = manifest(nodeSelector={"disk": "ssd"})["metadata"]["annotations"][
        ANNOTATION_TEMPLATE_HASH]
    assert before != after  # the operator restarts each worker, once idle, with the new pod


def test_a_slot_with_its_own_service_account_runs_as_it_and_others_as_the_templates() -> None:
    body = pool(3, template={"image": IMAGE, "serviceAccountName": "shared"})
    body["spec"]["tokenSecrets"][1]["serviceAccountName"] = "fleet-worker-2"
    assert pod_of(deployment_manifest(body, "worker2", 1, NOW))["serviceAccountName"] == \
        "fleet-worker-2"
    assert pod_of(deployment_manifest(body, "worker1", 0, NOW))["serviceAccountName"] == "shared"
    del body["spec"]["template"]["serviceAccountName"]
    assert "serviceAccountName" not in pod_of(deployment_manifest(body, "worker1", 0, NOW))
