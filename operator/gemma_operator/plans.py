"""What the planner returns: a Plan (the selection, with reasons), a NoFit (what was needed, what
the cluster has, what would fit), or InvalidSpec; and the facts about quantizations and runtime
names its modules share. Pure data; no decisions beyond what a plan says about itself."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import sizing
from .api.v1alpha1 import Adapter, GemmaDeploymentSpec
from .inventory import Pool

PRECISION = {"bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "q8_0": 8, "int4": 4, "q4_0": 4}
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
    checkpoint_bytes: int = 0  # what the server downloads (sizing.checkpoint_bytes), the projector included
    predicted: dict | None = None  # status.selection.predicted (objective.annotate)
    # An embedding model (spec.model.task embed): its vector sizes, the pooling llama.cpp applies, and
    # the tokens one forward pass takes (the memory plan's batch, in place of a KV cache).
    task: Literal["chat", "embed"] = "chat"
    embedding_dimensions: tuple[int, ...] = ()
    pooling: str | None = None
    batch_tokens: int = 0
    # spec.adapters (LoRA), served beside the base; the base's safetensors repo they must be made for.
    adapters: tuple[Adapter, ...] = ()
    base_id: str = ""
    adapter_bytes: int = 0  # what downloading them adds to the cache
    adapter_gib: float = 0.0  # the memory they take, in estimated_memory_gib (adapters.memory_gib)
    # Inputs beyond text, each with the most items per request: vLLM's --limit-mm-per-prompt, llama.cpp's projector.
    media: tuple[tuple[str, int], ...] = ()
    # The checkpoint's inputs beyond text (catalog modalities): those not in `media` are switched off.
    modalities: tuple[str, ...] = ()
    projector_file: str | None = None  # llama.cpp's mmproj GGUF, from the model's repo
    projector_bytes: int = 0
    encoders_gib: float = 0.0  # the encoders' change to the weights (sizing.encoders_gib), per replica

    @property
    def api_path(self) -> str:
        """The OpenAI-compatible path clients call."""
        return "/v1/embeddings" if self.task == "embed" else "/v1/chat/completions"

    @property
    def language_only(self) -> bool:
        """A multimodal checkpoint asked for text only: its encoders are neither loaded nor profiled."""
        return bool(self.modalities) and not self.media

    @property
    def gpu_memory_utilization(self) -> float:
        """vLLM's --gpu-memory-utilization: a fraction of the whole device, per instance (vLLM's engine
        arguments). A time-sliced GPU shows each of its pods all of its memory, so each claims its share
        of the usual fraction; an MPS client's device is its share already."""
        share = sizing.GPU_MEMORY_UTILIZATION / (self.pool.replicas if self.pool.time_sliced else 1)
        return math.floor(share * 1000 + 1e-9) / 1000  # rounded down: never more than planned

    @property
    def node_selector(self) -> dict[str, str]:
        """The pod's nodeSelector: the pool's labels, and the spec's on top."""
        return {**self.pool.node_selector, **self.spec_node_selector}

    def selection(self) -> dict:
        """The plan as `status.selection` (camelCase, JSON-ready)."""
        return {
            "modelId": self.model_id,
            **({"modelFile": self.model_file} if self.model_file else {}),
            **({"projectorFile": self.projector_file} if self.projector_file else {}),
            # Only beyond text: a text-only plan's selection stays as it was (no re-plan on upgrade).
            **({"inputs": ["text", *(m for m, _ in self.media)]} if self.media else {}),
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
            **({"task": "embed", "embeddingDimensions": list(self.embedding_dimensions), "batchTokens": self.batch_tokens}
               if self.task == "embed" else {}),  # fmt: skip
            **({"adapters": [a.name for a in self.adapters]} if self.adapters else {}),
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


def token_warning(plan: Plan, spec: GemmaDeploymentSpec) -> str | None:
    """The warning for a gated checkpoint planned without a token (reasons, the TokenMissing Event, `plan`)."""
    if not plan.gated or spec.hf_token_secret_ref:
        return None
    return (
        f"{plan.model_id} is gated on the Hugging Face Hub: without spec.hfTokenSecretRef the server's download "
        "fails (401). Accept the license on the model's Hub page, store a read token of that account in a Secret, "
        "and name it in spec.hfTokenSecretRef."
    )


def or_join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def and_join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
