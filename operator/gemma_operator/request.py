"""Which models the spec asks for, and which accelerator it names: (spec, catalog) -> the candidate
models in preference order, with the reasons for the family, size and tuning, or InvalidSpec for
what no cluster could serve. Pure; no I/O."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from . import chat_template
from .api.v1alpha1 import GemmaDeploymentSpec
from .catalog import Catalog, Checkpoint, Family, ModelSize, gke_aliases
from .inventory import Inventory
from .plans import RUNTIME_NAMES, InvalidSpec, and_join, or_join


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


def missing_inputs(size: ModelSize, inputs: list[str]) -> list[str]:
    """The asked inputs the size's checkpoint has no encoder for (catalog `modalities`)."""
    return [i for i in inputs if i not in size.modalities]


def _by_inputs(fkey: str, family: Family, sizes: list[str], inputs: list[str], reasons: list[str]) -> list[str]:
    """Keep the sizes whose modalities cover `inputs`, saying which were left out and why."""
    kept = [s for s in sizes if not missing_inputs(family.sizes[s], inputs)]
    left_out = [s for s in sizes if s not in kept]
    asked = ", ".join(i for i in inputs if i != "text")
    if not kept:
        takes = {s: "+".join(family.sizes[s].modalities) for s in sizes}
        raise InvalidSpec("model.inputs", f"no {fkey} size takes {asked} "
                          f"({'; '.join(f'{s}: {t}' for s, t in takes.items())})")  # fmt: skip
    if left_out:
        takes: dict[str, list[str]] = {}
        for s in left_out:
            takes.setdefault(" and ".join(m for m in family.sizes[s].modalities if m != "video"), []).append(s)
        parts = "; ".join(f"{and_join(group)} {'takes' if len(group) == 1 else 'take'} {what}"
                          f"{' only' if what == 'text' else ''}" for what, group in takes.items())  # fmt: skip
        shown = ", ".join(["text", *(i for i in inputs if i != "text")])
        reasons.append(f"Inputs {shown}: {and_join(left_out)} left out, with no {asked} encoder "
                       f"({parts}; catalog modalities).")  # fmt: skip
    return kept


def _basename(repo: str) -> str:
    return repo.rsplit("/", 1)[-1].lower()


def latest_core(catalog: Catalog) -> str:
    return max((f for f in catalog.families if catalog.families[f].kind == "core"),
               key=lambda f: catalog.families[f].generation)  # fmt: skip


def latest_of_task(catalog: Catalog, task: str) -> str:
    """The family model.family auto means: the latest core Gemma for chat; the latest family of any other task."""
    if task == "chat":
        return latest_core(catalog)
    return max((f for f in catalog.families if catalog.families[f].task == task),
               key=lambda f: catalog.families[f].generation)  # fmt: skip


def _check_task(spec: GemmaDeploymentSpec, fkey: str, family: Family, catalog: Catalog) -> None:
    """A family serves one task: an embedding model has no chat endpoint, a chat model no embeddings."""
    asked = spec.model.task
    if family.task == asked:
        return
    others = sorted(f for f, fam in catalog.families.items() if fam.task == asked)
    if family.task == "embed":
        raise InvalidSpec("model.task", f"{fkey} is an embedding model, served at /v1/embeddings: set model.task embed, "
                                        "or name a chat family")  # fmt: skip
    raise InvalidSpec("model.task", f"{asked}: {fkey} is a {family.task} model; the {asked} families are {', '.join(others)}")


def _check_embed_inputs(spec: GemmaDeploymentSpec, fkey: str, family: Family) -> None:
    """An embedding model reads text and applies no chat template: inputs beyond text and a chatTemplate
    are Invalid on it, naming the field (EmbeddingGemma has no encoder, and /v1/embeddings renders no turns)."""
    if family.task != "embed":
        return
    beyond_text = [i for i in spec.model.inputs if i != "text"]
    if beyond_text:
        raise InvalidSpec("model.inputs", f"{fkey} is an embedding model and reads text only, not "
                                          f"{' or '.join(beyond_text)}; drop them, or embed their captions")  # fmt: skip
    if spec.chat_template is not None:
        raise InvalidSpec("chatTemplate", f"{fkey} is an embedding model: /v1/embeddings applies no chat template; "
                                          "prefix the text as its model card says instead")  # fmt: skip


def _tuning(family: Family, size: ModelSize, asked: str) -> str | None:
    """The tuning served: as asked for chat families; an embedding model's one checkpoint whatever was asked."""
    if family.task == "embed":
        return next(iter(size.ids))
    return asked if asked in size.ids else None


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
            _check_task(spec, fkey, family, catalog)
            _check_embed_inputs(spec, fkey, family)
            size = family.sizes[skey]
            if missing := missing_inputs(size, m.inputs):
                raise InvalidSpec("model.inputs", f"{m.id} ({fkey} {skey}) takes {' and '.join(size.modalities)}, "
                                  f"not {' or '.join(missing)}")  # fmt: skip
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
    if fkey == "auto" and m.task != "chat":
        fkey = latest_of_task(catalog, m.task)
        reasons.append(f"Family {fkey}: the latest {m.task} family in the catalog (model.task {m.task}, model.family auto).")
    elif fkey == "auto":
        fkey = latest_core(catalog)
        reasons.append(f"Family {fkey}: the latest core Gemma in the catalog (model.family is auto).")
    elif fkey not in catalog.families:
        raise InvalidSpec("model.family", f"unknown family {fkey!r}; known: {', '.join(sorted(catalog.families))}")
    else:
        reasons.append(f"Family {fkey}: as asked.")
    family = catalog.families[fkey]
    _check_task(spec, fkey, family, catalog)
    _check_embed_inputs(spec, fkey, family)

    if m.size != "auto":
        if m.size not in family.sizes:
            raise InvalidSpec("model.size", f"{fkey} has no size {m.size!r}; it has {', '.join(family.sizes)}")
        if _tuning(family, family.sizes[m.size], m.tuning) is None:
            raise InvalidSpec(
                "model.tuning", f"{fkey} {m.size} has no {m.tuning} checkpoint; it has {', '.join(family.sizes[m.size].ids)}"
            )
        if missing := missing_inputs(family.sizes[m.size], m.inputs):
            takes = [s for s in family.sizes if not missing_inputs(family.sizes[s], m.inputs)]
            hint = f"; {or_join(takes)} do" if takes else f"; no {fkey} size does"
            raise InvalidSpec("model.inputs", f"{fkey} {m.size} has no {' or '.join(missing)} encoder "
                              f"(it takes {' and '.join(family.sizes[m.size].modalities)}){hint}")  # fmt: skip
        sizes = [m.size]
    else:
        sizes = sorted((s for s in family.sizes if _tuning(family, family.sizes[s], m.tuning)),
                       key=lambda s: family.sizes[s].params_b, reverse=m.size_policy == "largest")  # fmt: skip
        if not sizes:
            raise InvalidSpec("model.tuning", f"{fkey} has no {m.tuning} checkpoints")
        sizes = _by_inputs(fkey, family, sizes, m.inputs, reasons)
    if spec.max_model_len is not None:
        too_long = [s for s in sizes if family.sizes[s].max_context < spec.max_model_len]
        if len(too_long) == len(sizes):
            longest = max(family.sizes[s].max_context for s in sizes)
            what = ("input limit: an embedding model reads at most that many tokens per input" if family.task == "embed"
                    else "context")  # fmt: skip
            raise InvalidSpec(
                "maxModelLen", f"{spec.max_model_len} tokens is beyond {fkey}'s {what} ({longest} tokens at most)"
            )
        sizes = [s for s in sizes if s not in too_long]
    else:
        too_long = []
    models = []
    for skey in sizes:
        size = family.sizes[skey]
        tuning = _tuning(family, size, m.tuning) or m.tuning
        base = m.id or size.ids[tuning]
        models.append(Model(fkey, family, skey, size, tuning, base, _basename(base)))
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
    beyond_text = [i for i in spec.model.inputs if i != "text"]
    servers = [r for r in ("vllm", "llamacpp") if family.runtimes[r].supported
               and all(i in family.runtimes[r].inputs for i in beyond_text)]  # fmt: skip
    if beyond_text and not servers:
        raise InvalidSpec("model.inputs", f"no pinned runtime serves {' and '.join(beyond_text)} input for {family_key}")
    if beyond_text and rt != "auto" and rt not in servers:
        raise InvalidSpec("model.inputs", f"{RUNTIME_NAMES[rt]} does not serve {' and '.join(beyond_text)} input for "
                          f"{family_key}; {RUNTIME_NAMES[servers[0]]} does (runtime: {servers[0]})")  # fmt: skip
    for modality, count in spec.model.media.items():
        caps = [family.runtimes[r].max_per_prompt.get(modality) for r in servers if rt in ("auto", r)]
        if caps and all(cap is not None and cap < count for cap in caps):
            field = "model.imagesPerPrompt" if modality == "image" else "model.audiosPerPrompt"
            raise InvalidSpec(field, f"{count}: {family_key} takes at most {max(caps)} {modality} per request "
                                     "(the pinned runtime's limit)")  # fmt: skip
    if q == "fp16" and rt == "vllm" and not family.runtimes["vllm"].float16:
        raise InvalidSpec("quantization", f"vLLM refuses float16 for {family_key} (numerical instability); use bf16")
    if spec.accelerator == "cpu" and rt == "vllm":
        raise InvalidSpec("runtime", "gemma-operator runs vLLM on GPUs and TPUs only; use llamacpp on CPU")
    if spec.autoscaling and spec.autoscaling.metric == "kvCache" and family.task == "embed":
        raise InvalidSpec("autoscaling.metric", f"kvCache: {family_key} is an embedding model and keeps no KV cache "
                                                "between requests; scale on metric queue")  # fmt: skip
    chat_template.check(spec)  # an inline override parses and renders; a ConfigMap's is checked once read
    _check_objective(spec, family_key, family.task)
    pinned = models[0].pinned
    if pinned and q != "auto" and q != pinned.quantization:
        raise InvalidSpec("quantization", f"{q} contradicts model.id {pinned.repo}, a {pinned.quantization} checkpoint")


def _check_objective(spec: GemmaDeploymentSpec, family_key: str, task: str) -> None:
    """spec.objective's fields by task: a chat objective needs outputTokens; an embedding model generates
    none, so its objective is promptTokens, concurrency and ttftSeconds (the whole request's latency)."""
    o = spec.objective
    if o is None:
        return
    if task == "embed":
        for name, value in (("outputTokens", o.output_tokens), ("outputTokensPerSecond", o.output_tokens_per_second)):
            if value is not None:
                raise InvalidSpec(f"objective.{name}", f"{family_key} is an embedding model and generates no tokens; "
                                  "an embed objective takes promptTokens (input tokens a request), concurrency and "
                                  "ttftSeconds (the request's latency)")  # fmt: skip
    elif o.output_tokens is None:
        raise InvalidSpec("objective.outputTokens", f"required for {family_key}, a chat model: the output tokens of a "
                                                    "typical request")  # fmt: skip


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
