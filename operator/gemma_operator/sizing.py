"""Memory estimates: weights, KV cache (sliding-window aware) and runtime overhead. Pure.

All figures are GiB (2**30 bytes). They are estimates for planning, checked in the
unit tests against the weight sizes Google publishes (catalog `published_memory_gib`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .catalog import Architecture, Checkpoint, ModelSize

GIB = 2**30

# Bytes per weight. GGUF block formats carry a 16-bit scale per 32-weight block:
# Q8_0 = 34 bytes / 32 weights, Q4_0 = 18 bytes / 32 weights (ggml-common.h, block_q8_0 / block_q4_0).
# fp8 and int8 hold one byte per weight; int4 (bitsandbytes NF4) half a byte plus small per-block scales.
BYTES_PER_WEIGHT = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp32": 4.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.53,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
}

# KV-cache element size: vLLM keeps the cache in the model dtype (16-bit) unless told otherwise;
# llama.cpp defaults to f16 (`--cache-type-k/v f16`).
KV_BYTES = 2

# What a server needs beyond weights and KV cache: CUDA context, activations of the profiling
# run, CUDA graphs (vLLM); compute buffers (llama.cpp). Rules of thumb, stated as estimates.
OVERHEAD_GIB = {"vllm": 1.5, "llamacpp": 0.5}
OVERHEAD_FRACTION_OF_WEIGHTS = {"vllm": 0.05, "llamacpp": 0.02}

# vLLM claims this share of each device (`--gpu-memory-utilization`, its default is 0.9).
GPU_MEMORY_UTILIZATION = 0.90


def params_weights_gib(size: ModelSize, quantization: str) -> float:
    """Weights from the parameter count: params x bytes per weight."""
    return size.params_b * 1e9 * BYTES_PER_WEIGHT[quantization] / GIB


def weights_gib(size: ModelSize, quantization: str, checkpoint: Checkpoint | None = None) -> float:
    """Weights in device memory: the largest of the parameter-count estimate, Google's published
    figure (GB as printed, taken as 10**9 bytes) and the checkpoint's file size. Google's Gemma 4
    figures run ~11% above the model-card parameter counts (they include the vision and audio
    encoders), and its QAT Q4_0 GGUFs keep the embeddings above 4 bits (Gemma 3 27B: 16.05 GiB
    against 14.35 from params x 18/32), so never plan below either.
    """
    floors = [params_weights_gib(size, quantization)]
    if quantization in size.published_memory_gb:
        floors.append(size.published_memory_gb[quantization] * 1e9 / GIB)
    if checkpoint is not None and checkpoint.quantization == quantization:
        floors.append(checkpoint.bytes / GIB)
    return max(floors)


def checkpoint_bytes(size: ModelSize, repo: str, file: str | None) -> int:
    """Bytes a server downloads for a repo (and file): a catalogued checkpoint's listed size; for the
    base safetensors repos, whose size the catalog does not list, their bf16 weights (in-flight fp8
    still downloads them), taken as the larger of params x 2 and Google's published bf16 figure."""
    for checkpoint in size.checkpoints:
        if (checkpoint.repo.lower(), checkpoint.file) == (repo.lower(), file):
            return checkpoint.bytes
    return math.ceil(weights_gib(size, "bf16") * GIB)


# Encoders stay 16-bit: vLLM's in-flight fp8 and the published int4 checkpoints quantize the language
# model's linear layers; llama.cpp's projector GGUFs are f16.
ENCODER_BYTES_PER_WEIGHT = 2.0


def encoders_gib(size: ModelSize, runtime: str, inputs: list[str] | tuple[str, ...], quantization: str,
                 projector_bytes: int = 0) -> float:  # fmt: skip
    """What the encoders change in the weights the server holds (GiB; negative: less than params_b says).

    vLLM loads an encoder when its input is asked and skips it otherwise (--language-model-only or a
    limit of 0 for its modality skips the tower and its profiling): so an asked encoder the model card
    leaves out of params_b is added (catalog `encoders`, `in_params: false`), and one it counts but no
    request will use comes off. llama.cpp's GGUF holds the language model only; an asked input adds the
    projector file (mmproj), loaded as it is.
    """
    if runtime == "llamacpp":
        return projector_bytes / GIB if any(i != "text" for i in inputs) else 0.0
    change = 0.0
    for modality, encoder in size.encoders.items():
        if modality in inputs and not encoder.in_params:
            change += encoder.params_b * 1e9 * ENCODER_BYTES_PER_WEIGHT / GIB
        elif modality not in inputs and encoder.in_params:
            change -= encoder.params_b * 1e9 * BYTES_PER_WEIGHT[quantization] / GIB
    return change


def layer_kinds(arch: Architecture) -> list[str]:
    """'global', 'local' or 'shared' for each layer, in order.

    Gemma interleaves sliding-window (local) layers with full-attention (global) ones:
    every `sliding_window_pattern`-th layer is global (Gemma 2: 2, Gemma 3: 6). Gemma 3n's last
    `kv_shared_layers` layers reuse the KV of earlier layers and keep no cache of their own.
    """
    kinds = []
    for i in range(arch.layers):
        if i >= arch.layers - arch.kv_shared_layers:
            kinds.append("shared")
        elif arch.sliding_window_pattern is None or (i + 1) % arch.sliding_window_pattern == 0:
            kinds.append("global")
        else:
            kinds.append("local")
    return kinds


def kv_cache_gib(arch: Architecture, tokens: int, tensor_parallel: int = 1) -> float:
    """KV cache of one sequence of `tokens`, per device under tensor parallelism.

    Per layer and token: 2 (K and V) x KV heads x head dim x element size. Global layers hold
    every token; local layers at most the window; shared layers nothing. Under tensor
    parallelism each device holds kv_heads / tp heads, and at least one (vLLM replicates
    KV heads when tp exceeds them).
    """
    total = 0
    for kind in layer_kinds(arch):
        if kind == "shared":
            continue
        if kind == "global":
            heads = arch.global_kv_heads or arch.kv_heads
            dim = arch.global_head_dim or arch.head_dim
            held = tokens
        else:
            heads, dim = arch.kv_heads, arch.head_dim
            held = min(tokens, arch.sliding_window or tokens)
        heads_per_device = max(1, -(-heads // tensor_parallel))
        total += 2 * heads_per_device * dim * KV_BYTES * held
    return total / GIB


def overhead_gib(runtime: str, weights: float) -> float:
    return OVERHEAD_GIB[runtime] + OVERHEAD_FRACTION_OF_WEIGHTS[runtime] * weights


@dataclass(frozen=True)
class Fit:
    """How a model fits a budget: per device (or per node on CPU)."""

    weights_gib: float
    kv_gib: float
    overhead_gib: float
    budget_gib: float
    max_model_len: int

    @property
    def total_gib(self) -> float:
        return self.weights_gib + self.kv_gib + self.overhead_gib


def largest_context(arch: Architecture, free_gib: float, cap: int, tensor_parallel: int = 1) -> int:
    """The largest context (a multiple of 256, up to `cap`) whose KV cache fits `free_gib`; 0 if none."""
    if kv_cache_gib(arch, min(cap, 256), tensor_parallel) > free_gib:
        return 0
    if kv_cache_gib(arch, cap, tensor_parallel) <= free_gib:
        return cap
    lo, hi = 256, cap  # KV grows monotonically with tokens: bisect.
    while hi - lo > 256:
        mid = (lo + hi) // 2 // 256 * 256
        if mid <= lo:
            break
        if kv_cache_gib(arch, mid, tensor_parallel) <= free_gib:
            lo = mid
        else:
            hi = mid
    return lo


def fit(
    size: ModelSize,
    quantization: str,
    runtime: str,
    budget_gib: float,
    tensor_parallel: int = 1,
    max_model_len: int | None = None,
    checkpoint: Checkpoint | None = None,
    encoders: float = 0.0,
) -> Fit | None:
    """Whether weights/tp + overhead + one full-length sequence's KV cache fit `budget_gib` per device.

    With `max_model_len` None, the context is the largest that fits (capped by the model).
    Returns None when even the smallest context does not fit. `checkpoint`: the file served, if any;
    `encoders`: the encoders' change to the weights (encoders_gib), shared over the devices as they are.
    """
    weights = (weights_gib(size, quantization, checkpoint) + encoders) / tensor_parallel
    overhead = overhead_gib(runtime, weights)
    free = budget_gib - weights - overhead
    cap = size.max_context if max_model_len is None else max_model_len
    context = largest_context(size.architecture, free, cap, tensor_parallel) if free > 0 else 0
    if context == 0 or (max_model_len is not None and context < max_model_len):
        return None
    kv = kv_cache_gib(size.architecture, context, tensor_parallel)
    return Fit(weights, kv, overhead, budget_gib, context)


def needed_gib(size: ModelSize, quantization: str, runtime: str, tokens: int, tensor_parallel: int = 1,
               checkpoint: Checkpoint | None = None, encoders: float = 0.0) -> float:  # fmt: skip
    """Memory per device for a context of `tokens`: what a no-fit message reports."""
    weights = (weights_gib(size, quantization, checkpoint) + encoders) / tensor_parallel
    return weights + overhead_gib(runtime, weights) + kv_cache_gib(size.architecture, tokens, tensor_parallel)


# Embedding models (spec.model.task embed) keep no KV cache between requests: each input is read once,
# with bidirectional attention, and pooled into one vector. What grows with load is the batch a forward
# pass takes: vLLM's --max-num-batched-tokens, llama.cpp's --ubatch-size (which must hold a whole input,
# since a non-causal model cannot split one). Its activations are estimated per token as this many
# hidden-size vectors in fp32 (residual, Q/K/V, MLP intermediate, norms: a rule of thumb, not measured),
# plus each sequence's attention scores (heads x tokens x tokens, fp32), counted although flash attention
# does not materialise them (the estimate errs high).
EMBED_BATCH_TOKENS = {"vllm": 8192}  # llama.cpp: the context (one whole input per ubatch)
EMBED_ACTIVATION_VECTORS = 16
ACTIVATION_BYTES = 4


def embed_batch_tokens(runtime: str, context: int) -> int:
    return max(EMBED_BATCH_TOKENS.get(runtime, context), context)


def embed_activations_gib(arch: Architecture, context: int, batch_tokens: int, tensor_parallel: int = 1) -> float:
    """Activation memory of one forward pass over `batch_tokens` tokens of inputs up to `context` long."""
    per_token = EMBED_ACTIVATION_VECTORS * arch.hidden_size * ACTIVATION_BYTES
    sequences = max(1, batch_tokens // context)
    heads = max(1, -(-arch.attention_heads // tensor_parallel))
    scores = sequences * heads * context * context * ACTIVATION_BYTES
    return (batch_tokens * per_token / tensor_parallel + scores) / GIB


def fit_embedding(size: ModelSize, quantization: str, runtime: str, budget_gib: float, tensor_parallel: int = 1,
                  max_model_len: int | None = None, checkpoint: Checkpoint | None = None,
                  encoders: float = 0.0) -> Fit | None:  # fmt: skip
    """Whether an embedding model's weights, overhead and one batch's activations fit `budget_gib` per device.
    The context is the model's own input limit (or the asked one, at most that): no KV cache to trade it for.
    Fit.kv_gib holds the batch's activations. `encoders`: as for `fit` (0 for a text-only embedding model)."""
    context = min(max_model_len or size.max_context, size.max_context)
    weights = (weights_gib(size, quantization, checkpoint) + encoders) / tensor_parallel
    overhead = overhead_gib(runtime, weights)
    batch = embed_activations_gib(size.architecture, context, embed_batch_tokens(runtime, context), tensor_parallel)
    if weights + overhead + batch > budget_gib:
        return None
    return Fit(weights, batch, overhead, budget_gib, context)


def needed_embedding_gib(size: ModelSize, quantization: str, runtime: str, tokens: int, tensor_parallel: int = 1,
                         checkpoint: Checkpoint | None = None, encoders: float = 0.0) -> float:  # fmt: skip
    weights = (weights_gib(size, quantization, checkpoint) + encoders) / tensor_parallel
    batch = embed_activations_gib(size.architecture, tokens, embed_batch_tokens(runtime, tokens), tensor_parallel)
    return weights + overhead_gib(runtime, weights) + batch
