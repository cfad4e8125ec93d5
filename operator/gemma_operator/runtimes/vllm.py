"""Plan -> vLLM's OpenAI-compatible server (`vllm serve`), on NVIDIA GPUs or Cloud TPUs."""

from __future__ import annotations

import json
import math

from .. import adapters
from .. import chat_template
from ..api.v1alpha1 import GemmaDeploymentSpec
from ..planner import Plan
from . import CACHE_DIR, PORT, XET_CHUNK_CACHE_OFF, Server, cache_volume, container, env, gib, shm_volume

COMMAND = ["vllm", "serve"]
# Host RAM beyond the weights: safetensors are staged through page cache while loading.
HOST_MEMORY_HEADROOM_GIB = 4
HOST_MEMORY_SHARE = 0.9


def _fraction(value: float) -> str:
    """Two decimals (0.90), or three for a time-sliced share of it (0.225)."""
    text = f"{value:.3f}"
    return text[:-1] if text.endswith("0") else text


def args(plan: Plan, adapter_store: str | None = None) -> list[str]:
    """`adapter_store`: where a filled cache is mounted (its adapters in it); None: the pod downloads them."""
    result = [
        plan.model_id,
        "--served-model-name", plan.served_model_name,
        "--host", "0.0.0.0",
        "--port", str(PORT),
        "--dtype", plan.dtype,
        "--max-model-len", str(plan.max_model_len),
        "--tensor-parallel-size", str(plan.tensor_parallel_size),
        "--gpu-memory-utilization", _fraction(plan.gpu_memory_utilization),
    ]  # fmt: skip
    if plan.vllm_quantization:
        result += ["--quantization", plan.vllm_quantization]
    result += multimodal_args(plan)
    if plan.task == "embed":
        result += embedding_args(plan)
    return result + adapters.vllm_args(plan.adapters, adapter_store)


def embedding_args(plan: Plan) -> list[str]:
    """An embedding model on vLLM's pooling runner (vLLM 0.32: `--runner pooling`), the batch the memory
    plan counted, and the Matryoshka sizes, so that a request's `dimensions` is honoured."""
    result = ["--runner", "pooling", "--max-num-batched-tokens", str(plan.batch_tokens)]
    if len(plan.embedding_dimensions) > 1:
        result += ["--hf-overrides", json.dumps({"matryoshka_dimensions": list(plan.embedding_dimensions)})]
    return result


def multimodal_args(plan: Plan) -> list[str]:
    """Images and audio: the most per request, and 0 for the checkpoint's other inputs (vLLM then skips
    their encoders and profiling); text only on a multimodal checkpoint: the language model alone
    (vLLM 0.32's --language-model-only: every limit 0, no encoder loaded or profiled)."""
    if plan.language_only:
        return ["--language-model-only"]
    if not plan.media:
        return []
    asked = dict(plan.media)
    limits = {m: asked.get(m, 0) for m in plan.modalities}
    return ["--limit-mm-per-prompt", json.dumps(limits, separators=(",", ":"))]


def resources(plan: Plan) -> dict:
    pool = plan.pool
    memory = min(plan.weights_gib + HOST_MEMORY_HEADROOM_GIB, pool.node_memory_gib * HOST_MEMORY_SHARE)
    cpu = max(1, min(4 * plan.tensor_parallel_size, math.floor(pool.node_cpu) - 1))
    device = {pool.resource_name: str(plan.accelerator_count)} if pool.resource_name else {}
    return {
        "requests": {"cpu": str(cpu), "memory": gib(memory), **device},
        "limits": {"memory": gib(memory), **device},
    }


def server(plan: Plan, spec: GemmaDeploymentSpec, image: str, adapter_store: str | None = None) -> Server:
    models, models_mount = cache_volume()
    shm, shm_mount = shm_volume(gib(2 * plan.tensor_parallel_size))
    own_env = [
        {"name": "HF_HOME", "value": f"{CACHE_DIR}/huggingface"},
        dict(XET_CHUNK_CACHE_OFF),  # HF_HOME is on the size-limited `models` emptyDir
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    ]
    volumes, mounts = [models, shm], [models_mount, shm_mount]
    if template := chat_template.volume(spec):
        volumes.append(template[0])
        mounts.append(template[1])
    return Server(
        container=container(
            "vllm", image, COMMAND, args(plan, adapter_store) + chat_template.args(spec, "vllm") + list(spec.extra_args),
            env(spec, own_env), resources(plan), mounts, plan,
        ),
        volumes=volumes,
    )  # fmt: skip
