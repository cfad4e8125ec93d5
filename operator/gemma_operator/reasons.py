"""The reasons a selection carries: one sentence per choice (size, tuning, accelerator, capacity,
replicas, quantization, runtime, parallelism, context, image), each saying why. Pure; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import capacity
from .api.v1alpha1 import GemmaDeploymentSpec
from .catalog import Catalog
from .fitting import Attempt
from .inventory import GFD_REPLICAS
from .plans import PRECISION, RUNTIME_NAMES, Plan, and_join, or_join, token_warning
from .ranking import RANKING, RANKING_EMBED, why_lost, worse_plan
from .request import Model


def by_length(too_short: dict[str, int]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for size, length in too_short.items():
        grouped.setdefault(length, []).append(size)
    return grouped


@dataclass(frozen=True)
class Context:
    """What explain needs beyond the plan: the earlier choices and what was left out."""

    reasons: list[str]
    skipped_sizes: list[str]
    too_short: dict[str, int]
    skipped_nodes: tuple[str, ...]
    alias: str | None
    catalog: Catalog


def _placeable(best: Plan) -> tuple[int | None, int]:
    """Replicas the pool can hold at once (None: as many as it grows to), and how many per node."""
    pool = best.pool
    if pool.kind == "gpu":
        # A shared GPU takes one pod per replica, each planned for its share.
        per_node = pool.devices_per_node // max(1, best.accelerator_count) * pool.replicas
    else:
        per_node = 1  # a TPU pod takes every chip of its host; a CPU pod all but one of the node's CPUs
    if pool.source != "nodes":
        return (per_node * pool.max_nodes if pool.max_nodes else None), per_node
    return per_node * len(pool.nodes), per_node


def _quantization_why(best: Plan, chosen: Attempt) -> str:
    """Why the pool serves this precision and not one it would rather have: memory, or no checkpoint."""
    preferred = [r for r in chosen.preferred_rejections() if (r.runtime, r.quantization) != (best.runtime, best.quantization)]
    parts = []
    memory = list(dict.fromkeys(f"{RUNTIME_NAMES[r.runtime]} {r.quantization}" for r in preferred if r.kind == "memory"))
    if memory:
        pool = best.pool
        device = f"a 1/{pool.replicas} share of {pool.display_name}" if pool.replicas > 1 else pool.display_name
        parts.append(f"higher precisions do not fit {device} ({', '.join(memory)})")
    for runtime, fmt in (("vllm", "checkpoint"), ("llamacpp", "GGUF")):
        missing = list(dict.fromkeys(r.quantization for r in preferred if r.kind == "missing" and r.runtime == runtime))
        if missing:
            model = f"{best.family} {best.size}" + (f" {best.tuning}" if runtime == "llamacpp" else "")
            tail = " for vLLM" if runtime == "vllm" else ""
            parts.append(f"no {or_join(missing)} {fmt} of {model}{tail} in the catalog")
    parts += list(dict.fromkeys(r.text for r in preferred if r.kind == "device"))
    return "; ".join(parts) or "the most precise option this pool has"


def explain(best: Plan, model: Model, spec: GemmaDeploymentSpec, context: Context, others: list[Plan],
             attempts: list[Attempt], chosen: Attempt) -> Plan:  # fmt: skip
    out = list(context.reasons)
    pool = best.pool
    size = model.size
    skipped_sizes = context.skipped_sizes
    short = "; ".join(f"{and_join(sizes)} stop at {length} tokens" for length, sizes in by_length(context.too_short).items())
    short = f", whose context reaches maxModelLen {spec.max_model_len} ({short})" if short else ""
    if spec.model.id:
        pass
    elif spec.model.size != "auto":
        out.append(f"Size {best.size}: as asked.")
    elif spec.model.size_policy == "cheapest":
        out.append(f"Size {best.size}: chosen by sizePolicy cheapest, with the pool and precision (see Cost).")
    elif spec.model.size_policy == "largest":
        tail = f"; {', '.join(skipped_sizes)} cannot be served here" if skipped_sizes else ""
        out.append(f"Size {best.size}: the largest {best.family} size that fits (sizePolicy largest){short}{tail}.")
    else:
        tail = f"; {', '.join(skipped_sizes)} cannot be served here" if skipped_sizes else ""
        out.append(f"Size {best.size}: the smallest {best.family} size (sizePolicy smallest, Google's default advice){short}{tail}.")
    family = model.family
    if best.task == "embed":
        out.append("Task embed: an embedding model has one checkpoint (no instruction-tuned variant) and no chat "
                   "template; clients POST text to /v1/embeddings and get one vector per input.")  # fmt: skip
        out.append(_embedding_reason(best))
    elif best.tuning == "it" and family.chat_template:
        out.append("Tuning it: instruction-tuned; the server applies Gemma's chat template, so clients call /v1/chat/completions.")
    elif best.tuning == "it":
        out.append(f"Tuning it: {family.display_name} has no Gemma chat template; see the request format below.")
    else:
        out.append("Tuning pt: the pre-trained base model, for /v1/completions; it has no chat template.")
    if family.kind != "core" and family.prompt_format:
        # Specialised families expect their own request format: say which, from the model card.
        out.append(f"Requests ({family.display_name}): {family.prompt_format.strip()}")
    if family.kind != "core" and family.license:
        # A specialised family may carry other terms than Gemma's (MedGemma, TxGemma: HAI-DEF): say which.
        gate = ("gated on the Hugging Face Hub: accept the license on the model's page with the account whose token "
                "spec.hfTokenSecretRef holds" if best.gated else "not gated on the Hugging Face Hub")  # fmt: skip
        out.append(f"License: {family.license} ({family.license_url}); {best.model_id} is {gate}.")
    if (template := spec.chat_template) is not None:
        if template.config_map_ref is None:
            out.append("Chat template: spec.chatTemplate.inline replaces the checkpoint's, passed to the server as "
                       "one argument; it parses, and renders a sample conversation, in jinja2's sandbox.")  # fmt: skip
        else:
            ref = template.config_map_ref
            out.append(f"Chat template: ConfigMap {ref.name}, key {ref.key}, replaces the checkpoint's, mounted as a "
                       "file; its text is parsed and tried on a sample conversation in jinja2's sandbox once read.")  # fmt: skip

    unit = {"gpu": "GPU", "tpu": "TPU chip", "cpu": "node"}[pool.kind]
    if spec.accelerator == "auto" and len(attempts) == 1:
        out.append(f"Accelerator {pool.accelerator} ({pool.describe()}): the only schedulable pool.")
    elif spec.accelerator == "auto":
        lost = [f"{p.pool.name} ({why_lost(best, p, context.catalog)})" for p in others]
        tail = f"; also possible: {', '.join(lost)}" if lost else ""
        ranking = RANKING_EMBED if best.task == "embed" else RANKING
        if best.task == "embed" and spec.model.size_policy == "cheapest":
            # The pool was chosen by predicted cost (objective.cheapest), whose reason names the runners-up.
            ranking, tail = "by the lowest predicted cost per million input tokens (sizePolicy cheapest; see Cost)", ""
        out.append(f"Accelerator {pool.accelerator} ({pool.describe()}): the best pool for it, {ranking}{tail}.")
    else:
        how = f", as GKE labels it ({context.alias})" if context.alias else ""
        out.append(f"Accelerator {pool.accelerator} ({pool.describe()}): as asked{how}.")
    if pool.time_sliced:
        claims = (f"vLLM claims only that (--gpu-memory-utilization {best.gpu_memory_utilization:g}, a fraction of the "
                  "whole GPU)" if best.runtime == "vllm" else "llama.cpp allocates no more than the plan")  # fmt: skip
        out.append(
            f"Time-sliced GPU: {pool.replicas} pods share each {pool.display_name} ({GFD_REPLICAS}) and time-slicing "
            f"does not partition its memory, so each pod plans for a 1/{pool.replicas} share, "
            f"{pool.device_memory_gib:g} GiB; {claims}."
        )
    no = [f"{a.pool.name} ({'; '.join(a.why_not)})" for a in attempts if not a.plan and a.why_not]
    if no:
        out.append(f"Pools that cannot serve it: {', '.join(no)}.")
    if context.skipped_nodes:
        out.append(f"Nodes not used: {'; '.join(context.skipped_nodes)}.")
    # With accelerator auto and several pools, the Accelerator reason already lists the others.
    out += _capacity_reasons(best, others, listed=spec.accelerator == "auto" and len(attempts) > 1)
    placeable, per_node = _placeable(best)
    if placeable is not None and spec.replicas > placeable:
        nodes = f"maxNodes {pool.max_nodes}" if pool.source != "nodes" else f"{len(pool.nodes)} node(s)"
        out.append(
            f"Replicas {spec.replicas}: only {placeable} can be placed on {pool.name} ({nodes}, "
            f"{per_node} replica(s) per node) until the pool grows; the others stay Pending."
        )

    per_device = best.estimated_memory_gib / max(1, best.tensor_parallel_size)
    if spec.quantization != "auto" or model.pinned:
        out.append(f"Quantization {best.quantization}: as asked ({per_device:.1f} GiB per {unit}).")
    elif PRECISION[best.quantization] == 16:
        out.append(f"Quantization {best.quantization}: 16-bit fits ({per_device:.1f} GiB per {unit}), so no quantization is needed.")
    elif pool.kind == "cpu" and best.quantization == "q4_0":
        out.append("Quantization q4_0: Google's quantization-aware-trained 4-bit GGUF, the recommended format for CPUs.")
    else:
        out.append(
            f"Quantization {best.quantization}: {_quantization_why(best, chosen)} "
            f"({per_device:.1f} GiB per {unit} at {best.quantization})."
        )
    if best.vllm_quantization == "fp8":
        native = pool.cc >= (8, 9)
        out.append(f"fp8 is quantized in flight by vLLM ({'native FP8' if native else 'weight-only FP8 via Marlin'} on compute capability {pool.compute_capability}).")

    if best.runtime == "vllm":
        where = "TPUs" if pool.kind == "tpu" else "GPUs"
        out.append(f"Runtime vllm: {where} run vLLM on the safetensors checkpoint, dtype {best.dtype}.")
    elif pool.kind == "cpu":
        out.append(f"Runtime llamacpp: CPU-only nodes run llama.cpp's server on the GGUF file {best.model_file or best.model_id}.")
    else:
        if spec.runtime == "llamacpp" or spec.quantization in ("q4_0", "q8_0"):
            why = "as asked"
        elif not pool.bf16 and not model.family.runtimes["vllm"].float16:
            why = f"{pool.display_name} has no bf16 and vLLM refuses float16 for {best.family}"
        elif vllm_refused := [r.text for a in attempts if a.pool == pool for r in a.rejected
                              if (r.runtime, r.quantization, r.kind) == ("vllm", "*", "device")]:  # fmt: skip
            why = vllm_refused[0]  # e.g. vLLM's image is built for newer GPUs than this one
        else:
            why = "vLLM has no plan that fits this GPU"
        out.append(f"Runtime llamacpp on CUDA: {why}; every layer is offloaded to the GPU.")

    if best.task == "embed":
        how = ("vLLM's pooling runner (--runner pooling), which applies the checkpoint's sentence-transformers "
               "pooling and Dense layers" if best.runtime == "vllm"
               else f"llama.cpp's server with --embeddings and --pooling {best.pooling or 'mean'}")  # fmt: skip
        out.append(f"Serving embeddings: {how}; clients call /v1/embeddings (the model generates no text).")
    out += _input_reasons(best, model)

    if best.runtime == "vllm" and pool.kind == "tpu":
        out.append(
            f"Tensor parallelism {best.tensor_parallel_size}: a GKE TPU pod takes all {pool.devices_per_node} chips "
            f"of its {pool.tpu_topology} host; {best.tensor_parallel_size} divides the {size.architecture.attention_heads} attention heads."
        )
    elif best.tensor_parallel_size > 1:
        out.append(
            f"Tensor parallelism {best.tensor_parallel_size}: the fewest GPUs of one node that hold the weights and "
            f"the longest context; {best.tensor_parallel_size} divides the {size.architecture.attention_heads} attention heads."
        )
    elif best.runtime == "vllm":
        out.append("Tensor parallelism 1: one device holds the model.")

    arch = size.architecture
    window = f"; sliding-window layers hold at most {arch.sliding_window} tokens" if arch.sliding_window else ""
    if best.task == "embed":
        batch = best.estimated_memory_gib / max(1, best.tensor_parallel_size)
        out.append(
            f"Context {best.max_model_len} tokens: {'as asked, within ' if spec.max_model_len else ''}the embedding "
            f"model's input limit ({size.max_context}); it keeps no KV cache (each input is read once and pooled), so "
            f"memory is planned for a batch of {best.batch_tokens} tokens per forward pass instead "
            f"({batch:.1f} GiB per {unit} with the weights)."
        )
    elif spec.max_model_len:
        out.append(f"Context {best.max_model_len} tokens: as asked{window}.")
    elif best.max_model_len == size.max_context:
        out.append(f"Context {best.max_model_len} tokens: the model's maximum, and its KV cache fits{window}.")
    else:
        out.append(f"Context {best.max_model_len} tokens: the largest whose KV cache fits (the model allows {size.max_context}){window}.")
    user = (f"runs as non-root user {best.run_as[0]}, group {best.run_as[1]}" if best.run_as
            else "keeps the image's root user (no non-root user is known to work with it), without privilege escalation or capabilities")  # fmt: skip
    if spec.image:
        out.append(f"Image {spec.image}: set by spec.image, in place of {best.image} (pinned in the catalog for "
                   f"{best.image_key}); it {user}, as that image would.")  # fmt: skip
    else:
        out.append(f"Image {best.image}: pinned in the catalog for {best.image_key}; {user}.")
    warning = token_warning(best, spec)
    if warning:
        out.append(warning)
    # The selection describes what runs: the user's image and nodeSelector, not only the plan's.
    return replace(best, image=spec.image or best.image, spec_node_selector=dict(spec.node_selector),
                   reasons=tuple(out))


def _input_reasons(best: Plan, model: Model) -> list[str]:
    """What the server accepts beyond text, how, and what its encoders cost (or save)."""
    encoders = model.size.encoders
    if best.language_only:
        skipped = [f"{e.name} ({e.params_b:g}B)" for m, e in encoders.items() if e.in_params]
        saved = f"; its {and_join(skipped)} encoder is neither loaded nor profiled" if skipped else ""
        how = "--language-model-only" if best.runtime == "vllm" else "--no-mmproj"
        return [f"Inputs text: {best.family} {best.size} also takes {and_join(list(best.modalities))}, which "
                f"model.inputs does not ask for, so the server runs the language model alone ({how}){saved}."]  # fmt: skip
    if not best.media:
        return []
    asked = and_join([f"{count} {m}{'s' if count > 1 else ''}" for m, count in best.media])
    if best.runtime == "vllm":
        off = [m for m in best.modalities if m not in dict(best.media)]
        tail = f", 0 {or_join(off)} (their encoders are not loaded)" if off else ""
        how = f"vLLM accepts at most {asked} per request (--limit-mm-per-prompt){tail}"
        counted = [f"{e.name} ({e.params_b:g}B, {'in' if e.in_params else 'added to'} the parameter count)"
                   for m, e in encoders.items() if m in dict(best.media)]  # fmt: skip
        memory = f"; the {and_join(counted)} is in the weights" if counted else \
            "; the catalog has no size for its encoder, so the estimate holds the language model only"  # fmt: skip
    else:
        how = (f"llama.cpp loads the projector {best.projector_file} from {best.model_id} (--mmproj-auto: downloaded "
               f"and cached with the weights); llama-server has no per-request limit, so {asked} is the client's to keep")  # fmt: skip
        memory = f"; its {best.projector_bytes / 2**30:.2f} GiB are in the estimate and the cache"
    return [f"Inputs {', '.join(['text', *dict(best.media)])}: {how}{memory}."]


def _capacity_reasons(best: Plan, others: list[Plan], listed: bool) -> list[str]:
    pool = best.pool
    out = []
    if pool.source == "standard":
        out.append(
            f"Capacity scale-up: no {pool.accelerator} node exists and no pool is declared for it, so the plan "
            f"uses the catalog's standard GKE shape ({pool.machine_type}, {pool.devices_per_node} x "
            f"{pool.display_name}); the pod's selectors and requests make GKE's cluster autoscaler or node "
            "auto-provisioning add such a node. Declare the pool (plan --capacity, chart value capacity.pools) "
            "to plan on its own shape."
        )
    elif pool.source == "declared" and not pool.ready:
        spot = " Spot" if pool.node_selector.get(capacity.SPOT) == "true" else ""
        grows = f", up to {pool.max_nodes}" if pool.max_nodes else ""
        out.append(
            f"Capacity scale-up: the declared pool {pool.name} has no node yet; the pod's selectors, tolerations "
            f"and requests make GKE's cluster autoscaler or node auto-provisioning add a{spot} {pool.machine_type or 'node'}"
            f" node to it{grows}."
        )
    elif pool.source == "declared":
        out.append(f"Capacity ready: the declared pool {pool.name} has {len(pool.nodes)} ready node(s).")
    if not pool.ready:
        better = [f"{o.pool.name} ({why})" for o in others if o.pool.ready and (why := worse_plan(best, o))]
        if better and not listed:
            out.append(f"Scaling up rather than using ready nodes: {', '.join(better)}.")
    else:
        idle = [o.pool.name for o in others if not o.pool.ready and worse_plan(best, o) is None]
        if idle and not listed:
            out.append(f"Not scaled up: {', '.join(idle)} would serve no better plan than the ready nodes.")
    return out


def _embedding_reason(best: Plan) -> str:
    full, *smaller = best.embedding_dimensions
    matryoshka = (f"; Matryoshka: truncate to {or_join([str(d) for d in smaller])} and renormalise"
                  f"{' (vLLM: the request field dimensions)' if best.runtime == 'vllm' else ''}" if smaller else "")  # fmt: skip
    pooling = f", {best.pooling} pooling" if best.pooling else ""
    return f"Embeddings: {full}-dimensional vectors{pooling}{matryoshka}."
