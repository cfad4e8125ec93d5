"""Predicted vs published: performance.py's roofline against the public figures in
published_throughput.yaml. Prints one row per figure with the ratio predicted / published.

Figures, not a test. Nothing is fitted here: the predictions use performance.py's two named
efficiency constants and the catalog's hardware facts, nothing else.

    make bench-predict          (or: .venv/bin/python bench/predict.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from gemma_operator import catalog as catalog_module
from gemma_operator import performance as perf
from gemma_operator import sizing
from gemma_operator.catalog import ModelSize

HERE = Path(__file__).parent
WITHIN = 0.35  # the bar: within +-35% of a published figure


def model_size(name: str, models: dict, catalog) -> ModelSize:
    """A catalog Gemma (`family/size`), or a same-sized model from the file's `models`, typed as the catalog's."""
    if "/" in name:
        family, size = name.split("/")
        return catalog.families[family].sizes[size]
    spec = models[name]
    return ModelSize.model_validate({
        "params_b": spec["params_b"], "max_context": 8192, "ids": {"it": f"bench/{name}"}, "gated": False,
        "gated_source": "https://example.invalid/", "architecture": {
            "hf_architecture": "LlamaForCausalLM", "model_type": "llama", "layers": spec["layers"],
            "hidden_size": spec["hidden_size"], "attention_heads": spec["attention_heads"],
            "kv_heads": spec["kv_heads"], "head_dim": spec["head_dim"], "vocab_size": spec["vocab_size"],
        },
    })  # fmt: skip


def device(entry: dict, size: ModelSize, catalog) -> perf.Device:
    hardware = entry["hardware"]
    weights_gib = sizing.weights_gib(size, entry["quantization"])
    if "cpu" in hardware:
        cpu = hardware["cpu"]
        context = sum(entry["workload"][k] for k in ("prompt_tokens", "output_tokens"))
        budget = sizing.kv_cache_gib(size.architecture, context * perf.LLAMACPP_SLOTS)
        return perf.Device(bandwidth_gbps=cpu["bandwidth_gbps"], peak_tflops=cpu["peak_tflops"], devices=1,
                           kv_budget_gib=budget, slots=perf.LLAMACPP_SLOTS)  # fmt: skip
    accelerator = catalog.accelerators[hardware["accelerator"]]
    count = hardware["count"]
    weights = weights_gib / count
    budget = accelerator.memory_gib * sizing.GPU_MEMORY_UTILIZATION - weights - sizing.overhead_gib("vllm", weights)
    return perf.Device(bandwidth_gbps=accelerator.memory_bandwidth_gbps, peak_tflops=accelerator.peak(entry["quantization"]),
                       devices=count, kv_budget_gib=budget, slots=perf.VLLM_MAX_SEQS)  # fmt: skip


def predicted(entry: dict, size: ModelSize, dev: perf.Device) -> float:
    workload = perf.Workload(**entry["workload"])
    got = perf.predict_on(size, entry["quantization"], dev, workload, None)
    metric = entry["metric"]
    if metric == "tokens_per_second_per_user":
        return got.tokens_per_second_per_user
    if metric == "tokens_per_second":
        return got.tokens_per_second
    if metric == "ttft_seconds":
        return got.ttft_seconds
    if metric == "request_seconds":
        return got.ttft_seconds + (workload.output_tokens - 1) / got.tokens_per_second_per_user
    raise ValueError(f"unknown metric {metric}")


def main() -> int:
    data = yaml.safe_load((HERE / "published_throughput.yaml").read_text(encoding="utf-8"))
    catalog = catalog_module.load()
    print(f"efficiency constants: bandwidth {perf.BANDWIDTH_UTILISATION}, compute {perf.COMPUTE_UTILISATION}\n")
    header = f"{'figure':48} {'metric':27} {'predicted':>10} {'published':>10} {'ratio':>6}  within ±35%"
    print(header)
    print("-" * len(header))
    for entry in data["entries"]:
        size = model_size(entry["model"], data.get("models", {}), catalog)
        value = predicted(entry, size, device(entry, size, catalog))
        ratio = value / entry["figure"]
        mark = "yes" if abs(ratio - 1) <= WITHIN else "no"
        approx = " (approx.)" if entry.get("approximate") else ""
        print(f"{entry['name'][:48]:48} {entry['metric']:27} {value:10.4g} {entry['figure']:10.4g} {ratio:6.2f}  {mark}{approx}")
    print("\nno published figure at hand for:")
    for miss in data.get("missing", []):
        print(f"  {miss['hardware']}: searched {miss['searched']!r}; found {miss['found']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
