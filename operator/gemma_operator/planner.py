"""The decision: (spec, pools, catalog) -> Plan with reasons, or NoFit. Pure; no I/O.

It follows Google's "run Gemma" guidance: the latest core family, instruction-tuned,
the smallest size; 16-bit first and quantized only when memory demands it (4-bit GGUF
on CPUs); vLLM on GPUs and TPUs, llama.cpp on CPUs and on GPUs vLLM cannot use.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from . import capacity, objective, sizing
from .api.v1alpha1 import GemmaDeploymentSpec
from .catalog import Catalog, Checkpoint, Family, ModelSize
from .inventory import Inventory, Pool

# Below this many tokens a plan is not useful; try a smaller precision or another pool first.
MIN_USEFUL_CONTEXT = 4096
# Share of a CPU node's allocatable memory a llama.cpp pod may plan for (the rest: kubelet, other pods).
CPU_NODE_SHARE = 0.85
# llama.cpp on CUDA offloads every layer; leave a little for the CUDA context.
LLAMACPP_GPU_SHARE = 0.95
TP_SIZES = (1, 2, 4, 8)

PRECISION = {"bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "q8_0": 8, "int4": 4, "q4_0": 4}
VLLM_QUANTS = ("bf16", "fp16", "fp8", "int8", "int4")
GGUF_QUANTS = ("bf16", "fp16", "q8_0", "q4_0")
VLLM_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}
RUNTIME_NAMES = {"vllm": "vLLM", "llamacpp": "llama.cpp"}


class InvalidSpec(ValueError):
    """The spec contradicts the catalog or the runtimes, whatever the cluster has."""

    def __init__(self, field_path: str, message: str):
        # Paths are relative to spec unless they name metadata.
        self.field = field_path if field_path.startswith("metadata.") else f"spec.{field_path}"
        super().__init__(f"{self.field}: {message}")


@dataclass(frozen=True)
class Plan:
    family: str
    size: str
    tuning: str
    model_id: str
    model_file: str | None
    served_model_name: str
    quantization: str
    dtype: str
    runtime: Literal["vllm", "llamacpp"]
    image_key: str
    image: str
    pool: Pool
    accelerator_count: int
    tensor_parallel_size: int
    max_model_len: int
    estimated_memory_gib: float
    weights_gib: float
    vllm_quantization: str | None = None
    chat_template: bool = True
    run_as: tuple[int, int] | None = None  # (uid, gid) the server runs as; None keeps the image's root
    reasons: tuple[str, ...] = ()
    spec_node_selector: dict[str, str] = field(default_factory=dict)  # spec.nodeSelector, on top of the pool's
    gated: bool = False  # the Hub serves the checkpoint only with a token (catalog `gated`)
    checkpoint_bytes: int = 0  # what the server downloads (sizing.checkpoint_bytes)
    predicted: dict | None = None  # status.selection.predicted (objective.annotate)

    @property
    def node_selector(self) -> dict[str, str]:
        """The pod's nodeSelector: the pool's labels, and the spec's on top."""
        return {**self.pool.node_selector, **self.spec_node_selector}

    def selection(self) -> dict:
        """The plan as `status.selection` (camelCase, JSON-ready)."""
        return {
            "modelId": self.model_id,
            **({"modelFile": self.model_file} if self.model_file else {}),
            "servedModelName": self.served_model_name,
            "family": self.family,
            "size": self.size,
            "tuning": self.tuning,
            "quantization": self.quantization,
            "dtype": self.dtype,
            "runtime": self.runtime,
            "image": self.image,
            "accelerator": self.pool.accelerator,
            "acceleratorCount": self.accelerator_count,
            "tensorParallelSize": self.tensor_parallel_size,
            "maxModelLen": self.max_model_len,
            "estimatedMemoryGiB": round(self.estimated_memory_gib, 1),
            "pool": self.pool.name,
            "capacity": "ready" if self.pool.ready else "scale-up",
            "nodeSelector": self.node_selector,
            **({"predicted": self.predicted} if self.predicted else {}),
            "reasons": list(self.reasons),
        }


# Selection keys that describe a plan without being one: the explanation, and whether its pool
# had a node yet (a scale-up that completes serves the same plan).
_NOT_THE_PLAN = ("reasons", "capacity", "predicted")


def replans(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether selection `new` serves something else than `old`: a new model, runtime, pool, ..."""
    return {k: v for k, v in (old or {}).items() if k not in _NOT_THE_PLAN} != {
        k: v for k, v in new.items() if k not in _NOT_THE_PLAN
    }


@dataclass(frozen=True)
class Suggestion:
    """One change to the spec that would plan, and what it plans."""

    field: str  # the spec path, as a user writes it
    value: str | int
    fits: str

    def text(self) -> str:
        return f"{self.field}: {self.value} ({self.fits})"

    def as_dict(self) -> dict:
        return {"field": self.field, "value": self.value, "fits": self.fits}


@dataclass(frozen=True)
class NoFit:
    """Nothing in the cluster can serve the request: what was needed, what there is, and what would fit."""

    needed: str
    available: tuple[str, ...]
    details: tuple[str, ...] = ()  # each blocker, per size and pool
    skipped: tuple[str, ...] = ()  # nodes not used, each with why
    suggestions: tuple[Suggestion, ...] = ()

    @property
    def message(self) -> str:
        """One line, for status and events."""
        has = "; ".join(self.available) if self.available else "no schedulable nodes"
        text = f"{self.needed} The cluster has: {has}."
        if self.details:
            text += " " + " ".join(self.details)
        if self.skipped:
            text += f" Nodes not used: {'; '.join(self.skipped)}."
        if self.suggestions:
            text += f" Would fit: {'; '.join(s.text() for s in self.suggestions)}."
        return text

    def report(self) -> str:
        """The same, in sections: what was needed, what the cluster has, what would fit."""
        lines = [f"no fit: {self.needed}", "", "needed:"]
        lines += [f"  - {d}" for d in self.details] or ["  - (no pool to try)"]
        lines += ["", "the cluster has:"]
        lines += [f"  - {a}" for a in self.available] or ["  - no schedulable nodes"]
        lines += [f"  - not used: {s}" for s in self.skipped]
        lines += ["", "would fit:"]
        lines += [f"  - {s.text()}" for s in self.suggestions] or [
            "  - no single change to the spec; the cluster needs larger or more devices"
        ]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Model:
    family_key: str
    family: Family
    size_key: str
    size: ModelSize
    tuning: str
    model_id: str
    served_name: str
    pinned: Checkpoint | None = None  # spec.model.id named a quantized checkpoint


@dataclass(frozen=True)
class _Option:
    runtime: Literal["vllm", "llamacpp"]
    quantization: str
    model_id: str
    model_file: str | None = None
    vllm_quantization: str | None = None


@dataclass(frozen=True)
class _Rejected:
    """An option a pool could not take, and where it stood in the pool's order of preference."""

    runtime: str
    quantization: str
    kind: Literal["memory", "missing", "device"]
    text: str
    position: int  # options before it in the pool's list: it was preferred over option[position]


@dataclass
class _Attempt:
    """The best a pool can do for one model, or why it can't."""

    pool: Pool
    plan: Plan | None = None
    chosen: int = -1
    why_not: list[str] = field(default_factory=list)
    rejected: list[_Rejected] = field(default_factory=list)

    def reject(self, options: list[_Option], runtime: str, quant: str, kind: str, text: str, *, say: bool = True) -> None:
        self.rejected.append(_Rejected(runtime, quant, kind, text, len(options)))  # type: ignore[arg-type]
        if say:
            self.why_not.append(text)

    def preferred_rejections(self) -> list[_Rejected]:
        """What the pool would rather have served than the chosen option."""
        return [r for r in self.rejected if r.position <= self.chosen]


def _basename(repo: str) -> str:
    return repo.rsplit("/", 1)[-1].lower()


def _latest_core(catalog: Catalog) -> str:
    return max((f for f in catalog.families if catalog.families[f].kind == "core"),
               key=lambda f: catalog.families[f].generation)  # fmt: skip


def _find_id(catalog: Catalog, repo: str) -> tuple[str, str, str, Checkpoint | None] | None:
    for fkey, family in catalog.families.items():
        for skey, size in family.sizes.items():
            for tuning, base in size.ids.items():
                if base.lower() == repo.lower():
                    return fkey, skey, tuning, None
            for checkpoint in size.checkpoints:
                if checkpoint.repo.lower() == repo.lower():
                    return fkey, skey, checkpoint.tuning, checkpoint
    return None


def resolve_models(spec: GemmaDeploymentSpec, catalog: Catalog) -> tuple[list[_Model], list[str], dict[str, int]]:
    """The candidate models in preference order, the reasons for the family/size/tuning choice, and
    the sizes left out because their context stops short of maxModelLen (size -> its context)."""
    m = spec.model
    reasons: list[str] = []
    if m.id:
        found = _find_id(catalog, m.id)
        if found:
            fkey, skey, tuning, pinned = found
            for name, asked, got in (("family", m.family, fkey), ("size", m.size, skey)):
                if asked not in ("auto", got):
                    raise InvalidSpec(f"model.{name}", f"{asked!r} contradicts model.id {m.id} ({name} {got})")
            family = catalog.families[fkey]
            size = family.sizes[skey]
            reasons.append(f"Model {m.id}: named by spec.model.id; the catalog knows it as {fkey} {skey} {tuning}.")
            served = _basename(size.ids.get(tuning, m.id))
            return [_Model(fkey, family, skey, size, tuning, m.id, served, pinned)], reasons, {}
        if m.family == "auto" or m.size == "auto":
            raise InvalidSpec(
                "model.id",
                f"{m.id} is not in the catalog; set model.family and model.size to the Gemma it was "
                "fine-tuned from, so it can be sized",
            )
    fkey = m.family
    if fkey == "auto":
        fkey = _latest_core(catalog)
        reasons.append(f"Family {fkey}: the latest core Gemma in the catalog (model.family is auto).")
    elif fkey not in catalog.families:
        raise InvalidSpec("model.family", f"unknown family {fkey!r}; known: {', '.join(sorted(catalog.families))}")
    else:
        reasons.append(f"Family {fkey}: as asked.")
    family = catalog.families[fkey]

    if m.size != "auto":
        if m.size not in family.sizes:
            raise InvalidSpec("model.size", f"{fkey} has no size {m.size!r}; it has {', '.join(family.sizes)}")
        if m.tuning not in family.sizes[m.size].ids:
            raise InvalidSpec(
                "model.tuning", f"{fkey} {m.size} has no {m.tuning} checkpoint; it has {', '.join(family.sizes[m.size].ids)}"
            )
        sizes = [m.size]
    else:
        sizes = sorted((s for s in family.sizes if m.tuning in family.sizes[s].ids),
                       key=lambda s: family.sizes[s].params_b, reverse=m.size_policy == "largest")  # fmt: skip
        if not sizes:
            raise InvalidSpec("model.tuning", f"{fkey} has no {m.tuning} checkpoints")
    if spec.max_model_len is not None:
        too_long = [s for s in sizes if family.sizes[s].max_context < spec.max_model_len]
        if len(too_long) == len(sizes):
            longest = max(family.sizes[s].max_context for s in sizes)
            raise InvalidSpec(
                "maxModelLen", f"{spec.max_model_len} tokens is beyond {fkey}'s context ({longest} tokens at most)"
            )
        sizes = [s for s in sizes if s not in too_long]
    else:
        too_long = []
    models = []
    for skey in sizes:
        size = family.sizes[skey]
        base = m.id or size.ids[m.tuning]
        models.append(_Model(fkey, family, skey, size, m.tuning, base, _basename(base)))
    return models, reasons, {s: family.sizes[s].max_context for s in too_long}


def _check_static(spec: GemmaDeploymentSpec, catalog: Catalog, models: list[_Model]) -> None:
    """Refuse what no cluster could serve: runtime/quantization/family contradictions."""
    q, rt = spec.quantization, spec.runtime
    family_key, family = models[0].family_key, models[0].family
    if rt == "vllm" and q in ("q4_0", "q8_0"):
        raise InvalidSpec("quantization", f"{q} is a GGUF format, which llama.cpp serves; vLLM takes bf16, fp16, fp8, int8 or int4")
    if rt == "llamacpp" and q in ("fp8", "int8", "int4"):
        raise InvalidSpec("quantization", f"{q} is a vLLM quantization; llama.cpp serves GGUF: bf16, fp16, q8_0 or q4_0")
    for runtime in ("vllm", "llamacpp"):
        if rt == runtime and not family.runtimes[runtime].supported:
            raise InvalidSpec("runtime", f"{runtime} does not support {family_key}: {family.runtimes[runtime].notes}")
    if q == "fp16" and rt == "vllm" and not family.runtimes["vllm"].float16:
        raise InvalidSpec("quantization", f"vLLM refuses float16 for {family_key} (numerical instability); use bf16")
    if spec.accelerator == "cpu" and rt == "vllm":
        raise InvalidSpec("runtime", "gemma-operator runs vLLM on GPUs and TPUs only; use llamacpp on CPU")
    pinned = models[0].pinned
    if pinned and q != "auto" and q != pinned.quantization:
        raise InvalidSpec("quantization", f"{q} contradicts model.id {pinned.repo}, a {pinned.quantization} checkpoint")


def _or(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def gke_aliases(catalog: Catalog) -> dict[str, str]:
    """GKE node label values -> the catalog accelerator they name."""
    return {value: name for name, acc in catalog.accelerators.items()
            for value in (*acc.match.gke_accelerator, *acc.match.gke_tpu_accelerator)}  # fmt: skip


def _resolve_accelerator(asked: str, catalog: Catalog, inventory: Inventory) -> tuple[str, str | None]:
    """spec.accelerator as a catalog name, and the GKE label value it was written as (if it was)."""
    if asked == "auto" or asked in catalog.accelerators:
        return asked, None
    aliases = gke_aliases(catalog)
    if asked in aliases:
        return aliases[asked], asked
    if any(p.accelerator == asked for p in inventory.pools):
        return asked, None  # a GPU the catalog doesn't know, named by its feature-discovery product slug
    names = sorted({*catalog.accelerators, *aliases})
    near = [n for n in names if n.startswith(asked)] or difflib.get_close_matches(asked, names, n=3, cutoff=0.75)
    if near:
        raise InvalidSpec("accelerator", f"unknown accelerator {asked!r}; did you mean {_or(near)}?")
    if asked.startswith("nvidia-"):
        return asked, None  # maybe an uncatalogued GPU whose nodes are not there yet: a NoFit, not an error
    raise InvalidSpec("accelerator", f"unknown accelerator {asked!r}; known: {', '.join(sorted(catalog.accelerators))}")


def _gated(model: _Model, repo: str) -> bool:
    """Whether the catalog records the repo as gated; a repo it does not know (a fine-tune) is not assumed to be."""
    for checkpoint in model.size.checkpoints:
        if checkpoint.repo.lower() == repo.lower():
            return checkpoint.gated
    return model.size.gated if repo.lower() in (r.lower() for r in model.size.ids.values()) else False


def token_warning(plan: Plan, spec: GemmaDeploymentSpec) -> str | None:
    """The warning for a gated checkpoint planned without a token (reasons, the TokenMissing Event, `plan`)."""
    if not plan.gated or spec.hf_token_secret_ref:
        return None
    return (
        f"{plan.model_id} is gated on the Hugging Face Hub: without spec.hfTokenSecretRef the server's download "
        "fails (401). Accept the license on the model's Hub page, store a read token of that account in a Secret, "
        "and name it in spec.hfTokenSecretRef."
    )


def _checkpoint(model: _Model, fmt: str, quant: str) -> Checkpoint | None:
    """A published checkpoint of this model in a format and quantization, if the catalog has one."""
    for checkpoint in model.size.checkpoints:
        if (checkpoint.format, checkpoint.quantization, checkpoint.tuning) == (fmt, quant, model.tuning):
            return checkpoint
    return None


def _can_run(model: _Model, runtime: str, image_key: str, pool: Pool, catalog: Catalog, attempt: _Attempt,
             options: list[_Option]) -> bool:  # fmt: skip
    """The runtime supports the family, and its image runs on the pool's GPUs."""
    if not model.family.runtimes[runtime].supported:
        attempt.reject(options, runtime, "*", "device", f"{RUNTIME_NAMES[runtime]} does not support {model.family_key}")
        return False
    image = catalog.images[image_key]
    if pool.kind == "gpu" and pool.cc < image.min_cc:
        attempt.reject(options, runtime, "*", "device",
                       f"{image.ref} needs compute capability {image.min_compute_capability}+, "
                       f"{pool.display_name} has {pool.compute_capability}")  # fmt: skip
        return False
    return True


def _vllm_options(model: _Model, pool: Pool, asked: str, attempt: _Attempt, catalog: Catalog,
                  options: list[_Option]) -> None:  # fmt: skip
    """Add the vLLM ways to serve `model` on a GPU/TPU pool to `options`, best first."""
    support = model.family.runtimes["vllm"]
    if not _can_run(model, "vllm", "vllm-gpu", pool, catalog, attempt, options):
        return
    if pool.kind == "tpu" and not support.tpu:
        attempt.reject(options, "vllm", "*", "device", f"vLLM on TPU does not support {model.family_key}")
        return
    if model.pinned:
        if model.pinned.format != "safetensors":
            attempt.reject(options, "vllm", "*", "device", f"{model.pinned.repo} is GGUF, which vLLM does not serve here")
            return
        options.append(_Option("vllm", model.pinned.quantization, model.model_id))
        return
    first = len(options)
    for quant in VLLM_QUANTS if asked == "auto" else (asked,):
        if pool.kind == "tpu" and quant != "bf16":
            if asked != "auto":
                attempt.reject(options, "vllm", quant, "device", f"vLLM on TPU serves bf16 only, not {quant}")
            continue
        if quant == "bf16":
            if pool.bf16:
                options.append(_Option("vllm", "bf16", model.model_id))
            else:
                attempt.reject(options, "vllm", "bf16", "device", f"{pool.display_name} has no bf16")
        elif quant == "fp16":
            if pool.bf16 and asked == "auto":
                continue  # bf16 already offered; same size, better range
            if not support.float16:
                attempt.reject(options, "vllm", "fp16", "device", f"vLLM refuses float16 for {model.family_key}")
            else:
                options.append(_Option("vllm", "fp16", model.model_id))
        elif quant == "fp8":
            # FP8 runs natively from compute capability 8.9, and weight-only (Marlin) from 8.0.
            if pool.cc >= (8, 0):
                options.append(_Option("vllm", "fp8", model.model_id, vllm_quantization="fp8"))
            else:
                attempt.reject(options, "vllm", "fp8", "device",
                               f"{pool.display_name} (compute capability {pool.compute_capability}) has no FP8 path")  # fmt: skip
        elif quant in ("int8", "int4"):
            # Only published checkpoints: vLLM 0.32 has no in-flight 8- or 4-bit path (bitsandbytes is
            # gone). Without one, llama.cpp's GGUF is the GPU's next option.
            checkpoint = _checkpoint(model, "safetensors", quant)
            if checkpoint:
                options.append(_Option("vllm", quant, checkpoint.repo))
            else:
                attempt.reject(options, "vllm", quant, "missing",
                               f"no {quant} checkpoint of {model.family_key} {model.size_key} for vLLM in the catalog",
                               say=asked != "auto")  # fmt: skip
    if not pool.bf16 and not support.float16 and len(options) > first:
        # Every vLLM path computes in float16 on this device, which vLLM refuses for the family.
        del options[first:]
        attempt.reject(options, "vllm", "*", "device",
                       f"vLLM computes in float16 on {pool.display_name} and refuses float16 for {model.family_key}")  # fmt: skip


def _gguf_options(model: _Model, pool: Pool, asked: str, attempt: _Attempt, catalog: Catalog,
                  options: list[_Option]) -> None:  # fmt: skip
    if not _can_run(model, "llamacpp", "llamacpp-cuda", pool, catalog, attempt, options):
        return
    if model.pinned:
        if model.pinned.format != "gguf":
            attempt.reject(options, "llamacpp", "*", "device",
                           f"{model.pinned.repo} is safetensors, which llama.cpp does not serve")  # fmt: skip
            return
        options.append(_Option("llamacpp", model.pinned.quantization, model.model_id, model.pinned.file))
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
        if checkpoint:
            options.append(_Option("llamacpp", quant, checkpoint.repo, checkpoint.file))
        elif model.model_id != model.size.ids.get(model.tuning):
            # A fine-tune outside the catalog: trust the user's repo to carry this GGUF type.
            options.append(_Option("llamacpp", quant, model.model_id))
        else:
            attempt.reject(options, "llamacpp", quant, "missing",
                           f"no {quant} GGUF of {model.family_key} {model.size_key} {model.tuning} in the catalog",
                           say=asked != "auto")  # fmt: skip
    if len(options) == first and asked == "auto":
        attempt.why_not.append(f"no GGUF checkpoint of {model.family_key} {model.size_key} {model.tuning} in the catalog")


def _tp_sizes(model: _Model, pool: Pool) -> list[int]:
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


def _attempt(model: _Model, pool: Pool, spec: GemmaDeploymentSpec, catalog: Catalog) -> _Attempt:
    attempt = _Attempt(pool)
    why = attempt.why_not
    asked_q, asked_rt = spec.quantization, spec.runtime
    options: list[_Option] = []
    if pool.kind == "cpu":
        if asked_rt == "vllm":
            why.append("vLLM is planned for GPUs and TPUs only")
        elif asked_q in VLLM_QUANTS and asked_q not in GGUF_QUANTS:
            why.append(f"{asked_q} needs vLLM on a GPU")
        else:
            _gguf_options(model, pool, asked_q, attempt, catalog, options)
    else:
        if asked_rt in ("auto", "vllm") and asked_q not in ("q4_0", "q8_0"):
            _vllm_options(model, pool, asked_q, attempt, catalog, options)
        if pool.kind == "gpu" and asked_rt in ("auto", "llamacpp") and asked_q not in ("fp8", "int8", "int4"):
            # llama.cpp on CUDA: for GPUs vLLM can't use, GGUF checkpoints, or when asked.
            _gguf_options(model, pool, asked_q, attempt, catalog, options)
        if pool.kind == "tpu" and asked_rt == "llamacpp":
            why.append("llama.cpp does not run on TPUs")

    wanted_len = spec.max_model_len
    for i, option in enumerate(options):
        plan = _fit(model, pool, option, wanted_len, catalog, why)
        if plan:
            attempt.plan, attempt.chosen = plan, i
            return attempt
        attempt.rejected.append(_Rejected(option.runtime, option.quantization, "memory", why[-1], i))
    return attempt


def _fit(model: _Model, pool: Pool, option: _Option, wanted_len: int | None, catalog: Catalog,
         why: list[str]) -> Plan | None:  # fmt: skip
    size, arch = model.size, model.size.architecture
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
    best: tuple[int, sizing.Fit] | None = None
    for tp in tps:
        got = sizing.fit(size, option.quantization, option.runtime, budget, tp, wanted_len, checkpoint)
        if got is None or got.max_model_len < floor:
            continue
        if best is None or got.max_model_len > best[1].max_model_len:
            best = (tp, got)
        if got.max_model_len == (wanted_len or size.max_context):
            break
    if best:
        return _plan(model, pool, option, best[0], best[1], catalog)
    need = sizing.needed_gib(size, option.quantization, option.runtime, floor, tps[-1] if tps else 1, checkpoint)
    unit = "node" if pool.kind == "cpu" else ("chip" if pool.kind == "tpu" else "GPU")
    why.append(
        f"{option.runtime} {option.quantization} needs {need:.1f} GiB per {unit} for {floor} tokens"
        f"{f' over {tps[-1]} devices' if tps and tps[-1] > 1 else ''}, has {budget:.1f}"
    )
    return None


def _plan(model: _Model, pool: Pool, option: _Option, tp: int, got: sizing.Fit, catalog: Catalog) -> Plan:
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
        checkpoint_bytes=sizing.checkpoint_bytes(model.size, option.model_id, option.model_file),
    )  # fmt: skip


RANKING = (
    "ranked by precision (bf16 before fp16), then the device (compute capability, then memory bandwidth; "
    "a TPU, which takes every chip of its host, after a GPU), then the fewest devices"
)


def _bandwidth(pool: Pool, catalog: Catalog) -> float:
    accelerator = catalog.accelerators.get(pool.accelerator)
    return (accelerator.memory_bandwidth_gbps or 0.0) if accelerator else 0.0  # uncatalogued GPUs rank last


def _precision(quantization: str) -> tuple[int, bool]:
    """Sort key: more bits first; fp16 after bf16 (the same bits, with less range)."""
    return -PRECISION[quantization], quantization == "fp16"


def _rank(plan: Plan, catalog: Catalog) -> tuple:
    """Sort key among pools serving the same model: smaller is better."""
    pool = plan.pool
    return (
        pool.kind == "cpu",
        _precision(plan.quantization),
        pool.kind == "tpu",
        tuple(-part for part in pool.cc),
        -_bandwidth(pool, catalog),
        plan.accelerator_count,
        pool.name,
    )


def _quality(plan: Plan) -> tuple:
    """What makes a plan better for the user, whatever the pool: an accelerator, precision, context.
    A pool that must be scaled up first wins over a ready one only by these."""
    return plan.pool.kind == "cpu", _precision(plan.quantization), -plan.max_model_len


def _prefer_ready(fits: list[Plan]) -> Plan:
    """The best of the ranked plans: ready capacity, unless a pool that must be scaled up serves a
    better plan (no scale-up for nothing)."""
    ready = [p for p in fits if p.pool.ready]
    waiting = [p for p in fits if not p.pool.ready]
    if ready and waiting and _quality(waiting[0]) < _quality(ready[0]):
        return waiting[0]
    return ready[0] if ready else fits[0]


def _worse_plan(best: Plan, other: Plan) -> str | None:
    """Why `other` serves a worse plan than `best` (accelerator, precision, context), or None."""
    if other.pool.kind == "cpu" and best.pool.kind != "cpu":
        return "a CPU pool; accelerators come first"
    if _precision(other.quantization) != _precision(best.quantization):
        if other.quantization == "fp16" and not other.pool.bf16:
            return f"{other.pool.display_name} has no bf16, so fp16, not {best.quantization}"
        return f"{other.quantization} at best, not {best.quantization}"
    if other.max_model_len != best.max_model_len:
        return f"a context of {other.max_model_len} tokens, not {best.max_model_len}"
    return None


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
        better = [f"{o.pool.name} ({why})" for o in others if o.pool.ready and (why := _worse_plan(best, o))]
        if better and not listed:
            out.append(f"Scaling up rather than using ready nodes: {', '.join(better)}.")
    else:
        idle = [o.pool.name for o in others if not o.pool.ready and _worse_plan(best, o) is None]
        if idle and not listed:
            out.append(f"Not scaled up: {', '.join(idle)} would serve no better plan than the ready nodes.")
    return out


def _lost(best: Plan, other: Plan, catalog: Catalog) -> str:
    """Why `other` ranks after `best`: the first criterion of _rank that tells them apart."""
    b, o = best.pool, other.pool
    if b.ready != o.ready:
        why = _worse_plan(best, other)
        return why or "must be scaled up first, for a plan no better than the ready one"
    if o.kind == "cpu" and b.kind != "cpu":
        return "a CPU pool; accelerators come first"
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


def lost_to(best: Plan, other: Plan, catalog: Catalog) -> str:
    """Why `other` ranks below `best` (plan -o table's candidates)."""
    return _lost(best, other, catalog)


def _pools_for(spec: GemmaDeploymentSpec, inventory: Inventory) -> tuple[list[Pool], str]:
    if spec.accelerator == "auto":
        return list(inventory.pools), "auto"
    chosen = [p for p in inventory.pools if p.accelerator == spec.accelerator]
    return chosen, spec.accelerator


def plan(spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog,
         previous: dict | None = None) -> Plan | NoFit:  # fmt: skip
    """Choose model, quantization, runtime, pool, parallelism and context; raise InvalidSpec for bad specs.

    `previous` is the selection already serving this same spec. While its pool exists the plan
    stays on it: nodes coming or going elsewhere never move (and so restart) a running model.
    The first fitting size on that pool is the one chosen before, so an unchanged pool gives an
    unchanged plan, and its explanation is kept as it was.

    A NoFit carries suggestions: the single changes to the spec that would plan.
    """
    name, alias = _resolve_accelerator(spec.accelerator, catalog, inventory)
    if name != spec.accelerator:
        spec = spec.model_copy(update={"accelerator": name})
    held = (inventory.by_name(previous.get("pool", "")) or _standard_with_nodes(previous["pool"], spec, inventory, catalog, alias)
            if previous else None)  # fmt: skip
    if held:
        pinned = Inventory([held], inventory.skipped)
        result = _plan_fresh(spec, pinned, catalog, alias)
        if isinstance(result, Plan):
            same = {k: v for k, v in result.selection().items() if k not in ("reasons", "predicted")}
            if same == {k: v for k, v in previous.items() if k not in ("reasons", "predicted")}:
                return replace(result, reasons=tuple(previous.get("reasons", ())))
            return result
    result = _plan_fresh(spec, inventory, catalog, alias)
    if isinstance(result, NoFit):
        result = replace(result, suggestions=result.suggestions + _suggestions(spec, inventory, catalog))
    return result


def _standard_with_nodes(name: str, spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog,
                         alias: str | None) -> Pool | None:
    """The standard shape a serving plan was made on, with the nodes of that device that have come
    since: the plan (and so the pod) stays as it is, and its capacity turns ready."""
    if spec.accelerator == "auto":
        return None
    standard = capacity.standard_pool(spec.accelerator, alias, catalog)
    if standard is None or standard.name != name:
        return None
    nodes = {node for pool in inventory.pools if pool.accelerator == standard.accelerator and pool.source == "nodes"
             and pool.devices_per_node >= standard.devices_per_node
             and all(pool.node_selector.get(k, v) == v for k, v in standard.node_selector.items())
             for node in pool.nodes}  # fmt: skip
    return replace(standard, nodes=tuple(sorted(nodes)))


def _plan_fresh(spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog, alias: str | None) -> Plan | NoFit:
    models, reasons, too_short = resolve_models(spec, catalog)
    _check_static(spec, catalog, models)
    pools, wanted = _pools_for(spec, inventory)
    available = tuple(p.describe() for p in inventory.pools)
    skipped = tuple(inventory.skipped)
    if not pools and wanted != "auto":
        # Named, but no node carries it and no pool is declared: the catalog's standard GKE shape,
        # which the cluster autoscaler or node auto-provisioning adds when the pod asks for it.
        standard = capacity.standard_pool(wanted, alias, catalog)
        pools = [standard] if standard else []
    if not pools:
        what = "schedulable nodes" if wanted == "auto" else f"{wanted} nodes"
        what += f" (GKE label value {alias})" if alias else ""
        return NoFit(f"No {what} to serve {models[0].served_name} on.", available, skipped=skipped)

    skipped_sizes: list[str] = []
    tried: list[tuple[_Model, list[_Attempt]]] = []
    missed: list = []  # plans that fit but are predicted to miss spec.objective (objective.py)
    cheap: list = []  # sizePolicy cheapest: every size's plans, chosen from below
    for model in models:
        attempts = [_attempt(model, pool, spec, catalog) for pool in pools]
        fits = sorted((a.plan for a in attempts if a.plan), key=lambda p: _rank(p, catalog))
        fits, lost = objective.meeting(spec, fits, catalog)
        missed += lost
        if fits and spec.model.size_policy == "cheapest":
            cheap.append((model, attempts, fits))
            continue
        if fits:
            best = _prefer_ready(fits)
            chosen = next(a for a in attempts if a.plan is best)
            context = _Context(reasons, skipped_sizes, too_short, skipped, alias, catalog)
            return objective.annotate(_explain(best, model, spec, context, [p for p in fits if p is not best], attempts, chosen),
                                      spec, catalog)  # fmt: skip
        skipped_sizes.append(model.size_key)
        tried.append((model, attempts))
    if cheap:
        model, attempts, best, ranking = objective.cheapest(cheap, spec, catalog)
        chosen = next(a for a in attempts if a.plan is best)
        context = _Context(reasons, skipped_sizes, too_short, skipped, alias, catalog)
        others = [p for m, _, fits in cheap if m is model for p in fits if p is not best]
        return objective.annotate(_explain(best, model, spec, context, others, attempts, chosen), spec, catalog, ranking)
    if missed:
        needed, unmet, changes = objective.unmet(spec, missed)
        return NoFit(needed, available, unmet, skipped, tuple(Suggestion(*change) for change in changes))
    model = models[-1]
    details = []
    for each, attempts in tried:
        where = f"{each.size_key} on " if len(models) > 1 else ""
        details += [f"{where}{a.pool.name}: {'; '.join(a.why_not) or 'no way to serve it'}." for a in attempts]
    details += [f"{_and(sizes)}: context stops at {length} tokens, below maxModelLen {spec.max_model_len}."
                for length, sizes in _by_length(too_short).items()]  # fmt: skip
    sizes = f"any {model.family_key} size ({', '.join(skipped_sizes)})" if len(models) > 1 else f"{model.served_name}"
    return NoFit(f"Nothing fits {sizes}.", available, tuple(details), skipped)


def _by_length(too_short: dict[str, int]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = {}
    for size, length in too_short.items():
        grouped.setdefault(length, []).append(size)
    return grouped


def _summary(result: Plan) -> str:
    return (f"{result.model_id}, {result.runtime} {result.quantization} on {result.pool.name}, "
            f"{result.max_model_len} tokens")  # fmt: skip


def _suggestions(spec: GemmaDeploymentSpec, inventory: Inventory, catalog: Catalog) -> tuple[Suggestion, ...]:
    """The single changes to the spec that would plan, nearest first: keep the model the user named
    (its precision, runtime, context, accelerator), and only then a smaller size."""

    def fits(**changes) -> Plan | None:
        relaxed = spec.model_copy(update=changes)
        try:
            result = _plan_fresh(relaxed, inventory, catalog, None)
        except InvalidSpec:
            return None
        return result if isinstance(result, Plan) else None

    found: list[Suggestion] = []
    if spec.quantization != "auto" and (got := fits(quantization="auto")):
        found.append(Suggestion("spec.quantization", got.quantization, _summary(got)))
    if spec.runtime != "auto" and (got := fits(runtime="auto")):
        found.append(Suggestion("spec.runtime", got.runtime, _summary(got)))
    if spec.max_model_len and (got := fits(max_model_len=None)) and got.max_model_len < spec.max_model_len:
        found.append(Suggestion("spec.maxModelLen", got.max_model_len, _summary(got)))
    if spec.accelerator != "auto" and (got := fits(accelerator="auto")):
        found.append(Suggestion("spec.accelerator", got.pool.accelerator, _summary(got)))
    m = spec.model
    if m.size != "auto" and not m.id:
        family = catalog.families.get(m.family if m.family != "auto" else _latest_core(catalog))
        asked = family.sizes.get(m.size) if family else None
        if family and asked:
            smaller = sorted((s for s, size in family.sizes.items() if size.params_b < asked.params_b and m.tuning in size.ids),
                             key=lambda s: family.sizes[s].params_b, reverse=True)  # fmt: skip
            for size in smaller:
                if got := fits(model=m.model_copy(update={"size": size})):
                    found.append(Suggestion("spec.model.size", size, _summary(got)))
                    break
    return tuple(found)


@dataclass(frozen=True)
class _Context:
    """What _explain needs beyond the plan: the earlier choices and what was left out."""

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
        per_node = pool.devices_per_node // max(1, best.accelerator_count)
    else:
        per_node = 1  # a TPU pod takes every chip of its host; a CPU pod all but one of the node's CPUs
    if pool.source != "nodes":
        return (per_node * pool.max_nodes if pool.max_nodes else None), per_node
    return per_node * len(pool.nodes), per_node


def _quantization_why(best: Plan, chosen: _Attempt) -> str:
    """Why the pool serves this precision and not one it would rather have: memory, or no checkpoint."""
    preferred = [r for r in chosen.preferred_rejections() if (r.runtime, r.quantization) != (best.runtime, best.quantization)]
    parts = []
    memory = list(dict.fromkeys(f"{RUNTIME_NAMES[r.runtime]} {r.quantization}" for r in preferred if r.kind == "memory"))
    if memory:
        parts.append(f"higher precisions do not fit {best.pool.display_name} ({', '.join(memory)})")
    for runtime, fmt in (("vllm", "checkpoint"), ("llamacpp", "GGUF")):
        missing = list(dict.fromkeys(r.quantization for r in preferred if r.kind == "missing" and r.runtime == runtime))
        if missing:
            model = f"{best.family} {best.size}" + (f" {best.tuning}" if runtime == "llamacpp" else "")
            tail = " for vLLM" if runtime == "vllm" else ""
            parts.append(f"no {_or(missing)} {fmt} of {model}{tail} in the catalog")
    parts += list(dict.fromkeys(r.text for r in preferred if r.kind == "device"))
    return "; ".join(parts) or "the most precise option this pool has"


def _explain(best: Plan, model: _Model, spec: GemmaDeploymentSpec, context: _Context, others: list[Plan],
             attempts: list[_Attempt], chosen: _Attempt) -> Plan:  # fmt: skip
    out = list(context.reasons)
    pool = best.pool
    size = model.size
    skipped_sizes = context.skipped_sizes
    short = "; ".join(f"{_and(sizes)} stop at {length} tokens" for length, sizes in _by_length(context.too_short).items())
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
    if best.tuning == "it":
        out.append("Tuning it: instruction-tuned; the server applies Gemma's chat template, so clients call /v1/chat/completions.")
    else:
        out.append("Tuning pt: the pre-trained base model, for /v1/completions; it has no chat template.")

    unit = {"gpu": "GPU", "tpu": "TPU chip", "cpu": "node"}[pool.kind]
    if spec.accelerator == "auto" and len(attempts) == 1:
        out.append(f"Accelerator {pool.accelerator} ({pool.describe()}): the only schedulable pool.")
    elif spec.accelerator == "auto":
        lost = [f"{p.pool.name} ({_lost(best, p, context.catalog)})" for p in others]
        tail = f"; also possible: {', '.join(lost)}" if lost else ""
        out.append(f"Accelerator {pool.accelerator} ({pool.describe()}): the best pool for it, {RANKING}{tail}.")
    else:
        how = f", as GKE labels it ({context.alias})" if context.alias else ""
        out.append(f"Accelerator {pool.accelerator} ({pool.describe()}): as asked{how}.")
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
    if spec.max_model_len:
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
