"""Observed state -> status: phase, kstatus conditions (Ready, Progressing, Stalled), endpoint. Pure.

Conditions keep their lastTransitionTime while their status stays the same, so an unchanged
world computes an identical status and the operator has nothing to write.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import pods as pods_mod

READY, PROGRESSING, STALLED = "Ready", "Progressing", "Stalled"
# status.cache.state -> the reason that holds Stalled while the model pods cannot start on the cache.
CACHE_STALLED = {"Failed": "CacheFillFailed", "TooSmall": "CacheClaimTooSmall"}
# Reasons whose first Stalled/Progressing posts an Event (CacheFillFailed posts its own, per reconcile).
EVENT_REASONS = (*pods_mod.REASONS, "CacheClaimTooSmall")


@dataclass(frozen=True)
class Outcome:
    """What the reconcile concluded: a plan applied, or why not."""

    kind: str  # "Applied" | "NoFit" | "Invalid" | "ApplyFailed"
    message: str = ""
    selection: Mapping[str, Any] | None = None
    endpoint: str | None = None
    cache: Mapping[str, Any] | None = None  # status.cache (cache.Cache.status)
    reason: str = ""  # the conditions' reason, when more precise than the kind's (InvalidSpec, ApplyFailed)
    next_step: str = ""  # while nothing is applied: what the operator does next (Progressing's message)


@dataclass(frozen=True)
class Observed:
    """What the children report, gathered once per reconcile."""

    deployment: Mapping[str, Any] | None = None
    service: Mapping[str, Any] | None = None
    pods: tuple[Mapping[str, Any], ...] = ()  # pods.essentials of the model pods, with their autoscaler events
    scale_up_budget_s: int = pods_mod.SCALE_UP_BUDGET_S

    def pod_state(self, now: str, selection: Mapping[str, Any] | None) -> pods_mod.PodState | None:
        """What blocks the model pods, if anything (pods.worst_pod_state)."""
        moment = pods_mod.parse_time(now)
        if not self.pods or moment is None:
            return None
        estimate = (selection or {}).get("estimatedMemoryGiB")
        return pods_mod.worst_pod_state(self.pods, now=moment, scale_up_budget_s=self.scale_up_budget_s,
                                        estimated_memory_gib=estimate)  # fmt: skip


def _deployment_state(deployment: Mapping[str, Any] | None, wanted: int) -> tuple[str, str, int, int]:
    """(phase, reason, replicas, readyReplicas) from the child Deployment."""
    if deployment is None:
        return "Deploying", "Creating", 0, 0
    status = deployment.get("status") or {}
    ready = int(status.get("readyReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation = (deployment.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    current = generation is None or (observed is not None and observed >= generation)
    progress = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
    # The deadline is derived from the start-up budget (render), so it fires only once a model had
    # all the time its download and start may take.
    if progress.get("reason") == "ProgressDeadlineExceeded":
        return "Degraded", "ProgressDeadlineExceeded", replicas, ready
    if current and ready >= wanted and updated >= wanted and replicas <= wanted:
        return "Ready", "ScaledToZero" if wanted == 0 else "ReplicasReady", replicas, ready
    # Replicas lost after the rollout completed; during a rollout, a replica still loading is progress.
    if 0 < ready < wanted and updated >= wanted and progress.get("reason") == "NewReplicaSetAvailable":
        return "Degraded", "ReplicasUnavailable", replicas, ready
    return "Deploying", "RollingOut", replicas, ready


def _deadline_minutes(deployment: Mapping[str, Any] | None) -> int | None:
    """How long the Deployment may go without progress, in whole minutes; None when unknown."""
    seconds = ((deployment or {}).get("spec") or {}).get("progressDeadlineSeconds")
    return math.ceil(seconds / 60) if isinstance(seconds, int) else None


def _condition(previous: Mapping[str, Mapping[str, Any]], type_: str, status: str, reason: str, message: str,
               generation: int | None, now: str) -> dict[str, Any]:  # fmt: skip
    before = previous.get(type_) or {}
    changed = before.get("status") != status
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now if changed or not before.get("lastTransitionTime") else before["lastTransitionTime"],
        "observedGeneration": generation,
    }


def compute(outcome: Outcome, *, generation: int | None, wanted_replicas: int, observed: Observed = Observed(),
            previous: Mapping[str, Any] | None, now: str, extra: Sequence[tuple[str, str, str, str]] = (),
            scale: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The whole status for a GemmaDeployment. Until the Deployment is Ready, what blocks its pods
    (pods.worst_pod_state) is the reason of Ready, Progressing and Stalled.

    `extra`: conditions beyond the three kstatus ones, as (type, status, reason, message), kept
    only while a plan is applied (the autoscaler's, UpdateAvailable, PodDisruptionBudget).
    `scale`: desiredReplicas and selector, likewise.
    """
    old = previous or {}
    prior = {c.get("type"): c for c in old.get("conditions") or [] if isinstance(c, Mapping)}
    status: dict[str, Any] = {"observedGeneration": generation}
    loading_since = None  # status.loadingSince: set while the model loads, once (readers compute the age)

    if outcome.kind in ("Invalid", "NoFit"):
        phase = outcome.kind
        reason = outcome.reason or ("InvalidSpec" if phase == "Invalid" else "NoFit")
        ready = ("False", reason, outcome.message)
        progressing = ("False", reason, outcome.next_step or ("Nothing is deployed until the spec or the cluster's "
                       "nodes change." if not outcome.reason else "Nothing is changed until what the message names "
                       "is fixed."))  # fmt: skip
        stalled = ("True", reason, outcome.message)
        # Nothing is applied: a model already serving keeps running, and its selection, endpoint and
        # replica counts stay in status (they are left out of this patch) to say what still serves.
        status["phase"] = phase
    elif outcome.kind == "ApplyFailed":
        phase = "Degraded"
        reason = outcome.reason or "ApplyFailed"
        ready = ("False", reason, outcome.message)
        progressing = ("True", "Retrying", outcome.next_step or "The operator retries applying the children.")
        stalled = ("False", reason, outcome.message)
        status["phase"] = phase
        # Only what is known: a refused first apply has no selection (the CRD requires its fields,
        # so an empty one is refused); what an earlier apply left stays, as for NoFit.
        if outcome.selection:
            status["selection"] = dict(outcome.selection)
        if outcome.endpoint:
            status["endpoint"] = outcome.endpoint
    else:
        deployment = observed.deployment
        phase, reason, replicas, ready_count = _deployment_state(deployment, wanted_replicas)
        selection = outcome.selection or {}
        serving = f"{selection.get('modelId')} on {selection.get('accelerator')} via {selection.get('runtime')}"
        blocked = observed.pod_state(now, selection) if phase != "Ready" else None
        if phase == "Ready":
            ready = ("True", reason, f"{ready_count}/{wanted_replicas} replicas ready, serving {serving}.")
            progressing = ("False", reason, "The Deployment is up to date.")
            stalled = ("False", reason, "")
        elif blocked is not None and blocked.stalled:
            phase = "Degraded"
            ready = progressing = ("False", blocked.reason, blocked.message)
            stalled = ("True", blocked.reason, blocked.message)
        elif blocked is not None:  # on its way: waiting for a node, or loading the model
            phase = "Deploying"
            loading_since = blocked.since
            ready = ("False", blocked.reason, blocked.message)
            progressing = ("True", blocked.reason, blocked.message)
            stalled = ("False", blocked.reason, "")
        elif phase == "Degraded" and reason == "ProgressDeadlineExceeded":
            minutes = _deadline_minutes(deployment)
            within = f" in {minutes} min" if minutes else ""
            message = (
                f"The Deployment made no progress{within} ({ready_count}/{wanted_replicas} ready): check the pods' "
                "events for scheduling, image pull or start-up failures."
            )
            ready = ("False", reason, message)
            progressing = ("False", reason, message)
            stalled = ("True", reason, message)
        else:
            message = f"{ready_count}/{wanted_replicas} replicas ready; waiting for {serving} to start."
            minutes = _deadline_minutes(deployment) if reason == "RollingOut" else None
            if minutes:  # a first start downloads the weights: say how long that may take
                message = (
                    f"{ready_count}/{wanted_replicas} replicas ready; waiting for {serving} to download and start, "
                    f"which may take up to {minutes} min."
                )
            ready = ("False", reason, message)
            progressing = ("True", reason, message)
            stalled = ("False", reason, "")
        fill = (outcome.cache or {}).get("state")
        if fill in ("Failed", "TooSmall"):
            message = outcome.cache["message"]
            why = CACHE_STALLED[fill]
            phase = phase if phase == "Ready" else "Degraded"
            if ready[0] != "True":
                ready = ("False", why, message)
            progressing = ("False", why, message)
            stalled = ("True", why, message)
        elif fill == "Filling":
            where = outcome.cache.get("claim") or outcome.cache.get("bucket")
            message = outcome.cache.get("message") or (  # the adapters' Jobs say which they fill
                f"The loader Job fills the cache {where} with {selection.get('modelId')} "
                f"({outcome.cache['bytes'] / 1e9:.1f} GB) once; the model pods start when it completes."
            )
            if ready[0] != "True":
                ready = ("False", "FillingCache", message)
            progressing = ("True", "FillingCache", message)
        status.update(
            phase=phase,
            selection=dict(selection),
            endpoint=outcome.endpoint,
            replicas=replicas,
            readyReplicas=ready_count,
        )
        if outcome.cache:
            status["cache"] = dict(outcome.cache)
    if loading_since or "loadingSince" in old:
        status["loadingSince"] = loading_since
    status["conditions"] = [
        _condition(prior, READY, *ready, generation, now),
        _condition(prior, PROGRESSING, *progressing, generation, now),
        _condition(prior, STALLED, *stalled, generation, now),
    ]
    if outcome.kind == "Applied":
        status["conditions"] += [_condition(prior, *condition, generation, now) for condition in extra]
        status.update(scale or {})
    return status


def events_for(previous: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """The Events a status transition posts for what blocks the model pods: (type, reason, message).

    One when a pod reason (or a cache claim too small) first holds Stalled (Warning) or Progressing
    (Normal); none while it stays.
    """
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or [] if isinstance(c, Mapping)}
    events = []
    for type_, kind in ((STALLED, "Warning"), (PROGRESSING, "Normal")):
        now = next((c for c in desired.get("conditions") or [] if c.get("type") == type_), None)
        if now is None or now.get("status") != "True" or now.get("reason") not in EVENT_REASONS:
            continue
        old = before.get(type_) or {}
        if (old.get("status"), old.get("reason")) != ("True", now["reason"]):
            events.append((kind, now["reason"], now["message"]))
        break  # a stalled pod reason is the one to tell; Progressing is False then
    return events


def patch_for(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch from the current status to the desired one; None when they already agree.

    Top-level keys desired as None are deleted and keys not mentioned stay (NoFit keeps what still
    serves). Maps inside are replaced exactly: a merge patch merges nested maps key by key, so
    every key the desired map no longer has is sent as null (an old pool's nodeSelector label, the
    modelFile of an earlier llama.cpp plan). Lists are replaced whole, as merge patches do.
    """
    patch = _diff(current or {}, desired, exact=False)
    return patch or None


def _diff(current: Mapping[str, Any], desired: Mapping[str, Any], *, exact: bool) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        old = current.get(key)
        if value is None:
            if key in current:
                patch[key] = None
        elif isinstance(value, Mapping) and isinstance(old, Mapping):
            nested = _diff(old, value, exact=True)
            if nested:
                patch[key] = nested
        elif old != value or key not in current:
            patch[key] = value
    if exact:
        patch.update({key: None for key in current if key not in desired})
    return patch
