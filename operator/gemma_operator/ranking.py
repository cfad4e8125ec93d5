"""Ranking the pools that fit one model: which plan is best, whether to scale up for it, and why
each other plan lost. Pure; no I/O."""

from __future__ import annotations

from .catalog import Catalog
from .inventory import Pool
from .plans import PRECISION, Plan

RANKING = (
    "ranked by precision (bf16 before fp16), then the device (compute capability, then memory bandwidth; "
    "a TPU, which takes every chip of its host, after a GPU), then the fewest devices"
)

# An embedding model is small (EmbeddingGemma: 308M parameters) and reads each input once: a CPU node
# serves it without reserving an accelerator, so for task embed the CPU pools come first. With no load
# stated, that is the cheapest per hour (catalog/machines.yaml: an e2-standard-4 at $0.134/h against a
# g2-standard-8 with its L4 at $0.8536/h); objective.annotate gives the prices. Per million input tokens
# at full load an accelerator is cheaper: sizePolicy cheapest ranks by that (objective.cheapest).
RANKING_EMBED = (
    "ranked cheapest per hour first: a CPU pool before an accelerator (an embedding model this small needs no GPU), "
    "then by precision, the device and the fewest devices as for chat models"
)


def _cpu_last(plan: Plan) -> bool:
    """Sort key part: accelerators before CPUs for chat; CPUs before accelerators for embeddings."""
    return (plan.pool.kind == "cpu") != (plan.task == "embed")


def _bandwidth(pool: Pool, catalog: Catalog) -> float:
    accelerator = catalog.accelerators.get(pool.accelerator)
    return (accelerator.memory_bandwidth_gbps or 0.0) if accelerator else 0.0  # uncatalogued GPUs rank last


def _precision(quantization: str) -> tuple[int, bool]:
    """Sort key: more bits first; fp16 after bf16 (the same bits, with less range)."""
    return -PRECISION[quantization], quantization == "fp16"


def rank(plan: Plan, catalog: Catalog) -> tuple:
    """Sort key among pools serving the same model: smaller is better."""
    pool = plan.pool
    return (
        _cpu_last(plan),
        _precision(plan.quantization),
        pool.kind == "tpu",
        tuple(-part for part in pool.cc),
        -_bandwidth(pool, catalog),
        plan.accelerator_count,
        pool.name,
    )


def quality(plan: Plan) -> tuple:
    """What makes a plan better for the user, whatever the pool: an accelerator, precision, context.
    A pool that must be scaled up first wins over a ready one only by these."""
    return _cpu_last(plan), _precision(plan.quantization), -plan.max_model_len


def prefer_ready(fits: list[Plan]) -> Plan:
    """The best of the ranked plans: ready capacity, unless a pool that must be scaled up serves a
    better plan (no scale-up for nothing)."""
    ready = [p for p in fits if p.pool.ready]
    waiting = [p for p in fits if not p.pool.ready]
    if ready and waiting and quality(waiting[0]) < quality(ready[0]):
        return waiting[0]
    return ready[0] if ready else fits[0]


def worse_plan(best: Plan, other: Plan) -> str | None:
    """Why `other` serves a worse plan than `best` (accelerator, precision, context), or None."""
    if _cpu_last(other) and not _cpu_last(best):
        return _cpu_why(other)
    if _precision(other.quantization) != _precision(best.quantization):
        if other.quantization == "fp16" and not other.pool.bf16:
            return f"{other.pool.display_name} has no bf16, so fp16, not {best.quantization}"
        return f"{other.quantization} at best, not {best.quantization}"
    if other.max_model_len != best.max_model_len:
        return f"a context of {other.max_model_len} tokens, not {best.max_model_len}"
    return None


def why_lost(best: Plan, other: Plan, catalog: Catalog) -> str:
    """Why `other` ranks after `best`: the first criterion of rank that tells them apart."""
    b, o = best.pool, other.pool
    if b.ready != o.ready:
        why = worse_plan(best, other)
        return why or "must be scaled up first, for a plan no better than the ready one"
    if _cpu_last(other) and not _cpu_last(best):
        return _cpu_why(other)
    if _precision(other.quantization) != _precision(best.quantization):
        if other.quantization == "fp16" and not o.bf16:
            return f"{o.display_name} has no bf16, so fp16, not {best.quantization}"
        return f"{other.quantization} at best, not {best.quantization}"
    if o.kind == "tpu" and b.kind != "tpu":
        return "a TPU pod holds every chip of its host; a GPU of the same precision comes first"
    if o.cc != b.cc:
        return f"compute capability {o.compute_capability}, not {b.compute_capability}"
    ob, bb = _bandwidth(o, catalog), _bandwidth(b, catalog)
    if ob != bb:
        return f"memory bandwidth {ob:g} GB/s, not {bb:g}"
    unit = {"gpu": "GPU", "tpu": "chip", "cpu": "node"}[o.kind]
    if other.accelerator_count != best.accelerator_count:
        return f"{other.accelerator_count} {unit}s, not {best.accelerator_count}"
    return "ranks the same; the pool name breaks the tie"


def _cpu_why(other: Plan) -> str:
    if other.task == "embed":
        return "an accelerator pool; a CPU pool serves an embedding model this small without reserving a GPU"
    return "a CPU pool; accelerators come first"
