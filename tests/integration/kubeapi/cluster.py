"""One interface over both API servers: the emulator (CI) and envtest (real binaries)."""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import dataclasses
import datetime
import json
import pathlib
import threading
import time
from typing import Any

import kopf
import kubernetes
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"


@dataclasses.dataclass
class KubeAPI:
    """What a test needs to reach the API server, whichever it is."""

    kind: str  # "emulator" | "envtest"
    server: str  # e.g. http://127.0.0.1:40123 or https://127.0.0.1:40124
    kubeconfig: pathlib.Path
    ca_path: pathlib.Path | None = None
    cert_path: pathlib.Path | None = None
    key_path: pathlib.Path | None = None
    ca_data: str | None = None  # PEM, when a kubeconfig embeds it
    cert_data: str | None = None
    key_data: str | None = None
    token: str | None = None
    emulator: Any = None  # GemmaEmulator, on the emulator tier only
    controller_manager: bool = False  # True when kube-controller-manager runs (GC, Deployment status)
    _client: kubernetes.client.ApiClient | None = None

    # --- clients ---------------------------------------------------------------------------------

    def connection_info(self) -> kopf.ConnectionInfo:
        """Credentials for kopf's @kopf.on.login."""
        return kopf.ConnectionInfo(
            server=self.server,
            ca_path=str(self.ca_path) if self.ca_path else None,
            ca_data=self.ca_data,
            certificate_path=str(self.cert_path) if self.cert_path else None,
            certificate_data=self.cert_data,
            private_key_path=str(self.key_path) if self.key_path else None,
            private_key_data=self.key_data,
            scheme="Bearer" if self.token else None,
            token=self.token,
            default_namespace="default",
        )

    @classmethod
    def from_kubeconfig(cls, path: pathlib.Path, kind: str, context: str | None = None) -> "KubeAPI":
        """Read the server and credentials of a kubeconfig's (current) context."""
        config = yaml.safe_load(pathlib.Path(path).read_text())
        context_name = context or config.get("current-context")
        ctx = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in config.get("users") or [] if u["name"] == ctx.get("user")), {})

        def data(field: str, mapping: dict) -> str | None:
            value = mapping.get(f"{field}-data")
            return base64.b64decode(value).decode() if value else None

        return cls(
            kind=kind, server=cluster["server"], kubeconfig=pathlib.Path(path),
            ca_path=pathlib.Path(cluster["certificate-authority"]) if cluster.get("certificate-authority") else None,
            ca_data=data("certificate-authority", cluster),
            cert_path=pathlib.Path(user["client-certificate"]) if user.get("client-certificate") else None,
            cert_data=data("client-certificate", user),
            key_path=pathlib.Path(user["client-key"]) if user.get("client-key") else None,
            key_data=data("client-key", user),
            token=user.get("token"),
        )

    @property
    def client(self) -> kubernetes.client.ApiClient:
        """A configured official (sync) client, shared by the session."""
        if self._client is None:
            self._client = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def request(self, method: str, path: str, body: Any = None, *, query: dict | None = None,
                content_type: str = "application/json") -> Any:
        """A raw API call returning parsed JSON; raises kubernetes.client.ApiException on errors.

        For patches pass the content type: application/merge-patch+json (CRs and built-ins),
        application/strategic-merge-patch+json (built-ins), application/apply-patch+yaml (with
        query fieldManager=...), application/json-patch+json (body is a list).
        """
        data = self._call(method, path, body, query, content_type)
        return json.loads(data) if data else None

    def watch(self, path: str, *, query: dict | None = None, timeout_seconds: int = 1) -> list[dict]:
        """The events of a watch that the server closes after ``timeout_seconds``."""
        query = dict(query or {}, watch="true", timeoutSeconds=str(timeout_seconds))
        data = self._call("GET", path, None, query, "application/json")
        return [json.loads(line) for line in data.splitlines() if line.strip()]

    def _call(self, method: str, path: str, body: Any, query: dict | None, content_type: str) -> bytes:
        api = self.client
        method_, url, headers, body_, post = api.param_serialize(
            method=method.upper(), resource_path=path, query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"])
        response = api.call_api(method_, url, header_params=headers, body=body_, post_params=post)
        response.read()
        if response.status >= 400:
            raise kubernetes.client.ApiException(http_resp=response)
        return response.data

    # --- counters and faults (emulator only) -------------------------------------------------------

    @property
    def requests(self) -> collections.Counter | None:
        """Request counts by (verb, resource) so far; None on a real server. Subtract two readings."""
        return self.emulator.request_counts if self.emulator is not None else None

    @property
    def writes(self) -> collections.Counter | None:
        """Writes that changed something, by (verb, resource); no-op applies/patches don't count."""
        return self.emulator.write_counts if self.emulator is not None else None

    def inject(self, **kwargs: Any):
        """Fault injection (emulator only): see emulator.Fault for the fields."""
        if self.emulator is None:
            raise RuntimeError("fault injection needs the emulator")
        return self.emulator.inject(**kwargs)

    def drop_watches(self, resource: str | None = None) -> int:
        """Cut the open watch connections of a plural, or all (emulator only); returns how many.

        Safe from the test's thread: the emulator cuts them on its own event loop.
        """
        if self.emulator is None:
            raise RuntimeError("dropping watches needs the emulator")
        return self.emulator.drop_watches(resource)

    def open_watches(self, resource: str | None = None) -> int:
        """How many watch streams of a plural (or all) the emulator is serving now."""
        if self.emulator is None:
            raise RuntimeError("counting watches needs the emulator")
        return self.emulator.open_watches(resource)

    # --- helpers -----------------------------------------------------------------------------------

    def apply_crds(self, directory: pathlib.Path = CRDS, timeout: float = 30) -> list[str]:
        names = []
        for path in sorted(directory.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd:
                    continue
                name = crd["metadata"]["name"]
                self.request(
                    "PATCH", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", crd,
                    query={"fieldManager": "gemma-tests", "force": "true"},
                    content_type="application/apply-patch+yaml")
                names.append(name)
        for name in names:
            self.wait_for(
                lambda n=name: _condition(self.request(
                    "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}"), "Established"),
                timeout=timeout, message=f"CRD {name} Established")
        return names

    def wait_for(self, predicate, timeout: float = 10, interval: float = 0.05, message: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = predicate()
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {message or predicate}")
            time.sleep(interval)

    def create_namespace(self, name: str) -> None:
        self.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": name}})

    def delete_namespace(self, name: str) -> None:
        self._delete_if_present(f"/api/v1/namespaces/{name}")

    def _delete_if_present(self, path: str) -> None:
        try:
            self.request("DELETE", path)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise

    def create_node(self, node: dict) -> str:
        """Create a Node, then set its status through /status (a real server drops it on create)."""
        body = copy.deepcopy(node)
        status = body.pop("status", None)
        body.setdefault("apiVersion", "v1")
        body.setdefault("kind", "Node")
        name = body["metadata"]["name"]
        self.request("POST", "/api/v1/nodes", body)
        if status:
            self.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": status},
                         content_type="application/merge-patch+json")
        return name

    def renew_node_lease(self, name: str) -> None:
        """What a kubelet does every 10 s: renew its Node's Lease in kube-node-lease (owned by the
        Node, so it goes with it). With kube-controller-manager, the node lifecycle controller
        marks a Node NotReady (Unknown) and taints it once neither its Lease nor its Ready
        heartbeat moved for its grace period (50 s), counted from when it first saw a Node of
        that name: tests re-create the same names, so without renewals they soon start NotReady."""
        node = self.request("GET", f"/api/v1/nodes/{name}")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": "kube-node-lease", "ownerReferences": [
                     {"apiVersion": "v1", "kind": "Node", "name": name, "uid": node["metadata"]["uid"]}]},
                 "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}}  # fmt: skip
        self.request("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}", lease,
                     query={"fieldManager": "gemma-tests-kubelet", "force": "true"},
                     content_type="application/apply-patch+yaml")  # fmt: skip

    def set_deployment_ready(self, namespace: str, name: str, ready: int | None = None,
                             timeout: float = 30) -> dict:
        """Make ``ready`` replicas of a Deployment ready (default: all); returns the Deployment.

        With kube-controller-manager running, the Deployment's status is the controllers' to
        write, so this marks that many of its Pods Running and Ready through pods/status and
        waits for the controllers to report it. Otherwise nobody writes Deployment status, so
        this writes what the deployment controller would (observedGeneration, replica counts,
        Available/Progressing conditions) through deployments/status.
        """
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        dep = self.request("GET", path)
        replicas = (dep.get("spec") or {}).get("replicas", 1)
        want = replicas if ready is None else ready
        if not self.controller_manager:
            return self.request("PATCH", path + "/status", {"status": _deployment_status(dep, want)},
                                content_type="application/merge-patch+json")
        selector = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
        pods_path = f"/api/v1/namespaces/{namespace}/pods"
        pods = self.wait_for(
            lambda: (items := self.request("GET", pods_path, query={"labelSelector": selector})["items"])
            and len(items) >= replicas and items, timeout=timeout, message=f"pods of {name}")
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for index, pod in enumerate(sorted(pods, key=lambda p: p["metadata"]["name"])):
            is_ready = "True" if index < want else "False"
            self.request("PATCH", f"{pods_path}/{pod['metadata']['name']}/status", {"status": {
                "phase": "Running" if index < want else "Pending",
                "conditions": [{"type": "Ready", "status": is_ready, "lastTransitionTime": now},
                               {"type": "ContainersReady", "status": is_ready, "lastTransitionTime": now}]}},
                content_type="application/strategic-merge-patch+json")
        return self.wait_for(
            lambda: (d := self.request("GET", path)).get("status", {}).get("readyReplicas", 0) == want and d,
            timeout=timeout, message=f"{name} to report {want} ready replicas")

    def set_job_finished(self, namespace: str, name: str, succeeded: bool, message: str = "",
                         reason: str | None = None) -> dict:  # fmt: skip
        """Write what the Job controller writes when a Job ends (there is no kubelet to run it):
        the interim condition (SuccessCriteriaMet / FailureTarget) and the terminal one.

        ``status.startTime`` is kept when the Job controller has set it: a real server refuses to
        change it on an unsuspended Job (the emulator sets and guards it the same way)."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        started = (self.request("GET", path).get("status") or {}).get("startTime") or now
        first, last, default = (("SuccessCriteriaMet", "Complete", "CompletionsReached") if succeeded
                                else ("FailureTarget", "Failed", "BackoffLimitExceeded"))  # fmt: skip
        reason = reason or default  # a podFailurePolicy's FailJob: PodFailurePolicy
        conditions = [{"type": t, "status": "True", "reason": reason, "message": message,
                       "lastProbeTime": now, "lastTransitionTime": now} for t in (first, last)]  # fmt: skip
        status = {"startTime": started, "conditions": conditions, "active": 0, "terminating": 0, "ready": 0,
                  **({"succeeded": 1, "completionTime": now} if succeeded else {"failed": 4})}  # fmt: skip
        return self.request("PATCH", f"{path}/status", {"status": status},
                            content_type="application/merge-patch+json")

    def bind_claim(self, namespace: str, name: str, timeout: float = 30) -> tuple[dict, str]:
        """Bind a PersistentVolumeClaim to a PersistentVolume made for it (its size, class and access
        modes; a CSI volume of a driver nobody runs), pre-bound through its claimRef, as an admin or a
        provisioner would. With kube-controller-manager, its PV controller binds the two; otherwise
        this writes what that controller would (spec.volumeName, then Bound and the capacity through
        /status). Returns the bound claim and the PersistentVolume's name, for the caller to delete."""
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        claim = self.request("GET", path)
        spec = claim["spec"]
        volume = f"pv-{claim['metadata']['uid'][:13]}"
        self.request("POST", "/api/v1/persistentvolumes", {
            "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
            "spec": {"capacity": {"storage": spec["resources"]["requests"]["storage"]},
                     "accessModes": spec["accessModes"], "persistentVolumeReclaimPolicy": "Retain",
                     **({"storageClassName": spec["storageClassName"]} if spec.get("storageClassName") else {}),
                     "csi": {"driver": "volumes.example.gemma.dev", "volumeHandle": volume},
                     "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace,
                                  "name": name, "uid": claim["metadata"]["uid"]}}})  # fmt: skip
        if not self.controller_manager:
            self.request("PATCH", path, {"spec": {"volumeName": volume}}, content_type="application/merge-patch+json")
            self.request("PATCH", path + "/status", {"status": {
                "phase": "Bound", "accessModes": spec["accessModes"],
                "capacity": {"storage": spec["resources"]["requests"]["storage"]}}},
                content_type="application/merge-patch+json")  # fmt: skip
        bound = self.wait_for(lambda: (c := self.request("GET", path)).get("status", {}).get("phase") == "Bound" and c,
                              timeout=timeout, message=f"claim {name} bound")  # fmt: skip
        return bound, volume

    def delete_node(self, name: str) -> None:
        self._delete_if_present(f"/api/v1/nodes/{name}")


def _deployment_status(dep: dict, ready: int) -> dict:
    """The status the deployment controller would write; zero counts are absent, as in the API."""
    replicas = (dep.get("spec") or {}).get("replicas", 1)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    available = ready >= replicas
    status = {
        "observedGeneration": dep["metadata"].get("generation", 1),
        "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": ready,
        "availableReplicas": ready, "unavailableReplicas": replicas - ready,
        "conditions": [
            {"type": "Available", "status": "True" if available else "False",
             "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
             "message": "Deployment has minimum availability." if available
             else "Deployment does not have minimum availability.",
             "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" if available
             else "ReplicaSetUpdated", "message": "ReplicaSet has progressed.",
             "lastUpdateTime": now, "lastTransitionTime": now},
        ],
    }
    return {k: (None if v == 0 else v) for k, v in status.items()}  # null removes it in a merge patch


def _condition(obj: dict, type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def write_kubeconfig(path: pathlib.Path, server: str, *, ca: pathlib.Path | None = None,
                     cert: pathlib.Path | None = None, key: pathlib.Path | None = None) -> pathlib.Path:
    cluster: dict = {"server": server}
    if ca:
        cluster["certificate-authority"] = str(ca)
    user: dict = {}
    if cert and key:
        user = {"client-certificate": str(cert), "client-key": str(key)}
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test", "preferences": {},
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "default"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


class EmulatorThread:
    """Runs the emulator's HTTP server on loopback in its own thread and event loop."""

    def __init__(self) -> None:
        self.url: str = ""
        self.emulator = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)

    def start(self, timeout: float = 10) -> "EmulatorThread":
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the emulator did not start")
        if self._error is not None:
            raise self._error
        return self

    def stop(self, timeout: float = 10) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        import kmock

        from .emulator import GemmaEmulator

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with GemmaEmulator() as emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()
            emulator.close()  # ends open watch streams
            await asyncio.sleep(0.6)
