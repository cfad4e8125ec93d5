"""Background work beside the watches: the periodic resync, the peering follower, the capacity
and discovery followers and the node-pool watcher. Each only wakes resources through the work
queue. Operator-wide state they renew is updated in place (see queue.prepare).

The ConfigMaps of chat templates (spec.chatTemplate.configMapRef) are re-read here, by name, not
watched. ConfigMaps are the most numerous kind in many clusters (kube-root-ca.crt alone is one per
namespace, and Helm, leader election and every app's configuration add more) and none carries a
label the operator could select by: a watch would list and stream every ConfigMap of every
namespace to the operator (its memory, and one more list at every restart, which `make bench`
counts), and need `list` and `watch` on all of them, for the few that hold templates. Re-reading
costs one get per referenced ConfigMap per resync period (RESYNC_S, 300 s; GEMMA_OPERATOR_RESYNC_S) and
needs only `get`; every reconcile of the owner reads it too (any change of the resource or its
pods), and one refused (missing, or a bad template) is looked at again every 30 s. The price: an
edit reaches the pods within one resync period, not at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

import kopf

from . import capacity, kube, peering, render, unseen
from .decide import SHARED_API, owners_to_wake, replan_on_pools
from .queue import RETRY_S, config_map_digest, one, pools_for, served

# How often the indices are checked against a fresh list, for deletions a watch missed: after
# an expired watch (410), kopf re-lists but never reports what vanished in the gap.
RESYNC_ENV = "GEMMA_OPERATOR_RESYNC_S"
RESYNC_S = 300.0
# The capacity file (a mounted ConfigMap the kubelet updates in place) is re-read this often.
CAPACITY_POLL_ENV = "GEMMA_OPERATOR_CAPACITY_POLL_S"
CAPACITY_POLL_S = 10.0
NODES_SETTLE_S = 1.0  # node changes come in bursts (a pool scaling): plan once they settle
DISCOVERY_MIN_S = 0.5  # the discovery follower's shortest period (a TTL of 0 asks on every reconcile)
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={render.MANAGER}"
MODEL_PODS_SELECTOR = f"{MANAGED_SELECTOR},app.kubernetes.io/component=model-server"  # handlers.MODEL_PODS
# The children a resync lists: those a watch missing a deletion would leave in place.
RESYNCED = {"Deployment": "apps/v1", "Service": "v1", **SHARED_API}
# Unwatched children of always-served groups (the endpoint picker's ServiceAccount, ConfigMap, Role
# and RoleBinding): read back by name (RBAC `get`), not listed, so the chart grants no `list` on
# them. The third-party kinds stay listed: a list's 404 tells a CRD no longer served from a deletion.
BY_NAME = ("v1", "rbac.authorization.k8s.io/v1")


def follow_peering(memo: kopf.Memo, namespace: str | None, logger: logging.Logger) -> None:
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


async def resync_every(period: float, memo: kopf.Memo, logger: logging.Logger) -> None:
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
    inventory; a vanished model pod stops counting in its owner's status; an unwatched child
    deleted or edited is applied again. Lists are per namespace that has GemmaDeployments (or,
    for pods, model pods), so namespaced RBAC suffices.
    """
    await _resync_pods(memo, logger)
    await _resync_unwatched(memo, logger)
    await _resync_chat_templates(memo, logger)
    gone_nodes = set(memo.node_index.keys()) - await memo.kube.names("v1", "Node")
    if gone_nodes != memo.gone_nodes:
        logger.info(f"Resync: nodes gone unseen: {sorted(gone_nodes)}")
        memo.gone_nodes.clear()  # in place: the node event handlers' copies of memo share the set
        memo.gone_nodes.update(gone_nodes)
        memo.nodes_changed.set()
    namespaces = {ns for ns, _ in memo.resource_index.keys()}
    for kind, api_version in RESYNCED.items():
        for ns in sorted(namespaces):
            listed = await memo.kube.names(api_version, kind, ns, MANAGED_SELECTOR)
            for key in [k for k in memo.children[kind].keys() if k[0] == ns and k[1] not in listed]:
                if (kind, *key) in memo.gone_children:
                    continue
                memo.gone_children.add((kind, *key))
                for owner in owners_to_wake({"kind": kind, **(one(memo.children[kind], key) or {})}):
                    logger.info(f"Resync: {kind} {ns}/{key[1]} gone unseen; re-checking its owner")
                    memo.queue.add((ns, owner), "resync")


async def _resync_pods(memo: kopf.Memo, logger: logging.Logger) -> None:
    """Model pods deleted unseen stop counting in status: their owners re-check. Listed (names
    only) in the namespaces where the index holds pods; a pod event clears the mark."""
    indexed = unseen.indexed_pods(memo.pod_index)  # before the lists: what they lack was deleted
    namespaces = sorted({ns for ns, _ in indexed})
    listed = {ns: await memo.kube.names("v1", "Pod", ns, MODEL_PODS_SELECTOR) for ns in namespaces}
    vanished = unseen.vanished_pods(indexed, listed)
    gone = {(ns, pod) for (ns, _), names in vanished.items() for pod in names}
    for (ns, owner), names in sorted(vanished.items()):
        if {(ns, pod) for pod in names} - memo.gone_pods:
            logger.info(f"Resync: pods of {ns}/{owner} gone unseen: {sorted(names)}; re-checking it")
            memo.queue.add((ns, owner), "resync")
    memo.gone_pods.intersection_update(gone)  # in place: the pod event handlers' copies of memo share it
    memo.gone_pods.update(gone)


async def _resync_unwatched(memo: kopf.Memo, logger: logging.Logger) -> None:
    """Children of kinds without an index (ScaledObject, PodMonitoring, ServiceMonitor, and spec.gateway's
    InferencePool, HTTPRoute and endpoint picker ServiceAccount/Role/RoleBinding/ConfigMap) report no
    hand edit: compare them with what was applied (one list per third-party kind and namespace in use,
    one get per object of the core and RBAC kinds), and have the owner apply again those deleted or edited."""
    groups: dict[tuple[str, str, str], dict[tuple[str, str, str], Any]] = {}
    for child, obj in list(memo.applied_unwatched.items()):
        groups.setdefault((obj["apiVersion"], obj["kind"], child[1]), {})[child] = obj
    for (api_version, kind, ns), desired in sorted(groups.items()):
        if api_version in BY_NAME:
            read = [await memo.kube.get(api_version, kind, ns, obj["metadata"]["name"]) for obj in desired.values()]
            listed: list[dict[str, Any]] | None = [obj for obj in read if obj is not None]
        else:
            listed = await memo.kube.items(api_version, kind, ns, MANAGED_SELECTOR)
        if listed is None:  # no longer served: discovery tells the owners (a re-plan), not this
            continue
        for child in unseen.drifted(desired, {item["metadata"]["name"]: item for item in listed}):
            if memo.applied_unwatched.get(child) is not desired[child]:
                continue  # applied again meanwhile
            logger.info(f"Resync: {kind} {ns}/{child[2]} deleted or edited; re-applying it")
            memo.applied_unwatched.pop(child, None)
            for owner in owners_to_wake(desired[child]):
                memo.queue.add((ns, owner), "resync")


async def _resync_chat_templates(memo: kopf.Memo, logger: logging.Logger) -> None:
    """Read each ConfigMap a chat template names again (by name, once however many resources name it):
    the owners of one whose data changed since their last reconcile re-check (an edit of another key
    restarts nothing there: only the named key's content is on the pod template)."""
    owners: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    for (ns, name), (config_map, seen) in list(memo.chat_templates.items()):
        owners.setdefault((ns, config_map), []).append((name, seen))
    for (ns, config_map), named_by in sorted(owners.items()):
        try:
            now = config_map_digest(await memo.kube.get("v1", "ConfigMap", ns, config_map))
        except kube.ApiError as exc:  # (no get on ConfigMaps: the owners' reconciles say so) the rest goes on
            logger.warning(f"Resync: ConfigMap {ns}/{config_map} not read: {exc}")
            continue
        for name, seen in named_by:
            if now != seen:
                logger.info(f"Resync: ConfigMap {ns}/{config_map} changed; re-checking {ns}/{name} (its chat template)")
                memo.queue.add((ns, name), "resync")


async def follow_discovery(memo: kopf.Memo, logger: logging.Logger) -> None:
    """Ask discovery again every DISCOVERY_TTL while a resource depends on it (autoscaling, a
    gateway), so that a CRD installed or removed (KEDA, a collector, InferencePool, HTTPRoute) reaches
    the resources without a change of theirs: queue.served re-queues those whose choice the change
    alters (scaling.affected_by_discovery, gateway.affected_by_discovery)."""
    await memo.connected.wait()
    while True:
        await asyncio.sleep(max(memo.discovery_ttl_s, DISCOVERY_MIN_S))
        await memo.pause.wait_active()
        if not any((r.get("spec") or {}).get("autoscaling") or (r.get("spec") or {}).get("gateway")
                   for values in list(memo.resource_index.values()) for r in values):  # fmt: skip
            continue
        try:
            await served(memo)
        except kube.ApiError as exc:  # the next round asks again
            logger.warning(f"Discovery failed: {exc}")


async def follow_capacity(period: float, memo: kopf.Memo, logger: logging.Logger) -> None:
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
            memo.declared[:] = declared  # in place (see queue.prepare)
            memo.nodes_changed.set()


async def watch_pools(memo: kopf.Memo, logger: logging.Logger) -> None:
    """After node or capacity changes settle: wake the resources whose plan they may change."""
    while True:
        await memo.nodes_changed.wait()
        await asyncio.sleep(NODES_SETTLE_S)
        await memo.pause.wait_active()
        memo.nodes_changed.clear()
        memo.inventories.clear()  # in place (see queue.prepare)
        memo.plans.clear()  # its plans were made for the inventories just dropped
        for values in list(memo.resource_index.values()):
            for resource in values:
                pools = pools_for(memo, (resource.get("spec") or {}).get("nodeSelector") or {})
                if replan_on_pools(resource, pools):
                    meta = resource["metadata"]
                    logger.info(f"Node pools changed: re-planning {meta['namespace']}/{meta['name']}")
                    memo.queue.add((meta["namespace"], meta["name"]), "nodes")
