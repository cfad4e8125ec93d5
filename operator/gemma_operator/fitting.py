"""Fitting one model on one pool: the ways each runtime can serve it there (precision, format,
image), the tensor-parallel sizes vLLM accepts, and the first way whose weights and context fit
the pool's memory. Pure; no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from . import adapters, sizing
from .api.v1alpha1 import Adapter, GemmaDeploymentSpec
from .catalog import Catalog, Checkpoint, Projector
from .inventory import Pool
from .plans import RUNTIME_NAMES, Plan
from .request import Model

# Below this many tokens a plan is not useful; try a smaller precision or another pool first.
MIN_USEFUL_CONTEXT = 4096
# Share of a CPU node's allocatable memory a llama.cpp pod may plan for (the rest: kubelet, other pods).
CPU_NODE_SHARE = 0.85
# llama.cpp on CUDA offloads every layer; leave a little for the CUDA context.
LLAMACPP_GPU_SHARE = 0.95
TP_SIZES = (1, 2, 4, 8)

VLLM_QUANTS = ("bf16", "fp16", "fp8", "int8", "int4")
GGUF_QUANTS = ("bf16", "fp16", "q8_0", "q4_0")
VLLM_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Option:
    runtime: Literal["vllm", "llamacpp"]
    quantization: str
    model_id: str
    model_file: str | None = None
    vllm_quantization: str | None = None
    projector: Projector | None = None


@dataclass(frozen=True)
class Rejected:
    """An option a pool could not take, and where it stood in the pool's order of preference."""

    runtime: str
    quantization: str
    kind: Literal["memory", "missing", "device"]
    text: str
    position: int  # options before it in the pool's list: it was preferred over option[position]


@dataclass
class Attempt:
    """The best a pool can do for one model, or why it can't."""

    pool: Pool
    plan: Plan | None = None
    chosen: int = -1
    why_not: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def reject(self, options: list[Option], runtime: str, quant: str, kind: str, text: str, *, say: bool = True) -> None:
        self.rejected.append(Rejected(runtime, quant, kind, text, len(options)))  # type: ignore[arg-type]
        if say:
            self.why_not.append(text)

    def preferred_rejections(self) -> list[Rejected]:
        """What the pool would rather have served than the chosen option."""
        return [r for r in self.rejected if r.position <= self.chosen]


def _gated(model: Model, repo: str) -> bool:
    """Whether the catalog records the repo as gated; a repo it does not know (a fine-tune) is not assumed to be."""
    for checkpoint in model.size.checkpoints:
        if checkpoint.repo.lower() == repo.lower():
            return checkpoint.gated
    return model.size.gated if repo.lower() in (r.lower() for r in model.size.ids.values()) else False


def _checkpoint(model: Model, fmt: str, quant: str) -> Checkpoint | None:
    """A published checkpoint of this model in a format and quantization, if the catalog has one."""
    for checkpoint in model.size.checkpoints:
        if (checkpoint.format, checkpoint.quantization, checkpoint.tuning) == (fmt, quant, model.tuning):
            return checkpoint
    return None


def _can_run(model: Model, runtime: str, image_key: str, pool: Pool, catalog: Catalog, attempt: Attempt,
             options: list[Option], media: tuple[str, ...] = ()) -> bool:  # fmt: skip
    """The runtime supports the family and the inputs asked, and its image runs on the pool's GPUs."""
    if not model.family.runtimes[runtime].supported:
        attempt.reject(options, runtime, "*", "device", f"{RUNTIME_NAMES[runtime]} does not support {model.family_key}")
        return False
    unserved = [m for m in media if m not in model.family.runtimes[runtime].inputs]
    if unserved:
        attempt.reject(options, runtime, "*", "device",
                       f"{RUNTIME_NAMES[runtime]} does not serve {' or '.join(unserved)} input for {model.family_key}")  # fmt: skip
        return False
    image = catalog.images[image_key]
    if pool.kind == "gpu" and pool.cc < image.min_cc:
        attempt.reject(options, runtime, "*", "device",
                       f"{image.ref} needs compute capability {image.min_compute_capability}+, "
                       f"{pool.display_name} has {pool.compute_capability}")  # fmt: skip
        return False
    return True


def _vllm_options(model: Model, pool: Pool, asked: str, attempt: Attempt, catalog: Catalog,
                  options: list[Option], media: tuple[str, ...] = ()) -> None:  # fmt: skip
    """Add the vLLM ways to serve `model` on a GPU/TPU pool to `options`, best first."""
    support = model.family.runtimes["vllm"]
    if not _can_run(model, "vllm", "vllm-gpu", pool, catalog, attempt, options, media):
        return
    if pool.kind == "tpu" and not support.tpu:
        attempt.reject(options, "vllm", "*", "device", f"vLLM on TPU does not support {model.family_key}")
        return
    if model.pinned:
        if model.pinned.format != "safetensors":
            attempt.reject(options, "vllm", "*", "device", f"{model.pinned.repo} is GGUF, which vLLM does not serve here")
            return
        options.append(Option("vllm", model.pinned.quantization, model.model_id))
        return
    first = len(options)
    for quant in VLLM_QUANTS if asked == "auto" else (asked,):
        if pool.kind == "tpu" and quant != "bf16":
            if asked != "auto":
                attempt.reject(options, "vllm", quant, "device", f"vLLM on TPU serves bf16 only, not {quant}")
            continue
        if quant == "bf16":
            if pool.bf16:
                options.append(Option("vllm", "bf16", model.model_id))
            else:
                attempt.reject(options, "vllm", "bf16", "device", f"{pool.display_name} has no bf16")
        elif quant == "fp16":
            if pool.bf16 and asked == "auto":
                continue  # bf16 already offered; same size, better range
            if not support.float16:
                attempt.reject(options, "vllm", "fp16", "device", f"vLLM refuses float16 for {model.family_key}")
            else:
                options.append(Option("vllm", "fp16", model.model_id))
        elif quant == "fp8":
            # FP8 runs natively from compute capability 8.9, and weight-only (Marlin) from 8.0.
            if pool.cc >= (8, 0):
                options.append(Option("vllm", "fp8", model.model_id, vllm_quantization="fp8"))
            else:
                attempt.reject(options, "vllm", "fp8", "device",
                               f"{pool.display_name} (compute capability {pool.compute_capability}) has no FP8 path")  # fmt: skip
        elif quant in ("int8", "int4"):
            # Only published checkpoints: vLLM 0.32 has no in-flight 8- or 4-bit path (bitsandbytes is
            # gone). Without one, llama.cpp's GGUF is the GPU's next option.
            checkpoint = _checkpoint(model, "safetensors", quant)
            if checkpoint:
                options.append(Option("vllm", quant, checkpoint.repo))
            else:
                attempt.reject(options, "vllm", quant, "missing",
                               f"no {quant} checkpoint of {model.family_key} {model.size_key} for vLLM in the catalog",
                               say=asked != "auto")  # fmt: skip
    if not pool.bf16 and not support.float16 and len(options) > first:
        # Every vLLM path computes in float16 on this device, which vLLM refuses for the family.
        del options[first:]
        attempt.reject(options, "vllm", "*", "device",
                       f"vLLM computes in float16 on {pool.display_name} and refuses float16 for {model.family_key}")  # fmt: skip


def _projector(checkpoint: Checkpoint, media: tuple[str, ...]) -> Projector | None:
    """The checkpoint's projector GGUF when it encodes every input asked."""
    projector = checkpoint.projector
    return projector if media and projector and all(m in projector.inputs for m in media) else None


def _gguf_options(model: Model, pool: Pool, asked: str, attempt: Attempt, catalog: Catalog,
                  options: list[Option], media: tuple[str, ...] = ()) -> None:  # fmt: skip
    if not _can_run(model, "llamacpp", "llamacpp-cuda", pool, catalog, attempt, options, media):
        return
    if model.pinned:
        if model.pinned.format != "gguf":
            attempt.reject(options, "llamacpp", "*", "device",
                           f"{model.pinned.repo} is safetensors, which llama.cpp does not serve")  # fmt: skip
            return
        projector = _projector(model.pinned, media)
        if media and not projector:
            attempt.reject(options, "llamacpp", model.pinned.quantization, "missing",
                           f"no projector GGUF (mmproj) for {' and '.join(media)} input with {model.pinned.repo} in the catalog")  # fmt: skip
            return
        options.append(Option("llamacpp", model.pinned.quantization, model.model_id, model.pinned.file, projector=projector))
        return
    if asked != "auto":
        ladder: tuple[str, ...] = (asked,)
    elif pool.kind == "cpu":
        ladder = ("q4_0", "q8_0")  # Google's QAT Q4_0 checkpoints are made for CPUs.
    else:
        ladder = GGUF_QUANTS
    first = len(options)
    for quant in ladder:
        checkpoint = _checkpoint(model, "gguf", quant)
        if checkpoint and media and not _projector(checkpoint, media):
            attempt.reject(options, "llamacpp", quant, "missing",
                           f"no projector GGUF (mmproj) for {' and '.join(media)} input with {checkpoint.repo} in the catalog")  # fmt: skip
        elif checkpoint:
            options.append(Option("llamacpp", quant, checkpoint.repo, checkpoint.file, projector=_projector(checkpoint, media)))
        elif model.model_id != model.size.ids.get(model.tuning):
            # A fine-tune outside the catalog: trust the user's repo to carry this GGUF type.
            options.append(Option("llamacpp", quant, model.model_id))
        else:
            attempt.reject(options, "llamacpp", quant, "missing",
                           f"no {quant} GGUF of {model.family_key} {model.size_key} {model.tuning} in the catalog",
                           say=asked != "auto")  # fmt: skip
    if len(options) == first and asked == "auto":
        with_projector = f" with a projector for {' and '.join(media)} input" if media else ""
        attempt.why_not.append(f"no GGUF checkpoint of {model.family_key} {model.size_key} {model.tuning}{with_projector} in the catalog")


def _tp_sizes(model: Model, pool: Pool) -> list[int]:
    """Tensor-parallel sizes vLLM accepts: they divide the attention heads, and the KV heads divide
    them or they divide the KV heads (vLLM replicates KV heads past their number)."""
    arch = model.size.architecture
    sizes = []
    for tp in TP_SIZES:
        if tp > max(1, pool.devices_per_node):
            break
        if arch.attention_heads % tp == 0 and (arch.kv_heads % tp == 0 or tp % arch.kv_heads == 0):
            sizes.append(tp)
    return sizes


def try_pool(model: Model, pool: Pool, spec: GemmaDeploymentSpec, catalog: Catalog) -> Attempt:
    attempt = Attempt(pool)
    why = attempt.why_not
    asked_q, asked_rt = spec.quantization, spec.runtime
    media = tuple(spec.model.media)
    options: list[Option] = []
    if pool.kind == "cpu":
        if asked_rt == "vllm":
            why.append("vLLM is planned for GPUs and TPUs only")
        elif asked_q in VLLM_QUANTS and asked_q not in GGUF_QUANTS:
            why.append(f"{asked_q} needs vLLM on a GPU")
        else:
            _gguf_options(model, pool, asked_q, attempt, catalog, options, media)
    else:
        if asked_rt in ("auto", "vllm") and asked_q not in ("q4_0", "q8_0"):
            _vllm_options(model, pool, asked_q, attempt, catalog, options, media)
        if pool.kind == "gpu" and asked_rt in ("auto", "llamacpp") and asked_q not in ("fp8", "int8", "int4"):
            # llama.cpp on CUDA: for GPUs vLLM can't use, GGUF checkpoints, or when asked.
            _gguf_options(model, pool, asked_q, attempt, catalog, options, media)
        if pool.kind == "tpu" and asked_rt == "llamacpp":
            why.append("llama.cpp does not run on TPUs")

    refusal = adapters.llamacpp_refusal(spec.adapters) if spec.adapters else None
    if refusal and any(o.runtime == "llamacpp" for o in options):
        kept = [o for o in options if o.runtime != "llamacpp"]
        first = next(o for o in options if o.runtime == "llamacpp")
        attempt.reject(kept, "llamacpp", first.quantization, "missing", refusal)
        options = kept
    wanted_len = spec.max_model_len
    for i, option in enumerate(options):
        plan = _fit(model, pool, option, wanted_len, catalog, why, spec.adapters, spec.model.media)
        if plan:
            attempt.plan, attempt.chosen = plan, i
            return attempt
        attempt.rejected.append(Rejected(option.runtime, option.quantization, "memory", why[-1], i))
    if options and pool.time_sliced:
        # The figures below are the share, not the GPU: say so once, first.
        why.insert(0, f"a 1/{pool.replicas} share of a time-sliced {pool.display_name} ({pool.device_memory_gib:g} GiB): "
                      "every pod sharing it sees all of its memory, so each plans for its share")  # fmt: skip
    return attempt


def _fit(model: Model, pool: Pool, option: Option, wanted_len: int | None, catalog: Catalog,
         why: list[str], lora: Sequence[Adapter] = (), media: dict[str, int] | None = None) -> Plan | None:  # fmt: skip
    size = model.size
    lora_gib = adapters.memory_gib(size, option.runtime, lora)
    media = media or {}
    projector_bytes = option.projector.bytes if option.projector else 0
    encoders = sizing.encoders_gib(size, option.runtime, ["text", *media], option.quantization, projector_bytes)
    if option.runtime == "llamacpp":
        tps = [1]
        if pool.kind == "cpu":
            budget = pool.node_memory_gib * CPU_NODE_SHARE
        else:
            budget = pool.device_memory_gib * LLAMACPP_GPU_SHARE
    else:
        tps = _tp_sizes(model, pool)
        if pool.kind == "tpu":
            tps = tps[-1:]  # a TPU pod takes every chip of its host; shard over as many as the heads allow
        budget = pool.device_memory_gib * sizing.GPU_MEMORY_UTILIZATION
    # The fewest devices that hold the full context; failing that, the longest context any count gives.
    floor = wanted_len or min(MIN_USEFUL_CONTEXT, size.max_context)
    # The catalogued file this option serves, if any: its size is the floor of the weights.
    served = (option.model_id.lower(), option.model_file, option.quantization)
    checkpoint = next((c for c in size.checkpoints if (c.repo.lower(), c.file, c.quantization) == served), None)
    embed = model.family.task == "embed"
    fit, needed = (sizing.fit_embedding, sizing.needed_embedding_gib) if embed else (sizing.fit, sizing.needed_gib)
    best: tuple[int, sizing.Fit] | None = None
    for tp in tps:
        # The adapters' memory (their slots shard with the layers over tp) comes out of the budget first.
        got = fit(size, option.quantization, option.runtime, budget - lora_gib / tp, tp, wanted_len, checkpoint, encoders)
        if got is not None and lora_gib:
            got = replace(got, overhead_gib=got.overhead_gib + lora_gib / tp, budget_gib=budget)
        if got is None or got.max_model_len < floor:
            continue
        if best is None or got.max_model_len > best[1].max_model_len:
            best = (tp, got)
        if got.max_model_len == (wanted_len or size.max_context):
            break
    if best:
        return replace(_plan(model, pool, option, best[0], best[1], catalog, tuple(lora)), adapter_gib=lora_gib,
                       media=tuple(media.items()), modalities=tuple(m for m in size.modalities if m != "text"),
                       projector_file=option.projector.file if option.projector else None,
                       projector_bytes=projector_bytes, encoders_gib=encoders)  # fmt: skip
    need = needed(size, option.quantization, option.runtime, floor, tps[-1] if tps else 1, checkpoint, encoders)
    need += lora_gib / (tps[-1] if tps else 1)
    unit = "node" if pool.kind == "cpu" else ("chip" if pool.kind == "tpu" else "GPU")
    why.append(
        f"{option.runtime} {option.quantization} needs {need:.1f} GiB per {unit} for {floor} tokens"
        f"{f' over {tps[-1]} devices' if tps and tps[-1] > 1 else ''}, has {budget:.1f}"
    )
    return None


def _plan(model: Model, pool: Pool, option: Option, tp: int, got: sizing.Fit, catalog: Catalog,
          lora: tuple[Adapter, ...] = ()) -> Plan:  # fmt: skip
    if option.runtime == "vllm":
        image_key = "vllm-tpu" if pool.kind == "tpu" else "vllm-gpu"
        dtype = VLLM_DTYPE.get(option.quantization, "bfloat16" if pool.bf16 else "float16")
        count = pool.devices_per_node if pool.kind == "tpu" else tp
    else:
        image_key = "llamacpp-cpu" if pool.kind == "cpu" else "llamacpp-cuda"
        dtype = option.quantization
        count = 0 if pool.kind == "cpu" else 1
    image = catalog.images[image_key]
    devices = max(1, tp)
    return Plan(
        family=model.family_key, size=model.size_key, tuning=model.tuning, model_id=option.model_id,
        model_file=option.model_file, served_model_name=model.served_name, quantization=option.quantization,
        dtype=dtype, runtime=option.runtime, image_key=image_key, image=image.ref, pool=pool,
        accelerator_count=count, tensor_parallel_size=tp, max_model_len=got.max_model_len,
        estimated_memory_gib=got.total_gib * devices, weights_gib=got.weights_gib * devices,
        vllm_quantization=option.vllm_quantization, chat_template=model.family.chat_template and model.tuning == "it",
        run_as=(image.run_as.user, image.run_as.group) if image.run_as else None,
        gated=_gated(model, option.model_id),
        checkpoint_bytes=sizing.checkpoint_bytes(model.size, option.model_id, option.model_file)
        + (option.projector.bytes if option.projector else 0),
        adapters=lora, base_id=model.model_id, adapter_bytes=adapters.download_bytes(model.size, lora),
        **(dict(task="embed", embedding_dimensions=tuple(model.size.embedding_dimensions), pooling=model.size.pooling,
                batch_tokens=sizing.embed_batch_tokens(option.runtime, got.max_model_len))
           if model.family.task == "embed" else {}),
    )  # fmt: skip
