"""Predicted vs published: performance.py's roofline against the public figures in
published_throughput.yaml. Prints one row per figure with the ratio predicted / published.

Figures, not a test. Nothing is fitted here: the predictions use performance.py's two named
efficiency constants and the catalog's hardware facts (bandwidth, peak compute, interconnect and
all-reduce latency), nothing else.

Then, if bench/measured_cpu.yaml exists (`make bench-cpu-measure`), the "measured here" rows: the
prediction for a CPU pool with this machine's measured memory bandwidth and vCPUs against
llama-server's measured speed on a random-weight Gemma 3 1B at q4_0.

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
    link = accelerator.interconnect
    return perf.Device(bandwidth_gbps=accelerator.memory_bandwidth_gbps, peak_tflops=accelerator.peak(entry["quantization"]),
                       devices=count, kv_budget_gib=budget, slots=perf.VLLM_MAX_SEQS,
                       allreduce_latency_s=catalog.hardware.allreduce_latency[link.kind].seconds(count),
                       link_bandwidth_gbps=link.bandwidth_gbps)  # fmt: skip


def predicted(entry: dict, size: ModelSize, dev: perf.Device) -> float:
    workload = perf.Workload(**entry["workload"])
    got = perf.predict_on(size, entry["quantization"], dev, workload, None)
    if entry.get("static_batch"):
        # The whole batch is one: its prompts are prefilled together, then every step decodes all of them.
        prefill = perf.prefill_seconds(size, entry["quantization"], dev, workload.prompt_tokens, workload.concurrency)
        if entry["metric"] != "request_seconds":
            raise ValueError(f"static_batch is only priced for request_seconds, not {entry['metric']}")
        return prefill + workload.output_tokens / got.tokens_per_second_per_user
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
    measured_here(catalog)
    print("\nno published figure at hand for:")
    for miss in data.get("missing", []):
        print(f"  {miss['hardware']}: searched {miss['searched']!r}; found {miss['found']}")
    return 0


def measured_here(catalog) -> None:
    """The prediction for a CPU pool of this machine's measured bandwidth and vCPUs against llama-server's
    measured speed (bench/cpu_measure.py)."""
    path = HERE / "measured_cpu.yaml"
    if not path.exists():
        print("\nmeasured here: none (make bench-cpu-measure writes bench/measured_cpu.yaml)")
        return
    size = catalog.families["gemma3"].sizes["1b"]
    for m in yaml.safe_load(path.read_text(encoding="utf-8"))["measurements"]:
        machine, server, w = m["machine"], m["server"], m["workload"]
        bandwidth = m["memory_bandwidth"]["copy_gbps"]
        budget = sizing.kv_cache_gib(size.architecture, (w["prompt_tokens"] + w["output_tokens"]) * perf.LLAMACPP_SLOTS)
        print(f"\nmeasured here, {m['date']}: {machine['cpu_model']}, {machine['vcpus']} vCPUs, {bandwidth} GB/s "
              f"(numpy copy), llama-server --threads {server['threads']}, load average {machine['loadavg_before']} "
              f"before; `{m['command']}`")  # fmt: skip
        runs = m["runs"]
        share = sum(r["server_cpu_seconds"] for r in runs) / sum(r["wall_seconds"] for r in runs)
        # The pool's vCPUs, as performance.device_of counts a CPU node; and the server's threads, when fewer.
        counts = [(f"{machine['vcpus']} vCPUs (the pool)", machine["vcpus"])]
        if server["threads"] < machine["vcpus"]:
            counts.append((f"{server['threads']} vCPU (the server's threads)", server["threads"]))
        workload = perf.Workload(w["prompt_tokens"], w["output_tokens"], 1)
        for label, vcpus in counts:
            dev = perf.Device(bandwidth_gbps=bandwidth, peak_tflops=vcpus * perf.CPU_GFLOPS_PER_VCPU / 1000, devices=1,
                              kv_budget_gib=budget, slots=perf.LLAMACPP_SLOTS)  # fmt: skip
            got = perf.predict_on(size, "q4_0", dev, workload, None)
            prompt = w["prompt_tokens"] / perf.prefill_seconds(size, "q4_0", dev, w["prompt_tokens"])
            rows = (("decode tokens/s", got.tokens_per_second_per_user, m["best"]["decode_tokens_per_second"], got.bound),
                    ("prompt tokens/s", prompt, m["best"]["prompt_tokens_per_second"], "compute"))  # fmt: skip
            for metric, value, figure, bound in rows:
                ratio = value / figure
                mark = "yes" if abs(ratio - 1) <= WITHIN else "no"
                name = f"gemma3/1b q4_0, {label}"
                print(f"  {name:52} {metric:21} {value:10.4g} {figure:10.4g} {ratio:6.2f}  {mark} ({bound}-bound)")
        if "decode_tokens_per_cpu_second" in runs[0]:
            decode = max(r["decode_tokens_per_cpu_second"] for r in runs)
            prompt = max(r["prompt_tokens_per_cpu_second"] for r in runs)
            shares = ", ".join(f"{r['prompt_cpu_share']:.0%}/{r['decode_cpu_share']:.0%}" for r in runs)
            print(f"  the machine was shared: the server had {shares} of a CPU (prompt/decode, per run); per CPU-second "
                  f"it used: decode {decode:.3g} tokens/s, prompt {prompt:.3g} tokens/s")  # fmt: skip
        else:
            print(f"  the machine was shared: the server had {share:.0%} of a CPU over the requests (CPU seconds / "
                  f"wall seconds); decode per CPU-second about {m['best']['decode_tokens_per_second'] / share:.3g} tokens/s")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
