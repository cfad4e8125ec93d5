"""GemmaDeployment v1alpha1: the status the operator reports, and the printer columns that show it.
A source of the CRD with `v1alpha1.py` (the spec and the shared types), which it builds on."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .v1alpha1 import CacheType, Model, Phase, Task, Tuning


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class PredictedWorkload(Model):
    prompt_tokens: int
    output_tokens: int | None = Field(default=None, description="Chat models only.")
    concurrency: int
    input_tokens: int | None = Field(
        default=None, description="Embedding models: tokens a request is counted at (promptTokens, at most the context)."
    )


class Predicted(Model):
    """performance.py's roofline prediction for the selection (estimates; see the README)."""

    workload: PredictedWorkload = Field(description="What it is predicted for: spec.objective, or the default workload.")
    ttft_seconds: float | None = Field(default=None, description="Time to first token at that concurrency (chat).")
    output_tokens_per_second_per_user: float | None = Field(default=None, description="Chat models.")
    output_tokens_per_second: float | None = Field(
        default=None, description="All users together, over the replicas (chat)."
    )
    latency_seconds: float | None = Field(
        default=None, description="Embedding models: one request alone, one forward pass over its input."
    )
    latency_seconds_at_concurrency: float | None = Field(
        default=None, description="Embedding models: one forward pass over the requests in flight on a replica."
    )
    requests_per_second: float | None = Field(
        default=None, description="Embedding models: one replica at full load (maxConcurrency inputs per pass)."
    )
    input_tokens_per_second: float | None = Field(
        default=None, description="Embedding models: input tokens one replica embeds per second at full load."
    )
    cost_per_million_input_tokens: float | None = Field(
        default=None, description="Embedding models: USD per million input tokens, one replica at full load."
    )
    max_concurrency: int = Field(
        description="Sequences of prompt + output tokens one replica holds at once (embedding models: inputs one "
        "forward pass takes, the planned batch over the input length)."
    )
    replicas: int = Field(description="Replicas the workload's concurrency needs.")
    cost_per_million_tokens: float | None = Field(
        default=None, description="USD per million output tokens at the workload, counting its replicas (chat)."
    )
    cost_per_million_tokens_full_load: float | None = Field(
        default=None, description="USD per million output tokens with one replica at maxConcurrency (chat)."
    )
    price_per_hour: float | None = Field(default=None, description="USD per hour of one replica's share of its node.")
    price_verified: bool = Field(default=False, description="false: the catalog's price is remembered or estimated.")


class Selection(Model):
    model_id: str = Field(description="Hugging Face repo being served.")
    model_file: str | None = Field(default=None, description="GGUF file inside the repo (llama.cpp).")
    projector_file: str | None = Field(
        default=None, description="Multimodal projector GGUF (llama.cpp), from the same repo, for image or audio input."
    )
    inputs: list[str] | None = Field(default=None, description="Inputs beyond text the server accepts, with the most per request.")
    served_model_name: str = Field(description="Model name clients pass to the OpenAI API.")
    family: str
    size: str
    tuning: Tuning
    quantization: str
    dtype: str
    runtime: str
    image: str
    accelerator: str
    accelerator_count: int = Field(description="GPUs or TPU chips per replica; 0 on CPU.")
    tensor_parallel_size: int
    max_model_len: int
    estimated_memory_gi_b: float = Field(alias="estimatedMemoryGiB")
    pool: str = Field(description="Node pool the plan targets; the plan is re-made if it disappears.")
    capacity: Literal["ready", "scale-up"] | None = Field(
        default=None,
        description="ready: nodes of the pool exist; scale-up: a declared or standard GKE node shape that the "
        "cluster autoscaler or node auto-provisioning must add first.",
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    predicted: Predicted | None = Field(default=None, description="Predicted speed and cost (performance.py).")
    task: Task | None = Field(default=None, description="embed for an embedding model (absent: chat).")
    embedding_dimensions: list[int] | None = Field(
        default=None, description="Vector sizes the embedding model returns: the full size first, then its Matryoshka truncations."
    )
    batch_tokens: int | None = Field(default=None, description="Tokens per forward pass planned for an embedding model.")
    adapters: list[str] | None = Field(
        default=None, description="spec.adapters' names: LoRA adapters served on the base (absent: none)."
    )
    reasons: list[str] = Field(default_factory=list, description="Why each choice was made.")


class CacheStatus(Model):
    type: CacheType
    claim: str | None = Field(default=None, description="PersistentVolumeClaim (pvc).")
    bucket: str | None = Field(default=None, description="Bucket (gcsfuse).")
    bytes: int = Field(description="Bytes of the checkpoint the cache holds.")
    state: Literal["Filling", "Ready", "Failed", "TooSmall"] | None = Field(
        default=None,
        description="The loader Job's progress (pvc, gcsfuse); TooSmall: the claim is smaller than the checkpoint "
        "and the API server refused to expand it.",
    )
    message: str | None = None


class GemmaDeploymentStatus(Model):
    observed_generation: int | None = None
    phase: Phase | None = None
    conditions: list[Condition] = Field(default_factory=list)
    selection: Selection | None = None
    endpoint: str | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    desired_replicas: int | None = Field(default=None, description="Replicas wanted now (the autoscaler's, when on).")
    selector: str | None = Field(default=None, description="The pods' label selector (the scale subresource's).")
    cache: CacheStatus | None = None
    loading_since: str | None = Field(
        default=None,
        description="While the model loads (Progressing reason LoadingModel): when its server started, as the "
        "kubelet reports it. Written once; the time loading so far is now minus this (kubectl get -o wide: Loading).",
    )


PRINTER_COLUMNS = [
    # Phase first: NoFit and Invalid have no model to show.
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Model", "type": "string", "jsonPath": ".status.selection.modelId"},
    {"name": "Runtime", "type": "string", "jsonPath": ".status.selection.runtime"},
    {"name": "Accelerator", "type": "string", "jsonPath": ".status.selection.accelerator"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    # `kubectl get -o wide`: the Ready condition's reason is what keeps the model from serving.
    {"name": "Reason", "type": "string", "priority": 1, "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    # How long the model has been loading, computed by kubectl from the start time status records once.
    {"name": "Loading", "type": "date", "priority": 1, "jsonPath": ".status.loadingSince"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
