"""The few Kubernetes API calls the operator makes, as raw JSON over the `kubernetes` client.

The objects stay plain dicts exactly as the API server sends them (what the pure planner
reads); the synchronous client runs in a worker thread. Writes that must not race carry a
resourceVersion (merge patches with metadata.resourceVersion, replaces, delete preconditions)
and a 409 comes back as `Conflict`.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote

from fleetgram.kube.objects import BOTTASKS, GROUP, VERSION, WORKERPOOLS

JsonDict = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(KubeError):
    """409: a resourceVersion/uid precondition failed, or the object already exists."""


class NotFound(KubeError):
    """404."""


class Forbidden(KubeError):
    """403."""


def _error(status: int, body: bytes | str | None) -> KubeError:
    reason, message = "", ""
    try:
        data = json.loads(body or b"{}")
        reason, message = str(data.get("reason", "")), str(data.get("message", ""))
    except (ValueError, AttributeError):
        message = str(body or "")[:300]
    cls = {409: Conflict, 404: NotFound, 403: Forbidden}.get(status, KubeError)
    return cls(status, reason, message)


# --- paths -----------------------------------------------------------------------------------

def bottasks_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    return _path(f"/apis/{GROUP}/{VERSION}", namespace, BOTTASKS, name, sub)


def workerpools_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    return _path(f"/apis/{GROUP}/{VERSION}", namespace, WORKERPOOLS, name, sub)


def deployments_path(namespace: str, name: str | None = None) -> str:
    return _path("/apis/apps/v1", namespace, "deployments", name, None)


def persistentvolumeclaims_path(namespace: str, name: str | None = None) -> str:
    return _path("/api/v1", namespace, "persistentvolumeclaims", name, None)


def leases_path(namespace: str, name: str | None = None) -> str:
    return _path("/apis/coordination.k8s.io/v1", namespace, "leases", name, None)


def secrets_path(namespace: str, name: str | None = None) -> str:
    return _path("/api/v1", namespace, "secrets", name, None)


def _path(prefix: str, namespace: str, plural: str, name: str | None, sub: str | None) -> str:
    path = f"{prefix}/namespaces/{quote(namespace, safe='')}/{plural}"
    if name is not None:
        path += "/" + quote(name, safe="")
    if sub is not None:
        path += "/" + sub
    return path


# --- the interface ---------------------------------------------------------------------------

class KubeApi(Protocol):
    async def list(self, path: str, *, label_selector: str | None = None) -> list[JsonDict]: ...

    async def get(self, path: str) -> JsonDict: ...

    async def create(self, path: str, body: Mapping[str, Any]) -> JsonDict: ...

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JsonDict: ...

    async def replace(self, path: str, body: Mapping[str, Any]) -> JsonDict: ...

    async def delete(self, path: str, *, preconditions: Mapping[str, str] | None = None,
                     propagation: str = "Background") -> None: ...


class KubernetesApi:
    """KubeApi over the `kubernetes` client's ApiClient (its default configuration: in-cluster
    or kubeconfig, as loaded by kopf's `login_via_client` or `load_config()`)."""

    def __init__(self, api_client: Any | None = None, *, timeout: float = 30.0) -> None:
        self._client = api_client
        self._timeout = timeout
        self._lock = threading.Lock()

    @staticmethod
    def load_config() -> None:
        import kubernetes.config

        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]

    def _api(self) -> Any:
        with self._lock:
            if self._client is None:
                import kubernetes.client

                config = kubernetes.client.Configuration.get_default_copy()
                self._client = kubernetes.client.ApiClient(configuration=config)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _call(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
              body: Any = None, content_type: str = "application/json") -> Any:
        api = self._api()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        _, url, headers, body, _ = api.param_serialize(
            method=method, resource_path=path, query_params=query or None,
            header_params=headers, body=body, auth_settings=["BearerToken"],
        )
        response = api.call_api(method, url, header_params=headers, body=body,
                                _request_timeout=self._timeout)
        response.read()
        data = response.data
        if not 200 <= response.status <= 299:
            raise _error(response.status, data)
        return json.loads(data) if data else {}

    async def _run(self, method: str, path: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._call, method, path, **kwargs)

    async def list(self, path: str, *, label_selector: str | None = None) -> list[JsonDict]:
        items: list[JsonDict] = []
        token: str | None = None
        while True:
            query = [("limit", "500")]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = await self._run("GET", path, query=query)
            kind = str(page.get("kind", "")).removesuffix("List")
            api_version = page.get("apiVersion")
            for item in page.get("items") or []:
                item.setdefault("kind", kind)  # lists leave kind/apiVersion out of items
                if api_version:
                    item.setdefault("apiVersion", api_version)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    async def get(self, path: str) -> JsonDict:
        result: JsonDict = await self._run("GET", path)
        return result

    async def create(self, path: str, body: Mapping[str, Any]) -> JsonDict:
        result: JsonDict = await self._run("POST", path, body=dict(body))
        return result

    async def merge_patch(self, path: str, patch: Mapping[str, Any]) -> JsonDict:
        result: JsonDict = await self._run("PATCH", path, body=dict(patch),
                                           content_type=MERGE_PATCH)
        return result

    async def replace(self, path: str, body: Mapping[str, Any]) -> JsonDict:
        result: JsonDict = await self._run("PUT", path, body=dict(body))
        return result

    async def delete(self, path: str, *, preconditions: Mapping[str, str] | None = None,
                     propagation: str = "Background") -> None:
        body: JsonDict = {"kind": "DeleteOptions", "apiVersion": "v1",
                          "propagationPolicy": propagation}
        if preconditions:
            body["preconditions"] = dict(preconditions)
        await self._run("DELETE", path, body=body)
