"""The candidate table of `plan -o table` and `plan --compare`: every pool planned on its own, with its
predicted speed and cost (performance.py) and why it lost to the chosen plan. Pure; used by the CLI."""

from __future__ import annotations

from typing import Any

from . import performance
from .api.v1alpha1 import GemmaDeploymentSpec
from .catalog import Catalog
from .inventory import Inventory
from .objective import workload
from .planner import plan
from .plans import InvalidSpec, NoFit, Plan
from .ranking import why_lost


def compare(spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog, chosen: Plan | None,
            names: list[str] | None = None) -> list[dict]:  # fmt: skip
    """Every candidate pool (or those `names` picks, by pool or accelerator name) planned on its own, with
    its prediction and why it lost to `chosen`: the rows of `plan -o table` and `plan --compare`."""
    rows = []
    for pool in inventory.pools:
        if names and pool.name not in names and pool.accelerator not in names:
            continue
        row: dict[str, Any] = {"pool": pool.name}
        try:
            alone = plan(spec.model_copy(update={"accelerator": "auto"}), Inventory([pool], list(inventory.skipped)), catalog)
        except InvalidSpec as exc:
            rows.append({**row, "outcome": f"invalid: {exc}"})
            continue
        if isinstance(alone, NoFit):
            rows.append({**row, "outcome": f"no fit: {alone.details[0] if alone.details else alone.needed}"})
            continue
        predicted = alone.predicted or performance.predict(alone, workload(spec), catalog).as_status()
        row.update({"size": alone.size, "quantization": alone.quantization, "runtime": alone.runtime, **predicted})
        row.pop("workload", None)
        if chosen is not None and pool.name == chosen.pool.name:
            row["outcome"] = "chosen"
        elif chosen is None:
            row["outcome"] = "fits"
        elif spec.model.size_policy == "cheapest" and chosen.predicted:
            key, what, digits = (("costPerMillionInputTokens", "input tokens at full load", 4) if alone.task == "embed"
                                 else ("costPerMillionTokens", "output tokens", 2))  # fmt: skip
            mine, theirs = predicted.get(key), chosen.predicted.get(key)
            row["outcome"] = (f"lost: ${mine:.{digits}f} per million {what}, not ${theirs:.{digits}f}"
                              if mine is not None and theirs is not None else "lost: no price for its machine type")  # fmt: skip
        elif alone.size != chosen.size:
            row["outcome"] = f"lost: size {alone.size}, not {chosen.size} (sizePolicy {spec.model.size_policy})"
        else:
            row["outcome"] = f"lost: {why_lost(chosen, alone, catalog)}"
        rows.append(row)
    return rows


COLUMNS = (("pool", "pool"), ("size", "size"), ("quantization", "quant"), ("ttftSeconds", "TTFT s"),
           ("outputTokensPerSecondPerUser", "tok/s/user"), ("outputTokensPerSecond", "tok/s total"),
           ("maxConcurrency", "max conc"), ("replicas", "replicas"), ("costPerMillionTokens", "$/M tok"),
           ("outcome", "outcome"))  # fmt: skip


# An embedding plan's (performance.EmbedPrediction): per request alone, one replica at full load.
EMBED_COLUMNS = (("pool", "pool"), ("size", "size"), ("quantization", "quant"), ("latencySeconds", "latency s"),
                 ("requestsPerSecond", "req/s"), ("inputTokensPerSecond", "in tok/s"), ("maxConcurrency", "per pass"),
                 ("replicas", "replicas"), ("costPerMillionInputTokens", "$/M in tok"), ("outcome", "outcome"))  # fmt: skip


def table(rows: list[dict]) -> str:
    """The rows as a text table, one pool a line; the embedding columns when the rows are embedding plans."""
    columns = EMBED_COLUMNS if any("latencySeconds" in row for row in rows) else COLUMNS
    cells = [[label for _, label in columns]]
    for row in rows:
        cells.append(["-" if row.get(key) is None else f"{row[key]:g}" if isinstance(row.get(key), float) else str(row[key])
                      for key, _ in columns])  # fmt: skip
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns) - 1)]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1] + "\n" for line in cells)
