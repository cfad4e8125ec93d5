"""The only module that talks to the Kubernetes API.

A thin asyncio client on aiohttp (already kopf's own transport): server-side apply with one
field manager (a child on first sight is created, see ownership.py), reads of children, status
patches, Events (posted, and read about a model pod), a by-name Secret check (only with the chart's
secretCheck.enabled), and by-name gets (a chat template's ConfigMap, the endpoint picker's objects on
the resync). Credentials come from kopf's own login functions, so the operator and kopf see the same
cluster. Objects are plain dicts throughout.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import secrets
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import kopf

from .api.v1alpha1 import GROUP, PLURAL, VERSION

MANAGER = "gemma-operator"
# Co-owns a field the operator stops sending, so that the apply without it keeps its value (an
# apply drops fields only their last owner stops sending): the Deployment's replicas, handed to
# the autoscaler. https://kubernetes.io/docs/reference/using-api/server-side-apply/#transferring-ownership
HANDOVER = "gemma-operator-handover"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
LIST_PAGE = 500

# Namespaced kinds the operator reads or writes: (apiVersion, kind) -> URL plural.
PLURALS = {
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("batch/v1", "Job"): "jobs",
    ("v1", "Secret"): "secrets",
    ("v1", "Pod"): "pods",
    ("v1", "Event"): "events",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobjects",
    ("monitoring.googleapis.com/v1", "PodMonitoring"): "podmonitorings",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitors",
    ("inference.networking.k8s.io/v1", "InferencePool"): "inferencepools",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproutes",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateways",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "ConfigMap"): "configmaps",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    (f"{GROUP}/{VERSION}", "GemmaDeployment"): PLURAL,
    ("kopf.dev/v1", "KopfPeering"): "kopfpeerings",
}
# Cluster-scoped kinds: (apiVersion, kind) -> URL plural.
CLUSTER_PLURALS = {
    ("v1", "Node"): "nodes",
    ("kopf.dev/v1", "ClusterKopfPeering"): "clusterkopfpeerings",
}
WATCH_S = 240  # how long the server holds one watch request open before the client renews it


class ApiError(Exception):
    def __init__(self, status: int, message: str, reason: str = ""):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason  # the Status object's reason (e.g. AlreadyExists, Conflict), when the server gave one

    @property
    def retryable(self) -> bool:
        """Conflicts, throttling and server trouble clear by themselves; a 4xx otherwise means a bad request."""
        return self.status in (409, 429) or self.status >= 500


def path(api_version: str, kind: str, namespace: str | None, name: str | None = None,
         subresource: str | None = None) -> str:  # fmt: skip
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if (api_version, kind) in CLUSTER_PLURALS:
        url = f"{base}/{CLUSTER_PLURALS[(api_version, kind)]}"
    else:
        url = f"{base}/namespaces/{namespace}/{PLURALS[(api_version, kind)]}"
    if name:
        url += f"/{name}"
    if subresource:
        url += f"/{subresource}"
    return url


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    context = ssl.create_default_context()
    if info.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if info.ca_path:
        context.load_verify_locations(cafile=str(info.ca_path))
    if info.ca_data:
        data = info.ca_data if isinstance(info.ca_data, str) else info.ca_data.decode()
        if "BEGIN CERTIFICATE" not in data:
            data = base64.b64decode(data).decode()
        context.load_verify_locations(cadata=data)
    if info.certificate_path and info.private_key_path:
        context.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    elif info.certificate_data and info.private_key_data:
        # ssl can only load a key pair from files; kopf's kubeconfig login hands over data.
        import tempfile

        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as pem:
            for blob in (info.certificate_data, info.private_key_data):
                raw = blob.encode() if isinstance(blob, str) else blob
                pem.write(raw if b"-----BEGIN" in raw else base64.b64decode(raw))
                pem.write(b"\n")
            pem.flush()
            context.load_cert_chain(pem.name)
    return context


class Kube:
    """An API session. One per operator process, kept in kopf's `memo`."""

    def __init__(self, session: aiohttp.ClientSession, server: str):
        self.session = session
        self.server = server.rstrip("/")

    @classmethod
    def connect(cls, info: kopf.ConnectionInfo, timeout: float = 30.0) -> Kube:
        headers = {"Accept": "application/json", "User-Agent": MANAGER}
        if info.token:
            headers["Authorization"] = f"Bearer {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
        session = aiohttp.ClientSession(
            headers=headers,
            auth=auth,
            timeout=aiohttp.ClientTimeout(total=timeout),
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info), limit=64),
        )
        return cls(session, info.server)

    async def close(self) -> None:
        await self.session.close()

    async def request(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = "application/json",
                      accept: str | None = None) -> dict[str, Any] | None:  # fmt: skip
        """One call; None for a 404 on GET; ApiError for any other failure."""
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else {}
        if accept:
            headers["Accept"] = accept
        try:
            async with self.session.request(method, self.server + url, params=params, data=data, headers=headers) as resp:
                text = await resp.text()
                if resp.status == 404 and method == "GET":
                    return None
                if resp.status >= 400:
                    try:
                        answer = json.loads(text)
                        message, reason = answer.get("message", text), str(answer.get("reason") or "")
                    except (ValueError, AttributeError):
                        message, reason = text, ""
                    raise ApiError(resp.status, message[:2000], reason)
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(599, f"{type(exc).__name__}: {exc}") from exc

    async def apply(self, obj: Mapping[str, Any], manager: str = MANAGER) -> dict[str, Any]:
        """Server-side apply as `gemma-operator`; force, because every field it sends is its own."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        result = await self.request("PATCH", url, params={"fieldManager": manager, "force": "true"}, body=obj,
                                    content_type=APPLY)  # fmt: skip
        assert result is not None
        return result

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create, or fail with 409 AlreadyExists: for objects several owners share, where an apply
        racing another owner's would replace its owner reference instead of joining it, and for a
        child on first sight (cheaper for the server than an apply; see ownership.py)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta["namespace"])
        result = await self.request("POST", url, params={"fieldManager": MANAGER}, body=obj)
        assert result is not None
        return result

    async def patch_managed_fields(self, obj: Mapping[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
        """A JSON patch of the object's metadata.managedFields (ownership.upgrade's): a 422 when a
        test op fails (the object changed since it was read)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        result = await self.request("PATCH", url, params={"fieldManager": MANAGER}, body=operations,
                                    content_type=JSON_PATCH)  # fmt: skip
        assert result is not None
        return result

    async def set_owners(self, obj: Mapping[str, Any], resource_version: str,
                         owners: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
        """Replace a shared object's owner references, only if it is still the version read (else 409)."""
        meta = obj["metadata"]
        url = path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        body = {"metadata": {"resourceVersion": resource_version, "ownerReferences": owners}}
        result = await self.request("PATCH", url, params={"fieldManager": MANAGER}, body=body, content_type=MERGE)
        assert result is not None
        return result

    async def expand_claim(self, namespace: str, name: str, resource_version: str,
                           storage: str) -> tuple[dict[str, Any] | None, str | None]:  # fmt: skip
        """Ask for a larger PersistentVolumeClaim: a merge patch of spec.resources.requests.storage, only
        on the version read (a 409 otherwise, raised for a retry). Returns (the claim as the server
        keeps it, None) once accepted; (None, the server's message) when it refuses: 422 from validation
        (an unbound claim's spec is immutable) or 403 from the PersistentVolumeClaimResize admission
        plugin (its StorageClass lacks allowVolumeExpansion)."""
        body = {"metadata": {"resourceVersion": resource_version},
                "spec": {"resources": {"requests": {"storage": storage}}}}  # fmt: skip
        url = path("v1", "PersistentVolumeClaim", namespace, name)
        try:
            result = await self.request("PATCH", url, params={"fieldManager": MANAGER}, body=body, content_type=MERGE)
        except ApiError as exc:
            if exc.status in (403, 422):
                return None, exc.message
            raise
        return result, None

    async def delete(self, api_version: str, kind: str, namespace: str, name: str, *, uid: str | None = None,
                     resource_version: str | None = None) -> bool:  # fmt: skip
        """Delete one object; False when it was already gone. With `uid`, only that very object (a
        namesake created since is left alone: False); with `resource_version` too, only the version
        read (a 409 if it changed meanwhile, for the caller to retry)."""
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background",
                **({"preconditions": preconditions} if preconditions else {})}  # fmt: skip
        try:
            await self.request("DELETE", path(api_version, kind, namespace, name), body=body)
        except ApiError as exc:
            if exc.status == 404 or (exc.status == 409 and uid and not resource_version):
                return False  # gone, or a namesake that isn't ours
            raise
        return True

    async def served(self, api_version: str) -> set[str]:
        """The kinds an API group version serves (discovery); empty when it is not served."""
        found = await self.request("GET", "/api/v1" if api_version == "v1" else f"/apis/{api_version}")
        return {r["kind"] for r in (found or {}).get("resources") or [] if "/" not in r.get("name", "/")}

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.request("GET", path(api_version, kind, namespace, name))

    async def names(self, api_version: str, kind: str, namespace: str | None = None,
                    label_selector: str | None = None) -> set[str]:  # fmt: skip
        """The names of the objects of a kind (metadata only, paged): what exists right now."""
        url = path(api_version, kind, namespace or "")
        params = {"limit": str(LIST_PAGE), **({"labelSelector": label_selector} if label_selector else {})}
        found: set[str] = set()
        while True:
            page = await self.request("GET", url, params=params, accept=METADATA_LIST)
            if page is None:
                return found
            found.update(item["metadata"]["name"] for item in page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return found
            params = {**params, "continue": token}

    async def items(self, api_version: str, kind: str, namespace: str,
                    label_selector: str | None = None) -> list[dict[str, Any]] | None:  # fmt: skip
        """The objects of a kind in a namespace (paged); None when the kind is not served (404)."""
        url = path(api_version, kind, namespace)
        params = {"limit": str(LIST_PAGE), **({"labelSelector": label_selector} if label_selector else {})}
        found: list[dict[str, Any]] = []
        while True:
            page = await self.request("GET", url, params=params)
            if page is None:
                return None
            found.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return found
            params = {**params, "continue": token}

    async def follow(self, api_version: str, kind: str, namespace: str | None,
                     name: str) -> AsyncIterator[dict[str, Any] | None]:  # fmt: skip
        """One object's every state (None while it does not exist): a list, then a watch from it.

        The watch is renewed from the last resourceVersion seen; an expired (410) or cut one lists
        again. A kind the server does not serve yet (its CRD is missing) reads as absent and is
        listed again after a while. Errors of the list, and errors the watch reports, are raised;
        the caller retries.
        """
        url = path(api_version, kind, namespace)
        only = {"fieldSelector": f"metadata.name={name}"}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=WATCH_S + 30)
        while True:
            listed = await self.request("GET", url, params=only)
            if listed is None:  # no such resource (yet)
                yield None
                await asyncio.sleep(WATCH_S / 8)
                continue
            items = listed.get("items") or []
            yield items[0] if items else None
            version = (listed.get("metadata") or {}).get("resourceVersion")
            while version is not None:  # None: expired, list again
                query = {**only, "watch": "true", "resourceVersion": version, "allowWatchBookmarks": "true",
                         "timeoutSeconds": str(WATCH_S)}  # fmt: skip
                try:
                    async with self.session.get(self.server + url, params=query, timeout=timeout) as resp:
                        if resp.status == 410:
                            version = None
                            continue
                        if resp.status >= 400:
                            raise ApiError(resp.status, (await resp.text())[:2000])
                        async for line in resp.content:
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            obj = event.get("object") or {}
                            if event.get("type") == "ERROR":
                                if obj.get("code") != 410:
                                    raise ApiError(int(obj.get("code") or 500), str(obj.get("message")))
                                version = None
                                break
                            version = (obj.get("metadata") or {}).get("resourceVersion") or version
                            if event.get("type") in ("ADDED", "MODIFIED"):
                                yield obj
                            elif event.get("type") == "DELETED":
                                yield None
                except (aiohttp.ClientError, TimeoutError):
                    version = None  # a cut watch: list again (a failing list is raised to the caller)

    async def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any] | None:
        url = path(f"{GROUP}/{VERSION}", "GemmaDeployment", namespace, name, "status")
        return await self.request("PATCH", url, body={"status": status}, content_type=MERGE)

    async def secret_exists(self, namespace: str, name: str) -> bool:
        """By name only, and metadata only: the operator never lists or watches Secrets, and asks the
        server for no data (PartialObjectMetadata), so no token ever reaches its memory."""
        found = await self.request("GET", path("v1", "Secret", namespace, name), accept=METADATA_ONLY)
        return found is not None

    async def events_about(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """The core/v1 Events about one object (e.g. the cluster autoscaler's on a pod), by field selector."""
        params = {"fieldSelector": f"involvedObject.kind={kind},involvedObject.name={name}", "limit": str(LIST_PAGE)}
        found = await self.request("GET", path("v1", "Event", namespace), params=params)
        return list((found or {}).get("items") or [])

    async def event(self, owner: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about the GemmaDeployment (what `kubectl describe` shows)."""
        meta = owner["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "GemmaDeployment",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": MANAGER},
            "reportingComponent": MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.request("POST", path("v1", "Event", meta["namespace"]), body=event)
