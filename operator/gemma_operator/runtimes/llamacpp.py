"""Plan -> llama.cpp's `llama-server` on a GGUF file, on CPUs or (offloading every layer) a CUDA GPU."""

from __future__ import annotations

import math

from .. import adapters
from .. import chat_template
from ..api.v1alpha1 import GemmaDeploymentSpec
from ..planner import Plan
from . import CACHE_DIR, PORT, Server, cache_volume, container, env, gib, shm_volume

COMMAND = ["/app/llama-server"]
ALL_LAYERS = "999"
# Memory beyond the estimate: tokenizer, HTTP slots, page cache churn while mmapping the file.
MEMORY_HEADROOM_GIB = 1.0
HOST_MEMORY_SHARE = 0.9  # of the node's allocatable memory, as for vLLM


def threads(plan: Plan) -> int:
    # Leave one core to the kubelet and the HTTP threads.
    return max(1, math.floor(plan.pool.node_cpu) - 1)


def args(plan: Plan, adapter_store: str | None = None) -> list[str]:
    """`adapter_store`: where a filled cache is mounted (its adapters in it); None: the pod downloads them."""
    if plan.model_file:
        source = ["--hf-repo", plan.model_id, "--hf-file", plan.model_file]
    else:
        source = ["--hf-repo", f"{plan.model_id}:{plan.quantization.upper()}"]
    result = source + [
        "--alias", plan.served_model_name,
        "--host", "0.0.0.0",
        "--port", str(PORT),
        "--ctx-size", str(plan.max_model_len),
        "--metrics",
    ]  # fmt: skip
    if plan.task == "embed":
        # /v1/embeddings, pooled as the model card says; a non-causal model reads a whole input in one
        # micro-batch, so the micro-batch holds the context.
        result += ["--embeddings", "--pooling", plan.pooling or "mean",
                   "--batch-size", str(plan.batch_tokens), "--ubatch-size", str(plan.batch_tokens)]  # fmt: skip
    result += adapters.llamacpp_args(plan.adapters, adapter_store)
    if plan.chat_template:
        result.append("--jinja")  # apply the chat template shipped inside the GGUF
    result += multimodal_args(plan)
    if plan.pool.kind == "cpu":
        result += ["--threads", str(threads(plan))]
    else:
        result += ["--n-gpu-layers", ALL_LAYERS]
    return result


def multimodal_args(plan: Plan) -> list[str]:
    """Image or audio input: the projector GGUF (mmproj) of the model's repo, which llama-server's -hf
    downloader fetches into LLAMA_CACHE beside the weights and loads (b11434: --mmproj takes a local
    path, whose snapshot directory is only known once downloaded; with -hf it is left out and
    --mmproj-auto picks the repo's projector). Text only on a multimodal checkpoint: --no-mmproj, or
    b11434 fetches and loads the projector anyway (its -hf default)."""
    if plan.media:
        return ["--mmproj-auto"]
    return ["--no-mmproj"] if plan.language_only else []


def resources(plan: Plan) -> dict:
    pool = plan.pool
    if pool.kind == "cpu":
        memory = gib(plan.estimated_memory_gib + MEMORY_HEADROOM_GIB)
        return {"requests": {"cpu": str(threads(plan)), "memory": memory}, "limits": {"memory": memory}}
    # The GGUF is read through page cache onto the GPU: the host needs little beyond it, and never
    # more than the node has (a request above allocatable would keep the autoscaler from adding it).
    memory = gib(min(plan.weights_gib + 2, pool.node_memory_gib * HOST_MEMORY_SHARE))
    device = {pool.resource_name: "1"}
    return {"requests": {"cpu": "2", "memory": memory, **device}, "limits": {"memory": memory, **device}}


def server(plan: Plan, spec: GemmaDeploymentSpec, image: str, adapter_store: str | None = None) -> Server:
    models, models_mount = cache_volume()
    shm, shm_mount = shm_volume("1Gi")
    own_env = [{"name": "LLAMA_CACHE", "value": CACHE_DIR}]
    volumes, mounts = [models, shm], [models_mount, shm_mount]
    if template := chat_template.volume(spec):
        volumes.append(template[0])
        mounts.append(template[1])
    argv = args(plan, adapter_store)
    if spec.chat_template is not None and "--jinja" not in argv:
        argv.append("--jinja")  # before --chat-template: without it llama-server takes only templates it knows
    return Server(
        container=container(
            "llama-server", image, COMMAND, argv + chat_template.args(spec, "llamacpp") + list(spec.extra_args),
            env(spec, own_env), resources(plan), mounts, plan,
        ),
        volumes=volumes,
    )  # fmt: skip
