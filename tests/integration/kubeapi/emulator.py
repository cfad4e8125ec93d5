"""A Kubernetes API emulator for integration tests: kmock's KubernetesEmulator, made real enough.

kmock's ``KubernetesEmulator`` stores objects and streams them, but leaves out what an operator
written against a real kube-apiserver depends on. This subclass keeps kmock's server, request
parsing, error rendering and object store (``emulator.objects``, with history) and replaces the
request handling with real API semantics:

* metadata: ``uid``, ``resourceVersion`` (one counter for the whole store, as etcd's revision),
  ``creationTimestamp``, ``generation`` (bumped on changes outside metadata and status only, and
  on a Deployment's annotations too, as the real server does),
  ``generateName``, the namespace taken from the URL, ``managedFields``;
* discovery that kopf and the official client accept (core ``v1``, not kmock's ``/v1``), built
  from registered resources; a CustomResourceDefinition created through the API registers its
  resource, so ``crds/*.yaml`` are applied the same way as on a real server;
* the ``status`` subresource: writes to the main resource keep the old status, writes to
  ``/status`` change only the status;
* patches: JSON merge, JSON patch (a failing ``test`` op is a 422), strategic merge (merge keys
  for the built-in lists, no ``$patch`` directives), and server-side apply; an update or patch
  that sets ``managedFields`` replaces the stored ones (then takes the fields it changed);
* optimistic concurrency: a stale ``metadata.resourceVersion`` in an update or patch is a 409;
  a write that changes nothing is not written (no new resourceVersion, no watch event);
* lists with ``kind``/``apiVersion``, ``labelSelector``, ``fieldSelector`` (metadata.name and
  metadata.namespace, plus the Event fields), ``limit``/``continue``;
* watches from a ``resourceVersion`` (when it is too old: 200 and a 410 Gone ``ERROR`` event, as
  a real server answers), ``sendInitialEvents`` with the initial-events-end bookmark,
  ``timeoutSeconds``;
* namespaces must exist (and not be terminating) for namespaced writes; deleting a namespace
  deletes its contents; every new namespace gets the ``kube-root-ca.crt`` ConfigMap a moment
  later, as kube-controller-manager's root CA publisher gives it, so tests can't assume an
  empty namespace;
* a Job gets ``status.startTime`` a moment after its creation, as the Job controller sets it,
  and a real server's rule that it then stays (422 on a change while unsuspended);
* finalizers and ``deletionTimestamp``; garbage collection of dependents by ``ownerReferences``
  when the owner goes away (background; ``propagationPolicy=Orphan`` removes the references);
* custom resources are pruned, defaulted and validated against the CRD's structural schema
  and its CEL rules (``x-kubernetes-validations``, with cel-python; 422 Invalid with causes;
  formats are not checked, see kubeapi/schema.py for what of CEL is left out);
* the defaults that the real server fills in for Deployments, pod templates, Services
  (including a cluster IP) and Namespaces, so "compare before writing" logic meets them here too;
* a per-request counter by (verb, resource) and fault injection for hardening tests: errors and
  delays (``inject``), watch connections cut mid-stream (``drop_watches``, or a fault's
  ``drop_after_events`` / ``drop_after_seconds``).

Deliberately not emulated: admission, authentication/authorization, validation of built-in
types (except a PersistentVolumeClaim's update: its immutable spec, and the
PersistentVolumeClaimResize admission plugin's refusals, see ``_check_claim_update``), CEL
transition rules (``oldSelf``) and ratcheting, the ``scale`` subresource (405), controllers (no
ReplicaSets, Pods or Deployment status: tests write status themselves), ``$patch`` directives
and set-type lists in strategic merge / apply, foreground deletion (treated as background),
consistent snapshots for paginated lists, and watch bookmarks other than the initial one.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import dataclasses
import datetime
import ipaddress
import json
import random
import re
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import apps, rendering
from kmock._internal import parsing as kmock_parsing

from . import fields as F
from . import schema as S

# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


class _DropWatch(Exception):
    """Raised inside a watch stream that a fault cuts."""


def not_found(kind: "Kind", name: str) -> ApiError:
    resource = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return ApiError(404, "NotFound", f'{resource} "{name}" not found',
                    {"name": name, "group": kind.group, "kind": kind.plural})


# ---------------------------------------------------------------------------------------------
# Resource kinds
# ---------------------------------------------------------------------------------------------

WRITE_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SUB_VERBS = ["get", "patch", "update"]


@dataclasses.dataclass
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    generation: bool = False  # has metadata.generation
    custom: bool = False  # served from a CRD
    schema_keys: dict = dataclasses.field(default_factory=dict)
    schema: dict | None = None  # a CRD's openAPIV3Schema: pruning, defaulting, validation

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def ref(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    def list_keys(self, path: F.Path) -> tuple[str, ...] | None:
        names = F.field_names(path)
        if names in self.schema_keys:
            return self.schema_keys[names]
        return None if self.custom else F.builtin_list_keys(path)


BUILTIN_KINDS = [
    Kind("", "v1", "namespaces", "Namespace", False, "namespace", ("status",), ("ns",)),
    Kind("", "v1", "nodes", "Node", False, "node", ("status",), ("no",)),
    Kind("", "v1", "pods", "Pod", True, "pod", ("status",), ("po",), ("all",)),
    Kind("", "v1", "services", "Service", True, "service", ("status",), ("svc",), ("all",)),
    Kind("", "v1", "configmaps", "ConfigMap", True, "configmap", (), ("cm",)),
    Kind("", "v1", "secrets", "Secret", True, "secret"),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", True, "serviceaccount", (), ("sa",)),
    Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, "persistentvolumeclaim", ("status",),
         ("pvc",)),
    Kind("", "v1", "events", "Event", True, "event", (), ("ev",)),
    Kind("", "v1", "persistentvolumes", "PersistentVolume", False, "persistentvolume", ("status",), ("pv",)),
    Kind("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, "storageclass", (), ("sc",)),
    Kind("apps", "v1", "deployments", "Deployment", True, "deployment", ("status", "scale"),
         ("deploy",), ("all",), generation=True),
    Kind("apps", "v1", "replicasets", "ReplicaSet", True, "replicaset", ("status", "scale"),
         ("rs",), ("all",), generation=True),
    Kind("batch", "v1", "jobs", "Job", True, "job", ("status",), (), ("all",), generation=True),
    Kind("apps", "v1", "statefulsets", "StatefulSet", True, "statefulset", ("status", "scale"),
         ("sts",), ("all",), generation=True),
    Kind("events.k8s.io", "v1", "events", "Event", True, "event", (), ("ev",)),
    Kind("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, "poddisruptionbudget", ("status",),
         ("pdb",), generation=True),
    Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True,
         "horizontalpodautoscaler", ("status",), ("hpa",), ("all",), generation=True),
    Kind("coordination.k8s.io", "v1", "leases", "Lease", True, "lease"),
    Kind("rbac.authorization.k8s.io", "v1", "roles", "Role", True, "role"),
    Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, "rolebinding"),
    Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
         False, "customresourcedefinition", ("status",), ("crd", "crds"), generation=True),
    Kind("kopf.dev", "v1", "kopfpeerings", "KopfPeering", True, "kopfpeering", custom=True,
         generation=True),
    Kind("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", False, "clusterkopfpeering",
         custom=True, generation=True),
]

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"  # published in every namespace by kube-controller-manager
ROOT_CA_DELAY_S = 0.1  # after the namespace, as the controller reacts to its watch event
JOB_START_DELAY_S = 0.05  # after a Job's creation, as the Job controller reacts to its watch event
ROOT_CA_PLACEHOLDER = "-----BEGIN CERTIFICATE-----\n(plain HTTP: no CA)\n-----END CERTIFICATE-----\n"

# Field selectors that the real server supports beyond metadata.name/metadata.namespace.
EVENT_FIELDS = {
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
    "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
    "reason", "reportingComponent", "source", "type", "regarding.kind", "regarding.name",
    "regarding.namespace", "regarding.uid",
}
EXTRA_FIELDS = {
    "events": EVENT_FIELDS,
    "pods": {"spec.nodeName", "status.phase", "spec.schedulerName", "spec.serviceAccountName"},
    "nodes": {"spec.unschedulable"},
    "namespaces": {"status.phase"},
    "secrets": {"type"},
    "replicasets": {"status.replicas"},
}

GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"
EVENT_LOG_SIZE = 10_000


QUANTITY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
                  "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18, "m": 10**-3}


def _bytes(quantity: str | int) -> float:
    """A resource quantity ("13Gi", "12G", "13958643712") as a number, for comparisons."""
    text = str(quantity).strip()
    for unit in sorted(QUANTITY_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * QUANTITY_UNITS[unit]
    return float(text)


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_matcher(selector: str | None):
    """Equality- and set-based label selectors, as `kubectl -l` takes them."""
    if not selector:
        return lambda labels: True
    tests = []
    for req in _split_selector(selector):
        if m := _SET_RE.match(req):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                tests.append(lambda lb, k=key, vs=values: lb.get(k) in vs)
            else:
                tests.append(lambda lb, k=key, vs=values: lb.get(k) not in vs)
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            tests.append(lambda lb, k=key, v=value: lb.get(k) != v)
        elif "==" in req or "=" in req:
            key, value = (s.strip() for s in re.split(r"==?", req, maxsplit=1))
            tests.append(lambda lb, k=key, v=value: lb.get(k) == v)
        elif req.startswith("!"):
            tests.append(lambda lb, k=req[1:].strip(): k not in lb)
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", req):
            tests.append(lambda lb, k=req: k in lb)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {req!r}")
    return lambda labels: all(t(labels) for t in tests)


def field_matcher(kind: Kind, selector: str | None):
    if not selector:
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace"} | EXTRA_FIELDS.get(kind.plural, set())
    tests = []
    for req in _split_selector(selector):
        negate = "!=" in req
        key, value = (s.strip() for s in re.split(r"!=|==?", req, maxsplit=1))
        if key not in allowed:
            raise ApiError(400, "BadRequest",
                           f'field label not supported: "{key}"')

        def get(obj: dict, k: str = key) -> str:
            node: Any = obj
            for part in k.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and k == "source":
                node = node.get("component")
            return "" if node is None else str(node).lower() if isinstance(node, bool) else str(node)

        tests.append(lambda obj, g=get, v=value, n=negate: (g(obj) != v) if n else (g(obj) == v))
    return lambda obj: all(t(obj) for t in tests)


# ---------------------------------------------------------------------------------------------
# Defaults the real API server applies
# ---------------------------------------------------------------------------------------------


def _default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for group in ("containers", "initContainers"):
        for c in spec.get(group) or []:
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
            image = c.get("image", "")
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            c.setdefault("resources", {})
            for port in c.get("ports") or []:
                port.setdefault("protocol", "TCP")


def apply_defaults(kind: Kind, obj: dict, old: dict | None, emulator: "GemmaEmulator") -> None:
    spec = obj.get("spec")
    if kind.group == "apps" and kind.plural == "deployments" and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        strategy = spec.setdefault("strategy", {})
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            rolling.setdefault("maxSurge", "25%")
            rolling.setdefault("maxUnavailable", "25%")
        template_spec = (spec.get("template") or {}).get("spec")
        if isinstance(template_spec, dict):
            _default_pod_spec(template_spec)
    elif kind.group == "" and kind.plural == "pods" and isinstance(spec, dict):
        _default_pod_spec(spec)
    elif kind.group == "autoscaling" and kind.plural == "horizontalpodautoscalers" and old is None:
        # A new HPA's status, before the HPA controller computes anything: desiredReplicas (no
        # omitempty) is 0 and currentMetrics null, as a real server returns it.
        obj["status"] = {"desiredReplicas": 0, "currentMetrics": None}
    elif kind.group == "" and kind.plural == "services" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        if spec.get("clusterIP") != "None":
            old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
            ip = spec.get("clusterIP") or old_ip or emulator._allocate_ip()
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        obj.setdefault("status", {}).setdefault("loadBalancer", {})
    elif kind.group == "" and kind.plural == "namespaces":
        name = obj["metadata"]["name"]
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")


# ---------------------------------------------------------------------------------------------
# Fault injection and counting
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    """Answer matching requests with an error and/or a delay. ``times=None`` means forever.

    On a watch, ``status=410`` is answered as a real server answers an expired resourceVersion:
    200 and one ``ERROR`` event carrying the 410 Status (clients re-list); other statuses are
    plain HTTP errors. ``drop_after_events`` / ``drop_after_seconds`` serve the watch, then cut
    its connection without a final event once that many events were sent (0: right after the
    headers) or that much time passed, as a lost connection does.
    """

    verb: str | None = None  # get, list, watch, create, update, patch, apply, delete, ...
    resource: str | None = None  # "deployments", "gemmadeployments/status", ...
    namespace: str | None = None
    name: str | None = None
    status: int | None = None  # 409, 429, 500, 503, ... (410 on a watch: an ERROR event)
    delay: float = 0.0
    times: int | None = 1
    retry_after: int | None = None  # seconds, sent as Retry-After (clients may retry by themselves)
    drop_after_events: int | None = None  # watch only: cut the connection after this many events
    drop_after_seconds: float | None = None  # watch only: cut the connection after this long
    hits: int = 0

    def matches(self, verb: str, resource: str, namespace: str | None, name: str | None) -> bool:
        return (
            (self.times is None or self.hits < self.times)
            and self.verb in (None, verb)
            and self.resource in (None, resource)
            and self.namespace in (None, namespace)
            and self.name in (None, name)
        )


FAULT_REASONS = {
    400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 410: "Expired",
    422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
    504: "Timeout",
}


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Event:
    rv: int
    resource: tuple[str, str, str]  # (group, version, plural): Kind objects are replaced on CRD updates
    type: str
    obj: dict


@dataclasses.dataclass(eq=False)
class OpenWatch:
    """A watch stream being served: what ``drop_watches`` cuts."""

    resource: str  # the plural, as in Fault.resource
    transport: asyncio.Transport
    dropped: bool = False


@attrs.define(kw_only=True)
class GemmaEmulator(kmock.KubernetesEmulator):
    gc: bool = True  # delete dependents when their owner goes away
    service_cidr: str = "10.0.0.0/24"

    _kinds: dict = attrs.field(factory=dict, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _events: collections.deque = attrs.field(factory=lambda: collections.deque(maxlen=EVENT_LOG_SIZE),
                                             init=False)
    _tick: asyncio.Event | None = attrs.field(default=None, init=False)  # replaced on every change
    _counts: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    _writes: collections.Counter = attrs.field(factory=collections.Counter, init=False)
    _request_label: tuple | None = attrs.field(default=None, init=False)  # (verb, label, kind key)
    _faults: list = attrs.field(factory=list, init=False)
    _sync: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _ips: set = attrs.field(factory=set, init=False)
    _closing: bool = attrs.field(default=False, init=False)
    _in_gc: bool = attrs.field(default=False, init=False)
    _watches: set = attrs.field(factory=set, init=False)  # OpenWatch; touched on the loop only
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)
    _controller_tasks: set = attrs.field(factory=set, init=False)  # delayed writes, as controllers make

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in BUILTIN_KINDS:
            self.register(copy.deepcopy(kind))
        for ns in INITIAL_NAMESPACES:
            self._store_new(self._kinds[("", "v1", "namespaces")], None, {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

    # --- public API for tests ------------------------------------------------------------------

    def register(self, kind: Kind) -> None:
        self._kinds[(kind.group, kind.version, kind.plural)] = kind
        self.resources[kind.ref] = kmock.ResourceInfo(
            namespaced=kind.namespaced, kind=kind.kind, singular=kind.singular,
            verbs=set(WRITE_VERBS), shortnames=set(kind.short_names),
            categories=set(kind.categories), subresources=set(kind.subresources))

    @property
    def request_counts(self) -> collections.Counter:
        """A snapshot of request counts keyed by (verb, resource[/subresource])."""
        with self._sync:
            return collections.Counter(self._counts)

    @property
    def write_counts(self) -> collections.Counter:
        """Writes that changed stored state, by (verb, resource[/subresource]).

        No-op writes (an apply or patch that changes nothing) are not counted; changes the
        emulator makes itself (garbage collection, namespace cleanup) count under ("gc", plural).
        """
        with self._sync:
            return collections.Counter(self._writes)

    def inject(self, **kwargs: Any) -> Fault:
        fault = Fault(**kwargs)
        with self._sync:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._sync:
            self._faults.clear()

    def drop_watches(self, resource: str | None = None, timeout: float = 10) -> int:
        """Cut every open watch stream of ``resource`` (a plural; None: all), as a lost connection
        does: the connection closes mid-stream, without a final event. Returns how many were cut.

        Callable from any thread: the cut happens on the emulator's event loop, and is done when
        this returns. Clients reconnect at once; to hold a watch down, inject watch faults first.
        """
        loop = self._loop
        if loop is None:
            return 0  # no request served yet, so no watch open
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return self._drop_watches(resource)

        async def drop() -> int:
            return self._drop_watches(resource)

        return asyncio.run_coroutine_threadsafe(drop(), loop).result(timeout)

    def open_watches(self, resource: str | None = None) -> int:
        """How many watch streams of ``resource`` (a plural; None: all) are being served now."""
        return sum(1 for watch in list(self._watches)
                   if resource in (None, watch.resource) and not watch.transport.is_closing())

    def _drop_watches(self, resource: str | None) -> int:
        dropped = 0
        for watch in list(self._watches):
            if resource in (None, watch.resource):
                dropped += not watch.transport.is_closing()  # one whose client left is not counted
                self._cut(watch)
        return dropped

    def _cut(self, watch: OpenWatch) -> None:
        watch.dropped = True
        self._watches.discard(watch)
        watch.transport.abort()  # no chunked-encoding terminator: the client sees a broken stream

    def close(self) -> None:
        self._closing = True

    # --- request entry point -------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's parser takes "namespaces" in /api/v1/namespaces for a namespace segment and
        # fails (a 500 for every namespace request), so parse the path here.
        body = await raw_request.read()
        try:
            request = _parse_request(raw_request, body, len(self._requests))
            self._requests.append(request)
            return await self._handle(request)
        except Exception as e:
            if self._errors:
                self._errors[-1].append(e)
            error = ApiError(500, "InternalError", f"emulator error: {e!r}")
            return aiohttp.web.json_response(error.status(), status=500)

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if self._tick is None:
            self._tick = asyncio.Event()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        path = request.url.path.rstrip("/") or "/"
        if request.resource is None or request.resource.plural is None:
            return await self._serve_static(request, path)

        kind = self._kinds.get((request.resource.group, request.resource.version, request.resource.plural))
        verb = self._verb(request)
        label = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        with self._sync:
            self._counts[(verb, label)] += 1
            fault = next((f for f in self._faults
                          if f.matches(verb, label, request.namespace, request.name)), None)
            if fault is not None:
                fault.hits += 1
        try:
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    error = ApiError(fault.status, FAULT_REASONS.get(fault.status, "InternalError"),
                                     f"injected fault for {verb} {label}",
                                     {"retryAfterSeconds": fault.retry_after} if fault.retry_after is not None else None)
                    if verb == "watch" and fault.status == 410:
                        return await self._watch_error(request, error)
                    return aiohttp.web.json_response(error.status(), status=fault.status, headers=headers)
            if kind is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return await self._serve_resource(request, kind, verb, fault)
        except ApiError as e:
            return aiohttp.web.json_response(e.status(), status=e.code)

    @staticmethod
    def _verb(request: rendering.Request) -> str:
        method = request.method.value.upper()
        if method == "GET":
            if request.params.get("watch") in ("true", "1"):
                return "watch"
            return "get" if request.name else "list"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            ctype = _header(request, "content-type")
            return "apply" if ctype.startswith("application/apply-patch") else "patch"
        if method == "DELETE":
            return "delete" if request.name else "deletecollection"
        return method.lower()

    # --- discovery and health ------------------------------------------------------------------

    async def _serve_static(self, request: rendering.Request, path: str) -> aiohttp.web.StreamResponse:
        with self._sync:
            self._counts[(request.method.value.lower(), path)] += 1
        if path in ("/healthz", "/readyz", "/livez"):
            return aiohttp.web.Response(text="ok")
        if path == "/version":
            return aiohttp.web.json_response({
                "major": "1", "minor": "34", "gitVersion": "v1.34.0-kmock", "platform": "linux/amd64"})
        if path == "/api":
            return aiohttp.web.json_response({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
        if path == "/apis":
            return aiohttp.web.json_response({
                "kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._group_doc(g) for g in sorted({k.group for k in self._kinds.values()} - {""})]})
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 2 and any(k.group == parts[1] for k in self._kinds.values()):
            return aiohttp.web.json_response(dict(self._group_doc(parts[1]), kind="APIGroup", apiVersion="v1"))
        if (parts[0] == "api" and len(parts) == 2) or (parts[0] == "apis" and len(parts) == 3):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            kinds = [k for k in self._kinds.values() if (k.group, k.version) == (group, version)]
            if kinds:
                return aiohttp.web.json_response(self._version_doc(group, version, kinds))
        if parts[0] == "apis" and len(parts) in (2, 3) and request.method.value.upper() == "GET":
            # A group or version nobody serves (a CRD not installed): kube-apiserver's plain 404.
            return aiohttp.web.json_response({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server could not find the requested resource", "reason": "NotFound",
                "details": {}, "code": 404}, status=404)
        if request.method.value.upper() == "GET" and path == "/":
            paths = {"/api", "/api/v1", "/apis", "/healthz", "/readyz", "/livez", "/version"}
            for k in self._kinds.values():
                if k.group:
                    paths |= {f"/apis/{k.group}", f"/apis/{k.group}/{k.version}"}
            return aiohttp.web.json_response({"paths": sorted(paths)})
        # Anything else goes to kmock's own reactions (user-defined or its 404 fallback).
        return await apps.RawHandler._handle(self, request)

    def _group_doc(self, group: str) -> dict:
        versions = sorted({k.version for k in self._kinds.values() if k.group == group}, reverse=True)
        docs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": docs, "preferredVersion": docs[0]}

    @staticmethod
    def _version_doc(group: str, version: str, kinds: list[Kind]) -> dict:
        resources = []
        for k in sorted(kinds, key=lambda k: k.plural):
            resources.append({
                "name": k.plural, "singularName": k.singular or k.kind.lower(), "namespaced": k.namespaced,
                "kind": k.kind, "verbs": WRITE_VERBS, "shortNames": list(k.short_names),
                "categories": list(k.categories)})
            for sub in k.subresources:
                resources.append({
                    "name": f"{k.plural}/{sub}", "singularName": "", "namespaced": k.namespaced,
                    "kind": "Scale" if sub == "scale" else k.kind, "verbs": SUB_VERBS,
                    **({"group": "autoscaling", "version": "v1"} if sub == "scale" else {})})
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": resources}

    # --- resource requests ---------------------------------------------------------------------

    async def _serve_resource(self, request: rendering.Request, kind: Kind, verb: str,
                              fault: Fault | None = None):
        ns, name, sub = request.namespace, request.name, request.subresource
        if kind.namespaced is False and ns is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub is not None and sub not in kind.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub == "scale":
            raise ApiError(405, "MethodNotAllowed", "the scale subresource is not emulated")
        params = request.params
        dry_run = params.get("dryRun") == "All"

        if verb == "watch":
            return await self._serve_watch_stream(request, kind, fault)
        if verb == "list":
            return aiohttp.web.json_response(await self._list(kind, ns, params))
        if verb == "get":
            async with self._lock:
                return aiohttp.web.json_response(self._get(kind, ns, name))

        body = self._body(request)
        async with self._lock:
            self._request_label = (verb, request.resource.plural + (f"/{sub}" if sub else ""),
                                   (kind.group, kind.version, kind.plural))
            try:
                return await self._serve_write(request, kind, verb, ns, name, sub, body, params, dry_run)
            finally:
                self._request_label = None

    async def _serve_write(self, request, kind, verb, ns, name, sub, body, params, dry_run):
        if verb == "create":
            if kind.namespaced and ns is None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            obj = self._create(kind, ns, body, self._manager(request), dry_run)
            return aiohttp.web.json_response(obj, status=201)
        if verb == "update":
            return aiohttp.web.json_response(self._update(kind, ns, name, sub, body, request, dry_run))
        if verb == "patch":
            return aiohttp.web.json_response(self._patch(kind, ns, name, sub, body, request, dry_run))
        if verb == "apply":
            obj, created = self._apply(kind, ns, name, sub, body, request, dry_run)
            return aiohttp.web.json_response(obj, status=201 if created else 200)
        if verb == "delete":
            return aiohttp.web.json_response(self._delete(kind, ns, name, body, params, dry_run))
        if verb == "deletecollection":
            items = self._select(kind, ns, params)
            for obj in items:
                self._delete(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"], body, params, dry_run)
            return aiohttp.web.json_response(self._list_doc(kind, items, {}))
        raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported")

    # --- reading -------------------------------------------------------------------------------

    def _current(self, kind: Kind, ns: str | None, name: str) -> dict | None:
        key = (kind.ref, ns if kind.namespaced else None, name)
        if key not in self._objects:
            return None
        stored = self._objects[key]
        return None if stored.deleted else stored.raw

    def _get(self, kind: Kind, ns: str | None, name: str) -> dict:
        obj = self._current(kind, ns, name)
        if obj is None:
            raise not_found(kind, name)
        return obj

    def _all(self, kind: Kind, ns: str | None) -> list[dict]:
        result = []
        for (ref, obj_ns, _), stored in self._objects.items():
            if ref == kind.ref and not stored.deleted and (ns is None or obj_ns == ns):
                result.append(stored.raw)
        return sorted(result, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def _select(self, kind: Kind, ns: str | None, params: dict) -> list[dict]:
        labels = label_matcher(params.get("labelSelector"))
        field_ok = field_matcher(kind, params.get("fieldSelector"))
        return [o for o in self._all(kind, ns)
                if labels(o["metadata"].get("labels") or {}) and field_ok(o)]

    def _list_doc(self, kind: Kind, items: list[dict], meta: dict) -> dict:
        if not kind.custom:  # built-in lists carry kind/apiVersion on the list only
            items = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                "metadata": dict({"resourceVersion": str(self._rv)}, **meta), "items": items}

    async def _list(self, kind: Kind, ns: str | None, params: dict) -> dict:
        async with self._lock:
            items = self._select(kind, ns, params)
        meta: dict = {}
        start = params.get("continue")
        if start:
            try:
                after = json.loads(base64.b64decode(start))["after"]
            except Exception:
                raise ApiError(400, "BadRequest", "invalid continue token")
            items = [i for i in items if [i["metadata"].get("namespace") or "", i["metadata"]["name"]] > after]
        limit = int(params.get("limit") or 0)
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            token = json.dumps({"after": [last.get("namespace") or "", last["name"]]})
            meta["continue"] = base64.b64encode(token.encode()).decode()
        return self._list_doc(kind, items, meta)

    async def _serve_watch_stream(self, request: rendering.Request, kind: Kind,
                                  fault: Fault | None = None) -> aiohttp.web.StreamResponse:
        params = request.params
        ns = request.namespace
        labels = label_matcher(params.get("labelSelector"))
        fields = field_matcher(kind, params.get("fieldSelector"))
        if request.name:
            only_name = request.name
            fields_base = fields
            fields = lambda o: o["metadata"]["name"] == only_name and fields_base(o)  # noqa: E731
        since_raw = params.get("resourceVersion") or ""
        initial: list[dict] = []
        expired: ApiError | None = None
        async with self._lock:
            if since_raw in ("", "0") or params.get("sendInitialEvents") == "true":
                since = self._rv
                initial = [{"type": "ADDED", "object": o} for o in self._all(kind, ns)]
            else:
                since = int(since_raw)
                oldest = self._events[0].rv if self._events else self._rv + 1
                if since < self._rv and since < oldest - 1:
                    expired = ApiError(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
        if expired is not None:
            return await self._watch_error(request, expired)
        initial = [e for e in initial if labels(e["object"]["metadata"].get("labels") or {}) and fields(e["object"])]
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        transport = request._raw_request.transport
        watch = OpenWatch(kind.plural, transport) if transport is not None else None
        if watch is not None:
            self._watches.add(watch)
        drop_events = fault.drop_after_events if fault is not None else None
        drop_at = (loop.time() + fault.drop_after_seconds
                   if fault is not None and fault.drop_after_seconds is not None else None)
        sent = 0

        def drop_due() -> bool:
            return ((drop_events is not None and sent >= drop_events)
                    or (drop_at is not None and loop.time() >= drop_at))

        async def send(event: dict) -> None:
            nonlocal sent
            if drop_due():
                raise _DropWatch
            await response.write(json.dumps(event).encode() + b"\n")
            if event["type"] != "BOOKMARK":
                sent += 1

        try:
            for event in initial:
                await send(event)
            if params.get("sendInitialEvents") == "true":
                await send({"type": "BOOKMARK", "object": {
                    "kind": kind.kind, "apiVersion": kind.api_version,
                    "metadata": {"resourceVersion": str(since),
                                 "annotations": {"k8s.io/initial-events-end": "true"}}}})
            while (not self._closing and watch is not None and not watch.dropped
                   and not transport.is_closing()):
                if drop_due():
                    raise _DropWatch
                if deadline is not None and loop.time() >= deadline:
                    break
                tick = self._tick
                key = (kind.group, kind.version, kind.plural)
                pending = [e for e in list(self._events) if e.rv > since and e.resource == key]
                for e in pending:
                    since = e.rv
                    obj_ns = e.obj["metadata"].get("namespace")
                    if ns is not None and obj_ns != ns:
                        continue
                    if labels(e.obj["metadata"].get("labels") or {}) and fields(e.obj):
                        await send({"type": e.type, "object": e.obj})
                if pending:
                    continue
                wait = 0.5
                if drop_at is not None:
                    wait = max(0.0, min(wait, drop_at - loop.time()))
                try:
                    await asyncio.wait_for(tick.wait(), timeout=wait)
                except TimeoutError:
                    pass
            if watch is None or not watch.dropped:
                await response.write_eof()
        except _DropWatch:
            if watch is not None:
                self._cut(watch)
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            if watch is not None:
                self._watches.discard(watch)
        return response

    @staticmethod
    async def _watch_error(request: rendering.Request, error: ApiError) -> aiohttp.web.StreamResponse:
        """A watch that cannot start, as a real server answers it past admission (e.g. an expired
        resourceVersion): 200, then one ERROR event with the Status, then the end of the stream."""
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        try:
            await response.write(json.dumps({"type": "ERROR", "object": error.status()}).encode() + b"\n")
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return response

    # --- writing: helpers ----------------------------------------------------------------------

    @staticmethod
    def _body(request: rendering.Request) -> Any:
        text = request.text
        if not text.strip():
            return None
        ctype = _header(request, "content-type")
        try:
            if "yaml" in ctype:
                return yaml.safe_load(text)
            return json.loads(text)
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"the body could not be decoded: {e}")

    @staticmethod
    def _manager(request: rendering.Request) -> str:
        manager = request.params.get("fieldManager")
        if manager:
            return manager
        agent = _header(request, "user-agent") or "unknown"
        return agent.split("/", 1)[0]

    def _allocate_ip(self) -> str:
        net = ipaddress.ip_network(self.service_cidr)
        for host in list(net.hosts())[9:]:
            if str(host) not in self._ips:
                self._ips.add(str(host))
                return str(host)
        raise ApiError(500, "InternalError", "no cluster IPs left")

    def _check_namespace(self, kind: Kind, ns: str | None) -> None:
        if not kind.namespaced:
            return
        namespace = self._current(self._kinds[("", "v1", "namespaces")], None, ns)
        if namespace is None:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           {"name": ns, "kind": "namespaces"})
        if namespace["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden",
                           f"unable to create new content in namespace {ns} because it is being terminated")

    def _emit(self, kind: Kind, type_: str, obj: dict) -> None:
        label = self._request_label
        if label is not None and label[2] == (kind.group, kind.version, kind.plural) and not self._in_gc:
            key = label[:2]
        else:
            key = ("gc", kind.plural)
        with self._sync:
            self._writes[key] += 1
        self._events.append(Event(self._rv, (kind.group, kind.version, kind.plural), type_, obj))
        if self._tick is not None:
            self._tick.set()
            self._tick = asyncio.Event()

    def _commit(self, kind: Kind, old: dict | None, new: dict, dry_run: bool, type_: str | None = None) -> dict:
        """Store a new version unless it equals the old one. Returns what the client sees."""
        if old is not None and _comparable(old) == _comparable(new):
            return old
        if dry_run:
            return new
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        ns = new["metadata"].get("namespace") if kind.namespaced else None
        key = (kind.ref, ns, new["metadata"]["name"])
        frozen = copy.deepcopy(new)
        if key not in self._objects:
            self._objects[key] = frozen
        elif self._objects[key].deleted:
            self._objects[key].create(frozen)
        else:
            self._objects[key].history.append(frozen)
        self._emit(kind, type_ or ("ADDED" if old is None else "MODIFIED"), copy.deepcopy(frozen))
        if kind.group == "apiextensions.k8s.io":
            self._register_crd(frozen)
        if old is None and kind.plural == "namespaces" and kind.group == "":
            self._publish_root_ca(frozen["metadata"])
        if old is None and kind.plural == "jobs" and kind.group == "batch":
            self._start_job(kind, frozen["metadata"])
        refs = frozen["metadata"].get("ownerReferences") or []
        if old is None and refs and self.gc and not self._in_gc and not any(self._uid_exists(r.get("uid")) for r in refs):
            # Real garbage collection also removes a dependent created after its owners were gone.
            self._remove(kind, frozen, "Background")
        return copy.deepcopy(frozen)

    def _publish_root_ca(self, namespace: dict) -> None:
        """What kube-controller-manager's root-ca-cert-publisher writes into each new namespace:
        after the namespace's creation, as a controller does (the emulator serves plain HTTP, so
        the certificate is a placeholder)."""
        kind, ns = self._kinds[("", "v1", "configmaps")], namespace["name"]

        def publish() -> None:
            current = self._current(self._kinds[("", "v1", "namespaces")], None, ns)
            if (current is not None and current["metadata"]["uid"] == namespace["uid"]
                    and not current["metadata"].get("deletionTimestamp")
                    and self._current(kind, ns, ROOT_CA_CONFIGMAP) is None):
                self._store_new(kind, ns, {"apiVersion": "v1", "kind": "ConfigMap",
                                           "metadata": {"name": ROOT_CA_CONFIGMAP},
                                           "data": {"ca.crt": ROOT_CA_PLACEHOLDER}})

        async def later() -> None:
            await asyncio.sleep(ROOT_CA_DELAY_S)
            async with self._lock:
                publish()

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the initial namespaces, before the server runs
            publish()
            return
        task = loop.create_task(later())
        self._controller_tasks.add(task)
        task.add_done_callback(self._controller_tasks.discard)

    def _start_job(self, kind: Kind, job: dict) -> None:
        """What kube-controller-manager's Job controller writes first on an unsuspended Job:
        ``status.startTime``, a moment after its creation (it runs no pods here). A real server
        then refuses to change it (see _check_job_start_time), so tests that finish a Job keep it."""
        ns, name = job.get("namespace"), job["name"]

        def start() -> None:
            current = self._current(kind, ns, name)
            if (current is None or current["metadata"]["uid"] != job["uid"]
                    or (current.get("spec") or {}).get("suspend")
                    or (current.get("status") or {}).get("startTime")):
                return
            new = copy.deepcopy(current)
            new.setdefault("status", {})["startTime"] = now_iso()
            self._commit(kind, current, new, dry_run=False)

        async def later() -> None:
            await asyncio.sleep(JOB_START_DELAY_S)
            async with self._lock:
                start()

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(later())
        self._controller_tasks.add(task)
        task.add_done_callback(self._controller_tasks.discard)

    def _store_new(self, kind: Kind, ns: str | None, obj: dict) -> dict:
        """Create without the request checks: for initial objects."""
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            meta["namespace"] = ns
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_iso())
        if kind.generation:
            meta["generation"] = 1
        apply_defaults(kind, obj, None, self)
        return self._commit(kind, None, obj, dry_run=False)

    def _finish(self, kind: Kind, old: dict | None, new: dict) -> None:
        """Server-owned fields: kind, apiVersion, uid, timestamps, generation, defaults."""
        if old is not None and kind.group == "" and kind.plural == "persistentvolumeclaims":
            self._check_claim_update(old, new)
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        meta = new.setdefault("metadata", {})
        if old is not None:
            for field in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp",
                          "deletionGracePeriodSeconds"):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
                else:
                    meta.pop(field, None)
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if "generation" in old["metadata"]:
                meta["generation"] = old["metadata"]["generation"]
        apply_defaults(kind, new, old, self)
        if old is not None and kind.group == "batch" and kind.plural == "jobs":
            _check_job_start_time(old, new)
        if kind.schema:
            S.prune(kind.schema, new)
            S.default(kind.schema, new)
            causes = S.validate(kind.schema, new)
            if causes:
                resource = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
                raise ApiError(422, "Invalid", f'{resource} "{meta.get("name")}" is invalid: '
                               + "; ".join(f'{c["field"]}: {c["message"]}' for c in causes),
                               {"name": meta.get("name"), "group": kind.group, "kind": kind.kind,
                                "causes": causes})
        if kind.generation:
            if old is None:
                meta["generation"] = 1
            elif _spec_part(old) != _spec_part(new) or (
                    # apps/v1 Deployments: annotations are copied to the ReplicaSets, so a change
                    # to them bumps the generation too (pkg/registry/apps/deployment/strategy.go).
                    kind.kind == "Deployment"
                    and (old["metadata"].get("annotations") or {}) != (meta.get("annotations") or {})):
                meta["generation"] = old["metadata"].get("generation", 0) + 1
        for key in [k for k, v in meta.items() if v in ({}, []) and k in ("labels", "annotations",
                                                                            "finalizers", "ownerReferences")]:
            del meta[key]

    def _check_claim_update(self, old: dict, new: dict) -> None:
        """A PersistentVolumeClaim update as kube-apiserver judges it: validation first
        (ValidatePersistentVolumeClaimUpdate, 422: the spec is immutable but for volumeName, set
        once, and resources.requests of a bound claim; the request never shrinks), then the
        PersistentVolumeClaimResize admission plugin (403: a larger request needs a bound claim
        whose StorageClass, the same before and after, has allowVolumeExpansion: true)."""
        old_spec, new_spec = copy.deepcopy(old.get("spec") or {}), copy.deepcopy(new.get("spec") or {})
        name = old["metadata"]["name"]
        bound = (old.get("status") or {}).get("phase") == "Bound"  # the status a main-resource write keeps
        if not old_spec.get("volumeName") and "volumeName" in new_spec:
            old_spec["volumeName"] = new_spec["volumeName"]  # the PV controller binds it once
        old_size, new_size = (_bytes(size) if size is not None else None for size in
                              (((spec.get("resources") or {}).get("requests") or {}).pop("storage", None)
                               for spec in (old_spec, new_spec)))  # fmt: skip
        if old_spec != new_spec or (not bound and old_size != new_size):
            raise ApiError(422, "Invalid", f'PersistentVolumeClaim "{name}" is invalid: spec: Forbidden: spec is '
                           "immutable after creation except resources.requests and volumeAttributesClassName for "
                           "bound claims", {"name": name, "kind": "PersistentVolumeClaim", "causes": [
                               {"reason": "FieldValueForbidden", "field": "spec"}]})  # fmt: skip
        if old_size is None or new_size is None or new_size == old_size:
            return
        if new_size < old_size:
            raise ApiError(422, "Invalid", f'PersistentVolumeClaim "{name}" is invalid: '
                           "spec.resources.requests.storage: Forbidden: field can not be less than previous value")
        forbidden = f'persistentvolumeclaims "{name}" is forbidden: '
        classes = self._kinds[("storage.k8s.io", "v1", "storageclasses")]
        class_name = new_spec.get("storageClassName") or ""
        storage_class = self._current(classes, None, class_name) if class_name else None
        expandable = (storage_class or {}).get("allowVolumeExpansion")
        if class_name != (old_spec.get("storageClassName") or "") or not expandable:
            raise ApiError(403, "Forbidden", forbidden + "only dynamically provisioned pvc can be resized and the "
                           "storageclass that provisions the pvc must support resize")

    def _preconditions(self, old: dict, body: Any) -> None:
        rv = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict",
                           f'Operation cannot be fulfilled on {old["kind"].lower()}s "{old["metadata"]["name"]}": '
                           "the object has been modified; please apply your changes to the latest version "
                           "and try again", {"name": old["metadata"]["name"], "kind": old["kind"]})

    @staticmethod
    def _split_status(kind: Kind, old: dict, new: dict, sub: str | None) -> dict:
        """With a status subresource: main writes keep old status, status writes keep the rest."""
        if "status" not in kind.subresources:
            return new
        if sub == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            return result
        result = copy.deepcopy(new)
        if "status" in old:
            result["status"] = copy.deepcopy(old["status"])
        else:
            result.pop("status", None)
        return result

    # --- writing: verbs ------------------------------------------------------------------------

    def _create(self, kind: Kind, ns: str | None, body: Any, manager: str, dry_run: bool) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be an object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise ApiError(400, "BadRequest",
                               "the namespace of the provided object does not match the namespace sent on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + "".join(random.choices(GENERATE_CHARS, k=5))
            else:
                raise ApiError(422, "Invalid", f"{kind.kind} is invalid: metadata.name: Required value: "
                                               "name or generateName is required")
        name = meta["name"]
        self._check_namespace(kind, ns)
        if self._current(kind, ns, name) is not None:
            raise ApiError(409, "AlreadyExists", f'{kind.plural} "{name}" already exists',
                           {"name": name, "group": kind.group, "kind": kind.plural})
        for field in ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                      "managedFields", "selfLink"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        if "status" in kind.subresources and kind.plural not in ("nodes",):
            obj.pop("status", None)
        self._finish(kind, None, obj)
        _set_managed(obj, _update_ownership(kind, None, obj, manager, None))
        if kind.plural == "customresourcedefinitions":
            obj["status"] = _crd_status(obj)
        return self._commit(kind, None, obj, dry_run)

    def _update(self, kind, ns, name, sub, body, request, dry_run) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be an object")
        old = self._get(kind, ns, name)
        self._preconditions(old, body)
        new = self._split_status(kind, old, copy.deepcopy(body), sub)
        return self._write(kind, old, new, self._manager(request), sub, dry_run)

    def _patch(self, kind, ns, name, sub, body, request, dry_run) -> dict:
        ctype = _header(request, "content-type").split(";")[0].strip()
        old = self._get(kind, ns, name)
        base = copy.deepcopy(old)
        if ctype == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                patched = jsonpatch.JsonPatch(body).apply(base)
            except jsonpatch.JsonPatchTestFailed as e:
                raise ApiError(422, "Invalid", f"the server rejected our request due to an error in our request: {e}")
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
                raise ApiError(422, "Invalid", f"invalid JSON patch: {e}")
        elif ctype == "application/merge-patch+json":
            self._preconditions(old, body)
            patched = F.merge_patch(base, body)
        elif ctype == "application/strategic-merge-patch+json":
            if kind.custom:
                raise ApiError(415, "UnsupportedMediaType",
                               "strategic merge patch is not supported for custom resources")
            self._preconditions(old, body)
            patched = F.strategic_merge_patch(base, body, kind.list_keys)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}")
        new = self._split_status(kind, old, patched, sub)
        return self._write(kind, old, new, self._manager(request), sub, dry_run)

    def _write(self, kind: Kind, old: dict, new: dict, manager: str, sub: str | None, dry_run: bool) -> dict:
        self._finish(kind, old, new)
        _set_managed(new, _update_ownership(kind, old, new, manager, sub))
        result = self._commit(kind, old, new, dry_run)
        if (not dry_run and result is not old and result["metadata"].get("deletionTimestamp")
                and not result["metadata"].get("finalizers")):
            self._remove(kind, result, "Background")
        return result

    def _apply(self, kind, ns, name, sub, body, request, dry_run) -> tuple[dict, bool]:
        manager = request.params.get("fieldManager")
        if not manager:
            raise ApiError(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                                           "Required value: is required for apply patch")
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "an apply patch must be an object")
        if body.get("apiVersion") != kind.api_version or body.get("kind") != kind.kind:
            raise ApiError(400, "BadRequest",
                           f"apply patch apiVersion/kind must be {kind.api_version}/{kind.kind}")
        body_meta = body.get("metadata") or {}
        if body_meta.get("name") not in (None, name):
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        force = request.params.get("force") in ("true", "1")
        applied = copy.deepcopy(body)
        if "status" in kind.subresources:
            applied = ({"status": applied["status"]} if "status" in applied else {}) if sub == "status" \
                else {k: v for k, v in applied.items() if k != "status"}
        old = self._current(kind, ns, name)
        if old is None:
            if sub == "status":
                raise not_found(kind, name)
            obj = dict(copy.deepcopy(applied), metadata=dict(body_meta, name=name))
            created = self._create(kind, ns, obj, manager, dry_run=True)  # validation + server fields
            _set_managed(created, [])
            base = created
        else:
            self._preconditions(old, body)
            base = copy.deepcopy(old)
        entries = _get_managed(base)
        ours = next((e for e in entries if (e["manager"], e["operation"], e.get("subresource")) ==
                     (manager, "Apply", sub)), None)
        new_set = F.fieldset(applied, kind.list_keys)
        conflicts = []
        for path in sorted(new_set, key=len):
            if isinstance(path[-1], F.Key):
                continue
            live = F.get_path(base, path)
            if live is F._MISSING or live == F.get_path(applied, path):
                continue
            for entry in entries:
                if entry is not ours and path in entry["fields"]:
                    conflicts.append((path, entry))
        if conflicts and not force:
            causes = [{"reason": "FieldManagerConflict", "field": F.dotted(p),
                       "message": f'conflict with "{e["manager"]}"'
                                  + (" using " + e.get("apiVersion", kind.api_version) if e["operation"] == "Update" else "")}
                      for p, e in conflicts]
            raise ApiError(409, "Conflict",
                           f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}: "
                           + "; ".join(f'{c["message"]}: {c["field"]}' for c in causes),
                           {"name": name, "group": kind.group, "kind": kind.plural, "causes": causes})
        for path, entry in conflicts:  # force: the applier takes the fields over
            entry["fields"].discard(path)
        merged = F.apply_merge(base, applied, kind.list_keys)
        previous = ours["fields"] if ours else set()
        others = [e for e in entries if e is not ours]
        # Ancestors first: removing a list item removes its fields; removing its key field first
        # would leave an item that can no longer be found.
        for path in sorted(previous - new_set, key=len):
            # A field still owned, or the parent of one (`emptyDir: {}` then `emptyDir: {sizeLimit}`),
            # stays: kube-apiserver removes the old set, then adds back every item still owned.
            if not any(p[:len(path)] == path for p in new_set) and \
                    not any(p[:len(path)] == path for e in others for p in e["fields"]):
                F.delete_path(merged, path)
        if ours is None:
            ours = {"manager": manager, "operation": "Apply", "apiVersion": kind.api_version,
                    "time": now_iso(), "fields": set()}
            if sub:
                ours["subresource"] = sub
            entries.append(ours)
        if ours["fields"] != new_set:
            ours["fields"] = set(new_set)
            ours["time"] = now_iso()
        # Drop ownership of fields that the merge removed.
        for entry in entries:
            entry["fields"] = {p for p in entry["fields"] if F.has_path(merged, p)}
        merged = self._split_status(kind, base, merged, sub) if old is not None else merged
        self._finish(kind, old, merged)
        _set_managed(merged, entries)
        if old is None:
            if kind.plural == "customresourcedefinitions":
                merged["status"] = _crd_status(merged)
            return self._commit(kind, None, merged, dry_run), True
        return self._commit(kind, old, merged, dry_run), False

    def _delete(self, kind: Kind, ns, name, body, params, dry_run) -> dict:
        old = self._get(kind, ns, name)
        options = body if isinstance(body, dict) else {}
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
            raise ApiError(409, "Conflict", "Precondition failed: UID in precondition does not match")
        if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "Precondition failed: ResourceVersion does not match")
        policy = options.get("propagationPolicy") or params.get("propagationPolicy") or "Background"
        if dry_run:
            return old
        if old["metadata"].get("deletionTimestamp"):
            return old
        finalizers = list(old["metadata"].get("finalizers") or [])
        if kind.plural == "namespaces":
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now_iso()
            new["status"] = {"phase": "Terminating"}
            result = self._commit(kind, old, new, dry_run=False)
            for other in list(self._kinds.values()):
                if other.namespaced:
                    for obj in self._all(other, name):
                        self._delete(other, name, obj["metadata"]["name"], None, {}, False)
            self._maybe_finish_namespace(name)
            return result
        if finalizers:
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now_iso()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if kind.generation:
                new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
            return self._commit(kind, old, new, dry_run=False)
        return self._remove(kind, old, policy)

    def _remove(self, kind: Kind, obj: dict, policy: str) -> dict:
        ns = obj["metadata"].get("namespace") if kind.namespaced else None
        key = (kind.ref, ns, obj["metadata"]["name"])
        self._rv += 1
        last = copy.deepcopy(obj)
        last["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[key].delete()
        self._emit(kind, "DELETED", last)
        ip = ((obj.get("spec") or {}).get("clusterIP")) if kind.plural == "services" else None
        self._ips.discard(ip)
        if kind.group == "apiextensions.k8s.io":
            self._unregister_crd(obj)
        outer, self._in_gc = self._in_gc, True
        try:
            if self.gc:
                self._collect(obj["metadata"]["uid"], policy)
            if ns is not None:
                self._maybe_finish_namespace(ns)
        finally:
            self._in_gc = outer
        return last

    def _collect(self, owner_uid: str, policy: str) -> None:
        for kind in list(self._kinds.values()):
            for (ref, ns, _), stored in list(self._objects.items()):
                if ref != kind.ref or stored.deleted:
                    continue
                child = stored.raw
                refs = child["metadata"].get("ownerReferences") or []
                if not any(r.get("uid") == owner_uid for r in refs):
                    continue
                remaining = [r for r in refs if r.get("uid") != owner_uid]
                if policy == "Orphan" or any(self._uid_exists(r.get("uid")) for r in remaining):
                    new = copy.deepcopy(child)
                    new["metadata"]["ownerReferences"] = remaining
                    self._write(kind, child, new, "generic-garbage-collector", None, False)
                else:
                    self._delete(kind, ns, child["metadata"]["name"], None, {}, False)

    def _uid_exists(self, uid: str | None) -> bool:
        return any(not s.deleted and s.raw["metadata"].get("uid") == uid for s in self._objects.values())

    def _maybe_finish_namespace(self, ns: str) -> None:
        ns_kind = self._kinds[("", "v1", "namespaces")]
        namespace = self._current(ns_kind, None, ns)
        if namespace is None or not namespace["metadata"].get("deletionTimestamp"):
            return
        for (ref, obj_ns, _), stored in self._objects.items():
            if obj_ns == ns and not stored.deleted:
                return
        self._remove(ns_kind, namespace, "Background")

    # --- CRDs ------------------------------------------------------------------------------------

    def _register_crd(self, crd: dict) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
            subresources = tuple(sorted((version.get("subresources") or {}).keys()))
            self.register(Kind(
                group=spec["group"], version=version["name"], plural=names["plural"], kind=names["kind"],
                namespaced=spec.get("scope") == "Namespaced", singular=names.get("singular", ""),
                subresources=subresources, short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()), generation=True, custom=True,
                schema_keys=F.schema_list_keys(schema), schema=schema or None))

    def _unregister_crd(self, crd: dict) -> None:
        spec = crd.get("spec") or {}
        for version in spec.get("versions") or []:
            key = (spec["group"], version["name"], spec["names"]["plural"])
            kind = self._kinds.pop(key, None)
            if kind is not None:
                del self.resources[kind.ref]


# ---------------------------------------------------------------------------------------------
# Module helpers
# ---------------------------------------------------------------------------------------------


def _split_path(path: str) -> tuple | None:
    """(group, version, plural, namespace, name, subresource) for a resource path, else None."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return group, version, None, None, None, None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return group, version, plural, namespace, name, sub


def _parse_request(raw: aiohttp.web.BaseRequest, body: bytes, id_: int) -> rendering.Request:
    parsed = _split_path(raw.path)
    method = kmock.method(raw.method)
    params = dict(raw.query)
    resource = namespace = name = sub = action = None
    if parsed is not None:
        group, version, plural, namespace, name, sub = parsed
        resource = kmock.resource(group=group, version=version, plural=plural)
        path = kmock_parsing.ParsedPath(group, version, plural, namespace, name, sub)
        action = kmock_parsing.guess_k8s(path, method, params)
    return rendering.Request(
        id=id_, raw_request=raw, url=raw.url, method=raw.method, params=params,
        headers=dict(raw.headers), cookies=dict(raw.cookies), body=body,
        text=body.decode("utf-8", errors="replace"), data=None, action=action,
        resource=resource, namespace=namespace, name=name, subresource=sub)


def _header(request: rendering.Request, name: str) -> str:
    for key, value in request.headers.items():
        if key.lower() == name:
            return value
    return ""


def _comparable(obj: dict) -> dict:
    """An object without what changes on every write, to detect no-op writes."""
    result = copy.deepcopy(obj)
    meta = result.get("metadata", {})
    meta.pop("resourceVersion", None)
    for entry in meta.get("managedFields") or []:
        entry.pop("time", None)
    return result


def _check_job_start_time(old: dict, new: dict) -> None:
    """batch/v1 Job status: startTime is immutable once set while the Job is not suspended
    (pkg/apis/batch/validation, RejectStartTimeUpdateForUnsuspendedJob)."""
    before = (old.get("status") or {}).get("startTime")
    after = (new.get("status") or {}).get("startTime")
    if before and after != before and not (new.get("spec") or {}).get("suspend"):
        name = new["metadata"].get("name")
        cause = {"reason": "FieldValueInvalid", "field": "status.startTime",
                 "message": f'Invalid value: "{after}": field is immutable for unsuspended job once set'}
        raise ApiError(422, "Invalid", f'Job.batch "{name}" is invalid: status.startTime: {cause["message"]}',
                       {"name": name, "group": "batch", "kind": "Job", "causes": [cause]})


def _spec_part(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _crd_status(crd: dict) -> dict:
    names = (crd.get("spec") or {}).get("names") or {}
    now = now_iso()
    return {
        "acceptedNames": names,
        "storedVersions": [v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    }


def _get_managed(obj: dict) -> list[dict]:
    entries = []
    for raw in (obj.get("metadata") or {}).get("managedFields") or []:
        entry = {k: v for k, v in raw.items() if k not in ("fieldsV1", "fieldsType")}
        entry["fields"] = F.decode_fields(raw.get("fieldsV1") or {})
        entries.append(entry)
    return entries


def _set_managed(obj: dict, entries: Iterable[dict]) -> None:
    encoded = []
    for entry in entries:
        if not entry["fields"]:
            continue
        raw = {k: v for k, v in entry.items() if k != "fields"}
        raw["fieldsType"] = "FieldsV1"
        raw["fieldsV1"] = F.encode_fields(entry["fields"])
        encoded.append(raw)
    if encoded:
        obj["metadata"]["managedFields"] = encoded
    else:
        obj["metadata"].pop("managedFields", None)


def _update_ownership(kind: Kind, old: dict | None, new: dict, manager: str, sub: str | None) -> list[dict]:
    """An Update operation (create, put, patch) owns the fields it changed, taking them from others.

    The entries it starts from are the request's own when it carries some (a write to the main
    resource may set managedFields: kubectl's client-side -> server-side upgrade is a JSON patch of
    them), else the stored ones, as kube-apiserver's FieldManager.Update does."""
    given = (new.get("metadata") or {}).get("managedFields") if old is not None and sub is None else None
    entries = _get_managed(new) if given else _get_managed(old) if old is not None else []
    new_fields = F.fieldset(new, kind.list_keys)
    if "status" in kind.subresources:
        in_scope = (lambda p: p[:1] == ("status",)) if sub == "status" else (lambda p: p[:1] != ("status",))
    else:
        in_scope = lambda p: True  # noqa: E731
    changed = set()
    for path in new_fields:
        if not in_scope(path):
            continue
        if old is None:
            changed.add(path)
        elif isinstance(path[-1], F.Key):
            if not F.has_path(old, path):
                changed.add(path)
        elif F.get_path(old, path) != F.get_path(new, path):
            changed.add(path)
    ours = next((e for e in entries if (e["manager"], e["operation"], e.get("subresource")) ==
                 (manager, "Update", sub)), None)
    for entry in entries:
        entry["fields"] = {p for p in entry["fields"] if F.has_path(new, p)}
        if entry is not ours:
            entry["fields"] -= changed
    if changed:
        if ours is None:
            ours = {"manager": manager, "operation": "Update", "apiVersion": kind.api_version, "fields": set()}
            if sub:
                ours["subresource"] = sub
            entries.append(ours)
        ours["fields"] |= changed
        ours["time"] = now_iso()
    return entries
