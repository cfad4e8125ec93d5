"""Carry out an Intent through kube.py: expansions, claims, prunes, applies, Events, status. No policy.

It records what it applied (the resourceVersion of a watched child, so that its watch event is
known as the echo; the digest of an unwatched one), the API server's answer to a claim expansion
(for the next pass to decide on), and the status it wrote (the index's copy of the resource lags
it). Events are posted before the status they explain, at most once a minute per resource and reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from . import kube, metrics
from .decide import Apply, Event, Expand, Intent, Prune

EVENT_REPEAT_S = 60.0  # the same Event reason at most once a minute per resource


class OwnerGone(Exception):
    """The GemmaDeployment was deleted while it was being reconciled: nothing left to do."""


async def owner_gone(memo: kopf.Memo, resource: Mapping[str, Any]) -> bool:
    """Whether the resource was deleted meanwhile (its index entry can lag its children's events)."""
    meta = resource["metadata"]
    live = await memo.kube.get(resource["apiVersion"], "GemmaDeployment", meta["namespace"], meta["name"])
    return live is None or live["metadata"].get("uid") != meta.get("uid") or bool(live["metadata"].get("deletionTimestamp"))


async def execute(memo: kopf.Memo, resource: Mapping[str, Any], intent: Intent,
                  logger: logging.Logger) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Do what the Intent says, in its order; return the children applied, by kind, as the server
    returned them. Raises OwnerGone when a precondition finds the resource deleted."""
    children: dict[str, dict[str, Any]] = {}
    for expand in intent.expands:
        await _expand(memo, resource["metadata"]["namespace"], expand, logger)
    for item in intent.claims:
        children[item.obj["kind"]] = await _claim(memo, resource, item)
    for prune in intent.prunes:
        await _prune(memo, prune, resource["metadata"]["namespace"], logger, resource["metadata"]["name"])
    for item in intent.applies:
        children[item.obj["kind"]] = await _apply(memo, resource, item)
    for note in intent.notes:
        logger.info(note)
    for plan in intent.plans:
        metrics.PLANS.labels(*plan).inc()
    for event in intent.events:
        await emit(memo, resource, event, logger)
    if intent.status:
        await write_status(memo, resource, intent.status, logger)
    return children


def _remember(memo: kopf.Memo, obj: Mapping[str, Any], live: Mapping[str, Any]) -> None:
    child = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
    memo.applied[child] = live["metadata"].get("resourceVersion")
    memo.gone_children.discard(child)


async def _precondition(memo: kopf.Memo, resource: Mapping[str, Any], item: Apply) -> None:
    if item.confirm_owner and await owner_gone(memo, resource):
        raise OwnerGone


async def _claim(memo: kopf.Memo, resource: Mapping[str, Any], item: Apply) -> dict[str, Any]:
    await _precondition(memo, resource, item)
    if item.how == "create":
        live = await memo.kube.create(item.obj)
        metrics.APPLIES.labels(item.obj["kind"]).inc()
    else:
        live = await memo.kube.set_owners(item.obj, item.resource_version, list(item.owners))
    _remember(memo, item.obj, live)
    return live


async def _expand(memo: kopf.Memo, namespace: str, item: Expand, logger: logging.Logger) -> None:
    """Ask; record the answer against the version asked at (queue.observe hands it to decide)."""
    live, refusal = await memo.kube.expand_claim(namespace, item.claim, item.resource_version, item.storage)
    memo.expansions[(namespace, item.claim)] = (item.resource_version, item.storage, refusal)
    if live is not None:
        _remember(memo, live, live)
        metrics.APPLIES.labels("expand PersistentVolumeClaim").inc()
        logger.info(f"Expanding cache claim {namespace}/{item.claim} to {item.storage}.")
    else:
        logger.info(f"The API server refused to expand cache claim {namespace}/{item.claim}: {refusal}")


async def _prune(memo: kopf.Memo, prune: Prune, namespace: str, logger: logging.Logger,
                 owner: str | None = None) -> None:  # fmt: skip
    if prune.how == "leave":
        obj = {"apiVersion": prune.api_version, "kind": prune.kind, "metadata": {"name": prune.name, "namespace": namespace}}
        await memo.kube.set_owners(obj, prune.resource_version, list(prune.owners))
        return
    if await memo.kube.delete(prune.api_version, prune.kind, namespace, prune.name, uid=prune.uid,
                              resource_version=prune.resource_version):  # fmt: skip
        logger.info(f"Deleted {prune.kind} {namespace}/{prune.name}: the spec no longer needs it.")
        metrics.APPLIES.labels(f"delete {prune.kind}").inc()
    memo.applied.pop((prune.kind, namespace, prune.name), None)
    memo.applied_unwatched.pop((prune.kind, namespace, prune.name), None)
    if prune.digest_key is not None and owner is not None:  # recorded under the owner's name (see _apply)
        memo.applied_unwatched.pop((prune.digest_key, namespace, owner), None)


async def _apply(memo: kopf.Memo, resource: Mapping[str, Any], item: Apply) -> dict[str, Any]:
    await _precondition(memo, resource, item)
    obj, meta = item.obj, item.obj["metadata"]
    if item.handover_replicas is not None:  # see kube.HANDOVER
        await memo.kube.apply({"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                               "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
                               "spec": {"replicas": item.handover_replicas}}, manager=kube.HANDOVER)  # fmt: skip
    if item.upgrade is not None:
        await _upgrade(memo, obj, item.upgrade)
    live = None
    if item.how == "create" and getattr(memo, "create_first", True):
        try:  # absent from the index: a create costs the server less than an apply (see ownership)
            live = await memo.kube.create(obj)
        except kube.ApiError as exc:
            if exc.reason != "AlreadyExists":
                raise
            # Already there (the index lags, or a namesake): applied, as any existing child is.
    if live is None:
        live = await memo.kube.apply(obj)
    metrics.APPLIES.labels(obj["kind"]).inc()
    if item.digest is not None:  # no watch: the resync compares the kind's list with what was applied
        # By the owner's name: what queue.observe reads (the same name, but for the gateway's objects);
        # the object carries its digest (decide.DIGEST), which queue.observe reads back.
        key = (item.digest_key or obj["kind"], meta["namespace"], resource["metadata"]["name"])
        memo.applied_unwatched[key] = obj
    else:
        _remember(memo, obj, live)
    return live


async def _upgrade(memo: kopf.Memo, obj: Mapping[str, Any], patch: tuple[Mapping[str, Any], ...]) -> None:
    """Hand our create's field ownership to our apply (ownership.upgrade), before the apply. Its test
    ops fail (422) when the object changed since the index's copy: a conflict, retried on a fresher one."""
    if not patch:
        return
    try:
        await memo.kube.patch_managed_fields(obj, list(patch))
    except kube.ApiError as exc:
        if exc.status != 422:
            raise
        raise kube.ApiError(409, f"changed since read, ownership not upgraded yet: {exc.message}", "Conflict") from exc


async def emit(memo: kopf.Memo, resource: Mapping[str, Any], event: Event, logger: logging.Logger) -> None:
    """Post an Event, unless the same one was posted for this resource within EVENT_REPEAT_S."""
    key = (resource["metadata"].get("uid"), event.type, event.reason)
    now = time.monotonic()
    last = memo.events.get(key)
    if last is not None and now - last < EVENT_REPEAT_S:
        return
    if len(memo.events) > 10_000:  # forget what can no longer suppress anything (in place: see queue.prepare)
        for stale in [k for k, t in memo.events.items() if now - t >= EVENT_REPEAT_S]:
            del memo.events[stale]
    memo.events[key] = now
    try:
        await memo.kube.event(resource, event.type, event.reason, event.message)
    except kube.ApiError as exc:  # an Event is never worth failing a reconcile
        logger.warning(f"Could not post Event {event.reason}: {exc}")


async def write_status(memo: kopf.Memo, resource: Mapping[str, Any], patch: Mapping[str, Any],
                       logger: logging.Logger) -> None:  # fmt: skip
    meta = resource["metadata"]
    result = await memo.kube.patch_status(meta["namespace"], meta["name"], patch)
    if result and "status" in result:
        memo.status_written[(meta["namespace"], meta["name"])] = (meta.get("resourceVersion"), result["status"])
    logger.debug(f"Status patched: {sorted(patch)}")
