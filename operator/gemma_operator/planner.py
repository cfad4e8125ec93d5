"""The decision: (spec, pools, catalog) -> Plan with reasons, or NoFit. Pure; no I/O.

It follows Google's "run Gemma" guidance: the latest core family, instruction-tuned,
the smallest size; 16-bit first and quantized only when memory demands it (4-bit GGUF
on CPUs); vLLM on GPUs and TPUs, llama.cpp on CPUs and on GPUs vLLM cannot use.

One decision per module, each pure: `request` (which models the spec asks for), `fitting` (one
model on one pool), `ranking` (the best of the pools that fit), `reasons` (why, in sentences);
`plans` holds what they return. This module walks them in that order, keeps a serving plan on
its pool, and suggests the nearest change when nothing fits.
"""

from __future__ import annotations

import json
from dataclasses import replace

from . import adapters, capacity, objective
from .api.v1alpha1 import GemmaDeploymentSpec
from .catalog import Catalog, gke_aliases
from .fitting import Attempt, try_pool
from .inventory import Inventory, Pool
from .plans import RUNTIME_NAMES, InvalidSpec, NoFit, Plan, Suggestion, and_join, replans, token_warning
from .ranking import prefer_ready, rank
from .reasons import Context, by_length, explain
from .request import Model, check_static, latest_core, resolve_accelerator, resolve_models

# The planner's API; the decision's parts live in request, fitting, ranking and reasons.
__all__ = ["InvalidSpec", "NoFit", "Plan", "PlanCache", "gke_aliases", "plan", "replans", "resolve_models",
           "token_warning"]


def _pools_for(spec: GemmaDeploymentSpec, inventory: Inventory) -> tuple[list[Pool], str]:
    if spec.accelerator == "auto":
        return list(inventory.pools), "auto"
    chosen = [p for p in inventory.pools if p.accelerator == spec.accelerator]
    return chosen, spec.accelerator


def plan(spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog,
         previous: dict | None = None) -> Plan | NoFit:  # fmt: skip
    """Choose model, quantization, runtime, pool, parallelism and context; raise InvalidSpec for bad specs.

    `previous` is the selection already serving this same spec. While its pool exists the plan
    stays on it: nodes coming or going elsewhere never move (and so restart) a running model.
    The first fitting size on that pool is the one chosen before, so an unchanged pool gives an
    unchanged plan, and its explanation is kept as it was.

    A NoFit carries suggestions: the single changes to the spec that would plan.
    """
    result = _plan_held(spec, inventory, catalog, previous)
    if isinstance(result, Plan) and result.adapters:
        check_adapters(result)
        why = adapters.reason(result.adapters, result.runtime, result.adapter_gib)
        if why not in result.reasons:
            result = replace(result, reasons=result.reasons + (why,))
    return result


def check_adapters(result: Plan) -> None:
    """An adapter must be made for the served base and must not take its name."""
    if clash := adapters.name_clash(result.adapters, result.served_model_name):
        raise InvalidSpec(f"adapters[{clash[0]}].name", f"{clash[1].name} is the base model's served name; name the adapter apart")
    if wrong := adapters.base_mismatch(result.adapters, (result.base_id, result.model_id)):
        i, adapter = wrong
        raise InvalidSpec(f"adapters[{i}].baseModel", f"adapter {adapter.name} is made for {adapter.base_model}, but the plan "
                          f"serves {result.base_id}: set spec.model.id (or family and size) to its base, or drop it")


def _plan_held(spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog,
               previous: dict | None = None) -> Plan | NoFit:  # fmt: skip
    name, alias = resolve_accelerator(spec.accelerator, catalog, inventory)
    if name != spec.accelerator:
        spec = spec.model_copy(update={"accelerator": name})
    held = (inventory.by_name(previous.get("pool", "")) or _standard_with_nodes(previous["pool"], spec, inventory, catalog, alias)
            if previous else None)  # fmt: skip
    if held:
        pinned = Inventory([held], inventory.skipped)
        result = _plan_fresh(spec, pinned, catalog, alias)
        if isinstance(result, Plan):
            same = {k: v for k, v in result.selection().items() if k not in ("reasons", "predicted")}
            if same == {k: v for k, v in previous.items() if k not in ("reasons", "predicted")}:
                return replace(result, reasons=tuple(previous.get("reasons", ())))
            return result
    result = _plan_fresh(spec, inventory, catalog, alias)
    if isinstance(result, NoFit):
        result = replace(result, suggestions=result.suggestions + _suggestions(spec, inventory, catalog))
    return result


class PlanCache:
    """`plan` memoised by (spec, the inventory object, the previous selection).

    `plan` is pure, and a burst of resources with one spec on one set of pools asks it the same
    question again and again (bench/README.md: -1 s of the operator's CPU at N=1000). The shell
    renews an inventory when nodes or declared capacity change, and then calls `clear`; a plan for
    an inventory that is not the one asked about is never returned. Plans are frozen and shared:
    nothing downstream may change one (tests/unit/test_decide.py pins that a render does not).
    """

    SIZE = 4096  # entries (one per distinct spec and previous selection) before all are dropped

    def __init__(self, size: int = SIZE) -> None:
        self.size = size  # 0: no caching (a benchmark's A/B)
        self._plans: dict[tuple[int, int, str, str], tuple[Inventory, Catalog, Plan | NoFit]] = {}

    def plan(self, spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog,
             previous: dict | None = None) -> Plan | NoFit:  # fmt: skip
        if not self.size:
            return plan(spec, inventory, catalog, previous)
        key = (id(inventory), id(catalog), spec.model_dump_json(), json.dumps(previous, sort_keys=True))
        hit = self._plans.get(key)
        if hit is not None and hit[0] is inventory and hit[1] is catalog:  # not an id reused by a new object
            return hit[2]
        result = plan(spec, inventory, catalog, previous)  # InvalidSpec is raised again each time
        if len(self._plans) >= self.size:
            self._plans.clear()
        self._plans[key] = (inventory, catalog, result)
        return result

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)


def _standard_with_nodes(name: str, spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog,
                         alias: str | None) -> Pool | None:
    """The standard shape a serving plan was made on, with the nodes of that device that have come
    since: the plan (and so the pod) stays as it is, and its capacity turns ready."""
    if spec.accelerator == "auto":
        return None
    standard = capacity.standard_pool(spec.accelerator, alias, catalog)
    if standard is None or standard.name != name:
        return None
    nodes = {node for pool in inventory.pools if pool.accelerator == standard.accelerator and pool.source == "nodes"
             and pool.devices_per_node >= standard.devices_per_node
             and all(pool.node_selector.get(k, v) == v for k, v in standard.node_selector.items())
             for node in pool.nodes}  # fmt: skip
    return replace(standard, nodes=tuple(sorted(nodes)))


def _plan_fresh(spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog, alias: str | None) -> Plan | NoFit:
    models, reasons, too_short = resolve_models(spec, catalog)
    check_static(spec, catalog, models)
    pools, wanted = _pools_for(spec, inventory)
    available = tuple(p.describe() for p in inventory.pools)
    skipped = tuple(inventory.skipped)
    family = models[0].family
    if not family.servable:
        # In the catalog so that asking for it says why, not "unknown family".
        why = " ".join(f"{RUNTIME_NAMES[name]}: {support.notes.strip()}" for name, support in family.runtimes.items())
        return NoFit(f"No runtime gemma-operator pins can serve {models[0].family_key} ({family.display_name}). {why}",
                     available, skipped=skipped)  # fmt: skip
    if not pools and wanted != "auto":
        # Named, but no node carries it and no pool is declared: the catalog's standard GKE shape,
        # which the cluster autoscaler or node auto-provisioning adds when the pod asks for it.
        standard = capacity.standard_pool(wanted, alias, catalog)
        pools = [standard] if standard else []
    if not pools:
        what = "schedulable nodes" if wanted == "auto" else f"{wanted} nodes"
        what += f" (GKE label value {alias})" if alias else ""
        return NoFit(f"No {what} to serve {models[0].served_name} on.", available, skipped=skipped)

    skipped_sizes: list[str] = []
    tried: list[tuple[Model, list[Attempt]]] = []
    missed: list = []  # plans that fit but are predicted to miss spec.objective (objective.py)
    cheap: list = []  # sizePolicy cheapest: every size's plans, chosen from below
    for model in models:
        attempts = [try_pool(model, pool, spec, catalog) for pool in pools]
        fits = sorted((a.plan for a in attempts if a.plan), key=lambda p: rank(p, catalog))
        fits, lost = objective.meeting(spec, fits, catalog)
        missed += lost
        if fits and spec.model.size_policy == "cheapest":
            cheap.append((model, attempts, fits))
            continue
        if fits:
            best = prefer_ready(fits)
            chosen = next(a for a in attempts if a.plan is best)
            context = Context(reasons, skipped_sizes, too_short, skipped, alias, catalog)
            others = [p for p in fits if p is not best]
            return objective.annotate(explain(best, model, spec, context, others, attempts, chosen), spec, catalog,
                                      others=others)  # fmt: skip
        skipped_sizes.append(model.size_key)
        tried.append((model, attempts))
    if cheap:
        model, attempts, best, ranking = objective.cheapest(cheap, spec, catalog)
        chosen = next(a for a in attempts if a.plan is best)
        context = Context(reasons, skipped_sizes, too_short, skipped, alias, catalog)
        others = [p for m, _, fits in cheap if m is model for p in fits if p is not best]
        return objective.annotate(explain(best, model, spec, context, others, attempts, chosen), spec, catalog, ranking)
    if missed:
        needed, unmet, changes = objective.unmet(spec, missed)
        return NoFit(needed, available, unmet, skipped, tuple(Suggestion(*change) for change in changes))
    model = models[-1]
    details = []
    for each, attempts in tried:
        where = f"{each.size_key} on " if len(models) > 1 else ""
        details += [f"{where}{a.pool.name}: {'; '.join(a.why_not) or 'no way to serve it'}." for a in attempts]
    details += [f"{and_join(sizes)}: context stops at {length} tokens, below maxModelLen {spec.max_model_len}."
                for length, sizes in by_length(too_short).items()]  # fmt: skip
    sizes = f"any {model.family_key} size ({', '.join(skipped_sizes)})" if len(models) > 1 else f"{model.served_name}"
    return NoFit(f"Nothing fits {sizes}.", available, tuple(details), skipped)


def _summary(result: Plan) -> str:
    return (f"{result.model_id}, {result.runtime} {result.quantization} on {result.pool.name}, "
            f"{result.max_model_len} tokens")  # fmt: skip


def _suggestions(spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog) -> tuple[Suggestion, ...]:
    """The single changes to the spec that would plan, nearest first: keep the model the user named
    (its precision, runtime, context, accelerator), and only then a smaller size."""

    def fits(**changes) -> Plan | None:
        relaxed = spec.model_copy(update=changes)
        try:
            result = _plan_fresh(relaxed, inventory, catalog, None)
        except InvalidSpec:
            return None
        return result if isinstance(result, Plan) else None

    found: list[Suggestion] = []
    if spec.quantization != "auto" and (got := fits(quantization="auto")):
        found.append(Suggestion("spec.quantization", got.quantization, _summary(got)))
    if spec.runtime != "auto" and (got := fits(runtime="auto")):
        found.append(Suggestion("spec.runtime", got.runtime, _summary(got)))
    if spec.max_model_len and (got := fits(max_model_len=None)) and got.max_model_len < spec.max_model_len:
        found.append(Suggestion("spec.maxModelLen", got.max_model_len, _summary(got)))
    if spec.accelerator != "auto" and (got := fits(accelerator="auto")):
        found.append(Suggestion("spec.accelerator", got.pool.accelerator, _summary(got)))
    m = spec.model
    if m.size != "auto" and not m.id:
        family = catalog.families.get(m.family if m.family != "auto" else latest_core(catalog))
        asked = family.sizes.get(m.size) if family else None
        if family and asked:
            smaller = sorted((s for s, size in family.sizes.items() if size.params_b < asked.params_b and m.tuning in size.ids),
                             key=lambda s: family.sizes[s].params_b, reverse=True)  # fmt: skip
            for size in smaller:
                if got := fits(model=m.model_copy(update={"size": size})):
                    found.append(Suggestion("spec.model.size", size, _summary(got)))
                    break
    return tuple(found)
