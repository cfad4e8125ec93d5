"""The model pods' states -> the one reason that blocks them, and a message that says what to do. Pure.

The operator watches only its own model pods (by label) and keeps of each what this module reads
(`essentials`). `worst_pod_state` runs small detectors in a fixed order, worst first; the first
that holds for any pod names the reason, its message quotes that pod, and the count says how many
pods show it. A pod that is Ready, or being deleted, blocks nothing.

Reasons (a contract; see README): OutOfMemory, ImagePullFailed, SecretNotFound, StartFailed,
CrashLoop, Evicted (the model cannot come up without a change: Stalled), then WaitingForCapacity
(Progressing within the scale-up budget, Stalled after it) and LoadingModel (Progressing).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .sentences import sentence

# How long a pod may wait for the cluster autoscaler or node auto-provisioning to add a node
# before it reads Stalled. GPU and TPU nodes take minutes to come up (provisioning, driver
# install); node auto-provisioning adds creating the pool.
SCALE_UP_BUDGET_ENV = "GEMMA_OPERATOR_SCALE_UP_BUDGET_S"
SCALE_UP_BUDGET_S = 900
# A pod waiting for a node is looked at again this often, for new autoscaler Events and the
# budget running out; its message names the time it started waiting, not the minutes since, so
# status is written only when what it says changes. A loading model is looked at again only when
# its start-up budget runs out: its message names the start time too (no periodic writes).
RECHECK_S = 60.0
MESSAGE_CAP = 400  # characters quoted from a kubelet, scheduler or termination message
AUTOSCALER_REASONS = ("TriggeredScaleUp", "NotTriggerScaleUp")
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
START_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
STALLED = ("OutOfMemory", "ImagePullFailed", "SecretNotFound", "StartFailed", "CrashLoop", "Evicted")
REASONS = (*STALLED, "WaitingForCapacity", "LoadingModel")


@dataclass(frozen=True)
class PodState:
    """What blocks the model pods: the reason, its message, how many pods show it."""

    reason: str
    message: str
    count: int
    stalled: bool
    recheck_s: float | None = None  # when time alone may change this verdict
    since: str | None = None  # LoadingModel: when the quoted pod's server started (status.loadingSince)


@dataclass(frozen=True)
class _Context:
    now: datetime.datetime
    scale_up_budget_s: int
    estimated_memory_gib: float | None


# ------------------------------------------------------------------------------- essentials
def _state(state: Mapping[str, Any] | None) -> dict[str, Any] | None:
    for kind in ("waiting", "running", "terminated"):
        part = (state or {}).get(kind)
        if isinstance(part, Mapping):
            keep = ("startedAt",) if kind == "running" else ("reason", "message", "exitCode")
            return {"kind": kind, **{k: part[k] for k in keep if part.get(k) is not None}}
    return None


def _startup_budget_s(container: Mapping[str, Any]) -> int | None:
    """How long the kubelet lets the container start: its startup probe's whole budget."""
    probe = container.get("startupProbe")
    if not isinstance(probe, Mapping):
        return None
    period = int(probe.get("periodSeconds") or 10)
    return int(probe.get("initialDelaySeconds") or 0) + period * int(probe.get("failureThreshold") or 3)


def essentials(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a Pod that `worst_pod_state` reads: what the index keeps (not the whole pod)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    specs = {c.get("name"): c for c in (*(spec.get("initContainers") or []), *(spec.get("containers") or []))}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}
    scheduled = conditions.get("PodScheduled")
    containers = []
    for each in (*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])):
        own = specs.get(each.get("name")) or {}
        containers.append({
            "name": each.get("name"),
            "image": own.get("image") or each.get("image"),
            "memoryLimit": ((own.get("resources") or {}).get("limits") or {}).get("memory"),
            "startupBudgetS": _startup_budget_s(own),
            "ready": bool(each.get("ready")),
            "started": each.get("started"),
            "restartCount": int(each.get("restartCount") or 0),
            "state": _state(each.get("state")),
            "lastState": _state(each.get("lastState")),
        })  # fmt: skip
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    return {
        "name": meta.get("name"),
        "deleting": bool(meta.get("deletionTimestamp")),
        "owner": f"{owner.get('kind')}/{owner.get('name')}" if owner else None,
        "phase": status.get("phase"),
        "reason": status.get("reason"),
        "message": status.get("message"),
        "scheduled": {k: scheduled.get(k) for k in ("status", "reason", "message", "lastTransitionTime")}
        if scheduled else None,
        "ready": (conditions.get("Ready") or {}).get("status") == "True",
        "startTime": status.get("startTime"),
        "containers": containers,
    }  # fmt: skip


# ---------------------------------------------------------------------------------- helpers
def parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _cap(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= MESSAGE_CAP else text[: MESSAGE_CAP - 1] + "…"


def _budget_minutes(seconds: float) -> int:
    return max(1, -(-int(seconds) // 60))


def unscheduled(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The name of the first pod the scheduler could not place, whose autoscaler Events to read."""
    found = sorted(p["name"] for p in pods if _waiting_for_node(p))
    return found[0] if found else None


def autoscaler_events(events: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The cluster autoscaler's Events about one pod, newest first: (reason, message, time)."""
    kept = []
    for event in events:
        if event.get("reason") in AUTOSCALER_REASONS:
            when = event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or ""
            kept.append({"reason": event["reason"], "message": _cap(event.get("message")), "time": when})
    return sorted(kept, key=lambda e: e["time"], reverse=True)


def _waiting_for_node(pod: Mapping[str, Any]) -> bool:
    scheduled = pod.get("scheduled") or {}
    return not pod.get("deleting") and pod.get("phase") == "Pending" and scheduled.get("status") == "False"


def _containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in pod.get("containers") or [] if not c.get("ready")]


# -------------------------------------------------------------------------------- detectors
# Each takes one pod and returns the message for its reason, or None.
def _out_of_memory(pod: Mapping[str, Any], ctx: _Context) -> str | None:
    for c in _containers(pod):
        for state in (c.get("state"), c.get("lastState")):
            if state and state.get("kind") == "terminated" and state.get("reason") == "OOMKilled":
                limit = c.get("memoryLimit")
                limit_text = f"its memory limit of {limit}" if limit else "the node's memory (it has no memory limit)"
                estimate = (f"; the plan estimated {ctx.estimated_memory_gib:g} GiB for the model"
                            if ctx.estimated_memory_gib else "")  # fmt: skip
                code, restarts = state.get("exitCode", 137), c.get("restartCount", 0)
                return (
                    f"Container {c['name']} of pod {pod['name']} was killed for using more than {limit_text} "
                    f"(OOMKilled, exit code {code}, {restarts} restart(s)){estimate}. Raise "
                    "spec.resources.limits.memory and requests.memory, or lower spec.maxModelLen or spec.quantization."
                )
    return None


def _image_pull(pod: Mapping[str, Any], ctx: _Context) -> str | None:
    for c in _containers(pod):
        state = c.get("state") or {}
        if state.get("kind") == "waiting" and state.get("reason") in IMAGE_PULL_REASONS:
            said = f": {_cap(state.get('message'))}" if state.get("message") else ""
            return (
                f"Pod {pod['name']} cannot pull image {c.get('image')} ({state['reason']}{said}). Check the image "
                "name and tag (spec.image, or the catalog's pinned image), that the nodes can reach its registry, and, "
                "for a private registry, imagePullSecrets on the namespace's default ServiceAccount."
            )
    return None


def _secret_not_found(pod: Mapping[str, Any], ctx: _Context) -> str | None:
    for c in _containers(pod):
        state = c.get("state") or {}
        message = state.get("message") or ""
        if state.get("reason") == "CreateContainerConfigError" and re.search(r"\bsecret\b", message, re.IGNORECASE):
            return (
                f"Pod {pod['name']} cannot start container {c['name']}: {_cap(message)} (CreateContainerConfigError). "
                "Create the Secret that spec.hfTokenSecretRef names, in this namespace, with the Hugging Face token "
                "under its key (or fix the reference); the pod starts by itself once it exists."
            )
    return None


def _start_failed(pod: Mapping[str, Any], ctx: _Context) -> str | None:
    for c in _containers(pod):
        state = c.get("state") or {}
        if state.get("kind") == "waiting" and state.get("reason") in START_REASONS:
            said = _cap(state.get("message"))
            return (
                f"Pod {pod['name']} cannot start container {c['name']} ({state['reason']}: {said}). "
                "Check what spec.env refers to (ConfigMaps, Secrets) and spec.extraArgs."
            )
    return None


HINTS: Sequence[tuple[re.Pattern[str], str]] = (
    (re.compile(r"\b401\b|gated repo|restricted|unauthorized|not in the authorized list|\b403\b", re.IGNORECASE),
     "The Hugging Face Hub refused the download: set spec.hfTokenSecretRef to a token whose account has "
     "accepted the model's license on its Hub page."),
    (re.compile(r"no available memory for the cache blocks|cuda out of memory|out of memory", re.IGNORECASE),
     "The accelerator ran out of memory: lower spec.maxModelLen, or choose a smaller spec.quantization or model size."),
)  # fmt: skip


def _crash_loop(pod: Mapping[str, Any], ctx: _Context) -> str | None:
    for c in _containers(pod):
        state, last = c.get("state") or {}, c.get("lastState") or {}
        looping = state.get("kind") == "waiting" and state.get("reason") == "CrashLoopBackOff"
        failed = state.get("kind") == "terminated" and state.get("exitCode") not in (None, 0)
        if not (looping or failed):
            continue
        ended = state if failed else last
        words = _cap(ended.get("message"))
        said = f" Its last words: “{words}”." if words else " It left no termination message."
        hint = next((text for pattern, text in HINTS if pattern.search(words)), None)
        hint = hint or f"Read its log: kubectl logs {pod['name']} -c {c['name']} --previous."
        return (
            f"Container {c['name']} of pod {pod['name']} keeps crashing (exit code {ended.get('exitCode', '?')}, "
            f"{c.get('restartCount', 0)} restart(s)).{said} {hint}"
        )
    return None


def _evicted(pod: Mapping[str, Any], ctx: _Context) -> str | None:
    if pod.get("phase") == "Failed" and pod.get("reason") == "Evicted":
        said = _cap(pod.get("message")) or "no reason given"
        return (
            f"Pod {pod['name']} was evicted by the kubelet: {sentence(said)} The Deployment replaces it; if it "
            "recurs, give the pod more of what the node ran short of (spec.resources) or use larger nodes."
        )
    return None


def _waiting_for_capacity(pod: Mapping[str, Any], ctx: _Context) -> str | None:
    if not _waiting_for_node(pod):
        return None
    scheduled = pod.get("scheduled") or {}
    said = _cap(scheduled.get("message")) or scheduled.get("reason") or "no node fits"
    text = f"Pod {pod['name']} cannot be scheduled yet: {sentence(said)}"
    for event in (pod.get("events") or [])[:1]:
        text += f" Cluster autoscaler ({event['reason']}): {sentence(event['message'])}"
    budget = _budget_minutes(ctx.scale_up_budget_s)
    if _waited_s(pod, ctx) >= ctx.scale_up_budget_s:
        return text + (
            f" No node came within the {budget}-min scale-up budget: add nodes the pod fits (its nodeSelector, "
            "tolerations and requests), enable autoscaling on such a node pool, or change spec.accelerator."
        )
    since = scheduled.get("lastTransitionTime")
    when = f" since {since}" if parse_time(since) else ""
    return text + f" Waiting{when} for a node to be added (scale-up budget {budget} min)."


def _waited_s(pod: Mapping[str, Any], ctx: _Context) -> float:
    since = parse_time((pod.get("scheduled") or {}).get("lastTransitionTime"))
    return max(0.0, (ctx.now - since).total_seconds()) if since else 0.0


def _loading(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if pod.get("deleting") or pod.get("phase") != "Running" or pod.get("ready"):
        return None
    for c in _containers(pod):
        state = c.get("state") or {}
        if state.get("kind") == "running" and c.get("started") is not True:
            return c
    return None


def _loading_since(pod: Mapping[str, Any]) -> str | None:
    """When the loading container's server started, as the kubelet wrote it."""
    c = _loading(pod)
    return (c.get("state") or {}).get("startedAt") if c else None


def _loading_left_s(pod: Mapping[str, Any], now: datetime.datetime) -> float | None:
    """Seconds of the loading container's start-up budget left (negative: past it); None when unknown."""
    c = _loading(pod)
    started = parse_time(_loading_since(pod))
    budget = c.get("startupBudgetS") if c else None
    return budget - (now - started).total_seconds() if started and budget else None


def _loading_model(pod: Mapping[str, Any], ctx: _Context) -> str | None:
    # No minutes since the start: the message stays the same while the model loads, so the status
    # is written once; readers compute the age from the start time (status.loadingSince).
    c = _loading(pod)
    if c is None:
        return None
    since = _loading_since(pod)
    budget = c.get("startupBudgetS")
    left = _loading_left_s(pod, ctx.now)
    if left is not None and left <= 0:
        return (
            f"Pod {pod['name']} has been downloading and loading the model since {since}, longer than its "
            f"{_budget_minutes(budget)}-min startup budget: the kubelet restarts its server when the startup probe "
            "gives up. If it recurs, the download is slower than planned: use spec.cache (pvc or gcsfuse) to fill it once."
        )
    started = f"since {since}, when its server started" if since else "; its server is starting"
    of = f" (startup budget {_budget_minutes(budget)} min)" if budget else ""
    return (
        f"Pod {pod['name']} is downloading and loading the model {started}{of}. "
        "It turns Ready when the server answers its health check."
    )


Detector = Callable[[Mapping[str, Any], _Context], "str | None"]
# Worst first, as KAITO orders its pod-failure detectors: a reason earlier in the list wins.
DETECTORS: tuple[tuple[str, Detector], ...] = (
    ("OutOfMemory", _out_of_memory),
    ("ImagePullFailed", _image_pull),
    ("SecretNotFound", _secret_not_found),
    ("StartFailed", _start_failed),
    ("CrashLoop", _crash_loop),
    ("Evicted", _evicted),
    ("WaitingForCapacity", _waiting_for_capacity),
    ("LoadingModel", _loading_model),
)


def worst_pod_state(pods: Iterable[Mapping[str, Any]], *, now: datetime.datetime,
                    scale_up_budget_s: int = SCALE_UP_BUDGET_S,
                    estimated_memory_gib: float | None = None) -> PodState | None:  # fmt: skip
    """The worst reason any model pod shows (None: nothing blocks them), its message and how many pods show it."""
    live = sorted((p for p in pods if not p.get("deleting")), key=lambda p: str(p.get("name")))
    ctx = _Context(now, scale_up_budget_s, estimated_memory_gib)
    for reason, detect in DETECTORS:
        found = [(pod, message) for pod in live if not pod.get("ready") and (message := detect(pod, ctx))]
        if not found:
            continue
        pod, message = found[0]
        if len(live) > 1:
            message = f"{len(found)} of {len(live)} pods: {message}"
        stalled, recheck, since = reason in STALLED, None, None
        if reason == "WaitingForCapacity":
            left = scale_up_budget_s - _waited_s(pod, ctx)
            stalled = left <= 0
            recheck = None if stalled else min(RECHECK_S, left + 1)
        elif reason == "LoadingModel":
            since = _loading_since(pod)
            left = _loading_left_s(pod, now)
            recheck = left + 1 if left is not None and left > 0 else None  # only the budget running out
        return PodState(reason, message, len(found), stalled, recheck, since)
    return None
