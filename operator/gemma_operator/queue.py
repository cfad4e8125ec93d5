"""The work queue and one reconcile: observe -> decide -> execute.

Every change that can alter a GemmaDeployment's outcome (its spec, a child edited or deleted,
a model pod's state, node pools) adds the resource's key here; WORKERS workers take keys, one
reconcile at a time per key. A reconcile reads what `decide.wants` (from the indices, and the
few API reads the indices cannot answer), decides, and executes the Intent; API errors are
retried with back-off, time-bound pod states are looked at again after the Intent's delay.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from . import decide as decide_mod
from . import chat_template, execute, gateway, inventory, kube, metrics, planner, pods, scaling, unseen

RETRY_S = (1, 2, 5, 10, 30, 60)  # back-off for API errors that clear by themselves
# Reconciles in flight: their API requests overlap (each is mostly waiting on the server). 16, not
# 8: at N=1000, 16 gave the burst's p50 1.14x the floor against 1.77x on the emulator and 1.41x against
# 1.62x on a real kube-apiserver, all-N 1.34x / 1.39x against 1.40x / 1.64x, for the same operator CPU
# (bench/README.md, 4 Dec). More (64) starves the emulator's one event loop (all-N 5.14x).
WORKERS = 16
WORKERS_ENV = "GEMMA_OPERATOR_WORKERS"  # another count, for a benchmark's A/B (bench/README.md)
AUTOSCALER_EVENTS_S = 30.0  # a pod waiting for a node: its autoscaler Events are read at most this often
# How long which optional CRDs the cluster serves is taken as known.
DISCOVERY_ENV = "GEMMA_OPERATOR_DISCOVERY_S"
DISCOVERY_TTL_S = 60.0


class WorkQueue:
    """Keys to reconcile, each at most once in the queue; delayed re-adds for retries. A key waiting
    keeps the trigger it came with, unless a spec change or the start-up listing comes after it
    (the reconcile's metric label: what it is for)."""

    FIRST = ("spec", "resume")

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._pending: dict[Any, str] = {}

    def add(self, key: Any, trigger: str) -> None:
        if key not in self._pending:
            self._pending[key] = trigger
            self._queue.put_nowait(key)
        elif trigger in self.FIRST and self._pending[key] not in self.FIRST:
            self._pending[key] = trigger

    def add_after(self, key: Any, trigger: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self.add, key, trigger)

    async def get(self) -> tuple[Any, str]:
        key = await self._queue.get()
        return key, self._pending.pop(key)


def prepare(memo: kopf.Memo, discovery_ttl_s: float) -> None:
    """The queue's and the executor's bookkeeping, in kopf's memo.

    kopf hands each object's handlers a shallow copy of memo, made when it first sees the object
    (kopf/_core/reactor/inventory.py): what is renewed after start-up is updated in place, never
    rebound, or the event handlers of objects seen earlier keep the old one.
    """
    memo.queue = WorkQueue()
    memo.inventories = {}  # nodeSelector -> Inventory, dropped whenever a node changes
    memo.plans = planner.PlanCache()  # cleared with the inventories
    memo.locks = {}  # (namespace, name) -> asyncio.Lock: one reconcile at a time per resource
    memo.failures = {}  # (namespace, name) -> consecutive API failures, for back-off
    memo.rechecks = {}  # (namespace, name) -> the timer that looks again at a time-bound pod state
    memo.events = {}  # (uid, type, reason) -> monotonic time of the last Event
    # The index's copy of a resource lags our own status patch: (namespace, name) -> (the
    # resourceVersion that patch replaced, the status it left), to compare against instead.
    memo.status_written = {}
    # (kind, namespace, name) -> resourceVersion of our last apply of a child: its watch event is
    # only the echo of that apply, with nothing new to react to.
    memo.applied = {}
    # (kind, namespace, owner) -> the object last applied, for the kinds without an index: observe reads
    # its digest annotation, the resync compares it with the server's copy.
    memo.applied_unwatched = {}
    # (namespace, claim) -> (resourceVersion asked at, storage asked, the refusal or None): the API
    # server's answer to a cache claim's expansion, observed while the claim stays at that version.
    memo.expansions = {}
    memo.discovery = [float("-inf"), set()]  # [monotonic time, served optional (apiVersion, kind)], in place
    memo.discovery_ttl_s = discovery_ttl_s
    memo.autoscaler_events = {}  # (namespace, pod) -> (monotonic time read, the pod's autoscaler Events)
    memo.gone_pods = set()  # (namespace, pod) still in the index that a fresh list no longer has
    # (namespace, name) -> (the ConfigMap its chatTemplate.configMapRef names, the digest of its data as
    # the last reconcile read it): the resync reads them again and wakes the owners of those changed.
    memo.chat_templates = {}


def one(index: kopf.Index, key: Any) -> Any:
    values = index.get(key)
    return next(iter(values)) if values else None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pools_for(memo: kopf.Memo, node_selector: Mapping[str, str]) -> inventory.Inventory:
    """The node pools a nodeSelector allows, kept until a node or the declared capacity changes."""
    key = tuple(sorted(node_selector.items()))
    if key not in memo.inventories:
        nodes = [node for name, values in memo.node_index.items() if name not in memo.gone_nodes for node in values]
        memo.inventories[key] = inventory.pools(nodes, memo.catalog, node_selector, memo.declared)
    return memo.inventories[key]


async def worker(memo: kopf.Memo, logger: logging.Logger) -> None:
    while True:
        await memo.pause.wait_active()
        key, trigger = await memo.queue.get()
        await memo.pause.wait_active()  # taken just before a pause: wait for the resume
        resource = one(memo.resource_index, key)
        if resource is None or (resource.get("metadata") or {}).get("deletionTimestamp"):
            forget(memo, key)  # gone: its children are garbage-collected through their ownerReferences
            continue
        try:
            delay = await reconcile(resource, memo, logger, trigger=trigger)
        except Exception:  # a bug must not stop the queue; log it and retry later
            metrics.ERRORS.labels("unexpected").inc()
            logger.exception(f"Reconcile of {key[0]}/{key[1]} failed")
            delay = RETRY_S[-1]
        if delay is not None:
            memo.queue.add_after(key, trigger, delay)


def forget(memo: kopf.Memo, key: tuple[str, str]) -> None:
    memo.locks.pop(key, None)
    memo.failures.pop(key, None)
    memo.status_written.pop(key, None)
    memo.chat_templates.pop(key, None)
    recheck(memo, key, None)
    for kind in (*memo.children, *(k for _, k in scaling.OPTIONAL_KINDS), *decide_mod.GATEWAY_DIGESTS):
        memo.applied.pop((kind, *key), None)
        memo.applied_unwatched.pop((kind, *key), None)
        memo.gone_children.discard((kind, *key))


def recheck(memo: kopf.Memo, key: tuple[str, str], delay: float | None) -> None:
    """Look at a time-bound pod state again (a budget running out; while a pod waits for a node,
    new autoscaler Events)."""
    timer = memo.rechecks.pop(key, None)
    if timer is not None:
        timer.cancel()
    if delay is not None:
        memo.rechecks[key] = asyncio.get_running_loop().call_later(delay, memo.queue.add, key, "pods")


async def reconcile(resource: dict[str, Any], memo: kopf.Memo, logger: logging.Logger, *,
                    trigger: str) -> float | None:  # fmt: skip
    """Bring one GemmaDeployment's children and status in line. Returns a retry delay, or None."""
    meta = resource["metadata"]
    key = (meta["namespace"], meta["name"])
    async with memo.locks.setdefault(key, asyncio.Lock()):
        written = memo.status_written.get(key)
        if written is not None and written[0] == meta.get("resourceVersion"):
            resource = {**resource, "status": written[1]}  # this copy predates our own last status patch
        with metrics.DURATION.time():
            try:
                wants = decide_mod.wants(resource, memo.settings)
                observed = await observe(memo, resource, wants, logger)
                pools = pools_for(memo, (resource.get("spec") or {}).get("nodeSelector") or {})
                intent = decide_mod.decide(resource, observed, pools, memo.catalog, memo.settings, now(),
                                           plan=memo.plans.plan)  # fmt: skip
                await execute.execute(memo, resource, intent, logger)
            except execute.OwnerGone:
                metrics.RECONCILES.labels(trigger, "OwnerGone").inc()
                return None
            except kube.ApiError as exc:
                if exc.status == 404 and await execute.owner_gone(memo, resource):
                    return None
                metrics.ERRORS.labels("api").inc()
                metrics.RECONCILES.labels(trigger, "retry").inc()
                failures = memo.failures[key] = memo.failures.get(key, 0) + 1
                delay = RETRY_S[min(failures, len(RETRY_S)) - 1] if exc.retryable else RETRY_S[-1]
                if not exc.retryable:
                    await _report_refusal(memo, resource, exc, delay, logger)
                return delay
    memo.failures.pop(key, None)
    metrics.RECONCILES.labels(trigger, intent.outcome).inc()
    recheck(memo, key, intent.recheck_s)
    return intent.retry_s


async def _report_refusal(memo: kopf.Memo, resource: Mapping[str, Any], exc: kube.ApiError, delay: float,
                          logger: logging.Logger) -> None:  # fmt: skip
    """Say in status and in an Event why the API refused; a failure to say so must not stop the retry."""
    try:
        await execute.execute(memo, resource, decide_mod.refused(resource, str(exc), delay, now()), logger)
    except kube.ApiError as error:
        logger.warning(f"Could not record the refusal in status: {error}")


# ---------------------------------------------------------------------------- observe
async def observe(memo: kopf.Memo, resource: Mapping[str, Any], wants: decide_mod.Wants,
                  logger: logging.Logger) -> decide_mod.Observed:  # fmt: skip
    """What `wants` asks for: the children as the indices hold them (without those a resync found
    gone), the model pods (a pod the scheduler cannot place with the cluster autoscaler's Events
    about it), discovery, the Secret check and the ConfigMap of a chat template (by name)."""
    meta = resource["metadata"]
    ns, name = meta["namespace"], meta["name"]

    def live(kind: str, child: str) -> Any:
        return None if (kind, ns, child) in memo.gone_children else one(memo.children[kind], (ns, child))

    children = {(kind, child): live(kind, child) for kind, child in wants.children}
    shared = {(kind, key[1]): obj for kind in decide_mod.SHARED for key in list(memo.children[kind].keys())
              if key[0] == ns and (obj := live(kind, key[1])) is not None}  # fmt: skip
    digests = {kind: obj["metadata"]["annotations"][decide_mod.DIGEST] for kind in wants.unwatched
               if (obj := memo.applied_unwatched.get((kind, ns, name))) is not None}  # fmt: skip
    model_pods = [dict(p) for p in memo.pod_index.get((ns, name), ())]
    gone = frozenset(pod for pod_ns, pod in memo.gone_pods if pod_ns == ns) & {p["name"] for p in model_pods}
    waiting = pods.unscheduled(unseen.counted(model_pods, gone))
    if waiting:
        events = await _autoscaler_events(memo, ns, waiting, logger)
        model_pods = [{**p, "events": events} if p["name"] == waiting else p for p in model_pods]
    served_kinds = frozenset(await served(memo)) if wants.served else None
    secret = await memo.kube.secret_exists(ns, wants.secret) if wants.secret else None
    expansions = {}
    for (kind, claim), obj in shared.items():
        answer = memo.expansions.get((ns, claim)) if kind == "PersistentVolumeClaim" else None
        if answer is not None and answer[0] == obj["metadata"].get("resourceVersion"):
            expansions[claim] = answer[1:]
    attached = None
    if wants.gateway and served_kinds is not None and gateway.GATEWAY in served_kinds:
        try:  # its address becomes the endpoint; needs get on gateways (the chart's gateway.readGateways)
            attached = await memo.kube.get(*gateway.GATEWAY, *wants.gateway)
        except kube.ApiError as exc:
            logger.debug(f"Gateway {'/'.join(wants.gateway)} not readable ({exc}): the endpoint stays the Service's")
    template = None
    if wants.config_map:  # read on every reconcile of its owner: one get, never a list or a watch
        found = await memo.kube.get("v1", "ConfigMap", ns, wants.config_map)
        template = chat_template.Source(wants.config_map, None if found is None else dict(found.get("data") or {}))
        memo.chat_templates[(ns, name)] = (wants.config_map, config_map_digest(found))
    else:
        memo.chat_templates.pop((ns, name), None)
    return decide_mod.Observed(children, shared, digests, tuple(model_pods), served_kinds, secret, gone,
                               expansions=expansions, gateway=attached, config_map=template)


def config_map_digest(config_map: Mapping[str, Any] | None) -> str | None:
    """What the resync compares of a chat template's ConfigMap: its data (None: absent)."""
    return None if config_map is None else decide_mod.digest(config_map.get("data") or {})


async def served(memo: kopf.Memo) -> set[tuple[str, str]]:
    """Which optional third-party kinds the cluster serves (discovery, cached for a minute). A
    change re-queues the resources whose choice it changes (one Invalid for want of KEDA)."""
    at, before = memo.discovery
    if time.monotonic() - at < memo.discovery_ttl_s:
        return before
    found = set()
    for api_version, kind in (scaling.KEDA, scaling.POD_MONITORING, scaling.SERVICE_MONITOR, *gateway.REQUIRED,
                              gateway.GATEWAY):  # fmt: skip
        if kind in await memo.kube.served(api_version):
            found.add((api_version, kind))
    memo.discovery[:] = [time.monotonic(), found]
    if at != float("-inf") and found != before:
        specs = {key: r.get("spec") for key, values in list(memo.resource_index.items()) for r in values}
        affected = {*scaling.affected_by_discovery(specs, before, found, memo.settings.collector),
                    *gateway.affected_by_discovery(specs, before, found)}  # fmt: skip
        for key in sorted(affected):
            memo.logger.info(f"Served kinds changed ({sorted(k for _, k in found)}): re-checking {key[0]}/{key[1]}")
            memo.queue.add(key, "discovery")
    return found


async def _autoscaler_events(memo: kopf.Memo, namespace: str, pod: str,
                             logger: logging.Logger) -> list[dict[str, str]]:  # fmt: skip
    """The autoscaler's Events on one pod, read at most every AUTOSCALER_EVENTS_S (Events are not watched)."""
    moment = time.monotonic()
    cached = memo.autoscaler_events.get((namespace, pod))
    if cached is not None and moment - cached[0] < AUTOSCALER_EVENTS_S:
        return cached[1]
    try:
        events = pods.autoscaler_events(await memo.kube.events_about(namespace, "Pod", pod))
    except kube.ApiError as exc:  # the status says what the scheduler says, without them
        logger.warning(f"Could not read the Events of pod {namespace}/{pod}: {exc}")
        events = cached[1] if cached else []
    memo.autoscaler_events[(namespace, pod)] = (moment, events)
    return events
