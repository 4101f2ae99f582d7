"""A small async face on the synchronous `kubernetes` client.

Every call runs in a worker thread (`asyncio.to_thread`), so the event loop never blocks on the
API server. Answers come back as plain dicts, exactly as the API server sent them (the client's
models are bypassed with `_preload_content=False`: they would, for one, rewrite a Lease's
MicroTime `renewTime` in a form the API server refuses). A 409 becomes `Conflict`, a 404
`NotFound`, any other refusal `KubeApiError`.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from fleetgram.kube.objects import GROUP, VERSION

MERGE_PATCH = "application/merge-patch+json"
DEFAULT_TIMEOUT = 30.0  # seconds, per request


class KubeApiError(Exception):
    """The API server refused a request."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(KubeApiError):
    """409: a stale resourceVersion (the object changed since it was read), or AlreadyExists."""


class NotFound(KubeApiError):
    """404: no such object."""


def _translate(exc: ApiException) -> KubeApiError:
    status = int(exc.status or 0)
    reason = str(exc.reason or "")
    message = ""
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body:
        try:
            decoded = json.loads(body)
        except ValueError:
            message = body
        else:
            if isinstance(decoded, dict):
                message = str(decoded.get("message", ""))
                reason = str(decoded.get("reason") or reason)
    kind = {409: Conflict, 404: NotFound}.get(status, KubeApiError)
    return kind(status, reason, message)


def load_configuration(kubeconfig: str | os.PathLike[str] | None = None) -> Any:
    """A client Configuration: from `kubeconfig` when given; else in-cluster (the pod's service
    account) when running in a pod; else the kubeconfig of $KUBECONFIG or ~/.kube/config."""
    configuration = kubernetes.client.Configuration()
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except ConfigException:
            pass
        else:
            return configuration
    # Read $KUBECONFIG now, not at import (the client's default): it may list several files,
    # which the client merges.
    path = str(kubeconfig) if kubeconfig is not None else (
        os.environ.get("KUBECONFIG", "").strip() or "~/.kube/config"
    )
    kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)
    return configuration


class KubeClient:
    """The few namespaced calls fleetgram makes, async, answering dicts."""

    def __init__(
        self, api_client: Any, namespace: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.timeout = timeout
        self.custom = kubernetes.client.CustomObjectsApi(api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(api_client)
        self.apps = kubernetes.client.AppsV1Api(api_client)

    @classmethod
    async def connect(
        cls, namespace: str, kubeconfig: str | os.PathLike[str] | None = None
    ) -> KubeClient:
        configuration = await asyncio.to_thread(load_configuration, kubeconfig)
        return cls(kubernetes.client.ApiClient(configuration), namespace)

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)

    # --- plumbing ------------------------------------------------------------------------
    async def _call(
        self, method: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        kwargs.setdefault("_request_timeout", self.timeout)
        return await asyncio.to_thread(self._call_sync, method, args, kwargs)

    @staticmethod
    def _call_sync(
        method: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        try:
            response = method(*args, _preload_content=False, **kwargs)
        except ApiException as exc:
            raise _translate(exc) from None
        try:
            data = response.data
        finally:
            response.release_conn()
        decoded = json.loads(data) if data else None
        return decoded if isinstance(decoded, dict) else {}

    # --- custom objects (fleetgram.dev/v1alpha1) ------------------------------------------
    async def get_object(self, plural: str, name: str) -> dict[str, Any]:
        return await self._call(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, self.namespace, plural,
            name,
        )

    async def list_objects(
        self, plural: str, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        listing = await self._call(
            self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, plural,
            **kwargs,
        )
        return list(listing.get("items") or [])

    async def create_object(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, plural,
            body,
        )

    async def patch_object(self, plural: str, name: str, patch: dict[str, Any]
                           ) -> dict[str, Any]:
        """A JSON merge patch of the main resource; a metadata.resourceVersion in it is a
        precondition (409 when stale)."""
        return await self._call(
            self.custom.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, plural,
            name, patch, _content_type=MERGE_PATCH,
        )

    async def patch_status(self, plural: str, name: str, patch: dict[str, Any]
                           ) -> dict[str, Any]:
        """A JSON merge patch of the status subresource (resourceVersion as above)."""
        return await self._call(
            self.custom.patch_namespaced_custom_object_status, GROUP, VERSION, self.namespace,
            plural, name, patch, _content_type=MERGE_PATCH,
        )

    async def delete_object(
        self, plural: str, name: str, *, resource_version: str | None = None
    ) -> None:
        options = None
        if resource_version is not None:
            options = kubernetes.client.V1DeleteOptions(
                preconditions=kubernetes.client.V1Preconditions(resource_version=resource_version)
            )
        await self._call(
            self.custom.delete_namespaced_custom_object, GROUP, VERSION, self.namespace, plural,
            name, body=options,
        )

    # --- leases (coordination.k8s.io/v1) -------------------------------------------------
    async def get_lease(self, name: str) -> dict[str, Any]:
        return await self._call(self.coordination.read_namespaced_lease, name, self.namespace)

    async def list_leases(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        listing = await self._call(
            self.coordination.list_namespaced_lease, self.namespace, **kwargs
        )
        return list(listing.get("items") or [])

    async def create_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a Lease. The client insists on its V1Lease model here, which re-formats
        times: give only names, labels, annotations and non-time spec fields, and set times
        with `patch_lease`."""
        model = kubernetes.client.V1Lease.from_dict(body)
        return await self._call(self.coordination.create_namespaced_lease, self.namespace, model)

    async def patch_lease(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            self.coordination.patch_namespaced_lease, name, self.namespace, patch,
            _content_type=MERGE_PATCH,
        )

    # --- deployments (apps/v1) -----------------------------------------------------------
    async def list_deployments(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        kwargs = {"label_selector": label_selector} if label_selector else {}
        listing = await self._call(self.apps.list_namespaced_deployment, self.namespace, **kwargs)
        return list(listing.get("items") or [])
