"""Which models the spec asks for, and which accelerator it names: (spec, catalog) -> the candidate
models in preference order, with the reasons for the family, size and tuning, or InvalidSpec for
what no cluster could serve. Pure; no I/O."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .api.v1alpha1 import GemmaDeploymentSpec
from .catalog import Catalog, Checkpoint, Family, ModelSize, gke_aliases
from .inventory import Inventory
from .plans import InvalidSpec, or_join


@dataclass(frozen=True)
class Model:
    family_key: str
    family: Family
    size_key: str
    size: ModelSize
    tuning: str
    model_id: str
    served_name: str
    pinned: Checkpoint | None = None  # spec.model.id named a quantized checkpoint


def _basename(repo: str) -> str:
    return repo.rsplit("/", 1)[-1].lower()


def latest_core(catalog: Catalog) -> str:
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


def resolve_models(spec: GemmaDeploymentSpec, catalog: Catalog) -> tuple[list[Model], list[str], dict[str, int]]:
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
            return [Model(fkey, family, skey, size, tuning, m.id, served, pinned)], reasons, {}
        if m.family == "auto" or m.size == "auto":
            raise InvalidSpec(
                "model.id",
                f"{m.id} is not in the catalog; set model.family and model.size to the Gemma it was "
                "fine-tuned from, so it can be sized",
            )
    fkey = m.family
    if fkey == "auto":
        fkey = latest_core(catalog)
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
        models.append(Model(fkey, family, skey, size, m.tuning, base, _basename(base)))
    return models, reasons, {s: family.sizes[s].max_context for s in too_long}


def check_static(spec: GemmaDeploymentSpec, catalog: Catalog, models: list[Model]) -> None:
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


def resolve_accelerator(asked: str, catalog: Catalog, inventory: Inventory) -> tuple[str, str | None]:
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
        raise InvalidSpec("accelerator", f"unknown accelerator {asked!r}; did you mean {or_join(near)}?")
    if asked.startswith("nvidia-"):
        return asked, None  # maybe an uncatalogued GPU whose nodes are not there yet: a NoFit, not an error
    raise InvalidSpec("accelerator", f"unknown accelerator {asked!r}; known: {', '.join(sorted(catalog.accelerators))}")
