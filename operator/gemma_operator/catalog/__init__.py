"""The catalog: Gemma models, accelerators and runtime images, as validated data.

The facts live in `models.yaml` and `accelerators.yaml` beside this file, each with
its sources. This module only gives them types and checks them at load, so a typo
in the data fails at start-up instead of producing a wrong plan.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

Quantization = Literal["bf16", "fp16", "fp8", "int8", "int4", "q4_0", "q8_0"]
Tuning = Literal["it", "pt"]
RuntimeName = Literal["vllm", "llamacpp"]
# What a family's checkpoints are served for: chat (and completion) endpoints, or /v1/embeddings.
Task = Literal["chat", "embed"]
Input = Literal["text", "image", "audio"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Architecture(Strict):
    """The numbers KV-cache sizing needs, as in the checkpoint's config.json."""

    hf_architecture: str = Field(description="config.json `architectures[0]`")
    model_type: str = Field(description="config.json (text_config) `model_type`; vLLM keys dtype rules by it")
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    # Global (full-attention) layers may use other head numbers than local ones (Gemma 4).
    global_kv_heads: int | None = Field(default=None, gt=0)
    global_head_dim: int | None = Field(default=None, gt=0)
    sliding_window: int | None = Field(default=None, gt=0, description="tokens a local layer attends to; None: all layers global")
    sliding_window_pattern: int | None = Field(
        default=None, gt=0, description="every Nth layer is global (6: five local, then one global)"
    )
    kv_shared_layers: int = Field(default=0, ge=0, description="trailing layers that reuse earlier layers' KV cache")
    vocab_size: int = Field(gt=0)

    @model_validator(mode="after")
    def _window_pattern_together(self) -> Architecture:
        if (self.sliding_window is None) != (self.sliding_window_pattern is None):
            raise ValueError("sliding_window and sliding_window_pattern go together")
        if self.kv_shared_layers >= self.layers:
            raise ValueError("kv_shared_layers must be fewer than layers")
        return self


class Projector(Strict):
    """llama.cpp's multimodal projector GGUF (`mmproj`): the vision/audio encoder llama-server loads beside
    the language model for image or audio input."""

    file: str
    inputs: list[Input] = Field(min_length=1, description="the inputs beyond text it encodes")
    bytes: int = Field(gt=0, description="file size in bytes: downloaded, cached and held in memory beside the weights")
    bytes_source: HttpUrl


class Encoder(Strict):
    """A vision or audio encoder of a multimodal checkpoint, and whether the model card's parameter count holds it."""

    name: str
    params_b: float = Field(gt=0, description="parameters, in billions")
    in_params: bool = Field(description="params_b of the size already counts it")
    source: HttpUrl


class Checkpoint(Strict):
    """A quantized checkpoint beyond the base bf16 safetensors repos."""

    quantization: Quantization
    format: Literal["safetensors", "gguf"]
    tuning: Tuning
    repo: str
    file: str | None = Field(default=None, description="GGUF file inside the repo")
    official: bool = Field(description="published by Google")
    source: HttpUrl
    gated: bool = Field(description="the Hub serves it only to an account that accepted its license (a token is needed)")
    gated_source: HttpUrl = Field(description="where the gate (or its absence) shows")
    # Weights in memory are at least the file: Google's QAT GGUFs keep some tensors above 4 bits.
    bytes: int = Field(gt=0, description="size of the weights file(s) in bytes; the floor of planned weights")
    bytes_source: HttpUrl = Field(description="where the size is listed")
    projector: Projector | None = Field(
        default=None, description="GGUF: the multimodal projector (mmproj) file published in the same repo"
    )

    @model_validator(mode="after")
    def _gguf_has_file(self) -> Checkpoint:
        if self.format == "gguf" and not self.file:
            raise ValueError(f"GGUF checkpoint {self.repo} needs `file`")
        if self.projector and self.format != "gguf":
            raise ValueError(f"checkpoint {self.repo}: a projector file goes with a GGUF checkpoint")
        return self


class ModelSize(Strict):
    params_b: float = Field(gt=0, description="parameters the runtime loads, in billions (total for MoE)")
    active_params_b: float | None = Field(default=None, gt=0, description="active parameters per token (MoE)")
    effective_params_b: float | None = Field(default=None, gt=0, description="Gemma 3n 'E' size")
    max_context: int = Field(gt=0)
    ids: dict[Tuning, str] = Field(description="Hugging Face repo ids of the bf16 safetensors checkpoints")
    gated: bool = Field(description="the `ids` repos need a token of an account that accepted the license")
    gated_source: HttpUrl = Field(description="where the gate (or its absence) shows")
    modalities: list[Literal["text", "image", "audio", "video"]] = ["text"]
    encoders: dict[Literal["image", "audio"], Encoder] = Field(
        default_factory=dict, description="the encoders of the inputs beyond text, where the catalog knows their size"
    )
    architecture: Architecture
    published_memory_gb: dict[Quantization, float] = Field(
        default_factory=dict, description="weights-only memory Google publishes, per precision, in GB as printed"
    )
    published_memory_source: HttpUrl | None = None
    checkpoints: list[Checkpoint] = []
    # Embedding models: the output sizes the model card gives (the first is the full vector;
    # the rest Matryoshka truncations), and the pooling llama.cpp must apply (--pooling).
    embedding_dimensions: list[int] = Field(default_factory=list, description="output dimensions, full first")
    pooling: Literal["mean", "cls", "last"] | None = None

    @model_validator(mode="after")
    def _memory_has_source(self) -> ModelSize:
        if self.published_memory_gb and self.published_memory_source is None:
            raise ValueError("published_memory_gb needs published_memory_source")
        for modality in self.encoders:
            if modality not in self.modalities:
                raise ValueError(f"an {modality} encoder on a size without {modality} input")
        return self


class RuntimeSupport(Strict):
    supported: bool
    float16: bool = Field(default=True, description="False where the runtime refuses float16 for this family")
    tpu: bool = Field(default=False, description="vLLM on TPU supports this family")
    min_version: str | None = None
    inputs: list[Input] = Field(
        default_factory=lambda: ["text"],
        description="the inputs the pinned release serves for this family (where the size has them too)",
    )
    max_per_prompt: dict[Input, int] = Field(
        default_factory=dict, description="the most items of an input one request may carry (absent: no limit)"
    )
    notes: str = ""
    source: HttpUrl | None = None


class TurnFormat(Strict):
    """How an instruction-tuned checkpoint's own chat template lays out a conversation."""

    bos: str = "<bos>"
    turn_start: str = Field(description="opens a turn; the role and a newline follow")
    turn_end: str = Field(description="closes a turn; a newline follows")
    user_role: str = "user"
    model_role: str = "model"
    system: Literal["own_turn", "first_user_turn"] = Field(
        description="own_turn: a system turn; first_user_turn: the system text opens the first user turn"
    )
    source: HttpUrl


class Family(Strict):
    display_name: str
    kind: Literal["core", "code", "safety", "embedding", "health", "vision", "research", "other"]
    task: Task = Field(default="chat", description="chat: generation endpoints; embed: /v1/embeddings")
    prompt_format: str = Field(default="", description="what a request to this family looks like, from its model card")
    license: str | None = None
    license_url: HttpUrl | None = None
    generation: float
    released: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    chat_template: bool = Field(
        description="instruction-tuned checkpoints ship a Gemma chat template (<start_of_turn>, or Gemma 4's <|turn>) "
        "that the server applies for /v1/chat/completions"
    )
    runtimes: dict[RuntimeName, RuntimeSupport]
    turn_format: TurnFormat | None = Field(default=None, description="the checkpoints' own chat turn format")
    sources: list[HttpUrl] = Field(min_length=1)
    sizes: dict[str, ModelSize] = Field(min_length=1)

    @property
    def servable(self) -> bool:
        """Some pinned runtime serves the family."""
        return any(support.supported for support in self.runtimes.values())

    @model_validator(mode="after")
    def _embedding_facts(self) -> Family:
        for key, size in self.sizes.items():
            if self.task == "embed" and (not size.embedding_dimensions or size.pooling is None):
                raise ValueError(f"embedding model {key} needs embedding_dimensions and pooling")
            if self.task != "embed" and (size.embedding_dimensions or size.pooling):
                raise ValueError(f"{key}: embedding_dimensions and pooling are for task embed")
        return self


class ModelCatalog(Strict):
    families: dict[str, Family]


class AcceleratorMatch(Strict):
    gke_accelerator: list[str] = Field(default_factory=list, description="cloud.google.com/gke-accelerator values")
    gke_tpu_accelerator: list[str] = Field(default_factory=list, description="cloud.google.com/gke-tpu-accelerator values")
    gfd_product: list[str] = Field(default_factory=list, description="nvidia.com/gpu.product values")


Precision = Literal["bf16", "fp16", "fp8", "int8"]


class FigureSource(Strict):
    """Where a number comes from, and whether a page at hand confirmed it."""

    url: HttpUrl
    verified: bool = Field(description="a page at hand printed the figure; false: general knowledge, an estimate")
    checked_in: HttpUrl | None = Field(default=None, description="the page that confirmed it, when not `url`")
    note: str = ""


LinkKind = Literal["nvlink", "pcie", "ici"]


class Interconnect(Strict):
    """How a device reaches the other devices of its node: what tensor parallelism's all-reduces cross."""

    kind: LinkKind
    generation: str = Field(description="e.g. NVLink 4, PCIe Gen4 x16, ICI (v5e)")
    bandwidth_gbps: float = Field(gt=0, description="per device, one direction, GB/s (10^9 bytes)")
    source: FigureSource


class AllReduceLatency(Strict):
    """Fixed cost of one small all-reduce over n devices: base_us + 2 x (n - 1) x step_us (a ring's 2(n-1)
    steps, each one hop's latency), in microseconds."""

    base_us: float = Field(ge=0)
    step_us: float = Field(ge=0)
    source: FigureSource

    def seconds(self, devices: int) -> float:
        return 0.0 if devices <= 1 else (self.base_us + 2 * (devices - 1) * self.step_us) * 1e-6


class Accelerator(Strict):
    kind: Literal["gpu", "tpu", "cpu"]
    display_name: str
    memory_gib: float = Field(ge=0, description="device memory per GPU or HBM per TPU chip; 0 for cpu")
    memory_bandwidth_gbps: float | None = Field(
        default=None, gt=0, description="device memory bandwidth per GPU or TPU chip, GB/s; ranks devices of equal precision"
    )
    peak_tflops: dict[Precision, float] = Field(
        default_factory=dict, description="peak dense tensor TFLOPS (TOPS for int8) per device, per native precision"
    )
    peak_tflops_source: FigureSource | None = None
    interconnect: Interconnect | None = Field(default=None, description="between the devices of one node (GPU, TPU)")
    compute_capability: str | None = Field(default=None, pattern=r"^\d+\.\d+$")
    bf16: bool
    fp8: bool
    match: AcceleratorMatch = AcceleratorMatch()
    # TPU: the single-host topologies GKE offers, and the chips each puts on one node.
    single_host_topologies: dict[str, int] = Field(default_factory=dict)
    sources: list[HttpUrl] = Field(min_length=1)

    @model_validator(mode="after")
    def _kind_fields(self) -> Accelerator:
        if self.kind == "gpu" and not self.compute_capability:
            raise ValueError("a GPU needs compute_capability")
        if self.kind == "tpu" and not self.single_host_topologies:
            raise ValueError("a TPU needs single_host_topologies")
        if self.kind != "cpu" and self.memory_bandwidth_gbps is None:
            raise ValueError("a GPU or TPU needs memory_bandwidth_gbps")
        if self.kind != "cpu" and not (self.peak_tflops and self.peak_tflops_source):
            raise ValueError("a GPU or TPU needs peak_tflops and peak_tflops_source")
        if any(v <= 0 for v in self.peak_tflops.values()):
            raise ValueError("peak_tflops must be positive")
        if self.peak_tflops and "bf16" not in self.peak_tflops and "fp16" not in self.peak_tflops:
            raise ValueError("peak_tflops needs a 16-bit figure (bf16 or fp16)")
        if self.fp8 and "fp8" not in self.peak_tflops:
            raise ValueError("an accelerator with native fp8 needs an fp8 peak")
        if self.kind != "cpu" and self.interconnect is None:
            raise ValueError("a GPU or TPU needs interconnect (what tensor parallelism's all-reduces cross)")
        return self

    def peak(self, quantization: str) -> float:
        """Dense TFLOPS the prefill of a model at `quantization` runs at: fp8 and int8 where native (W8A8),
        else 16-bit math (weight-only formats dequantize to 16 bits before the matmul)."""
        if quantization in ("fp8", "int8") and quantization in self.peak_tflops:
            return self.peak_tflops[quantization]
        wanted = "fp16" if quantization == "fp16" else "bf16"
        return self.peak_tflops.get(wanted) or self.peak_tflops.get("fp16") or self.peak_tflops["bf16"]


class RunAs(Strict):
    """A non-root identity the image works under (Kubernetes runAsUser / runAsGroup)."""

    user: int = Field(gt=0)
    group: int = Field(ge=0)


class Image(Strict):
    repository: str
    tag: str = Field(pattern=r"^[\w][\w.\-]{0,127}$")
    version: str = Field(description="the upstream release this tag is")
    min_compute_capability: str | None = Field(
        default=None, pattern=r"^\d+\.\d+$", description="oldest NVIDIA GPU generation the image runs on"
    )
    min_compute_capability_sources: list[HttpUrl] = Field(default_factory=list, description="why that floor")
    source: HttpUrl
    run_as: RunAs | None = Field(default=None, description="non-root identity the server runs under")
    root_reason: str | None = Field(default=None, description="why the server keeps the image's root user")

    @model_validator(mode="after")
    def _user_decided(self) -> Image:
        if (self.run_as is None) == (self.root_reason is None):
            raise ValueError("an image needs exactly one of run_as (non-root) or root_reason")
        if self.min_compute_capability and not self.min_compute_capability_sources:
            raise ValueError("min_compute_capability needs min_compute_capability_sources")
        return self

    @property
    def min_cc(self) -> tuple[int, int]:
        major, _, minor = (self.min_compute_capability or "0.0").partition(".")
        return int(major), int(minor)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


class AcceleratorCatalog(Strict):
    accelerators: dict[str, Accelerator]
    allreduce_latency: dict[LinkKind, AllReduceLatency] = Field(default_factory=dict)
    images: dict[Literal["vllm-gpu", "vllm-tpu", "llamacpp-cpu", "llamacpp-cuda", "inference-epp"], Image]

    @model_validator(mode="after")
    def _every_link_has_a_latency(self) -> AcceleratorCatalog:
        kinds = {a.interconnect.kind for a in self.accelerators.values() if a.interconnect}
        missing = sorted(kinds - set(self.allreduce_latency))
        if missing:
            raise ValueError(f"no allreduce_latency for interconnect kinds {missing}")
        return self


class Reserve(Strict):
    """What GKE keeps of a node for itself: allocatable = machine - reserve - eviction threshold."""

    source: HttpUrl
    memory_tiers: list[tuple[float | None, float]] = Field(min_length=1, description="(GiB in the tier, share kept); None: the rest")
    eviction_threshold_mib: float = Field(ge=0)
    cpu_tiers: list[tuple[float | None, float]] = Field(min_length=1, description="(cores in the tier, share kept)")
    kernel_share: float = Field(ge=0, lt=0.5, description="machine memory the node never reports as capacity")

    @staticmethod
    def _tiered(amount: float, tiers: list[tuple[float | None, float]]) -> float:
        kept, left = 0.0, amount
        for size, share in tiers:
            part = left if size is None else min(left, size)
            kept += part * share
            left -= part
            if left <= 0:
                break
        return kept

    def allocatable(self, vcpus: float, memory_gib: float) -> tuple[float, float]:
        """(CPUs, GiB) a node of this size offers pods."""
        memory = memory_gib * (1 - self.kernel_share)
        memory -= self._tiered(memory, self.memory_tiers) + self.eviction_threshold_mib / 1024
        cpu = vcpus - self._tiered(vcpus, self.cpu_tiers)
        return round(cpu, 3), round(memory, 2)


class MachineShape(Strict):
    vcpus: int = Field(gt=0)
    memory_gib: float = Field(gt=0)
    accelerators: dict[str, list[int]] = Field(
        default_factory=dict, description="GKE accelerator label value -> device counts a node of this type can have"
    )
    tpu_topology: str | None = Field(default=None, pattern=r"^[1-9]\d*(x[1-9]\d*){1,2}$")
    source: HttpUrl


class CpuFamily(Strict):
    memory_bandwidth_gbps_per_vcpu: float = Field(gt=0)
    verified: bool
    source: HttpUrl


class Price(Strict):
    """USD per hour."""

    on_demand: float = Field(gt=0)
    spot: float = Field(gt=0)
    verified: bool = Field(description="a page at hand showed the figures; false: remembered or estimated")

    @model_validator(mode="after")
    def _spot_below(self) -> Price:
        if self.spot > self.on_demand:
            raise ValueError("a Spot price above on-demand")
        return self


class PriceList(Strict):
    region: str
    as_of: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    sources: list[HttpUrl] = Field(min_length=1)
    machines: dict[str, Price]
    gpus: dict[str, Price] = Field(default_factory=dict, description="GKE accelerator label value -> price per attached GPU (N1)")


class MachineCatalog(Strict):
    reserve: Reserve
    machines: dict[str, MachineShape]
    standard: dict[str, str] = Field(description="GKE accelerator label value -> its standard machine type")
    cpu_families: dict[str, CpuFamily] = Field(default_factory=dict)
    cpu_default_family: str | None = None
    prices: PriceList | None = None

    def family(self, machine_type: str | None) -> CpuFamily | None:
        """The CPU family of a machine type (its prefix before the first dash), else the default family."""
        prefix = (machine_type or "").split("-")[0]
        return self.cpu_families.get(prefix) or self.cpu_families.get(self.cpu_default_family or "")

    def hourly(self, machine_type: str | None, gpu_label: str | None = None, gpus: int = 0,
               spot: bool = False) -> tuple[float, bool] | None:  # fmt: skip
        """(USD per hour, verified) of one node of `machine_type` with `gpus` attached N1 GPUs; None if unpriced."""
        if self.prices is None or machine_type not in self.prices.machines:
            return None
        price = self.prices.machines[machine_type]
        total, verified = (price.spot if spot else price.on_demand), price.verified
        if gpus and machine_type.startswith("n1-"):
            attached = self.prices.gpus.get(gpu_label or "")
            if attached is None:
                return None
            total += gpus * (attached.spot if spot else attached.on_demand)
            verified = verified and attached.verified
        return total, verified

    @model_validator(mode="after")
    def _standard_machines_carry_their_device(self) -> MachineCatalog:
        for label, machine in self.standard.items():
            shape = self.machines.get(machine)
            if shape is None or label not in shape.accelerators:
                raise ValueError(f"standard shape {machine} for {label} is not a machine type carrying {label}")
        if self.prices is not None:
            unknown = sorted(set(self.prices.machines) - set(self.machines))
            if unknown:
                raise ValueError(f"prices for machine types the catalog does not list: {unknown}")
            unpriced = sorted(set(self.machines) - set(self.prices.machines))
            if unpriced:
                raise ValueError(f"machine types without a price: {unpriced}")
        if self.cpu_default_family is not None and self.cpu_default_family not in self.cpu_families:
            raise ValueError(f"cpu_default_family {self.cpu_default_family} is not among cpu_families")
        return self


class Catalog(Strict):
    models: ModelCatalog
    hardware: AcceleratorCatalog
    machines: MachineCatalog

    @property
    def families(self) -> dict[str, Family]:
        return self.models.families

    @property
    def accelerators(self) -> dict[str, Accelerator]:
        return self.hardware.accelerators

    @property
    def images(self) -> dict[str, Image]:
        return self.hardware.images

    @model_validator(mode="after")
    def _cross_checks(self) -> Catalog:
        if "cpu" not in self.hardware.accelerators:
            raise ValueError("accelerators.yaml must define `cpu`")
        seen: dict[str, str] = {}
        for name, acc in self.hardware.accelerators.items():
            for value in (*acc.match.gke_accelerator, *acc.match.gke_tpu_accelerator, *acc.match.gfd_product):
                if value in seen:
                    raise ValueError(f"label value {value!r} names both {seen[value]} and {name}")
                seen[value] = name
        for machine, shape in self.machines.machines.items():
            for value in shape.accelerators:
                if value not in seen:
                    raise ValueError(f"machine {machine}: {value!r} is no accelerator's GKE label value")
                accelerator = self.hardware.accelerators[seen[value]]
                if accelerator.kind == "tpu" and shape.tpu_topology not in accelerator.single_host_topologies:
                    raise ValueError(f"machine {machine}: topology {shape.tpu_topology} is not a single-host {value} slice")
        return self


def _read(name: str) -> dict:
    return yaml.safe_load(resources.files(__package__).joinpath(name).read_text(encoding="utf-8"))


@functools.cache
def load() -> Catalog:
    """The packaged catalog, validated once per process."""
    return Catalog(models=_read("models.yaml"), hardware=_read("accelerators.yaml"), machines=_read("machines.yaml"))


def gke_aliases(catalog: Catalog) -> dict[str, str]:
    """GKE node label values -> the catalog accelerator they name."""
    return {value: name for name, acc in catalog.accelerators.items()
            for value in (*acc.match.gke_accelerator, *acc.match.gke_tpu_accelerator)}  # fmt: skip
