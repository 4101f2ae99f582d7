"""Kubernetes mode, all parts running, through the Helm chart *installed* into the emulated
API server with RBAC enforced (`KubeEmulator(rbac=True)`).

The chart is rendered by Helm's own engine from a values file (ten-digit user ids included,
read by Helm's `-f` parser) and every rendered object is applied as `helm install` would: the
CRDs of `crds/` first, then the templates in Helm's kind order, hooks left out (the pre-delete
hook runs at uninstall). Then the real kopf operator (in its own thread), the master in cluster
mode and the worker "pods" (started by a fake kubelet from the operator's Deployments) talk to
the API server each with a token of its own ServiceAccount: the operator's and the master's are
the `serviceAccountName` of the chart's Deployments, a worker's that of its Deployment's pod
template. Whatever their Roles do not grant is a 403, as on a real cluster."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import yaml

from fleetgram.config import load_settings
from fleetgram.fleet import Fleet
from fleetgram.kube.queue import ClusterStore
from fleetgram.operator.kubeapi import KubernetesApi
from fleetgram.operator.main import build_registry
from fleetgram.operator.outbox import StoreOutbox
from fleetgram.operator.reconcile import OperatorConfig
from fleetgram.store import open_store
from tests.cluster.kubelet import FakeKubelet
from tests.e2e.harness import API_KEY, MASTER_TOKEN, World, fleet_env
from tests.e2e.harness import worker_token as token_of
from tests.emulators.kube_api import KubeEmulator
from tests.operator.harness import OperatorThread

NS = "fleetgram"
RELEASE = "fleetgram"  # fullname = the release name: the pool and Deployments are "fleetgram-…"
POOL = "fleetgram"
CHART = Path(__file__).resolve().parents[2] / "charts" / "fleetgram"
TEN_DIGIT_USER = 1234567890  # a real Telegram id's size: Helm reads it as a float64
COMPONENT_LABEL = "app.kubernetes.io/component"
# Helm's install order (pkg/release/util/kind_sorter.go), the kinds the chart can render.
INSTALL_ORDER = ("Namespace", "NetworkPolicy", "ServiceAccount", "Secret", "ConfigMap",
                 "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
                 "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment", "Job")


def values_file(world: World, tokens: int, scaling: dict[str, Any],
                extra: dict[str, Any] | None = None) -> str:
    """my-values.yaml for this world: the emulators' URLs, `tokens` worker slots, the scaling
    settings given, and user ids as a platform engineer writes them (numbers, one of ten
    digits); `extra` adds top-level sections (e.g. `worker`)."""
    return yaml.safe_dump({
        "telegram": {"allowedUserIds": [world.ada.user_id, TEN_DIGIT_USER],
                     "masterToken": {"value": MASTER_TOKEN},
                     "apiUrl": world.telegram.url},
        "workerTokens": [{"value": token_of(n)} for n in range(1, tokens + 1)],
        "anthropic": {"apiKey": {"value": API_KEY}, "baseUrl": world.claude.url},
        "database": {"url": {"value": world.database_url}},
        "claude": {"model": "claude-sonnet-5-5", "maxTokens": 1024},
        "scaling": scaling,
        "metrics": {"enabled": False},
        **(extra or {}),
    }, sort_keys=False)


def render_chart(values_text: str, release: str = RELEASE,
                 namespace: str = NS) -> list[dict[str, Any]]:
    """The chart's objects for this values file, rendered by Helm's own engine."""
    import helm_python as helm

    values = helm.values_from_yaml(values_text)  # Helm's `-f` parser: numbers as float64
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=release, namespace=namespace, is_install=True)
    return [doc for name, text in sorted(manifests.items()) if not name.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in ((obj.get("metadata") or {}).get("annotations") or {})


def install(emu: KubeEmulator, objects: list[dict[str, Any]], namespace: str = NS) -> None:
    """`helm install`: the chart's CRDs (only if missing, as Helm does), then every rendered
    object but hooks, in Helm's kind order. A kind the API server does not serve fails the
    install, as it would for real."""
    served = {rt.kind for rt in emu.resource_types()}
    if "BotTask" not in served:
        emu.load_crds(sorted((CHART / "crds").glob("*.yaml")))
    rank = {kind: i for i, kind in enumerate(INSTALL_ORDER)}
    for obj in sorted((o for o in objects if not is_hook(o)),
                      key=lambda o: rank.get(o["kind"], len(rank))):
        rt = emu.resource_type(obj["kind"])
        emu.create(obj, namespace=namespace if rt.namespaced else None)


def hook_objects(objects: list[dict[str, Any]], hook: str) -> list[dict[str, Any]]:
    """The chart's objects of one hook (e.g. pre-delete), in Helm's kind order."""
    rank = {kind: i for i, kind in enumerate(INSTALL_ORDER)}
    return sorted((o for o in objects if is_hook(o)
                   and o["metadata"]["annotations"]["helm.sh/hook"] == hook),
                  key=lambda o: rank.get(o["kind"], len(rank)))


def uninstall(emu: KubeEmulator, objects: list[dict[str, Any]], namespace: str = NS) -> None:
    """The end of `helm uninstall`, after its pre-delete hook: every object of the release
    (hooks and CRDs aside) deleted, in the reverse of the install order."""
    rank = {kind: i for i, kind in enumerate(INSTALL_ORDER)}
    for obj in sorted((o for o in objects if not is_hook(o)),
                      key=lambda o: -rank.get(o["kind"], len(rank))):
        rt = emu.resource_type(obj["kind"])
        ns = namespace if rt.namespaced else None
        if emu.get(rt.plural, obj["metadata"]["name"], ns) is not None:
            emu.delete(rt.plural, obj["metadata"]["name"], ns)


def rendered_service_account(objects: list[dict[str, Any]], component: str) -> str:
    """The ServiceAccount the chart runs `component` (operator, master) as."""
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        if obj["kind"] == "Deployment" and labels.get(COMPONENT_LABEL) == component:
            return str(obj["spec"]["template"]["spec"].get("serviceAccountName") or "default")
    raise LookupError(f"no {component} Deployment in the chart")


CHART_SETTINGS = ("ALLOWED_USER_IDS", "TELEGRAM_API_URL", "CLAUDE_MODEL", "FLEETGRAM_POOL")


def rendered_env(objects: list[dict[str, Any]], component: str) -> dict[str, str]:
    """The plain `value` env entries of the chart's Deployment of `component`."""
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        if obj["kind"] == "Deployment" and labels.get(COMPONENT_LABEL) == component:
            container = obj["spec"]["template"]["spec"]["containers"][0]
            return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
    raise LookupError(f"no {component} Deployment in the chart")


def user_of(service_account: str, namespace: str = NS) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


class Cluster:
    def __init__(self, emu: KubeEmulator, world: World, tokens: int = 3,
                 values: dict[str, Any] | None = None, env: dict[str, str] | None = None,
                 **scaling: Any) -> None:
        self.emu, self.world = emu, world
        self.values = values_file(world, tokens, scaling, values)
        self.objects = render_chart(self.values)
        install(emu, self.objects)
        self._dir = tempfile.TemporaryDirectory(prefix="fleetgram-cluster-")
        self._issued = 0
        self.service_accounts = {c: rendered_service_account(self.objects, c)
                                 for c in ("operator", "master")}
        self.env = fleet_env(world.telegram, world.claude, world.database_url, tokens)
        self.env.update(FLEETGRAM_MODE="kubernetes", FLEETGRAM_NAMESPACE=NS,
                        FLEETGRAM_POOL=POOL)
        # The master's settings as the chart renders them (the ten-digit id must parse).
        master_env = rendered_env(self.objects, "master")
        self.env.update({k: master_env[k] for k in CHART_SETTINGS if k in master_env})
        self.env.update(env or {})
        worker_env = {k: v for k, v in self.env.items() if k != "WORKER_TOKEN_POOL"}
        self.kubelet = FakeKubelet(emu, NS, worker_env, kubeconfig_for=self.kubeconfig_for)
        settings = load_settings(self.env, dotenv=None)
        store = ClusterStore(settings, open_store(settings.database_url),
                             kubeconfig=self.kubeconfig_for(self.service_accounts["master"]))
        self.master = Fleet(settings, store=store)

    def kubeconfig_for(self, service_account: str) -> str:
        """A kubeconfig with a fresh token of `service_account` (what a pod running as it
        finds at /var/run/secrets/kubernetes.io/serviceaccount)."""
        self._issued += 1
        path = Path(self._dir.name) / f"{service_account}-{self._issued}"
        return self.emu.service_account_kubeconfig(path, NS, service_account)

    @contextmanager
    def operator(self, database_url: str | None = None) -> Any:
        """The operator, as its ServiceAccount: its own API client for the reconciler, and a
        kopf login (preferred over the default one) with the same token. `database_url`: the
        database it is given (default: the world's)."""
        account = self.service_accounts["operator"]
        token = self.emu.service_account_token(NS, account)
        path = self.emu.kubeconfig(Path(self._dir.name) / f"{account}-kopf", NS, token=token)
        api = KubernetesApi(kubernetes.config.new_client_from_config(config_file=path))
        registry, _ = build_registry(api, outbox=StoreOutbox(database_url
                                                             or self.world.database_url),
                                     config=OperatorConfig(interval=0.3),
                                     token_key=self.env.get("TOKEN_ENCRYPTION_KEY"))

        @kopf.on.login(registry=registry)
        def as_service_account(**_: Any) -> kopf.ConnectionInfo:
            return self.emu.connection_info(NS, token=token, priority=100)

        try:
            with OperatorThread(registry) as thread:
                yield thread
        finally:
            api.close()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Cluster]:
        """Operator, kubelet and master up for the duration of the block."""
        with self.operator():
            async with self.bots():
                yield self

    @asynccontextmanager
    async def bots(self) -> AsyncIterator[Cluster]:
        await self.kubelet.start()
        await self.master.start()
        try:
            yield self
        finally:
            await self.master.stop()
            await self.kubelet.stop()

    def task(self, task_id: str) -> dict[str, Any]:
        return self.emu.get("bottasks", task_id, NS) or {}

    def phase(self, task_id: str) -> str:
        return (self.task(task_id).get("status") or {}).get("phase", "")

    def status(self, task_id: str) -> dict[str, Any]:
        return self.task(task_id).get("status") or {}

    def deployments(self) -> list[str]:
        """The worker Deployments (the chart's master and operator ones left out)."""
        return sorted(d["metadata"]["name"] for d in self.emu.objects("deployments", NS)
                      if not d["metadata"].get("deletionTimestamp")
                      and (d["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "worker")
