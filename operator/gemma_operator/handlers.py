"""kopf wiring. Handlers only wire: parse -> plan -> render -> apply -> status.

Spec changes arrive through kopf's create/update/resume handlers (with kopf's retries and
error semantics). Everything else that can change the outcome (a child edited or deleted, a
Deployment becoming ready, node pools appearing or disappearing) wakes the owner through a
small keyed work queue. Nodes, children and GemmaDeployments are kopf indices, which kopf
fills completely before any handler runs: a restart re-plans from the whole cluster, finds the
children already as desired, and writes nothing.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from . import cache as cache_mod
from . import catalog as catalog_mod
from . import capacity, inventory, kube, metrics, peering, planner, pods, render, rollout, scaling, status, validation
from .api.v1alpha1 import GROUP, PLURAL, VERSION, GemmaDeploymentSpec

status_condition = tuple[str, str, str, str]  # (type, status, reason, message)
GD = {"group": GROUP, "version": VERSION, "plural": PLURAL}
MANAGED = {"app.kubernetes.io/managed-by": render.MANAGER}
# The model pods: only the operator's own are watched (a server-side label selector).
MODEL_PODS = {**MANAGED, "app.kubernetes.io/component": "model-server"}
INSTANCE = "app.kubernetes.io/instance"  # render.selector_labels: the GemmaDeployment's name
DIGEST = f"{GROUP}/applied-digest"
# On the Deployment: the optional kinds of CRDs the operator does not watch that it applied last
# (PodMonitoring, ...), so that it deletes them once they must no longer exist.
APPLIED_KINDS = f"{GROUP}/applied-kinds"
# How long which optional CRDs the cluster serves is taken as known.
DISCOVERY_ENV = "GEMMA_OPERATOR_DISCOVERY_S"
DISCOVERY_TTL_S = 60.0
# Chart values (as env): the collector to render, the Prometheus KEDA queries, the rollout policy.
COLLECTOR_ENV = "GEMMA_OPERATOR_COLLECTOR"
PROMETHEUS_URL_ENV = "GEMMA_OPERATOR_PROMETHEUS_URL"
ROLLOUT_POLICY_ENV = "GEMMA_OPERATOR_ROLLOUT_POLICY"  # "keep" (default) | "accept"
EVENT_REPEAT_S = 60.0  # the same Event reason at most once a minute per resource
NODES_SETTLE_S = 1.0  # node changes come in bursts (a pool scaling): plan once they settle
SHARED = ("PersistentVolumeClaim", "Job")  # cache objects, shared by the deployments of one checkpoint
SHARED_API = {"PersistentVolumeClaim": "v1", "Job": "batch/v1"}
RETRY_S = (1, 2, 5, 10, 30, 60)  # back-off for API errors that clear by themselves
SECRET_RECHECK_S = 30.0
# The early check that spec.hfTokenSecretRef exists needs `get` on Secrets: off unless the chart
# grants it (secretCheck.enabled). Without it, a missing Secret shows on the pod (SecretNotFound).
SECRET_CHECK_ENV = "GEMMA_OPERATOR_SECRET_CHECK"
AUTOSCALER_EVENTS_S = 30.0  # a pod waiting for a node: its autoscaler Events are read at most this often
# How often the indices are checked against a fresh list, for deletions a watch missed: after
# an expired watch (410), kopf re-lists but never reports what vanished in the gap.
RESYNC_ENV = "GEMMA_OPERATOR_RESYNC_S"
RESYNC_S = 300.0
# The capacity file (a mounted ConfigMap the kubelet updates in place) is re-read this often.
CAPACITY_POLL_ENV = "GEMMA_OPERATOR_CAPACITY_POLL_S"
CAPACITY_POLL_S = 10.0
# kopf retries a failed API request (5xx, 403, a lost connection) with these pauses, then gives
# up; a watch that gives up stops the whole operator. kopf's default (1 to 21 s, 54 s in all)
# is shorter than a control-plane upgrade can keep the API away: this rides out about 10 minutes
# and then resumes where it was, instead of exiting into a crash-loop back-off.
API_ERROR_BACKOFFS_S = (1, 1, 2, 3, 5, 8, 13, 21, 30, 60, 60, 60, 60, 60, 60, 60, 60, 60)
# PROTOTYPE (branch wt-bench, for bench/reconcile.py --variant only; not for merging): switches
# that simulate or try changes to the loop, to measure each apart. Comma-separated in GEMMA_PROTO:
# queue (no kopf create/update/resume handlers: events -> work queue), noplanned (the Planned Event
# only on a re-plan), quietlog (no per-handler success lines from kopf); GEMMA_PROTO_WORKERS: work
# queue workers (2).
PROTO = set(filter(None, os.environ.get("GEMMA_PROTO", "").split(",")))
PROTO_WORKERS = int(os.environ.get("GEMMA_PROTO_WORKERS") or 2)


# ----------------------------------------------------------------------------- start-up
@kopf.on.login()
async def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo | None:
    """One set of credentials for kopf and for `kube`: in-cluster, else the kubeconfig."""
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is not None and getattr(memo, "kube", None) is None:
        memo.kube = kube.Kube.connect(info, timeout=settings.networking.request_timeout or 30)
    if getattr(memo, "kube", None) is not None and getattr(memo, "connected", None) is not None:
        memo.connected.set()
    return info


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **kwargs: Any) -> None:
    # The CRD's status is typed (no unknown fields), so kopf keeps its bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    if "nodiffbase" in PROTO and "queue" in PROTO:
        # PROTOTYPE: without create/update/resume handlers nothing reads kopf's diff-base, which kopf
        # still builds (a deep copy of the whole body, twice more in the progress storage) per event.
        settings.persistence.diffbase_storage = _NoDiffBase()
    settings.posting.level = logging.WARNING  # kopf's own Events only for trouble; ours say what happened
    settings.networking.request_timeout = settings.networking.request_timeout or 60
    settings.networking.connect_timeout = settings.networking.connect_timeout or 10
    settings.watching.server_timeout = settings.watching.server_timeout or 300
    settings.networking.error_backoffs = API_ERROR_BACKOFFS_S
    settings.watching.label_selectors["", "v1", "pods"] = ",".join(f"{k}={v}" for k, v in MODEL_PODS.items())
    # A per-object kopf worker lingers this long after its last event (default 5 s): with 1,000
    # resources and 2,000 children, 3,000 idle workers held ~30 MB of RSS (bench/README.md).
    settings.queueing.idle_timeout = 0.5
    memo.catalog = catalog_mod.load()
    memo.cache_defaults = cache_mod.defaults_from(os.environ.get(cache_mod.DEFAULTS_ENV))
    memo.kube = getattr(memo, "kube", None)
    memo.connected = asyncio.Event()  # kopf logs in after the startup handlers
    if memo.kube is not None:
        memo.connected.set()
    memo.inventories = {}  # nodeSelector -> Inventory, dropped whenever a node changes
    memo.locks = {}  # (namespace, name) -> asyncio.Lock: one reconcile at a time per resource
    memo.failures = {}  # (namespace, name) -> consecutive API failures, for back-off
    memo.events = {}  # (uid, reason) -> monotonic time of the last Event
    # The index's copy of a resource lags our own status patch: (namespace, name) -> (the
    # resourceVersion that patch replaced, the status it left), to compare against instead.
    memo.status_written = {}
    # (kind, namespace, name) -> resourceVersion of our last apply of a child: its watch event is
    # only the echo of that apply, with nothing new to react to.
    memo.applied = {}
    memo.queue = WorkQueue()
    memo.node_index = kwargs["gemma_nodes"]
    memo.resource_index = kwargs["gemma_resources"]
    memo.children = {"Deployment": kwargs["gemma_deployments"], "Service": kwargs["gemma_services"],
                     "PodDisruptionBudget": kwargs["gemma_pdbs"], "HorizontalPodAutoscaler": kwargs["gemma_hpas"],
                     "PersistentVolumeClaim": kwargs["gemma_claims"], "Job": kwargs["gemma_jobs"]}
    memo.applied_digests = {}  # (kind, namespace, name) -> digest, for the kinds without an index
    memo.discovery = (float("-inf"), set())  # (monotonic time, served optional (apiVersion, kind))
    memo.pod_index = kwargs["gemma_pods"]
    memo.pods_seen = {}  # (namespace, pod) -> digest of what the index keeps: other changes wake nobody
    memo.autoscaler_events = {}  # (namespace, pod) -> (monotonic time read, the pod's autoscaler Events)
    memo.rechecks = {}  # (namespace, name) -> the timer that looks again at a time-bound pod state
    memo.secret_check = os.environ.get(SECRET_CHECK_ENV, "").lower() in ("1", "true", "yes")
    memo.collector = os.environ.get(COLLECTOR_ENV, "auto")
    memo.prometheus_url = os.environ.get(PROMETHEUS_URL_ENV, scaling.PROMETHEUS_URL_DEFAULT)
    memo.accept_updates = os.environ.get(ROLLOUT_POLICY_ENV, "keep") == "accept"  # the chart's rollout policy
    memo.discovery_ttl_s = float(os.environ.get(DISCOVERY_ENV, DISCOVERY_TTL_S))
    memo.scale_up_budget_s = int(os.environ.get(pods.SCALE_UP_BUDGET_ENV) or pods.SCALE_UP_BUDGET_S)
    memo.nodes_changed = asyncio.Event()
    memo.gone_nodes = set()  # node names still in the index that a fresh list no longer has
    memo.gone_children = set()  # (kind, namespace, name) likewise
    # Declared capacity: read once here (an invalid file stops the start with its message), then followed.
    memo.capacity_file = capacity.watch_from_env(memo.catalog)
    try:
        memo.declared = (memo.capacity_file.poll() or []) if memo.capacity_file else []
    except capacity.CapacityError as exc:
        raise kopf.PermanentError(f"Invalid declared capacity: {exc}") from exc
    # With peering, kopf pauses its watches for a higher-priority peer; the background work below
    # pauses with it, following the same peering object (cluster-wide, or per namespace in use).
    memo.peering = settings.peering
    memo.logger = logger  # the operator's own, for background work started later
    memo.pause = peering.Pause(paused_until_known=settings.peering.mandatory)
    memo.tasks = []
    if not settings.peering.standalone and settings.peering.clusterwide:
        _follow_peering(memo, None, logger)
    if "quietlog" in PROTO:
        logging.getLogger("kopf.objects").addFilter(_no_success_lines)
    if "gcstats" in PROTO:
        gc.callbacks.append(_gc_timer)
    if "gcfreeze" in PROTO:  # what start-up loaded (modules, pydantic models, the catalog) is never collected
        gc.collect()
        gc.freeze()
    if "gcthreshold" in PROTO:  # fewer young collections, and far fewer full ones, on a heap of long-lived indices
        gc.set_threshold(50_000, 20, 100)
    memo.tasks += [
        *(asyncio.create_task(_worker(memo, logger)) for _ in range(PROTO_WORKERS)),
        asyncio.create_task(_watch_pools(memo, logger)),
        asyncio.create_task(_resync_every(float(os.environ.get(RESYNC_ENV, RESYNC_S)), memo, logger)),
        asyncio.create_task(_follow_capacity(float(os.environ.get(CAPACITY_POLL_ENV, CAPACITY_POLL_S)), memo, logger)),
    ]
    memo.metrics_port = metrics.serve()


class _NoDiffBase(kopf.DiffBaseStorage):
    """PROTOTYPE (GEMMA_PROTO=queue,nodiffbase): no essence, for an operator with no change-detecting
    (create/update/resume/field) handlers and no daemons or timers: kopf reads it for those only."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: kopf.Body) -> Any:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        pass


_GC = {"start": 0.0, "seconds": [0.0, 0.0, 0.0], "count": [0, 0, 0]}


def _gc_timer(phase: str, info: dict[str, Any]) -> None:
    """PROTOTYPE (GEMMA_PROTO=gcstats): time spent in the cyclic garbage collector, by generation."""
    if phase == "start":
        _GC["start"] = time.perf_counter()
    else:
        _GC["seconds"][info["generation"]] += time.perf_counter() - _GC["start"]
        _GC["count"][info["generation"]] += 1


def _no_success_lines(record: logging.LogRecord) -> bool:
    """PROTOTYPE (GEMMA_PROTO=quietlog): drop kopf's "Handler 'x' succeeded." and "... is processed" lines."""
    message = str(record.msg)
    return not (record.levelno == logging.INFO and (message.endswith(" succeeded.") or " is processed: " in message))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "gcstats" in PROTO:
        memo.logger.warning(f"PROTOTYPE gcstats: collections by generation {_GC['count']}, "
                            f"seconds {[round(x, 3) for x in _GC['seconds']]}, objects {len(gc.get_objects())}")
    for task in getattr(memo, "tasks", []):
        task.cancel()
    await asyncio.gather(*getattr(memo, "tasks", []), return_exceptions=True)
    if getattr(memo, "kube", None) is not None:
        await memo.kube.close()


@kopf.on.probe(id="catalog")
def probe_catalog(memo: kopf.Memo, **_: Any) -> int:
    return len(memo.catalog.families)


# ------------------------------------------------------------------------------ indices
# Indexers and event handlers are coroutines: kopf runs plain functions in its thread pool, one
# hop per watch event. Index entries leave out managedFields, which nothing here reads.
@kopf.index("", "v1", "nodes")
async def gemma_nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {name: inventory.essentials(body)}


@kopf.index(**GD)
async def gemma_resources(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, Any]:
    settings = getattr(memo, "peering", None)
    if settings is not None and not settings.standalone and not settings.clusterwide:
        _follow_peering(memo, namespace, memo.logger)  # namespaced peering: one object per namespace in use
    return {(namespace, name): _snapshot(body)}


def _child(namespace: str, name: str, body: kopf.Body) -> dict[Any, Any]:
    return {(namespace, name): {"metadata": _metadata(body), "spec": body.get("spec"), "status": body.get("status")}}


def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def gemma_deployments(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _child(namespace, name, body)


@kopf.index("", "v1", "services", labels=MANAGED)
async def gemma_services(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _child(namespace, name, body)


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
async def gemma_pdbs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _child(namespace, name, body)


# The operator's HPAs, and those KEDA makes for its ScaledObjects (they carry its labels).
@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
async def gemma_hpas(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _child(namespace, name, body)


@kopf.index("", "v1", "pods", labels=MODEL_PODS)
async def gemma_pods(namespace: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Model pods by their GemmaDeployment (the instance label; the pods' owner is a ReplicaSet)."""
    instance = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE)
    return {(namespace, instance): pods.essentials(body)} if instance else {}


@kopf.index("", "v1", "persistentvolumeclaims", labels=MANAGED)
async def gemma_claims(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _child(namespace, name, body)


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def gemma_jobs(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return _child(namespace, name, body)


def _one(index: kopf.Index, key: Any) -> Any:
    values = index.get(key)
    return next(iter(values)) if values else None


# --------------------------------------------------------------------- change triggers
async def spec_changed(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    await reconcile(_snapshot(body), memo, logger, trigger="spec", raise_for_kopf=True)


async def resumed(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    await reconcile(_snapshot(body), memo, logger, trigger="resume", raise_for_kopf=True)


async def resource_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """PROTOTYPE (GEMMA_PROTO=queue): a GemmaDeployment's events feed the work queue, instead of
    kopf's create/update/resume handlers (no last-handled-configuration patch). A new generation
    is a spec change; the initial listing (type None) a resume; our own status echo nothing."""
    meta = body.get("metadata", {})
    key = (meta.get("namespace"), meta.get("name"))
    if kwargs.get("type") == "DELETED":
        memo.queue.add(key, "gone")
    elif (body.get("status") or {}).get("observedGeneration") != meta.get("generation"):
        memo.queue.add(key, "spec")
    elif kwargs.get("type") is None:
        memo.queue.add(key, "resume")


if "queue" in PROTO:
    kopf.on.event(**GD)(resource_event)
else:
    kopf.on.create(**GD)(kopf.on.update(**GD, field="spec")(spec_changed))
    kopf.on.resume(**GD)(resumed)


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=MANAGED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=MANAGED)
async def child_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A child changed (readiness, a hand edit) or vanished: its owner re-checks.

    Not the echo of the operator's own apply: that version is the one the reconcile that applied
    it already saw (resourceVersions are unique across the store, so the kind need not match).
    """
    meta = body.get("metadata", {})
    if kwargs.get("type") != "DELETED" and meta.get("resourceVersion") is not None:
        key = (meta.get("namespace"), meta.get("name"))
        if meta["resourceVersion"] in {memo.applied.get((kind, *key)) for kind in memo.children}:
            return
    owners = meta.get("ownerReferences") or []
    if body.get("kind") == "HorizontalPodAutoscaler" and not any(r.get("kind") == "GemmaDeployment" for r in owners):
        # KEDA's HPA: owned by the ScaledObject of the same name as the GemmaDeployment.
        owners = [{"kind": "GemmaDeployment", "controller": True, "name": r["name"]}
                  for r in owners if r.get("kind") == "ScaledObject"]  # fmt: skip
    for ref in owners:
        if ref.get("kind") == "GemmaDeployment" and ref.get("controller"):
            memo.queue.add((body["metadata"]["namespace"], ref["name"]), "child")


@kopf.on.event("", "v1", "pods", labels=MODEL_PODS)
async def pod_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A model pod changed what the operator reads of it (scheduling, container states): its owner re-checks."""
    meta = body.get("metadata", {})
    instance = (meta.get("labels") or {}).get(INSTANCE)
    if not instance:
        return
    key = (meta.get("namespace"), meta.get("name"))
    if kwargs.get("type") == "DELETED":
        memo.pods_seen.pop(key, None)
        memo.autoscaler_events.pop(key, None)
    else:
        seen = _digest(pods.essentials(body))
        if memo.pods_seen.get(key) == seen:
            return
        memo.pods_seen[key] = seen
    memo.queue.add((key[0], instance), "pod")


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("", "v1", "persistentvolumeclaims", labels=MANAGED)
async def cache_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A loader Job finished (or a shared claim changed): every deployment using it re-checks."""
    meta = body.get("metadata", {})
    ns = meta.get("namespace")
    echo = memo.applied.get((body.get("kind"), ns, meta.get("name")))
    if kwargs.get("type") != "DELETED" and meta.get("resourceVersion") == echo:
        return
    owners = {ref["name"] for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "GemmaDeployment"}
    # Retained objects have no owners: wake whoever waits on a fill in the namespace.
    for (cr_ns, name), values in list(memo.resource_index.items()):
        cache_state = next(iter((cr.get("status") or {}).get("cache") or {} for cr in values), {})
        if cr_ns == ns and (name in owners or cache_state.get("state") in ("Filling", "Failed")):
            memo.queue.add((ns, name), "child")


@kopf.on.event("", "v1", "nodes")
async def node_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.gone_nodes.discard(name)  # an event is fresher than the last resync
    memo.nodes_changed.set()


# ------------------------------------------------------------------------- reconcile
def _snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": _metadata(body),
            "spec": body.get("spec"), "status": body.get("status")}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _inventory(memo: kopf.Memo, node_selector: Mapping[str, str]) -> inventory.Inventory:
    key = tuple(sorted(node_selector.items()))
    if key not in memo.inventories:
        nodes = [node for name, values in memo.node_index.items() if name not in memo.gone_nodes for node in values]
        memo.inventories[key] = inventory.pools(nodes, memo.catalog, node_selector, memo.declared)
    return memo.inventories[key]


def _previous_selection(cr: Mapping[str, Any], trigger: str) -> dict[str, Any] | None:
    """The selection already serving this very spec, which the plan should keep (sticky)."""
    st = cr.get("status") or {}
    fresh = st.get("observedGeneration") == (cr.get("metadata") or {}).get("generation")
    if trigger == "spec" or not fresh or st.get("phase") in ("NoFit", "Invalid"):
        return None
    return st.get("selection")


async def _emit(memo: kopf.Memo, cr: Mapping[str, Any], type_: str, reason: str, message: str,
                logger: logging.Logger) -> None:  # fmt: skip
    """Post an Event. Called before the status it explains is written, so a reader who sees the
    status finds the Event too."""
    key = (cr["metadata"].get("uid"), type_, reason)
    now = time.monotonic()
    last = memo.events.get(key)
    if last is not None and now - last < EVENT_REPEAT_S:
        return
    if len(memo.events) > 10_000:  # forget what can no longer suppress anything
        memo.events = {k: t for k, t in memo.events.items() if now - t < EVENT_REPEAT_S}
    memo.events[key] = now
    try:
        await memo.kube.event(cr, type_, reason, message)
    except kube.ApiError as exc:  # an Event is never worth failing a reconcile
        logger.warning(f"Could not post Event {reason}: {exc}")


def _digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


class OwnerGone(Exception):
    """The GemmaDeployment was deleted while it was being reconciled: nothing left to do."""


async def _owner_gone(memo: kopf.Memo, cr: Mapping[str, Any]) -> bool:
    """Whether the resource was deleted meanwhile (its index entry can lag its children's events)."""
    meta = cr["metadata"]
    live = await memo.kube.get(cr["apiVersion"], "GemmaDeployment", meta["namespace"], meta["name"])
    return live is None or live["metadata"].get("uid") != meta.get("uid") or bool(live["metadata"].get("deletionTimestamp"))


def _owned_by(obj: Mapping[str, Any], cr: Mapping[str, Any]) -> bool:
    uid = cr["metadata"].get("uid")
    return any(r.get("controller") and r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


async def _prune(memo: kopf.Memo, cr: Mapping[str, Any], objects: list[dict[str, Any]],
                 deployment: Mapping[str, Any] | None, logger: logging.Logger) -> None:  # fmt: skip
    """Delete the owned optional children that must no longer exist (before applying the rest)."""
    namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    wanted = {(obj["apiVersion"], obj["kind"]) for obj in objects}
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    listed = set(filter(None, annotations.get(APPLIED_KINDS, "").split(",")))
    for api_version, kind in scaling.OPTIONAL_KINDS:
        if (api_version, kind) in wanted:
            continue
        child = (kind, namespace, name)
        if kind in memo.children:
            live = None if child in memo.gone_children else _one(memo.children[kind], (namespace, name))
            if live is None or not _owned_by(live, cr):
                continue
            uid = live["metadata"].get("uid")
        elif kind in listed:
            uid = None  # applied by the operator (recorded on the Deployment), not watched
        else:
            continue
        if await memo.kube.delete(api_version, kind, namespace, name, uid=uid):
            logger.info(f"Deleted {kind} {namespace}/{name}: the spec no longer needs it.")
            metrics.APPLIES.labels(f"delete {kind}").inc()
        memo.applied.pop(child, None)
        memo.applied_digests.pop(child, None)


async def _apply_shared(memo: kopf.Memo, cr: Mapping[str, Any], obj: dict[str, Any],
                        trigger: str) -> dict[str, Any]:  # fmt: skip
    """Create a cache object, or join its owners. Never re-applied: a claim's and a Job's spec are
    fixed once created, and other deployments own it too."""
    meta = obj["metadata"]
    child = (obj["kind"], meta["namespace"], meta["name"])
    live = None if child in memo.gone_children else _one(memo.children[obj["kind"]], child[1:])
    if live is None and trigger != "spec" and await _owner_gone(memo, cr):
        raise OwnerGone
    if live is None:
        live = await memo.kube.create(obj)  # another owner's create first: 409, retried, then joined
        metrics.APPLIES.labels(obj["kind"]).inc()
    else:
        refs = live["metadata"].get("ownerReferences") or []
        owners = cache_mod.owners_joined(refs, meta.get("ownerReferences") or [])
        if owners is None:
            return live
        if await _owner_gone(memo, cr):
            raise OwnerGone  # deleted meanwhile: joining would leave a reference to an owner that is gone
        live = await memo.kube.set_owners(obj, live["metadata"]["resourceVersion"], owners)
    memo.applied[child] = live["metadata"].get("resourceVersion")
    memo.gone_children.discard(child)
    return live


async def _prune_shared(memo: kopf.Memo, cr: Mapping[str, Any], desired: set[tuple[str, str]]) -> None:
    """Cache objects this deployment owns but no longer uses: leave them to their other owners, or
    delete them when it was the last (what garbage collection would do once it is deleted)."""
    meta = cr["metadata"]
    for kind in SHARED:
        for key, values in list(memo.children[kind].items()):
            live = next(iter(values), None)
            if key[0] != meta["namespace"] or (kind, key[1]) in desired or live is None:
                continue
            others = cache_mod.owners_left(live["metadata"].get("ownerReferences") or [], meta.get("uid"))
            if others is None:
                continue
            shared = live["metadata"]
            if others:
                await memo.kube.set_owners({"apiVersion": SHARED_API[kind], "kind": kind, "metadata": shared},
                                           shared["resourceVersion"], others)  # fmt: skip
            else:
                await memo.kube.delete(SHARED_API[kind], kind, shared["namespace"], shared["name"], uid=shared["uid"],
                                       resource_version=shared["resourceVersion"])  # fmt: skip


async def _apply_children(memo: kopf.Memo, cr: Mapping[str, Any], objects: list[dict[str, Any]],
                          trigger: str, logger: logging.Logger | None = None, cache: cache_mod.Cache | None = None
                          ) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:  # fmt: skip
    """Create or join the cache objects, prune what must no longer exist, apply what differs from
    the live children; return them as they are now, by kind, and status.cache.

    A child is current when it carries the digest of exactly this desired object (so fields the
    plan dropped are noticed) and still has every value the operator sets (so hand edits are).
    Kinds without an index (third-party CRDs) are applied when their desired digest changes.
    With a filled cache, the Deployment waits (is not applied) until the loader Job completes.
    """
    children = {}
    namespace, name = cr["metadata"]["namespace"], cr["metadata"]["name"]
    job = None
    for obj in objects:
        if obj["kind"] in SHARED:
            live = await _apply_shared(memo, cr, obj, trigger)
            if obj["kind"] == "Job":
                job = live
    await _prune_shared(memo, cr, {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in SHARED})
    cache_status = None
    if cache is not None:
        state, message = cache_mod.fill_state(job) if cache.filled else (None, "")
        cache_status = cache.status(state, message)
    objects = [obj for obj in objects if obj["kind"] not in SHARED]
    live_deployment = None
    if ("Deployment", namespace, name) not in memo.gone_children:
        live_deployment = _one(memo.children["Deployment"], (namespace, name))
    await _prune(memo, cr, objects, live_deployment, logger or logging.getLogger(__name__))
    unwatched = sorted(obj["kind"] for obj in objects if obj["kind"] not in memo.children)
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] == "Deployment" and unwatched:
            meta.setdefault("annotations", {})[APPLIED_KINDS] = ",".join(unwatched)
        meta.setdefault("annotations", {})[DIGEST] = _digest(obj)
        child = (obj["kind"], meta["namespace"], meta["name"])
        if obj["kind"] not in memo.children:
            if memo.applied_digests.get(child) != meta["annotations"][DIGEST]:
                await memo.kube.apply(obj)
                metrics.APPLIES.labels(obj["kind"]).inc()
                memo.applied_digests[child] = meta["annotations"][DIGEST]
            continue
        live = None if child in memo.gone_children else _one(memo.children[obj["kind"]], child[1:])
        if obj["kind"] == "Deployment" and cache_mod.deployment_waits(cache_status):
            children["Deployment"] = live  # waits for the fill; one serving from another cache keeps serving
            continue
        if live is None and trigger != "spec" and await _owner_gone(memo, cr):
            raise OwnerGone  # a child vanished because its owner did: garbage collection, not drift
        if live is None or not (rollout.matches(obj["metadata"], live.get("metadata"))
                                and rollout.matches(obj["spec"], live.get("spec"))):  # fmt: skip
            replicas = ((live or {}).get("spec") or {}).get("replicas")
            if obj["kind"] == "Deployment" and "replicas" not in obj["spec"] and isinstance(replicas, int):
                # Autoscaled: the count stays the autoscaler's (see kube.HANDOVER).
                await memo.kube.apply({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                                       "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                                       "spec": {"replicas": replicas}}, manager=kube.HANDOVER)  # fmt: skip
            live = await memo.kube.apply(obj)
            metrics.APPLIES.labels(obj["kind"]).inc()
            memo.applied[child] = live["metadata"].get("resourceVersion")
            memo.gone_children.discard(child)
        children[obj["kind"]] = live
    return children, cache_status


async def _observe(memo: kopf.Memo, cr: Mapping[str, Any], children: Mapping[str, Any],
                   logger: logging.Logger) -> status.Observed:  # fmt: skip
    """The children and the model pods as the indices hold them; a pod the scheduler cannot place
    carries the cluster autoscaler's Events about it."""
    meta = cr["metadata"]
    model_pods = [dict(p) for p in memo.pod_index.get((meta["namespace"], meta["name"]), ())]
    waiting = pods.unscheduled(model_pods)
    if waiting:
        events = await _autoscaler_events(memo, meta["namespace"], waiting, logger)
        model_pods = [{**p, "events": events} if p["name"] == waiting else p for p in model_pods]
    return status.Observed(children.get("Deployment"), children.get("Service"), tuple(model_pods),
                           memo.scale_up_budget_s)  # fmt: skip


async def _autoscaler_events(memo: kopf.Memo, namespace: str, pod: str,
                             logger: logging.Logger) -> list[dict[str, str]]:  # fmt: skip
    """The autoscaler's Events on one pod, read at most every AUTOSCALER_EVENTS_S (Events are not watched)."""
    now = time.monotonic()
    cached = memo.autoscaler_events.get((namespace, pod))
    if cached is not None and now - cached[0] < AUTOSCALER_EVENTS_S:
        return cached[1]
    try:
        events = pods.autoscaler_events(await memo.kube.events_about(namespace, "Pod", pod))
    except kube.ApiError as exc:  # the status says what the scheduler says, without them
        logger.warning(f"Could not read the Events of pod {namespace}/{pod}: {exc}")
        events = cached[1] if cached else []
    memo.autoscaler_events[(namespace, pod)] = (now, events)
    return events


def _recheck(memo: kopf.Memo, key: tuple[str, str], delay: float | None) -> None:
    """Look at a time-bound pod state again (a budget running out, elapsed minutes, autoscaler Events)."""
    timer = memo.rechecks.pop(key, None)
    if timer is not None:
        timer.cancel()
    if delay is not None:
        memo.rechecks[key] = asyncio.get_running_loop().call_later(delay, memo.queue.add, key, "pods")


async def reconcile(cr: dict[str, Any], memo: kopf.Memo, logger: logging.Logger, *, trigger: str,
                    raise_for_kopf: bool = False) -> float | None:  # fmt: skip
    """Bring one GemmaDeployment's children and status in line. Returns a retry delay, or None.

    With `raise_for_kopf`, errors are raised as kopf expects (PermanentError for an invalid
    spec, TemporaryError to retry); otherwise the delay is returned for the work queue.
    """
    meta = cr["metadata"]
    key = (meta["namespace"], meta["name"])
    lock = memo.locks.setdefault(key, asyncio.Lock())
    async with lock:
        written = memo.status_written.get(key)
        if written is not None and written[0] == meta.get("resourceVersion"):
            cr = {**cr, "status": written[1]}  # this copy predates our own last status patch
        with metrics.DURATION.time():
            try:
                outcome, retry = await _converge(cr, memo, logger, trigger)
            except OwnerGone:
                metrics.RECONCILES.labels(trigger, "OwnerGone").inc()
                return None
            except kube.ApiError as exc:
                if exc.status == 404 and await _owner_gone(memo, cr):
                    return None
                metrics.ERRORS.labels("api").inc()
                metrics.RECONCILES.labels(trigger, "retry").inc()
                failures = memo.failures[key] = memo.failures.get(key, 0) + 1
                delay = RETRY_S[min(failures, len(RETRY_S)) - 1] if exc.retryable else RETRY_S[-1]
                if not exc.retryable:
                    await _report_refusal(memo, cr, exc, delay, logger)
                if raise_for_kopf:
                    raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=delay) from exc
                return delay
    memo.failures.pop(key, None)
    metrics.RECONCILES.labels(trigger, outcome.kind).inc()
    if outcome.kind == "Invalid" and raise_for_kopf:
        raise kopf.PermanentError(outcome.message)
    if retry is not None and raise_for_kopf:
        raise kopf.TemporaryError(outcome.message, delay=retry)
    return retry


async def _report_refusal(memo: kopf.Memo, cr: Mapping[str, Any], exc: kube.ApiError, delay: float,
                          logger: logging.Logger) -> None:  # fmt: skip
    """Say in status and in an Event why the API refused; a failure to say so must not stop the retry."""
    message = (
        f"The API server refused the operator's request ({exc}). Fix the cause (a ResourceQuota, an admission "
        f"policy, or the operator's RBAC); the operator retries every {delay:g} s."
    )
    try:
        await _emit(memo, cr, "Warning", "ApplyFailed", message, logger)
        await _write_status(memo, cr, status.Outcome("ApplyFailed", message), None, logger)
    except kube.ApiError as error:
        logger.warning(f"Could not record the refusal in status: {error}")


async def _converge(cr: dict[str, Any], memo: kopf.Memo, logger: logging.Logger,
                    trigger: str) -> tuple[status.Outcome, float | None]:  # fmt: skip
    meta = cr["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    try:
        spec = GemmaDeploymentSpec.model_validate(cr.get("spec") or {})
    except ValidationError as exc:
        # The CRD schema refuses most of this first; this catches what it cannot express.
        where = "; ".join(validation.problems(exc, GemmaDeploymentSpec))
        outcome = status.Outcome("Invalid", f"Invalid spec: {where}.")
        await _emit(memo, cr, "Warning", "InvalidSpec", outcome.message, logger)
        await _write_status(memo, cr, outcome, None, logger, wanted=0)
        return outcome, None

    try:
        if "plancache" in PROTO:  # PROTOTYPE: one plan per (spec, inventory, previous selection)
            pools, previous = _inventory(memo, spec.node_selector), _previous_selection(cr, trigger)
            plan_key = (spec.model_dump_json(), id(pools), json.dumps(previous, sort_keys=True))
            if getattr(memo, "plans", None) is None:
                memo.plans = {}
            cached = memo.plans.get(plan_key)
            if cached is not None and cached[0] is pools:
                result = cached[1]
            else:
                result = planner.plan(spec, pools, memo.catalog, previous=previous)
                if len(memo.plans) > 1000:
                    memo.plans.clear()
                memo.plans[plan_key] = (pools, result)
        else:
            result = planner.plan(spec, _inventory(memo, spec.node_selector), memo.catalog,
                                  previous=_previous_selection(cr, trigger))  # fmt: skip
        choice = scaling.Choice()
        if spec.autoscaling is not None and isinstance(result, planner.Plan):
            choice = scaling.choose(spec, await _served(memo), memo.collector, memo.prometheus_url)
        objects = (render.render(result, name, namespace, spec, owner=cr, choice=choice,
                                  cache_defaults=memo.cache_defaults)
                   if isinstance(result, planner.Plan) else [])  # fmt: skip
    except planner.InvalidSpec as exc:
        outcome = status.Outcome("Invalid", f"Invalid spec: {exc}.")
        await _emit(memo, cr, "Warning", "InvalidSpec", outcome.message, logger)
        await _write_status(memo, cr, outcome, None, logger, wanted=spec.replicas)
        return outcome, None

    if isinstance(result, planner.NoFit):
        outcome = status.Outcome("NoFit", result.message)
        await _emit(memo, cr, "Warning", "NoFit", result.message, logger)
        await _write_status(memo, cr, outcome, None, logger, wanted=spec.replicas)
        return outcome, None

    selection = result.selection()
    endpoint = render.endpoint(name, namespace, spec)
    ref = spec.hf_token_secret_ref
    if ref and memo.secret_check and not await memo.kube.secret_exists(namespace, ref.name):
        message = (
            f"Secret {ref.name!r} (spec.hfTokenSecretRef) does not exist in namespace {namespace}: create it with "
            f"the Hugging Face token under key {ref.key!r}. Nothing is deployed until it exists."
        )
        outcome = status.Outcome("ApplyFailed", message, selection, endpoint)
        await _emit(memo, cr, "Warning", "SecretNotFound", message, logger)
        await _write_status(memo, cr, outcome, None, logger, wanted=spec.replicas)
        return outcome, SECRET_RECHECK_S

    old = (cr.get("status") or {}).get("selection") or {}
    update, rolls_out = _keep_or_roll(memo, cr, spec, _deployment_of(objects), selection)
    if update:  # the pods keep the template they run: the selection names the image they run
        selection = {**selection, "image": rollout.running_image(_deployment_of(objects)["spec"]["template"])}
    if rolls_out:
        await _emit(memo, cr, "Normal", "RollingOut", f"Replacing the model pods; first change: {rolls_out}.", logger)
    reported = next((c for c in (cr.get("status") or {}).get("conditions") or [] if c.get("type") == update[0]),
                    {}) if update else {}  # fmt: skip
    if update and reported.get("message") != update[3]:  # once per new rendering, not per reconcile
        await _emit(memo, cr, "Normal", "UpdateAvailable", update[3], logger)
    cache = cache_mod.plan_cache(result, spec, memo.cache_defaults)
    children, cache_status = await _apply_children(memo, cr, objects, trigger, logger, cache)
    observed = await _observe(memo, cr, children, logger)
    outcome = status.Outcome("Applied", selection=selection, endpoint=endpoint, cache=cache_status)
    if cache_status and cache_status.get("state") == "Failed":
        await _emit(memo, cr, "Warning", "CacheFillFailed", cache_status["message"], logger)
    if planner.replans(old, selection):
        metrics.PLANS.labels(result.runtime, result.pool.accelerator, result.quantization).inc()
        summary = (
            f"Serving {result.model_id} ({result.quantization}) with {result.runtime} on {result.pool.accelerator}"
            f" x{result.accelerator_count}, context {result.max_model_len}."
        )
        logger.info(summary)
        if old or "noplanned" not in PROTO:  # PROTOTYPE noplanned: not on the first plan
            await _emit(memo, cr, "Normal", "Planned", summary, logger)
        warning = planner.token_warning(result, spec)
        if warning:
            await _emit(memo, cr, "Warning", "TokenMissing", warning, logger)
    hpa_name = scaling.keda_hpa_name(name) if choice.provider == "keda" else name
    hpa = _one(memo.children["HorizontalPodAutoscaler"], (namespace, hpa_name)) if spec.autoscaling else None
    wanted = scaling.desired_replicas(spec, observed.deployment, hpa)
    extra = [*scaling.autoscaler_conditions(spec, choice, hpa, scaling.signal(spec, result)),
             scaling.disruption_condition(spec), *([update] if update else [])]  # fmt: skip
    scale = {"desiredReplicas": wanted, "selector": ",".join(f"{k}={v}" for k, v in render.selector_labels(name).items())}
    new_status = await _write_status(memo, cr, outcome, observed, logger, wanted=wanted, extra=extra, scale=scale)
    blocked = observed.pod_state(_now(), selection) if new_status.get("phase") != "Ready" else None
    _recheck(memo, (namespace, name), blocked.recheck_s if blocked else None)
    if new_status.get("phase") == "Ready" and (cr.get("status") or {}).get("phase") != "Ready":
        await _emit(memo, cr, "Normal", "Ready", f"{wanted} replica(s) ready at {endpoint}.", logger)
    return outcome, None


def _deployment_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(obj for obj in objects if obj["kind"] == "Deployment")


def _keep_or_roll(memo: kopf.Memo, cr: Mapping[str, Any], spec: GemmaDeploymentSpec, deployment: dict[str, Any],
                  selection: Mapping[str, Any]) -> tuple[status_condition | None, str | None]:  # fmt: skip
    """Give the desired Deployment the pod template rollout.decide picks. Returns the
    UpdateAvailable condition when it keeps the live one although the operator now renders
    another, and the first change when the new template replaces a different live one."""
    meta = cr["metadata"]
    key = (meta["namespace"], meta["name"])
    live = None if ("Deployment", *key) in memo.gone_children else _one(memo.children["Deployment"], key)
    st = cr.get("status") or {}
    old = st.get("selection") or {}
    # A Deployment of an earlier release: rendered for this spec if it was reconciled and the plan
    # chose the same (keys an earlier release did not report are not compared).
    legacy_current = (st.get("observedGeneration") == meta.get("generation") and bool(old)
                      and all(selection.get(k) == v for k, v in rollout.choice(old).items()))  # fmt: skip
    accept = memo.accept_updates if spec.accept_operator_updates is None else spec.accept_operator_updates
    rendered_for = rollout.spec_hash(spec.model_dump(by_alias=True, exclude_defaults=True), selection)
    decision = rollout.decide(live, deployment["spec"]["template"], rendered_for, accept=accept,
                              legacy_current=legacy_current)  # fmt: skip
    deployment["spec"]["template"] = decision.template
    deployment["metadata"].setdefault("annotations", {})[rollout.TEMPLATE_FOR] = decision.template_for
    if decision.update_available is None:
        return None, decision.rolls_out
    message = (f"This operator version renders a different pod template; the running pods keep theirs "
               f"(first change: {decision.update_available}). Set spec.acceptOperatorUpdates: true to roll it out.")
    return ("UpdateAvailable", "True", "OperatorRenderingChanged", message), None


async def _served(memo: kopf.Memo) -> set[tuple[str, str]]:
    """Which optional third-party kinds the cluster serves (discovery, cached for a minute)."""
    at, served = memo.discovery
    if time.monotonic() - at < memo.discovery_ttl_s:
        return served
    found = set()
    for api_version, kind in (scaling.KEDA, scaling.POD_MONITORING, scaling.SERVICE_MONITOR):
        if kind in await memo.kube.served(api_version):
            found.add((api_version, kind))
    memo.discovery = (time.monotonic(), found)
    return found


async def _write_status(memo: kopf.Memo, cr: Mapping[str, Any], outcome: status.Outcome,
                        observed: status.Observed | None, logger: logging.Logger, *,
                        wanted: int | None = None, extra: list[status_condition] = (),
                        scale: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    current = cr.get("status") or {}
    desired = status.compute(
        outcome,
        generation=cr["metadata"].get("generation"),
        wanted_replicas=wanted if wanted is not None else (cr.get("spec") or {}).get("replicas", 1),
        observed=observed or status.Observed(),
        previous=current,
        now=_now(),
        extra=extra,
        scale=scale,
    )
    for type_, reason, message in status.events_for(current, desired):
        await _emit(memo, cr, type_, reason, message, logger)
    patch = status.patch_for(current, desired)
    if patch:
        meta = cr["metadata"]
        result = await memo.kube.patch_status(meta["namespace"], meta["name"], patch)
        if result and "status" in result:
            memo.status_written[(meta["namespace"], meta["name"])] = (meta.get("resourceVersion"), result["status"])
        logger.debug(f"Status patched: {sorted(patch)}")
    return {**current, **desired}


# -------------------------------------------------------------------- background work
class WorkQueue:
    """Keys to reconcile, each at most once in the queue; delayed re-adds for retries."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[tuple[Any, str]] = asyncio.Queue()
        self._pending: set[Any] = set()

    def add(self, key: Any, trigger: str) -> None:
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait((key, trigger))

    def add_after(self, key: Any, trigger: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key, trigger)

    async def get(self) -> tuple[Any, str]:
        key, trigger = await self._queue.get()
        self._pending.discard(key)
        return key, trigger


def _follow_peering(memo: kopf.Memo, namespace: str | None, logger: logging.Logger) -> None:
    """Follow the peering object of a scope (None: cluster-wide), once."""
    if memo.pause.follow(namespace):
        memo.tasks.append(asyncio.create_task(_peering_follower(memo, namespace, logger)))


async def _peering_follower(memo: kopf.Memo, namespace: str | None, logger: logging.Logger) -> None:
    kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
    name, priority, failures = memo.peering.name, memo.peering.priority, 0
    await memo.connected.wait()
    while True:
        try:
            async for obj in memo.kube.follow("kopf.dev/v1", kind, namespace, name):
                failures = 0
                if obj is None:  # kopf, too, stays paused without the object when peering is mandatory
                    blocking, paused = [], memo.peering.mandatory
                else:
                    blocking = peering.blockers(obj, priority, datetime.datetime.now(datetime.UTC))
                    paused = bool(blocking)
                if memo.pause.set(namespace, paused):
                    why = f" in favour of {', '.join(blocking)}" if blocking else ""
                    logger.info(f"Background work {'paused' + why if paused else 'resumed'} (peering {name!r}).")
        except kube.ApiError as exc:  # the last known state holds meanwhile
            failures += 1
            logger.warning(f"Following peering {name!r} failed: {exc}")
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S)) - 1])


async def _worker(memo: kopf.Memo, logger: logging.Logger) -> None:
    while True:
        await memo.pause.wait_active()
        key, trigger = await memo.queue.get()
        await memo.pause.wait_active()  # taken just before a pause: wait for the resume
        cr = _one(memo.resource_index, key)
        if cr is None or (cr.get("metadata") or {}).get("deletionTimestamp"):
            # Gone: its children are garbage-collected through their ownerReferences.
            memo.locks.pop(key, None)
            memo.failures.pop(key, None)
            memo.status_written.pop(key, None)
            _recheck(memo, key, None)
            for kind in (*memo.children, *(k for _, k in scaling.OPTIONAL_KINDS)):
                memo.applied.pop((kind, *key), None)
                memo.applied_digests.pop((kind, *key), None)
                memo.gone_children.discard((kind, *key))
            continue
        try:
            delay = await reconcile(cr, memo, logger, trigger=trigger)
        except Exception:  # a bug must not stop the queue; log it and retry later
            metrics.ERRORS.labels("unexpected").inc()
            logger.exception(f"Reconcile of {key[0]}/{key[1]} failed")
            delay = RETRY_S[-1]
        if delay is not None:
            memo.queue.add_after(key, trigger, delay)


async def _resync_every(period: float, memo: kopf.Memo, logger: logging.Logger) -> None:
    while True:
        await asyncio.sleep(period)
        await memo.pause.wait_active()
        try:
            await resync(memo, logger)
        except kube.ApiError as exc:  # the next round tries again
            logger.warning(f"Resync failed: {exc}")


async def resync(memo: kopf.Memo, logger: logging.Logger) -> None:
    """Compare the indices with fresh lists (names only) and act on what vanished unseen.

    A vanished child wakes its owner, which applies it again; a vanished node leaves the
    inventory. Lists are per namespace that has GemmaDeployments, so namespaced RBAC suffices.
    """
    gone_nodes = set(memo.node_index.keys()) - await memo.kube.names("v1", "Node")
    if gone_nodes != memo.gone_nodes:
        logger.info(f"Resync: nodes gone unseen: {sorted(gone_nodes)}")
        memo.gone_nodes = gone_nodes
        memo.nodes_changed.set()
    selector = ",".join(f"{k}={v}" for k, v in MANAGED.items())
    namespaces = {ns for ns, _ in memo.resource_index.keys()}
    for kind, api_version in (("Deployment", "apps/v1"), ("Service", "v1"), *SHARED_API.items()):
        for ns in sorted(namespaces):
            listed = await memo.kube.names(api_version, kind, ns, selector)
            for key in [k for k in memo.children[kind].keys() if k[0] == ns and k[1] not in listed]:
                if (kind, *key) in memo.gone_children:
                    continue
                memo.gone_children.add((kind, *key))
                for ref in (_one(memo.children[kind], key) or {}).get("metadata", {}).get("ownerReferences") or []:
                    if ref.get("kind") == "GemmaDeployment" and (ref.get("controller") or kind in SHARED):
                        logger.info(f"Resync: {kind} {ns}/{key[1]} gone unseen; re-checking its owner")
                        memo.queue.add((ns, ref["name"]), "resync")


async def _follow_capacity(period: float, memo: kopf.Memo, logger: logging.Logger) -> None:
    """Re-read the capacity file when it changes; a change wakes resources like a node change does."""
    while memo.capacity_file is not None:
        await asyncio.sleep(period)
        try:
            declared = memo.capacity_file.poll()
        except capacity.CapacityError as exc:  # keep planning with the last valid pools
            logger.error(f"Capacity file not applied, keeping the {len(memo.declared)} pool(s) declared before: {exc}")
            continue
        if declared is not None:
            logger.info(f"Capacity changed: {len(declared)} declared pool(s): {', '.join(p.name for p in declared) or '-'}")
            memo.declared = declared
            memo.nodes_changed.set()


async def _watch_pools(memo: kopf.Memo, logger: logging.Logger) -> None:
    """After node or capacity changes settle: wake resources that could not be placed, that wait
    for a scale-up, or whose pool went away."""
    while True:
        await memo.nodes_changed.wait()
        await asyncio.sleep(NODES_SETTLE_S)
        await memo.pause.wait_active()
        memo.nodes_changed.clear()
        memo.inventories = {}
        for values in list(memo.resource_index.values()):
            for cr in values:
                st = cr.get("status") or {}
                spec = cr.get("spec") or {}
                pool = (st.get("selection") or {}).get("pool")
                pools = _inventory(memo, spec.get("nodeSelector") or {})
                waiting = (st.get("selection") or {}).get("capacity") == "scale-up"
                if st.get("phase") == "NoFit" or waiting or (pool and pools.by_name(pool) is None):
                    meta = cr["metadata"]
                    logger.info(f"Node pools changed: re-planning {meta['namespace']}/{meta['name']}")
                    memo.queue.add((meta["namespace"], meta["name"]), "nodes")
