"""kopf registration only: start-up, indices, and watch events -> the work queue (queue.py).

GemmaDeployments are driven like every other kind: their events add the key to the work queue,
with no kopf create/update/resume handlers (so kopf keeps no state on them). A spec change is
`metadata.generation` ahead of `status.observedGeneration`. Nodes, children, model pods and
GemmaDeployments are kopf indices, which kopf fills completely before any handler runs: a restart
re-plans from the whole cluster, finds the children already as desired, and writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf

from . import capacity, catalog, decide, inventory, kube, metrics, ownership, peering, pods, queue, render, resync, tuning
from .api.v1alpha1 import GROUP, PLURAL, VERSION
from .decide import SECRET_CHECK_ENV  # noqa: F401  (the chart's env names, as tests and docs find them)
from .queue import DISCOVERY_ENV, DISCOVERY_TTL_S  # noqa: F401
from .resync import CAPACITY_POLL_ENV, CAPACITY_POLL_S, RESYNC_ENV, RESYNC_S  # noqa: F401

GD = {"group": GROUP, "version": VERSION, "plural": PLURAL}
MANAGED = {"app.kubernetes.io/managed-by": render.MANAGER}
# The model pods: only the operator's own are watched (a server-side label selector).
MODEL_PODS = {**MANAGED, "app.kubernetes.io/component": "model-server"}
INSTANCE = "app.kubernetes.io/instance"  # render.selector_labels: the GemmaDeployment's name
# The children watched, each an index (named as the handler id) and an event handler.
CHILDREN = {
    "Deployment": ("apps", "v1", "deployments", "gemma_deployments"),
    "Service": ("", "v1", "services", "gemma_services"),
    "PodDisruptionBudget": ("policy", "v1", "poddisruptionbudgets", "gemma_pdbs"),
    # The operator's HPAs, and those KEDA makes for its ScaledObjects (they carry its labels).
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers", "gemma_hpas"),
    "PersistentVolumeClaim": ("", "v1", "persistentvolumeclaims", "gemma_claims"),
    "Job": ("batch", "v1", "jobs", "gemma_jobs"),
}

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
    settings.posting.level = logging.WARNING  # kopf's own Events only for trouble; ours say what happened
    settings.networking.request_timeout = settings.networking.request_timeout or 60
    settings.networking.connect_timeout = settings.networking.connect_timeout or 10
    settings.watching.server_timeout = settings.watching.server_timeout or 300
    settings.watching.label_selectors["", "v1", "pods"] = ",".join(f"{k}={v}" for k, v in MODEL_PODS.items())
    without = tuning.left_out(os.environ)
    tuning.configure(settings, without)
    memo.catalog = catalog.load()
    memo.settings = decide.settings_from(os.environ)  # the chart's values, read once
    memo.kube = getattr(memo, "kube", None)
    memo.connected = asyncio.Event()  # kopf logs in after the startup handlers
    if memo.kube is not None:
        memo.connected.set()
    queue.prepare(memo, float(os.environ.get(DISCOVERY_ENV, DISCOVERY_TTL_S)))
    if "plancache" in without:
        memo.plans.size = 0
    memo.create_first = "create" not in without  # else every child is applied, even on first sight
    memo.node_index = kwargs["gemma_nodes"]
    memo.resource_index = kwargs["gemma_resources"]
    memo.children = {kind: kwargs[index_id] for kind, (*_, index_id) in CHILDREN.items()}
    memo.pod_index = kwargs["gemma_pods"]
    memo.pods_seen = {}  # (namespace, pod) -> digest of what the index keeps: other changes wake nobody
    memo.nodes_changed = asyncio.Event()
    memo.gone_nodes = set()  # node names still in the index that a fresh list no longer has
    memo.gone_children = set()  # (kind, namespace, name) likewise
    # Declared capacity: read once here (an invalid file stops the start with its message), then followed.
    memo.capacity_file = capacity.watch_from_env(memo.catalog)
    try:
        memo.declared = list((memo.capacity_file.poll() or []) if memo.capacity_file else [])  # renewed in place
    except capacity.CapacityError as exc:
        raise kopf.PermanentError(f"Invalid declared capacity: {exc}") from exc
    # With peering, kopf pauses its watches for a higher-priority peer; the background work below
    # pauses with it, following the same peering object (cluster-wide, or per namespace in use).
    memo.peering = settings.peering
    memo.logger = logger  # the operator's own, for background work started later
    memo.pause = peering.Pause(paused_until_known=settings.peering.mandatory)
    memo.tasks = []
    if not settings.peering.standalone and settings.peering.clusterwide:
        resync.follow_peering(memo, None, logger)
    memo.tasks += [
        *(asyncio.create_task(queue.worker(memo, logger))
          for _ in range(int(os.environ.get(queue.WORKERS_ENV, queue.WORKERS)))),
        asyncio.create_task(resync.watch_pools(memo, logger)),
        asyncio.create_task(resync.resync_every(float(os.environ.get(RESYNC_ENV, RESYNC_S)), memo, logger)),
        asyncio.create_task(resync.follow_discovery(memo, logger)),
        asyncio.create_task(resync.follow_capacity(float(os.environ.get(CAPACITY_POLL_ENV, CAPACITY_POLL_S)), memo,
                                                   logger)),  # fmt: skip
    ]
    memo.metrics_port = metrics.serve()
    tuning.freeze_heap(without)  # last: what start-up made stays, and is frozen


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
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
# hop per watch event. Index entries leave out managedFields but what ownership.upgrade reads.
def _metadata(body: Mapping[str, Any]) -> dict[str, Any]:
    return ownership.index_metadata(body.get("metadata") or {})


def _snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": _metadata(body),
            "spec": body.get("spec"), "status": body.get("status")}


@kopf.index("", "v1", "nodes")
async def gemma_nodes(name: str, body: kopf.Body, **_: Any) -> dict[str, Any]:
    return {name: inventory.essentials(body)}


@kopf.index(**GD)
async def gemma_resources(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> dict[Any, Any]:
    settings = getattr(memo, "peering", None)
    if settings is not None and not settings.standalone and not settings.clusterwide:
        resync.follow_peering(memo, namespace, memo.logger)  # namespaced peering: one object per namespace in use
    return {(namespace, name): _snapshot(body)}


@kopf.index("", "v1", "pods", labels=MODEL_PODS)
async def gemma_pods(namespace: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    """Model pods by their GemmaDeployment (the instance label; the pods' owner is a ReplicaSet)."""
    instance = (body.get("metadata", {}).get("labels") or {}).get(INSTANCE)
    return {(namespace, instance): pods.essentials(body)} if instance else {}


def _index_children(group: str, version: str, plural: str, index_id: str) -> None:
    """The operator's children of one kind by (namespace, name): metadata, spec and status."""

    async def index(namespace: str, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(namespace, name): {"metadata": _metadata(body), "spec": body.get("spec"), "status": body.get("status")}}

    kopf.index(group, version, plural, labels=MANAGED, id=index_id)(index)


for _group, _version, _plural, _index_id in CHILDREN.values():
    _index_children(_group, _version, _plural, _index_id)


# ------------------------------------------------------------------------ watch events
@kopf.on.event(**GD)
async def resource_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A new resource, a spec change, the listing at start-up, or a deletion: reconcile it. Not the
    echo of the operator's own status patch (same generation as the status observed)."""
    meta, type_ = body.get("metadata", {}), kwargs.get("type")
    if type_ in (None, "ADDED", "DELETED") or decide.spec_is_new(body):
        memo.queue.add((meta.get("namespace"), meta.get("name")), "resume" if type_ is None else "spec")


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
    for owner in decide.owners_to_wake(body):
        memo.queue.add((meta["namespace"], owner), "child")


@kopf.on.event("", "v1", "pods", labels=MODEL_PODS)
async def pod_event(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A model pod changed what the operator reads of it (scheduling, container states): its owner re-checks."""
    meta = body.get("metadata", {})
    instance = (meta.get("labels") or {}).get(INSTANCE)
    if not instance:
        return
    key = (meta.get("namespace"), meta.get("name"))
    memo.gone_pods.discard(key)  # an event is fresher than the last resync
    if kwargs.get("type") == "DELETED":
        memo.pods_seen.pop(key, None)
        memo.autoscaler_events.pop(key, None)
    else:
        seen = decide.digest(pods.essentials(body))
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
    if kwargs.get("type") == "DELETED" and body.get("kind") == "PersistentVolumeClaim":
        memo.expansions.pop((ns, meta.get("name")), None)  # an answer about a claim gone
    owners = set(decide.owners_to_wake(body))
    # Retained objects have no owners: wake whoever waits on a fill in the namespace.
    for (resource_ns, name), values in list(memo.resource_index.items()):
        if resource_ns == ns and (name in owners or any(decide.waits_for_fill(r) for r in values)):
            memo.queue.add((ns, name), "child")


@kopf.on.event("", "v1", "nodes")
async def node_event(name: str, memo: kopf.Memo, **_: Any) -> None:
    memo.gone_nodes.discard(name)  # an event is fresher than the last resync
    memo.nodes_changed.set()

