"""Service objectives and sizePolicy cheapest over the planner's candidate plans. Pure.

The planner hands each size's fitting plans here (ranked its own way). With `spec.objective`, only
plans predicted to meet it are kept; with `sizePolicy: cheapest`, the plan with the lowest predicted
cost per million output tokens is chosen among all sizes, counting the replicas the concurrency needs.
Every selection carries its prediction (`status.selection.predicted`): for the objective's workload,
or performance.DEFAULT_WORKLOAD without one.

An embedding plan (task embed) generates no tokens: its objective is promptTokens (input tokens a
request), concurrency and ttftSeconds read as the whole request's latency (request.check_static refuses
outputTokens and outputTokensPerSecond), its prediction is performance.EmbedPrediction, and cheapest
ranks by the predicted cost per million input tokens at full load.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import performance
from .performance import EmbedPrediction, Prediction, Workload

if TYPE_CHECKING:
    from .api.v1alpha1 import GemmaDeploymentSpec, Objective
    from .catalog import Catalog
    from .plans import Plan


def workload(spec: GemmaDeploymentSpec) -> Workload:
    o = spec.objective
    embed = spec.model.task == "embed"
    if o is None:
        return performance.DEFAULT_EMBED_WORKLOAD if embed else performance.DEFAULT_WORKLOAD
    return Workload(prompt_tokens=o.prompt_tokens, output_tokens=0 if embed else o.output_tokens or 0,
                    concurrency=o.concurrency)  # fmt: skip


def _describe(spec: GemmaDeploymentSpec, predicted: Prediction | EmbedPrediction) -> str:
    return predicted.describe() if isinstance(predicted, EmbedPrediction) else workload(spec).describe()


def _embed_misses(plan: Plan, predicted: EmbedPrediction, objective: Objective) -> list[str]:
    out = []
    if plan.max_model_len < predicted.input_tokens:
        out.append(f"its context of {plan.max_model_len} tokens is shorter than {predicted.input_tokens}")
    latency = predicted.latency_seconds_at_concurrency
    if objective.ttft_seconds is not None and latency > objective.ttft_seconds:
        out.append(f"request latency {latency:.3f} s > {objective.ttft_seconds:g} s")
    return out


def misses(plan: Plan, predicted: Prediction | EmbedPrediction, objective: Objective) -> list[str]:
    """What keeps a plan from the objective, in words with the numbers; empty when it meets it."""
    if isinstance(predicted, EmbedPrediction):
        return _embed_misses(plan, predicted, objective)
    out = []
    length = objective.prompt_tokens + (objective.output_tokens or 0)
    if plan.max_model_len < length:
        out.append(f"its context of {plan.max_model_len} tokens is shorter than {length}")
    elif predicted.max_concurrency == 0:
        out.append(f"not one sequence of {length} tokens fits its KV cache")
    if objective.ttft_seconds is not None and predicted.ttft_seconds > objective.ttft_seconds:
        out.append(f"time to first token {predicted.ttft_seconds:.2f} s > {objective.ttft_seconds:g} s")
    wanted = objective.output_tokens_per_second
    if wanted is not None and predicted.tokens_per_second_per_user < wanted:
        out.append(f"{predicted.tokens_per_second_per_user:.1f} output tokens/s per user < {wanted:g}")
    return out


def _cost_of(predicted: Prediction | EmbedPrediction) -> float | None:
    """What cheapest ranks by: per million output tokens at the workload (chat), per million input
    tokens at full load (embeddings)."""
    if isinstance(predicted, EmbedPrediction):
        return predicted.cost_per_million_input_tokens
    return predicted.cost_per_million_tokens


def _cost(predicted: Prediction | EmbedPrediction) -> float:
    cost = _cost_of(predicted)
    return math.inf if cost is None else cost


def meeting(spec: GemmaDeploymentSpec, fits: list[Plan], catalog: Catalog) -> tuple[list[Plan], list[tuple[Plan, Prediction, list[str]]]]:
    """The plans predicted to meet spec.objective (all of them without one), and the others with why not."""
    if spec.objective is None:
        return fits, []
    kept, missed = [], []
    for plan in fits:
        predicted = performance.predict(plan, workload(spec), catalog)
        why = misses(plan, predicted, spec.objective)
        if why:
            missed.append((plan, predicted, why))
        else:
            kept.append(plan)
    return kept, missed


def cheapest(candidates: list[tuple[Any, Any, list[Plan]]], spec: GemmaDeploymentSpec,
             catalog: Catalog) -> tuple[Any, Any, Plan, list[tuple[Plan, Prediction]]]:  # fmt: skip
    """Among every size's fitting plans, the lowest predicted cost per million output tokens (unpriced
    last; ties: the planner's own order). Returns the model and attempts it came from, the plan, and
    the other candidates with their predictions, cheapest first."""
    ranked: list[tuple[float, int, Any, Any, Plan, Prediction]] = []
    order = 0
    for model, attempts, fits in candidates:
        for plan in fits:
            predicted = performance.predict(plan, workload(spec), catalog)
            ranked.append((_cost(predicted), order, model, attempts, plan, predicted))
            order += 1
    ranked.sort(key=lambda r: (r[0], r[1]))
    _, _, model, attempts, best, _ = ranked[0]
    return model, attempts, best, [(r[4], r[5]) for r in ranked[1:]]


def _where(plan: Plan) -> str:
    return f"{plan.size} {plan.quantization} on {plan.pool.name}"


def _cost_text(predicted: Prediction | EmbedPrediction) -> str:
    cost = _cost_of(predicted)
    if cost is None:
        return "no price"
    if isinstance(predicted, EmbedPrediction):
        return f"${cost:.4f}"
    replicas = f" ({predicted.replicas} replicas)" if predicted.replicas > 1 else ""
    return f"${cost:.2f}{replicas}"


def _replicas_reason(spec: GemmaDeploymentSpec, predicted: Prediction | EmbedPrediction, per_pass: str) -> list[str]:
    """When the objective needs more replicas than spec.replicas (and no autoscaling sets them), the
    sentence that says so; `per_pass` names what one replica serves at once."""
    if predicted.replicas <= spec.replicas or spec.autoscaling is not None:
        return []
    return [
        f"Replicas: the objective's {spec.objective.concurrency} concurrent requests need {predicted.replicas} replicas "
        f"({predicted.max_concurrency} {per_pass} each); spec.replicas is {spec.replicas}."
    ]


def _next_text(ranking: list[tuple[Plan, Prediction | EmbedPrediction]]) -> str:
    """The runners-up of a cheapest ranking (up to four), as the Cost reason's tail."""
    rest = [f"{_where(p)} {_cost_text(pr)}" for p, pr in ranking][:4]
    return f"; next: {', '.join(rest)}" if rest else ""


def _embed_reasons(plan: Plan, spec: GemmaDeploymentSpec, predicted: EmbedPrediction,
                   ranking: list[tuple[Plan, Prediction | EmbedPrediction]] | None, others: list[Plan],
                   catalog: Catalog) -> list[str]:  # fmt: skip
    """An embedding plan's objective, replicas and cost, in numbers."""
    out = []
    o = spec.objective
    if o is not None:
        latency = predicted.latency_seconds_at_concurrency
        met = f"met (request latency {latency:.3f} s <= {o.ttft_seconds:g} s)" if o.ttft_seconds else "no latency target set"
        out.append(f"Objective: {met}; {predicted.summary()}.")
        out += _replicas_reason(spec, predicted, "inputs per forward pass")
    if ranking is not None:
        tail = _next_text(ranking)
        out.append(
            f"Cost: {_where(plan)} has the lowest predicted cost per million input tokens at full load "
            f"({_cost_text(predicted)}, at ${predicted.price_per_hour or 0:.4f}/h a replica, "
            f"{predicted.input_tokens_per_second:.0f} input tokens/s) (sizePolicy cheapest){tail}."
        )
    elif others and predicted.price_per_hour is not None:
        # The default ranking (a CPU pool first) in prices: with no load stated, the bill per hour decides.
        theirs = [(p, performance.predict(p, predicted.workload, catalog)) for p in others]
        priced = sorted(((p, pr) for p, pr in theirs if pr.price_per_hour is not None), key=lambda e: e[1].price_per_hour)
        if priced:
            other, pr = priced[0]
            out.append(
                f"Price: {plan.pool.name} costs ${predicted.price_per_hour:.4f}/h a replica against "
                f"${pr.price_per_hour:.4f}/h on {other.pool.name}, the cheapest other pool that fits; at full load "
                f"{_cost_text(predicted)} against {_cost_text(pr)} per million input tokens "
                f"({predicted.input_tokens_per_second:.0f} against {pr.input_tokens_per_second:.0f} input tokens/s): "
                "sizePolicy cheapest ranks by that."
            )
    return out


def annotate(plan: Plan, spec: GemmaDeploymentSpec, catalog: Catalog,
             ranking: list[tuple[Plan, Prediction]] | None = None, others: list[Plan] = ()) -> Plan:  # fmt: skip
    """The chosen plan with its prediction in the selection, and, with an objective or sizePolicy
    cheapest, reasons that say why in numbers. An embedding plan's reasons also price it against
    `others` (the pools it won over)."""
    predicted = performance.predict(plan, workload(spec), catalog)
    reasons = list(plan.reasons)
    if isinstance(predicted, EmbedPrediction):
        reasons += _embed_reasons(plan, spec, predicted, ranking, list(others), catalog)
    elif spec.objective is not None:
        o = spec.objective
        targets = [f"time to first token {predicted.ttft_seconds:.2f} s <= {o.ttft_seconds:g} s"] if o.ttft_seconds else []
        if o.output_tokens_per_second:
            targets.append(f"{predicted.tokens_per_second_per_user:.1f} output tokens/s per user >= {o.output_tokens_per_second:g}")
        met = f"met ({', '.join(targets)})" if targets else "no speed target set"
        reasons.append(f"Objective {workload(spec).describe()}: {met}; {predicted.summary()}.")
        reasons += _replicas_reason(spec, predicted, "sequences")
    if ranking is not None and not isinstance(predicted, EmbedPrediction):
        tail = _next_text(ranking)
        reasons.append(
            f"Cost: {_where(plan)} has the lowest predicted cost per million output tokens "
            f"({_cost_text(predicted)}, at ${predicted.price_per_hour or 0:.2f}/h a replica, "
            f"{predicted.tokens_per_second:.0f} output tokens/s in total) (sizePolicy cheapest){tail}."
        )
    return replace(plan, predicted=predicted.as_status(), reasons=tuple(reasons))


def unmet(spec: GemmaDeploymentSpec, missed: list[tuple[Plan, Prediction, list[str]]]) -> tuple[str, tuple[str, ...], tuple[tuple[str, str, str], ...]]:
    """Plans fit, but none is predicted to meet the objective: what a NoFit says (needed, details) and the
    nearest changes to the objective the best plan would meet, as (field, value, what it plans)."""
    o = spec.objective
    assert o is not None

    def latency(predicted: Prediction | EmbedPrediction) -> float:
        if isinstance(predicted, EmbedPrediction):
            return predicted.latency_seconds_at_concurrency
        return predicted.ttft_seconds

    def shortfall(entry: tuple[Plan, Prediction, list[str]]) -> float:
        _, predicted, _ = entry
        worst = 1.0
        if o.ttft_seconds:
            worst = max(worst, latency(predicted) / o.ttft_seconds)
        if o.output_tokens_per_second:
            worst = max(worst, o.output_tokens_per_second / max(predicted.tokens_per_second_per_user, 1e-9))
        return worst if predicted.max_concurrency else math.inf

    ranked = sorted(missed, key=shortfall)
    best, predicted, _ = ranked[0]
    details = tuple(f"{_where(p)}: {'; '.join(w)}." for p, _, w in ranked[:6])
    changes: list[tuple[str, str, str]] = []
    fits = f"{_where(best)}, {predicted.summary()}"
    if predicted.max_concurrency:
        if o.ttft_seconds and latency(predicted) > o.ttft_seconds:
            changes.append(("spec.objective.ttftSeconds", _up(latency(predicted)), fits))
        if o.output_tokens_per_second and predicted.tokens_per_second_per_user < o.output_tokens_per_second:
            changes.append(("spec.objective.outputTokensPerSecond", _down(predicted.tokens_per_second_per_user), fits))
    needed = (f"No plan is predicted to meet the objective ({_describe(spec, predicted)}). "
              f"Best: {_where(best)}, {predicted.summary()}.")  # fmt: skip
    return needed, details, tuple(changes)


def _up(value: float) -> str:
    """A target a little above a prediction, in two significant figures, as a user would write it."""
    return f"{float(f'{value * 1.05:.2g}'):g}"


def _down(value: float) -> str:
    return f"{math.floor(value * 0.95 * 10) / 10:g}"

