"""One reconcile as data: (resource, observed, inventory, catalog, settings, now) -> Intent. Pure.

The shell (queue.py) gathers an `Observed` snapshot first (the children as the indices hold
them, the model pods, discovery, the Secret check), calls `decide`, and hands the `Intent` to
execute.py, which only carries it out. Every choice of a reconcile is made here, from the
existing pure modules (planner, render, rollout, scaling, cache, status, pods): no kopf, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from . import cache as cache_mod
from . import chat_template
from . import gateway as gateway_mod
from . import ownership, pods, planner, render, rollout, scaling, status, unseen, validation
from .api.v1alpha1 import GROUP, CacheSpec, GemmaDeploymentSpec
from .catalog import Catalog
from .inventory import Inventory
from .intent import Apply, Event, Expand, Intent, Observed, Prune, Wants
from .sentences import sentence

condition = tuple[str, str, str, str]  # (type, status, reason, message)
DIGEST = f"{GROUP}/applied-digest"
# On the Deployment: the optional kinds of CRDs the operator does not watch that it applied last
# (PodMonitoring, ...), so that it deletes them once they must no longer exist.
APPLIED_KINDS = f"{GROUP}/applied-kinds"
WATCHED = ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "PersistentVolumeClaim", "Job")
SHARED = ("PersistentVolumeClaim", "Job")  # cache objects, shared by the deployments of one checkpoint
SHARED_API = {"PersistentVolumeClaim": "v1", "Job": "batch/v1"}
SECRET_RECHECK_S = 30.0  # also: a chat template's ConfigMap missing or refused, fixed out of band
# The gateway's objects without a watch: their applied digests, by these keys.
GATEWAY_DIGESTS = tuple(f"gateway/{kind}" for api, kind in gateway_mod.KINDS if kind not in ("Deployment", "Service"))
# Chart values (as env), read once at start-up into Settings.
COLLECTOR_ENV = "GEMMA_OPERATOR_COLLECTOR"
PROMETHEUS_URL_ENV = "GEMMA_OPERATOR_PROMETHEUS_URL"
ROLLOUT_POLICY_ENV = "GEMMA_OPERATOR_ROLLOUT_POLICY"  # "keep" (default) | "accept"
# The early check that spec.hfTokenSecretRef exists needs `get` on Secrets: off unless the chart
# grants it (secretCheck.enabled). Without it, a missing Secret shows on the pod (SecretNotFound).
SECRET_CHECK_ENV = "GEMMA_OPERATOR_SECRET_CHECK"


@dataclass(frozen=True)
class Settings:
    """The chart's values that shape a reconcile, read once at start-up."""

    collector: str = "auto"
    prometheus_url: str = scaling.PROMETHEUS_URL_DEFAULT
    accept_updates: bool = False  # the chart's rollout policy: "accept"
    cache_defaults: CacheSpec | None = None
    scale_up_budget_s: int = pods.SCALE_UP_BUDGET_S
    secret_check: bool = False
    epp_image: str | None = None  # the chart's gateway.eppImage: overrides the catalog's endpoint picker
    read_gateways: bool = True  # the chart's gateway.readGateways: get the attached Gateway for its address


def settings_from(env: Mapping[str, str]) -> Settings:
    return Settings(
        collector=env.get(COLLECTOR_ENV, "auto"),
        prometheus_url=env.get(PROMETHEUS_URL_ENV, scaling.PROMETHEUS_URL_DEFAULT),
        accept_updates=env.get(ROLLOUT_POLICY_ENV, "keep") == "accept",
        cache_defaults=cache_mod.defaults_from(env.get(cache_mod.DEFAULTS_ENV)),
        scale_up_budget_s=int(env.get(pods.SCALE_UP_BUDGET_ENV) or pods.SCALE_UP_BUDGET_S),
        secret_check=env.get(SECRET_CHECK_ENV, "").lower() in ("1", "true", "yes"),
        epp_image=env.get(gateway_mod.EPP_IMAGE_ENV) or None,
        read_gateways=env.get(gateway_mod.READ_GATEWAYS_ENV, "true").lower() in ("1", "true", "yes"),
    )


def _send(obj: dict[str, Any], live: Mapping[str, Any] | None, **kwargs: Any) -> Apply:
    """A watched child: created when the index has none, else applied (its create's ownership upgraded first)."""
    meta = (live or {}).get("metadata") or {}
    return Apply(obj, "create" if live is None else "apply",
                 upgrade=ownership.upgrade(meta.get("managedFields"), meta.get("resourceVersion")), **kwargs)


# --------------------------------------------------------------------------- small rules
def digest(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def spec_is_new(resource: Mapping[str, Any]) -> bool:
    """The spec changed since the last reconcile wrote status (or it never did)."""
    st = resource.get("status") or {}
    return st.get("observedGeneration") != (resource.get("metadata") or {}).get("generation")


def previous_selection(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The selection already serving this very spec, which the plan should keep (sticky): a new
    spec re-plans from scratch. A chat template refused (its ConfigMap edited) keeps the model serving."""
    st = resource.get("status") or {}
    template = any(c.get("reason") == chat_template.REFUSED for c in st.get("conditions") or [])
    if spec_is_new(resource) or (st.get("phase") in ("NoFit", "Invalid") and not template):
        return None
    return st.get("selection")


def replan_on_pools(resource: Mapping[str, Any], pools: Inventory) -> bool:
    """Whether node pools changing may change this resource's plan: it could not be placed, it
    waits for a scale-up, or its pool went away."""
    st = resource.get("status") or {}
    selection = st.get("selection") or {}
    pool = selection.get("pool")
    waiting = selection.get("capacity") == "scale-up"
    return st.get("phase") == "NoFit" or waiting or bool(pool and pools.by_name(pool) is None)


def waits_for_fill(resource: Mapping[str, Any]) -> bool:
    """A cache object without owners (retained) may be the one this resource waits on: it says so
    in status (filling, failed, or a claim too small), or its status has not caught up with its
    spec yet (a reconcile that created the loader Job may not have written it when the Job finishes)."""
    state = ((resource.get("status") or {}).get("cache") or {}).get("state")
    return state in ("Filling", "Failed", "TooSmall") or spec_is_new(resource)


def owners_to_wake(body: Mapping[str, Any]) -> list[str]:
    """The GemmaDeployments a child's change concerns: its controller; every owner of a shared
    cache object; for KEDA's HPA, the ScaledObject's owner, whose name it carries."""
    owners = (body.get("metadata") or {}).get("ownerReferences") or []
    if body.get("kind") == "HorizontalPodAutoscaler" and not any(r.get("kind") == "GemmaDeployment" for r in owners):
        return [r["name"] for r in owners if r.get("kind") == "ScaledObject"]
    shared = body.get("kind") in SHARED
    return [r["name"] for r in owners if r.get("kind") == "GemmaDeployment" and (r.get("controller") or shared)]


def wants(resource: Mapping[str, Any], settings: Settings) -> Wants:
    name = resource["metadata"]["name"]
    spec = resource.get("spec") or {}
    ref = spec.get("hfTokenSecretRef") or {}
    children = (("Deployment", name), ("Service", name), ("PodDisruptionBudget", name),
                ("HorizontalPodAutoscaler", name), ("HorizontalPodAutoscaler", scaling.keda_hpa_name(name)))  # fmt: skip
    unwatched = tuple(kind for _, kind in scaling.OPTIONAL_KINDS if kind not in WATCHED)
    # The gateway's: its picker's Deployment and Service are watched (pruned once gone from the spec).
    epp = gateway_mod.epp_name(name)
    children += (("Deployment", epp), ("Service", epp))
    unwatched += GATEWAY_DIGESTS
    parents = (spec.get("gateway") or {}).get("parentRefs") or []
    first = parents[0] if parents else None
    target = ((first.get("namespace") or resource["metadata"]["namespace"], first["name"])
              if settings.read_gateways and first and first.get("kind", "Gateway") == "Gateway" and first.get("name")
              else None)  # fmt: skip
    return Wants(children, unwatched, spec.get("autoscaling") is not None or bool(parents),
                 ref.get("name") if settings.secret_check and ref.get("name") else None, target,
                 chat_template.referenced(spec))  # fmt: skip


def _owned_by(obj: Mapping[str, Any], resource: Mapping[str, Any]) -> bool:
    uid = resource["metadata"].get("uid")
    return any(r.get("controller") and r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or [])


def _as_applied(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """The child as the server returns it after the apply: the spec sent, the status it had, the
    generation bumped when the spec changes."""
    live = live or {}
    generation = (live.get("metadata") or {}).get("generation") or 0
    if not rollout.matches(desired["spec"], live.get("spec")):
        generation += 1
    metadata = {**(live.get("metadata") or {}), **desired["metadata"], "generation": generation}
    return {"metadata": metadata, "spec": {**(live.get("spec") or {}), **desired["spec"]},
            "status": live.get("status") or {}}  # fmt: skip


# ------------------------------------------------------------------------------ decide
def not_applied(resource: Mapping[str, Any], outcome: status.Outcome, wanted: int, now: str,
                events: tuple[Event, ...] = (), retry_s: float | None = None) -> Intent:  # fmt: skip
    """An outcome that applies nothing (Invalid, NoFit, a missing Secret, a refusal): status and Events."""
    current = resource.get("status") or {}
    desired = status.compute(outcome, generation=resource["metadata"].get("generation"), wanted_replicas=wanted,
                             observed=status.Observed(), previous=current, now=now)  # fmt: skip
    events += tuple(Event(*e) for e in status.events_for(current, desired))
    return Intent(outcome.kind, events=events, status=status.patch_for(current, desired), retry_s=retry_s)


def refused(resource: Mapping[str, Any], reason: str, delay: float, now: str) -> Intent:
    """The API server refused a request that will not succeed by retrying alone: say why, in
    status and in an Event."""
    message = (
        f"The API server refused the operator's request ({reason}). Fix the cause (a ResourceQuota, an admission "
        f"policy, or the operator's RBAC); the operator retries every {delay:g} s."
    )
    wanted = (resource.get("spec") or {}).get("replicas", 1)
    retries = f"The operator retries applying the children every {delay:g} s."
    return not_applied(resource, status.Outcome("ApplyFailed", message, next_step=retries), wanted, now,
                       (Event("Warning", "ApplyFailed", message),))  # fmt: skip


def decide(resource: Mapping[str, Any], observed: Observed, inventory: Inventory, catalog: Catalog,
           settings: Settings, now: str,
           plan: Callable[..., planner.Plan | planner.NoFit] = planner.plan) -> Intent:  # fmt: skip
    """Everything one reconcile of `resource` should do, as data. `now`: RFC 3339, UTC. `plan`:
    `planner.plan`, or the shell's `planner.PlanCache.plan` (the same answers, memoised)."""
    meta = resource["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    try:
        spec = GemmaDeploymentSpec.model_validate(resource.get("spec") or {})
    except ValidationError as exc:
        # The CRD schema refuses most of this first; this catches what it cannot express.
        where = "; ".join(validation.problems(exc, GemmaDeploymentSpec))
        message = f"Invalid spec: {sentence(where)}"
        return not_applied(resource, status.Outcome("Invalid", message), 0, now,
                           (Event("Warning", "InvalidSpec", message),))  # fmt: skip
    try:
        result = plan(spec, inventory, catalog, previous=previous_selection(resource))
        choice = scaling.Choice()
        if spec.autoscaling is not None and isinstance(result, planner.Plan):
            served = set(observed.served) if observed.served is not None else None
            choice = scaling.choose(spec, served, settings.collector, settings.prometheus_url)
        objects = (render.render(result, name, namespace, spec, owner=dict(resource), choice=choice,
                                 cache_defaults=settings.cache_defaults)
                   if isinstance(result, planner.Plan) else [])  # fmt: skip
    except planner.InvalidSpec as exc:
        message = f"Invalid spec: {sentence(str(exc))}"
        return not_applied(resource, status.Outcome("Invalid", message), spec.replicas, now,
                           (Event("Warning", "InvalidSpec", message),))  # fmt: skip
    if isinstance(result, planner.NoFit):
        return not_applied(resource, status.Outcome("NoFit", result.message), spec.replicas, now,
                           (Event("Warning", "NoFit", result.message),))  # fmt: skip

    selection = result.selection()
    endpoint = render.endpoint(name, namespace, spec)
    gateway_objects, gateway_condition = gateway_mod.wanted(
        meta, spec, result.runtime, [result.served_model_name, *(a.name for a in result.adapters)],
        render.selector_labels(name), render.owner_reference(dict(resource)), observed.served,
        catalog.images["inference-epp"], settings.epp_image)  # fmt: skip
    why = gateway_mod.reason(result.runtime) if spec.gateway is not None else None
    if why and why not in selection.get("reasons", []):  # a sticky selection has it already
        selection = {**selection, "reasons": [*selection.get("reasons", []), why]}
    if gateway_objects:
        endpoint = gateway_mod.gateway_endpoint(dict(observed.gateway or {}), spec) or endpoint
    ref = spec.hf_token_secret_ref
    if ref and observed.secret_exists is False:
        message = (f"Secret {ref.name!r} (spec.hfTokenSecretRef) does not exist in namespace {namespace}: create it "
                   f"with the Hugging Face token under key {ref.key!r}. Nothing is deployed until it exists.")  # fmt: skip
        looks = f"The operator looks for Secret {ref.name!r} again every {SECRET_RECHECK_S:g} s and applies once it exists."
        outcome = status.Outcome("ApplyFailed", message, selection, endpoint, next_step=looks)
        return not_applied(resource, outcome, spec.replicas, now, (Event("Warning", "SecretNotFound", message),),
                           retry_s=SECRET_RECHECK_S)  # fmt: skip
    refused_template = chat_template.refusal(spec, observed.config_map, namespace, SECRET_RECHECK_S)
    if refused_template:  # nothing applied: running pods keep the template they started with
        kind, reason, message, rereads = refused_template
        outcome = status.Outcome(kind, message, selection, endpoint, reason=reason, next_step=rereads)
        return not_applied(resource, outcome, spec.replicas, now, (Event("Warning", reason, message),),
                           retry_s=SECRET_RECHECK_S)  # fmt: skip

    cache = cache_mod.plan_cache(result, spec, settings.cache_defaults)
    claim = _resize(objects, observed)
    if claim.expand:
        answer = observed.expansions.get(claim.claim)
        if answer is None or answer[0] != claim.needed:
            return _ask_expansion(claim, observed)
        claim = claim.answered(answer[1])

    current = resource.get("status") or {}
    old = current.get("selection") or {}
    events: list[Event] = []
    deployment = next(obj for obj in objects if obj["kind"] == "Deployment")
    chat_template.stamp(deployment["spec"]["template"], spec, observed.config_map)
    update, rolls_out = _keep_or_roll(resource, spec, deployment, observed.children.get(("Deployment", name)),
                                      selection, settings)  # fmt: skip
    if update:  # the pods keep the template they run: the selection names the image they run
        selection = {**selection, "image": rollout.running_image(deployment["spec"]["template"])}
    reported = next((c for c in current.get("conditions") or [] if c.get("type") == update[0]),
                    {}) if update else {}  # fmt: skip
    if update and reported.get("message") != update[3]:  # once per new rendering, not per reconcile
        events.append(Event("Normal", "UpdateAvailable", update[3]))

    claims, prunes, jobs = _claims(resource, objects, observed, fill=not claim.too_small)
    state, fill_message = cache_mod.fill(cache, result, jobs, claim) if cache.filled else (None, "")
    cache_status = cache.status(state, fill_message)
    if rolls_out and not cache_mod.deployment_waits(cache_status):  # announced when the Deployment is sent
        events.insert(0, Event("Normal", "RollingOut",
                                f"Replacing the model pods; first change: {chat_template.named(rolls_out, spec)}."))
    objects = [obj for obj in objects if obj["kind"] not in SHARED]
    prunes += _prunes(resource, objects, observed)
    applies, after = _applies(resource, objects, observed, cache_status)
    prunes += _gateway_prunes(resource, gateway_objects, observed)
    applies += _gateway_applies(resource, gateway_objects, observed)

    if cache_status and cache_status.get("state") == "Failed":
        events.append(Event("Warning", "CacheFillFailed", cache_status["message"]))
    plans, notes = (), ()
    summary = (f"Serving {result.model_id} ({result.quantization}) with {result.runtime} on {result.pool.accelerator}"
               f" x{result.accelerator_count}")  # fmt: skip
    if planner.replans(old, selection):
        plans = ((result.runtime, result.pool.accelerator, result.quantization),)
        notes = (f"{summary}, context {result.max_model_len}.",)
        if old:  # a re-plan; the first plan is in status.selection and the Ready Event
            events.append(Event("Normal", "Planned", notes[0]))
        warning = planner.token_warning(result, spec)
        if warning:
            events.append(Event("Warning", "TokenMissing", warning))
    hpa_name = scaling.keda_hpa_name(name) if choice.provider == "keda" else name
    hpa = observed.children.get(("HorizontalPodAutoscaler", hpa_name)) if spec.autoscaling else None
    wanted = scaling.desired_replicas(spec, after.get("Deployment"), hpa)
    extra = [*scaling.autoscaler_conditions(spec, choice, hpa, scaling.signal(spec, result)),
             scaling.disruption_condition(spec), *([update] if update else []),
             *([gateway_condition] if gateway_condition else [])]  # fmt: skip
    scale = {"desiredReplicas": wanted, "selector": ",".join(f"{k}={v}" for k, v in render.selector_labels(name).items())}
    model_pods = tuple(unseen.counted(observed.pods, observed.gone_pods))  # a pod deleted unseen counts no more
    children = status.Observed(after.get("Deployment"), after.get("Service"), model_pods, settings.scale_up_budget_s)
    outcome = status.Outcome("Applied", selection=selection, endpoint=endpoint, cache=cache_status)
    desired = status.compute(outcome, generation=meta.get("generation"), wanted_replicas=wanted, observed=children,
                             previous=current, now=now, extra=extra, scale=scale)  # fmt: skip
    events += [Event(*e) for e in status.events_for(current, desired)]
    phase = {**current, **desired}.get("phase")
    blocked = children.pod_state(now, selection) if phase != "Ready" else None
    if phase == "Ready" and current.get("phase") != "Ready":
        events.append(Event("Normal", "Ready", f"{summary}: {wanted} replica(s) ready at {endpoint}."))
    fill = cache_status if (cache_status or {}).get("state") in ("Filling", "Failed", "TooSmall") else None
    return Intent("Applied", claims, prunes, applies, tuple(events), status.patch_for(current, desired),
                  blocked.recheck_s if blocked else None, None, fill, plans, notes)  # fmt: skip


def _keep_or_roll(resource: Mapping[str, Any], spec: GemmaDeploymentSpec, deployment: dict[str, Any],
                  live: Mapping[str, Any] | None, selection: Mapping[str, Any],
                  settings: Settings) -> tuple[condition | None, str | None]:  # fmt: skip
    """Give the desired Deployment the pod template rollout.decide picks. Returns the
    UpdateAvailable condition when it keeps the live one although the operator now renders
    another, and the first change when the new template replaces a different live one."""
    meta = resource["metadata"]
    st = resource.get("status") or {}
    old = st.get("selection") or {}
    # A Deployment of an earlier release: rendered for this spec if it was reconciled and the plan
    # chose the same (keys an earlier release did not report are not compared).
    legacy_current = (st.get("observedGeneration") == meta.get("generation") and bool(old)
                      and all(selection.get(k) == v for k, v in rollout.choice(old).items()))  # fmt: skip
    accept = settings.accept_updates if spec.accept_operator_updates is None else spec.accept_operator_updates
    shaping = chat_template.shaping(spec.model_dump(by_alias=True, exclude_defaults=True), deployment["spec"]["template"])
    rendered_for = rollout.spec_hash(shaping, selection)
    decision = rollout.decide(live, deployment["spec"]["template"], rendered_for, accept=accept,
                              legacy_current=legacy_current)  # fmt: skip
    deployment["spec"]["template"] = decision.template
    deployment["metadata"].setdefault("annotations", {})[rollout.TEMPLATE_FOR] = decision.template_for
    if decision.update_available is None:
        return None, decision.rolls_out
    message = (f"This operator version renders a different pod template; the running pods keep theirs "
               f"(first change: {decision.update_available}). Set spec.acceptOperatorUpdates: true to roll it out.")
    return ("UpdateAvailable", "True", "OperatorRenderingChanged", message), None


def _resize(objects: list[dict[str, Any]], observed: Observed) -> cache_mod.Resize:
    """The live cache claim against the one rendered now (a catalog size may have grown since)."""
    desired = next((obj for obj in objects if obj["kind"] == "PersistentVolumeClaim"), None)
    if desired is None:
        return cache_mod.Resize("none")
    return cache_mod.resize(observed.shared.get(("PersistentVolumeClaim", desired["metadata"]["name"])), desired)


def _ask_expansion(claim: cache_mod.Resize, observed: Observed) -> Intent:
    """A claim smaller than the checkpoint: ask to expand it before anything else, since the answer
    decides the fill, whether the Deployment waits, and the status. Nothing else is done on this
    pass (no half-decided status to take back); the next, at once, decides on the answer."""
    live = observed.shared[("PersistentVolumeClaim", claim.claim)]
    ask = Expand(claim.claim, claim.needed, live["metadata"]["resourceVersion"])
    note = f"Cache claim {claim.claim} requests {claim.requested}; asking to expand it to {claim.needed}."
    return Intent("Asked", retry_s=0.0, notes=(note,), expands=(ask,))


def _claims(resource: Mapping[str, Any], objects: list[dict[str, Any]], observed: Observed,
            fill: bool = True) -> tuple[tuple[Apply, ...], tuple[Prune, ...], dict[str, Any]]:  # fmt: skip
    """Create the cache objects, or join their owners (never re-applied: a claim's and a Job's spec
    are fixed once created, and other deployments own them too); leave the ones no longer used to
    their other owners, or delete them when this was the last (as garbage collection would).
    Without `fill` (the claim is too small for the checkpoint), the Jobs are left alone.
    Returns the claims, the prunes and the live Jobs (loader, adapters) by name."""
    claims, jobs = [], {}
    new_spec = spec_is_new(resource)
    for obj in objects:
        if obj["kind"] not in SHARED or (obj["kind"] == "Job" and not fill):
            continue
        meta = obj["metadata"]
        live = observed.shared.get((obj["kind"], meta["name"]))
        if live is None:  # another owner's create first: 409, retried, then joined
            claims.append(Apply(obj, "create", confirm_owner=not new_spec))
        else:
            owners = cache_mod.owners_joined(live["metadata"].get("ownerReferences") or [],
                                             meta.get("ownerReferences") or [])  # fmt: skip
            if owners is not None:  # joining an owner deleted meanwhile would leave a dangling reference
                claims.append(Apply(obj, "join", confirm_owner=True, owners=tuple(owners),
                                    resource_version=live["metadata"]["resourceVersion"]))  # fmt: skip
        if obj["kind"] == "Job":
            jobs[meta["name"]] = live
    desired = {(o["kind"], o["metadata"]["name"]) for o in objects if o["kind"] in SHARED}
    prunes = []
    uid = resource["metadata"].get("uid")
    for (kind, name), live in sorted(observed.shared.items(), key=lambda item: item[0]):
        if (kind, name) in desired:
            continue
        others = cache_mod.owners_left(live["metadata"].get("ownerReferences") or [], uid)
        if others is None:
            continue
        shared = live["metadata"]
        prunes.append(Prune(SHARED_API[kind], kind, name, "leave" if others else "delete", shared.get("uid"),
                            shared.get("resourceVersion"), tuple(others)))  # fmt: skip
    return tuple(claims), tuple(prunes), jobs


def _prunes(resource: Mapping[str, Any], objects: list[dict[str, Any]], observed: Observed) -> tuple[Prune, ...]:
    """The owned optional children that must no longer exist."""
    name = resource["metadata"]["name"]
    wanted = {(obj["apiVersion"], obj["kind"]) for obj in objects}
    deployment = observed.children.get(("Deployment", name)) or {}
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    listed = set(filter(None, annotations.get(APPLIED_KINDS, "").split(",")))
    prunes = []
    for api_version, kind in scaling.OPTIONAL_KINDS:
        if (api_version, kind) in wanted:
            continue
        if kind in WATCHED:
            live = observed.children.get((kind, name))
            if live is None or not _owned_by(live, resource):
                continue
            prunes.append(Prune(api_version, kind, name, uid=live["metadata"].get("uid")))
        elif kind in listed:  # applied by the operator (recorded on the Deployment), not watched
            prunes.append(Prune(api_version, kind, name))
    return tuple(prunes)


def _applies(resource: Mapping[str, Any], objects: list[dict[str, Any]], observed: Observed,
             cache_status: Mapping[str, Any] | None) -> tuple[tuple[Apply, ...], dict[str, Any]]:  # fmt: skip
    """The children that differ from the live ones, and every child as it will be after applying.

    A child is current when it carries the digest of exactly this desired object (so fields the
    plan dropped are noticed) and still has every value the operator sets (so hand edits are).
    Kinds without a watch are applied when their desired digest changes. With a filled cache, the
    Deployment waits (is not applied) until the loader Job completes.
    """
    new_spec = spec_is_new(resource)
    unwatched = sorted(obj["kind"] for obj in objects if obj["kind"] not in WATCHED)
    applies, after = [], {}
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] == "Deployment" and unwatched:
            meta.setdefault("annotations", {})[APPLIED_KINDS] = ",".join(unwatched)
        meta.setdefault("annotations", {})[DIGEST] = digest(obj)
        if obj["kind"] not in WATCHED:
            if observed.applied_digests.get(obj["kind"]) != meta["annotations"][DIGEST]:
                applies.append(Apply(obj, digest=meta["annotations"][DIGEST]))
            continue
        live = observed.children.get((obj["kind"], meta["name"]))
        if obj["kind"] == "Deployment" and cache_mod.deployment_waits(cache_status):
            after["Deployment"] = live  # waits for the fill; one serving from another cache keeps serving
            continue
        if live is None or not (rollout.matches(obj["metadata"], live.get("metadata"))
                                and rollout.matches(obj["spec"], live.get("spec"))):  # fmt: skip
            replicas = ((live or {}).get("spec") or {}).get("replicas")
            handover = None
            if obj["kind"] == "Deployment" and "replicas" not in obj["spec"] and isinstance(replicas, int):
                handover = replicas  # autoscaled: the count stays the autoscaler's (see kube.HANDOVER)
            # A child that vanished because its owner did is garbage collection, not drift.
            applies.append(_send(obj, live, confirm_owner=live is None and not new_spec, handover_replicas=handover))
            after[obj["kind"]] = _as_applied(obj, live)
        else:
            after[obj["kind"]] = live
    return tuple(applies), after


# ----------------------------------------------------------------------------- gateway
def _gateway_key(obj: Mapping[str, Any]) -> str | None:
    """The digest key of a gateway object without a watch; None for the watched picker Deployment and Service."""
    return None if obj["kind"] in ("Deployment", "Service") else f"gateway/{obj['kind']}"


def _gateway_applies(resource: Mapping[str, Any], objects: list[dict[str, Any]],
                     observed: Observed) -> tuple[Apply, ...]:  # fmt: skip
    """The gateway objects that differ from what was applied (watched: from the live one)."""
    new_spec = spec_is_new(resource)
    applies = []
    for obj in objects:
        meta = obj["metadata"]
        meta.setdefault("annotations", {})[DIGEST] = digest(obj)
        key = _gateway_key(obj)
        if key is not None:
            if observed.applied_digests.get(key) != meta["annotations"][DIGEST]:
                applies.append(Apply(obj, digest=meta["annotations"][DIGEST], digest_key=key))
            continue
        live = observed.children.get((obj["kind"], meta["name"]))
        if live is None or not (rollout.matches(meta, live.get("metadata"))
                                and rollout.matches(obj["spec"], live.get("spec"))):  # fmt: skip
            applies.append(_send(obj, live, confirm_owner=live is None and not new_spec))
    return tuple(applies)


def _gateway_prunes(resource: Mapping[str, Any], objects: list[dict[str, Any]],
                    observed: Observed) -> tuple[Prune, ...]:  # fmt: skip
    """Without gateway objects wanted: delete the ones applied, when the picker's Deployment (watched)
    or a recorded digest shows the gateway was there, the route first."""
    if objects:
        return ()
    epp = gateway_mod.epp_name(resource["metadata"]["name"])
    live = {kind: observed.children.get((kind, epp)) for kind in ("Deployment", "Service")}
    live = {kind: obj for kind, obj in live.items() if obj is not None and _owned_by(obj, resource)}
    if not live and not any(key in observed.applied_digests for key in GATEWAY_DIGESTS):
        return ()
    name = resource["metadata"]["name"]
    prunes = []
    for api_version, kind in reversed(gateway_mod.KINDS):
        if kind in ("Deployment", "Service"):
            if kind in live:
                prunes.append(Prune(api_version, kind, epp, uid=live[kind]["metadata"].get("uid")))
            continue
        target = name if kind in ("InferencePool", "HTTPRoute") else epp
        prunes.append(Prune(api_version, kind, target, digest_key=f"gateway/{kind}"))
    return tuple(prunes)
