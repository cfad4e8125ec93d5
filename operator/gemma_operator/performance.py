"""Predicted speed and cost of a plan: a roofline model per pool. Pure.

Decode is bound by memory bandwidth: each step reads the weights once (sharded over the tensor-
parallel devices) plus every running sequence's KV cache at its length (sizing.kv_cache_gib, so
sliding-window layers count at most their window). Prefill is bound by compute: 2 x active
parameters x prompt tokens plus the attention term, at the device's dense peak for the precision
it runs. Each bound is scaled by one named efficiency constant (below, with its source); nothing
else is fitted. With tensor parallelism, every forward pass adds two all-reduces per layer (after
attention and after the MLP) of the step's activations, at the interconnect's fixed latency plus
2(n-1)/n x bytes over its bandwidth (catalog facts with sources); they are not overlapped with the
memory or compute time.

What the model leaves out (the README says so too): kernel-launch, scheduler and sampling overhead
per step and per sequence (it predicts too fast for small models, most over 8 GPUs and at batch >
1), speculative decoding and prefix caching (real servers can beat it), queueing when requests
arrive together (TTFT is for one prompt arriving at a server already running `concurrency - 1`
sequences; prefill_seconds prices prompts prefilled together when asked), and Spot prices of node
pools seen through nodes (only a declared Spot shape is priced at Spot).

An embedding plan (task embed) generates nothing: each request is one forward pass, priced like a
prefill with the same two constants (predict_embed_on, at the end of this module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import sizing
from typing import TYPE_CHECKING

from .catalog import Architecture, Catalog, ModelSize
from .inventory import GKE_GPU, GKE_TPU

if TYPE_CHECKING:
    from .plans import Plan

# GKE's Spot node label (capacity.py puts it in a declared Spot shape's selector).
SPOT = "cloud.google.com/gke-spot"

# Share of the peak memory bandwidth a serving stack turns into weight and KV reads during decode
# (model bandwidth utilisation, MBU). A single A100 40GB decoding Llama 3.1 8B in bf16 under vLLM
# 0.23 at one request reached about 75 tokens/s, "roughly 77% of the GPU's memory-bandwidth ceiling"
# (https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on); well-optimised CUDA stacks
# "commonly run in the 70 to 85 percent range" (https://www.open-source-ai.tech/glossary/model-bandwidth-utilization).
BANDWIDTH_UTILISATION = 0.75

# Share of the peak dense tensor FLOPS a prefill reaches (model FLOPs utilisation, MFU). A worked
# LLaMA-7B prefill of 500 tokens on an A100 takes "35-50 ms" in practice against a 21.5 ms
# theoretical minimum, about 50% (https://fast.hugflare.com/blog/atharv6f/prefill-decode-utilization-paradox);
# "real MFU varies more than MBU" (https://www.open-source-ai.tech/glossary/model-flops-utilization).
COMPUTE_UTILISATION = 0.50

# CPU math per vCPU for llama.cpp's prefill, GFLOPS (estimate): an AVX2 core retires 2 FMA x 8
# fp32 lanes x 2 = 32 FLOPs a cycle, about 80 GFLOPS at 2.5 GHz, shared by its two vCPUs.
CPU_GFLOPS_PER_VCPU = 40.0

# vLLM's scheduler runs at most this many sequences at once (--max-num-seqs default 256 for the
# OpenAI server on GPUs; unverified for 0.32.0). llama-server runs this many slots when --parallel
# is not given (unverified for b11434: "auto", which is 4); its --ctx-size is shared by the slots.
VLLM_MAX_SEQS = 256
LLAMACPP_SLOTS = 4

GIB = sizing.GIB

# Bytes per activation value an all-reduce carries: servers keep activations in 16 bits whatever the
# weights' format (weight-only quantization dequantizes to bf16/fp16; fp8 W8A8 still all-reduces the
# matmul outputs in 16 bits).
ACTIVATION_BYTES = 2


@dataclass(frozen=True)
class Workload:
    prompt_tokens: int
    output_tokens: int
    concurrency: int = 1

    def describe(self) -> str:
        return f"{self.prompt_tokens} prompt + {self.output_tokens} output tokens, {self.concurrency} at once"


# What status and `plan` predict for when the spec has no objective (the README names it): one chat
# turn of a 1024-token prompt and a 256-token answer, one user.
DEFAULT_WORKLOAD = Workload(prompt_tokens=1024, output_tokens=256, concurrency=1)


@dataclass(frozen=True)
class Prediction:
    workload: Workload
    ttft_seconds: float
    tokens_per_second_per_user: float  # output tokens/s one sequence sees at the workload's concurrency
    tokens_per_second: float  # all sequences of the workload together, over its replicas
    max_concurrency: int  # sequences one replica runs at once with their KV cache in memory (0: not even one)
    replicas: int  # replicas the workload's concurrency needs
    price_per_hour: float | None  # one replica's node(s), USD; None when the machine type is unpriced
    price_verified: bool
    cost_per_million_tokens: float | None  # USD per million output tokens at the workload, counting replicas
    cost_per_million_tokens_full_load: float | None  # one replica running max_concurrency sequences
    bound: str  # "memory" or "compute": what limits decode at the workload's concurrency

    def as_status(self) -> dict:
        def r(value: float | None, digits: int = 2) -> float | None:
            return None if value is None else round(value, digits)

        status = {
            "workload": {"promptTokens": self.workload.prompt_tokens, "outputTokens": self.workload.output_tokens,
                         "concurrency": self.workload.concurrency},
            "ttftSeconds": r(self.ttft_seconds, 3),
            "outputTokensPerSecondPerUser": r(self.tokens_per_second_per_user, 1),
            "outputTokensPerSecond": r(self.tokens_per_second, 1),
            "maxConcurrency": self.max_concurrency,
            "replicas": self.replicas,
            "costPerMillionTokens": r(self.cost_per_million_tokens, 4),
            "costPerMillionTokensFullLoad": r(self.cost_per_million_tokens_full_load, 4),
            "pricePerHour": r(self.price_per_hour, 4),
            "priceVerified": self.price_verified,
        }  # fmt: skip
        # Unknown figures (no price) are left out rather than written as null.
        return {k: v for k, v in status.items() if v is not None}

    def summary(self) -> str:
        cost = f"${self.cost_per_million_tokens:.2f} per million output tokens" if self.cost_per_million_tokens is not None \
            else "no price for this machine type"  # fmt: skip
        replicas = f" on {self.replicas} replicas" if self.replicas > 1 else ""
        return (
            f"predicted for {self.workload.describe()}: time to first token {self.ttft_seconds:.2f} s, "
            f"{self.tokens_per_second_per_user:.0f} output tokens/s per user ({self.tokens_per_second:.0f} in total{replicas}), "
            f"up to {self.max_concurrency} sequences per replica, {cost}"
        )


@dataclass(frozen=True)
class Device:
    """What the roofline needs of the devices one replica runs on."""

    bandwidth_gbps: float  # per device (CPU: the node's share)
    peak_tflops: float  # per device, at the precision the prefill runs
    devices: int  # tensor-parallel devices (1 on CPU)
    kv_budget_gib: float  # per device, for the KV cache of all running sequences
    slots: int  # the runtime's cap on running sequences
    allreduce_latency_s: float = 0.0  # fixed cost of one small all-reduce over `devices` (0 for one device)
    link_bandwidth_gbps: float = 0.0  # per device, one direction, between the tensor-parallel devices


def allreduce_seconds(device: Device, values: int) -> float:
    """One all-reduce of `values` activations over the tensor-parallel devices: the fixed latency plus a
    ring's 2(n-1)/n x bytes over the link bandwidth. Nothing for one device, nor for a Device that names
    no link (bandwidth 0)."""
    n = device.devices
    if n <= 1 or device.link_bandwidth_gbps <= 0:
        return 0.0
    return device.allreduce_latency_s + 2 * (n - 1) / n * values * ACTIVATION_BYTES / (device.link_bandwidth_gbps * 1e9)


def communication_seconds(size: ModelSize, device: Device, tokens: int) -> float:
    """A forward pass over `tokens` tokens (a decode step's batch, or a prefill's prompt tokens): two
    all-reduces per layer of tokens x hidden size activations."""
    arch = size.architecture
    return 2 * arch.layers * allreduce_seconds(device, tokens * arch.hidden_size)


def read_params(size: ModelSize, batch: int = 1) -> float:
    """Parameters (billions) one decode step reads for `batch` sequences. Dense: all of them (Gemma ties
    the embedding to the output projection, which every step reads). Gemma 3n / 4 "E" sizes: the
    effective count (the per-layer embeddings are looked up, not read whole). MoE: the active
    experts; a batch touches more of them: total x (1 - (1 - active/total)^batch)."""
    if size.effective_params_b is not None:
        return size.effective_params_b
    if size.active_params_b is None:
        return size.params_b
    share = size.active_params_b / size.params_b
    return size.params_b * (1 - (1 - share) ** batch)


def _windowed_pairs(tokens: int, window: int | None) -> float:
    """Query-key pairs of a causal prefill of `tokens` when each token sees at most `window` tokens."""
    if window is None or tokens <= window:
        return tokens * (tokens + 1) / 2
    return window * (window + 1) / 2 + (tokens - window) * window


def prefill_flops(size: ModelSize, tokens: int) -> float:
    """2 x active parameters x tokens (every matmul), plus attention: per layer, QK^T and AV each take
    2 x heads x head_dim FLOPs per query-key pair; local layers see at most their window."""
    arch: Architecture = size.architecture
    dense = 2 * (size.active_params_b or size.effective_params_b or size.params_b) * 1e9 * tokens
    attention = 0.0
    for kind in sizing.layer_kinds(arch):
        local = kind == "local"
        dim = arch.head_dim if local else (arch.global_head_dim or arch.head_dim)
        pairs = _windowed_pairs(tokens, arch.sliding_window if local else None)
        attention += 4 * arch.attention_heads * dim * pairs
    return dense + attention


def step_seconds(size: ModelSize, quantization: str, device: Device, batch: int, context: int) -> tuple[float, str]:
    """One decode step for `batch` sequences, each holding `context` tokens: (seconds, bound). The bound
    is what limits the step apart from the all-reduces, which are added to it."""
    weights = read_params(size, batch) * 1e9 * sizing.BYTES_PER_WEIGHT[quantization] / device.devices
    kv = batch * sizing.kv_cache_gib(size.architecture, context, device.devices) * GIB
    memory = (weights + kv) / (device.bandwidth_gbps * 1e9 * BANDWIDTH_UTILISATION)
    flops = 2 * (size.active_params_b or size.effective_params_b or size.params_b) * 1e9 * batch / device.devices
    compute = flops / (device.peak_tflops * 1e12 * COMPUTE_UTILISATION)
    communication = communication_seconds(size, device, batch)
    return (memory + communication, "memory") if memory >= compute else (compute + communication, "compute")


def prefill_seconds(size: ModelSize, quantization: str, device: Device, tokens: int, prompts: int = 1) -> float:
    """`prompts` prompts of `tokens` tokens prefilled together: compute-bound, but never faster than reading
    the weights once; plus the all-reduces of all their tokens."""
    flops = prompts * prefill_flops(size, tokens)
    compute = flops / (device.devices * device.peak_tflops * 1e12 * COMPUTE_UTILISATION)
    weights = read_params(size, prompts) * 1e9 * sizing.BYTES_PER_WEIGHT[quantization] / device.devices
    reads = weights / (device.bandwidth_gbps * 1e9 * BANDWIDTH_UTILISATION)
    return max(compute, reads) + communication_seconds(size, device, prompts * tokens)


def max_concurrency(size: ModelSize, device: Device, tokens: int) -> int:
    """Sequences of `tokens` whose KV cache fits the per-device budget, capped by the runtime's slots."""
    per_sequence = sizing.kv_cache_gib(size.architecture, tokens, device.devices)
    if per_sequence <= 0 or device.kv_budget_gib <= 0:
        return 0
    return min(device.slots, int(device.kv_budget_gib // per_sequence))


def predict_on(size: ModelSize, quantization: str, device: Device, workload: Workload,
               price: tuple[float, bool] | None) -> Prediction:  # fmt: skip
    """The roofline for one replica on `device`, and the replicas the workload's concurrency needs."""
    length = workload.prompt_tokens + workload.output_tokens
    most = max_concurrency(size, device, length)
    replicas = max(1, math.ceil(workload.concurrency / most)) if most else 0
    # The load spreads evenly: each replica runs ceil(concurrency / replicas) sequences.
    per_replica = math.ceil(workload.concurrency / replicas) if most else 1
    # The average sequence holds its prompt and half its answer.
    average = workload.prompt_tokens + workload.output_tokens // 2
    step, bound = step_seconds(size, quantization, device, per_replica, average)
    per_user = 1 / step
    total = per_user * min(workload.concurrency, per_replica * max(replicas, 1))
    ttft = prefill_seconds(size, quantization, device, workload.prompt_tokens) + step
    full = None
    cost = None
    hourly, verified = price if price else (None, False)
    if hourly is not None and most:
        full_step, _ = step_seconds(size, quantization, device, most, average)
        full = hourly / (most / full_step * 3600) * 1e6
        cost = hourly * replicas / (total * 3600) * 1e6
    return Prediction(
        workload=workload, ttft_seconds=ttft, tokens_per_second_per_user=per_user, tokens_per_second=total,
        max_concurrency=most, replicas=replicas, price_per_hour=hourly, price_verified=verified,
        cost_per_million_tokens=cost, cost_per_million_tokens_full_load=full, bound=bound,
    )  # fmt: skip


def device_of(plan: Plan, catalog: Catalog) -> Device:
    """The roofline's view of a plan's pool: bandwidth and peak per device, the KV budget the runtime
    leaves after weights and overhead, and the runtime's sequence cap."""
    pool = plan.pool
    tp = max(1, plan.tensor_parallel_size)
    size = catalog.families[plan.family].sizes[plan.size]
    weights = plan.weights_gib / tp
    overhead = sizing.overhead_gib(plan.runtime, weights)
    if pool.kind == "cpu":
        family = catalog.machines.family(pool.machine_type)
        bandwidth = pool.node_cpu * family.memory_bandwidth_gbps_per_vcpu
        peak = pool.node_cpu * CPU_GFLOPS_PER_VCPU / 1000
        link = None
    else:
        accelerator = catalog.accelerators.get(pool.accelerator)
        # A GPU the catalog does not know (sized from GFD labels) gets the slowest known figures
        # of its kind: a prediction that errs slow.
        known = [a for a in catalog.accelerators.values() if a.kind == pool.kind and a.memory_bandwidth_gbps]
        if accelerator is None or accelerator.memory_bandwidth_gbps is None:
            accelerator = min(known, key=lambda a: a.memory_bandwidth_gbps)
        bandwidth = accelerator.memory_bandwidth_gbps
        peak = accelerator.peak(plan.quantization)
        link = accelerator.interconnect
    if plan.runtime == "vllm":
        budget = pool.device_memory_gib * sizing.GPU_MEMORY_UTILIZATION - weights - overhead
        slots = VLLM_MAX_SEQS
    else:
        # llama.cpp holds exactly --ctx-size tokens of cache, shared by its slots.
        budget = sizing.kv_cache_gib(size.architecture, plan.max_model_len)
        slots = LLAMACPP_SLOTS
    communication = {}
    if tp > 1 and link is not None:
        latency = catalog.hardware.allreduce_latency[link.kind].seconds(tp)
        communication = {"allreduce_latency_s": latency, "link_bandwidth_gbps": link.bandwidth_gbps}
    return Device(bandwidth_gbps=bandwidth, peak_tflops=peak, devices=tp, kv_budget_gib=budget, slots=slots,
                  **communication)  # fmt: skip


def price_of(plan: Plan, catalog: Catalog) -> tuple[float, bool] | None:
    """USD per hour of what one replica occupies: its node, or its share of the node's devices."""
    pool = plan.pool
    spot = pool.node_selector.get(SPOT) == "true"
    label = pool.node_selector.get(GKE_GPU) or pool.node_selector.get(GKE_TPU)
    n1_gpus = pool.devices_per_node if (pool.machine_type or "").startswith("n1-") else 0
    node = catalog.machines.hourly(pool.machine_type, label, n1_gpus, spot=spot)
    if node is None:
        return None
    hourly, verified = node
    if pool.kind == "gpu" and pool.devices_per_node > plan.accelerator_count > 0:
        hourly *= plan.accelerator_count / pool.devices_per_node
    return hourly, verified


def predict(plan: Plan, workload: Workload, catalog: Catalog) -> Prediction | EmbedPrediction:
    """A chat plan's decode and prefill; an embedding plan's forward passes (predict_embed_on)."""
    size = catalog.families[plan.family].sizes[plan.size]
    if plan.task == "embed":
        return predict_embed_on(size, plan.quantization, device_of(plan, catalog), workload, plan.max_model_len,
                                plan.batch_tokens, price_of(plan, catalog))  # fmt: skip
    return predict_on(size, plan.quantization, device_of(plan, catalog), workload, price_of(plan, catalog))


# -- embedding plans (spec.model.task embed) ----------------------------------------------------------
# An embedding model generates nothing: each request is one forward pass over its input, bidirectional,
# pooled into one vector. The same roofline prices it as a prefill: compute-bound at
# COMPUTE_UTILISATION, never faster than one read of the weights per batch at BANDWIDTH_UTILISATION.
# No KV cache: the concurrency one replica takes in one forward pass is the planned batch
# (plan.batch_tokens: vLLM's --max-num-batched-tokens, llama.cpp's --ubatch-size) over the input length,
# capped by the runtime's sequence cap.

# What status and `plan` predict for an embedding plan without an objective: one input of the chat
# default's prompt length (1024 tokens), one request at a time. output_tokens 0 marks an embedding request.
DEFAULT_EMBED_WORKLOAD = Workload(prompt_tokens=1024, output_tokens=0, concurrency=1)


@dataclass(frozen=True)
class EmbedPrediction:
    workload: Workload
    input_tokens: int  # per request: the workload's prompt tokens, capped at the plan's context
    latency_seconds: float  # one request alone: one forward pass over its input
    latency_seconds_at_concurrency: float  # one forward pass over the inputs in flight on its replica
    requests_per_second: float  # one replica at full load: batches of max_concurrency inputs back to back
    input_tokens_per_second: float  # the same, in input tokens
    max_concurrency: int  # inputs one forward pass takes (the planned batch over the input length)
    replicas: int  # replicas that keep the workload's concurrency to one forward pass each
    price_per_hour: float | None
    price_verified: bool
    cost_per_million_input_tokens: float | None  # USD, one replica at full load
    bound: str  # "compute" or "memory" (one weight read), for one request alone

    def as_status(self) -> dict:
        def r(value: float | None, digits: int = 2) -> float | None:
            return None if value is None else round(value, digits)

        status = {
            "workload": {"promptTokens": self.workload.prompt_tokens, "concurrency": self.workload.concurrency,
                         "inputTokens": self.input_tokens},
            "latencySeconds": r(self.latency_seconds, 4),
            "latencySecondsAtConcurrency": r(self.latency_seconds_at_concurrency, 4),
            "requestsPerSecond": r(self.requests_per_second, 2),
            "inputTokensPerSecond": r(self.input_tokens_per_second, 1),
            "maxConcurrency": self.max_concurrency,
            "replicas": self.replicas,
            "costPerMillionInputTokens": r(self.cost_per_million_input_tokens, 4),
            "pricePerHour": r(self.price_per_hour, 4),
            "priceVerified": self.price_verified,
        }  # fmt: skip
        return {k: v for k, v in status.items() if v is not None}

    def describe(self) -> str:
        capped = f" (counted as {self.input_tokens}, the context)" if self.input_tokens < self.workload.prompt_tokens else ""
        return f"{self.workload.prompt_tokens} input tokens a request{capped}, {self.workload.concurrency} at once"

    def summary(self) -> str:
        cost = (f"${self.cost_per_million_input_tokens:.4f} per million input tokens at full load"
                if self.cost_per_million_input_tokens is not None else "no price for this machine type")  # fmt: skip
        at = (f", {self.latency_seconds_at_concurrency:.3f} s with {self.workload.concurrency} at once"
              if self.workload.concurrency > 1 else "")  # fmt: skip
        replicas = f" on {self.replicas} replicas" if self.replicas > 1 else ""
        return (
            f"predicted for {self.describe()}: {self.latency_seconds:.3f} s a request alone{at}{replicas}; "
            f"{self.input_tokens_per_second:.0f} input tokens/s ({self.requests_per_second:.1f} requests/s) per replica "
            f"at full load, {self.max_concurrency} inputs per forward pass, {cost}"
        )


def embed_params(size: ModelSize) -> float:
    """Parameters (billions) an embedding model multiplies each token by: all but its token-embedding
    table, which is looked up, not read whole (there is no output projection to tie it to)."""
    arch = size.architecture
    return size.params_b - arch.vocab_size * arch.hidden_size / 1e9


def embed_flops(size: ModelSize, tokens: int) -> float:
    """One input of `tokens`: 2 x parameters x tokens, plus attention over every query-key pair. The
    attention is bidirectional: each query sees all `tokens` keys, or at most its window's on a local layer."""
    arch = size.architecture
    attention = 0.0
    for kind in sizing.layer_kinds(arch):
        local = kind == "local"
        dim = arch.head_dim if local else (arch.global_head_dim or arch.head_dim)
        keys = min(tokens, arch.sliding_window) if local and arch.sliding_window else tokens
        attention += 4 * arch.attention_heads * dim * tokens * keys
    return 2 * embed_params(size) * 1e9 * tokens + attention


def embed_pass_seconds(size: ModelSize, quantization: str, device: Device, tokens: int,
                       inputs: int = 1) -> tuple[float, str]:  # fmt: skip
    """One forward pass over `inputs` inputs of `tokens` each: (seconds, bound)."""
    compute = inputs * embed_flops(size, tokens) / (device.devices * device.peak_tflops * 1e12 * COMPUTE_UTILISATION)
    weights = embed_params(size) * 1e9 * sizing.BYTES_PER_WEIGHT[quantization] / device.devices
    reads = weights / (device.bandwidth_gbps * 1e9 * BANDWIDTH_UTILISATION)
    bound = "compute" if compute >= reads else "memory"
    return max(compute, reads) + communication_seconds(size, device, inputs * tokens), bound


def predict_embed_on(size: ModelSize, quantization: str, device: Device, workload: Workload, context: int,
                     batch_tokens: int, price: tuple[float, bool] | None) -> EmbedPrediction:  # fmt: skip
    """The roofline for one embedding replica on `device`: inputs of the workload's prompt tokens (at most
    `context`), `batch_tokens` tokens per forward pass."""
    tokens = max(1, min(workload.prompt_tokens, context))
    most = max(1, min(device.slots, batch_tokens // tokens))
    replicas = max(1, math.ceil(workload.concurrency / most))
    alone, bound = embed_pass_seconds(size, quantization, device, tokens)
    loaded, _ = embed_pass_seconds(size, quantization, device, tokens, math.ceil(workload.concurrency / replicas))
    full, _ = embed_pass_seconds(size, quantization, device, tokens, most)
    requests = most / full
    hourly, verified = price if price else (None, False)
    cost = None if hourly is None else hourly / (requests * tokens * 3600) * 1e6
    return EmbedPrediction(
        workload=workload, input_tokens=tokens, latency_seconds=alone, latency_seconds_at_concurrency=loaded,
        requests_per_second=requests, input_tokens_per_second=requests * tokens, max_concurrency=most,
        replicas=replicas, price_per_hour=hourly, price_verified=verified, cost_per_million_input_tokens=cost, bound=bound,
    )  # fmt: skip
