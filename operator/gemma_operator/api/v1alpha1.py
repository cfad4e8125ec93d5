"""GemmaDeployment v1alpha1: the spec users write and the status the operator reports.

These models are the single source of the CRD (`gemma-operator crds`): field
descriptions become `kubectl explain` text, constraints become schema validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator
from pydantic.alias_generators import to_camel

from .. import flags

GROUP = "gemma.dev"
VERSION = "v1alpha1"
KIND = "GemmaDeployment"
PLURAL = "gemmadeployments"
SINGULAR = "gemmadeployment"
SHORT_NAMES = ["gd"]
API_VERSION = f"{GROUP}/{VERSION}"

# Bounds that keep a hostile or mistyped spec from reaching the planner or the pod.
MAX_NAME = 253
MAX_ARG = 4096
HF_REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$"
CATALOG_NAME = r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
# A token belongs in a Secret: these names may only come from valueFrom (hfTokenSecretRef sets HF_TOKEN).
TOKEN_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Server flags that run code or reach files the operator can't vouch for; refused in extraArgs.
REFUSED_FLAGS = ("--trust-remote-code", "--allowed-local-media-path", "--hf-token", "-hft")
# ...in every spelling vLLM reads as them: `--trust_remote_code` (the CRD's CEL rule refuses these
# too), and argparse abbreviations such as `--trust-remote` (the operator refuses those: a regex for
# them would cost more than kube-apiserver's CEL estimate should be asked to allow).
REFUSED_SPELLINGS = tuple(s for flag in REFUSED_FLAGS for s in flags.spellings(flag))


def refused_flag(arg: str) -> bool:
    """An extraArg that is, or that a server would read as, one of REFUSED_FLAGS."""
    if arg.startswith(REFUSED_SPELLINGS):
        return True
    return any(flags.argparse_names(arg, flag) for flag in REFUSED_FLAGS if flag.startswith("--"))


Arg = Annotated[str, StringConstraints(max_length=MAX_ARG)]
LabelValue = Annotated[str, StringConstraints(max_length=63)]
# Label keys and resource names: an optional DNS-subdomain prefix and '/', then a name of at most 63.
QUALIFIED_NAME = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
QualifiedName = Annotated[str, StringConstraints(max_length=317, pattern=QUALIFIED_NAME)]
# Kubernetes' resource.Quantity as a CRD declares it: an integer, or a bounded decimal string
# with an optional binary/decimal suffix or exponent.
QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
Quantity = int | Annotated[str, StringConstraints(max_length=64, pattern=QUANTITY)]

Quantization = Literal["auto", "bf16", "fp16", "fp8", "int8", "int4", "q4_0", "q8_0"]
Runtime = Literal["auto", "vllm", "llamacpp"]
Tuning = Literal["it", "pt"]
Task = Literal["chat", "embed"]
SizePolicy = Literal["smallest", "largest", "cheapest"]
AutoscalingMetric = Literal["queue", "kvCache"]
AutoscalingProvider = Literal["auto", "hpa", "keda"]
Phase = Literal["Planning", "Deploying", "Ready", "Degraded", "NoFit", "Invalid"]


class Model(BaseModel):
    # strict: "2" is not 2 here either, as for the API server.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True)


class ModelSpec(Model):
    family: str = Field(
        default="auto",
        max_length=63,
        pattern=r"^(auto|[a-z0-9][a-z0-9-]*)$",
        description="Gemma family (gemma4, gemma3, gemma3n, gemma2, codegemma, shieldgemma, ...). "
        "auto: the latest core family in the catalog.",
    )
    task: Task = Field(
        default="chat",
        description="chat: a generative Gemma behind /v1/chat/completions (and /v1/completions); embed: an "
        "embedding model (EmbeddingGemma) behind /v1/embeddings. family auto picks the latest family of the task.",
    )
    size: str = Field(
        default="auto",
        max_length=32,
        pattern=r"^(auto|[a-z0-9][a-z0-9.-]*)$",
        description="Parameter size as Google names it (270m, 1b, 4b, e2b, 12b, 27b, ...). "
        "auto: chosen by sizePolicy among the sizes that fit.",
    )
    size_policy: SizePolicy = Field(
        default="smallest",
        description="With size auto: smallest (Google's default advice), largest (the largest that fits), or "
        "cheapest (the size, pool and precision with the lowest predicted cost per million output tokens that "
        "meets spec.objective, counting the replicas its concurrency needs; without an objective, for the "
        "default workload). cheapest also picks the pool and precision when size is set.",
    )
    tuning: Tuning = Field(default="it", description="it: instruction-tuned (chat); pt: pre-trained (base).")
    id: str | None = Field(
        default=None,
        max_length=193,
        pattern=HF_REPO_ID,
        description="Explicit Hugging Face repo id (owner/name). Overrides family, size and tuning when it is "
        "in the catalog; for a fine-tune outside it, also set family and size of its base model.",
    )


class SecretKeyRef(Model):
    name: str = Field(max_length=MAX_NAME, pattern=DNS_SUBDOMAIN, description="Secret in the same namespace.")
    key: str = Field(
        default="token", max_length=MAX_NAME, pattern=r"^[-._a-zA-Z0-9]+$", description="Key holding the token."
    )


_TOKEN_RULE = " || ".join(f"self.name == '{n}'" for n in TOKEN_ENV)


class KeyRef(Model):
    name: str = Field(max_length=MAX_NAME, pattern=DNS_SUBDOMAIN)
    key: str = Field(max_length=MAX_NAME, pattern=r"^[-._a-zA-Z0-9]+$")
    optional: bool | None = None


class FieldRef(Model):
    api_version: str | None = Field(default=None, max_length=64)
    field_path: str = Field(max_length=256)


class ResourceFieldRef(Model):
    container_name: str | None = Field(default=None, max_length=63)
    resource: str = Field(max_length=MAX_NAME)
    divisor: Quantity | None = None


class EnvVarSource(Model):
    """A container's env[].valueFrom: exactly one source."""

    secret_key_ref: KeyRef | None = None
    config_map_key_ref: KeyRef | None = None
    field_ref: FieldRef | None = None
    resource_field_ref: ResourceFieldRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        given = [f for f in type(self).model_fields if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef")
        return self


class EnvVar(Model):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"!(({_TOKEN_RULE}) && has(self.value))",
                    "message": "a Hugging Face token is never a literal: use spec.hfTokenSecretRef",
                }
            ]
        }
    )

    name: str = Field(max_length=MAX_NAME, pattern=ENV_NAME)
    value: str | None = Field(default=None, max_length=32768)
    value_from: EnvVarSource | None = Field(default=None, description="As in a container's env[].valueFrom.")

    @model_validator(mode="after")
    def _no_literal_token(self) -> EnvVar:
        if self.name in TOKEN_ENV and self.value is not None:
            raise ValueError(f"{self.name} is never a literal: use spec.hfTokenSecretRef")
        return self


class Resources(Model):
    requests: dict[QualifiedName, Quantity] | None = Field(
        default=None, max_length=16, description="Added to the planned requests."
    )
    limits: dict[QualifiedName, Quantity] | None = Field(default=None, max_length=16, description="Added to the planned limits.")


class Toleration(Model):
    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class ServiceSpec(Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(default="ClusterIP")
    port: int = Field(default=8000, ge=1, le=65535, description="Service port of the OpenAI-compatible API.")


def _not_refused(arg: str) -> str:
    # Per item, so that the error names spec.extraArgs[i].
    if refused_flag(arg):
        raise ValueError(f"may not carry {arg.split('=', 1)[0]} (refused: {', '.join(REFUSED_FLAGS)})")
    return arg


class Autoscaling(Model):
    """Replicas follow the model server's own load signal (not CPU)."""

    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas; 0 only with provider keda.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    metric: AutoscalingMetric = Field(
        default="queue",
        description="queue: requests waiting per pod; kvCache: KV-cache use per pod, in percent (vLLM only).",
    )
    target: int = Field(ge=1, le=10000, description="Per-pod value to hold the metric at (kvCache: 1 to 100).")
    provider: AutoscalingProvider = Field(
        default="auto",
        description="hpa: a HorizontalPodAutoscaler on the custom metrics API; keda: a KEDA ScaledObject; "
        "auto: keda when the cluster serves KEDA's CRDs, else hpa.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) exceeds maxReplicas ({self.max_replicas})")
        if self.metric == "kvCache" and self.target > 100:
            raise ValueError(f"target is a percentage with metric kvCache: {self.target} is over 100")
        return self


CacheType = Literal["emptyDir", "pvc", "gcsfuse"]
AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]
# Cloud Storage bucket names: 3-63 characters of lowercase letters, digits, '-', '_' and '.'.
GCS_BUCKET = r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$"


class CacheSpec(Model):
    """Where the weights live. Unset fields take the chart's `cache` values."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "!has(self.type) || self.type != 'gcsfuse' || has(self.bucket)",
                 "message": "cache.type gcsfuse needs cache.bucket"},
            ]
        }
    )  # fmt: skip

    type: CacheType | None = Field(
        default=None,
        description="emptyDir: each pod downloads into a size-limited emptyDir (the default). pvc: one "
        "PersistentVolumeClaim per checkpoint, filled once by a loader Job, mounted read-only. gcsfuse: a "
        "Cloud Storage bucket through the GCS FUSE CSI driver, filled once by a loader Job.",
    )
    bucket: str | None = Field(default=None, max_length=63, pattern=GCS_BUCKET, description="Bucket (gcsfuse).")
    storage_class_name: str | None = Field(
        default=None, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN, description="StorageClass of the claim (pvc)."
    )
    access_modes: list[AccessMode] | None = Field(
        default=None, min_length=1, max_length=4, description="Access modes of the claim (pvc); default ReadWriteOnce."
    )
    service_account_name: str | None = Field(
        default=None, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN,
        description="Service account of the model and loader pods (gcsfuse: the one Workload Identity lets read the bucket).",
    )  # fmt: skip
    retention: Literal["Delete", "Retain"] | None = Field(
        default=None,
        description="Delete (default): the claim and its loader Job are owned by every GemmaDeployment using them and "
        "garbage-collected with the last one. Retain: they stay until deleted by hand.",
    )

    @model_validator(mode="after")
    def _bucket_for_gcsfuse(self) -> CacheSpec:
        if self.type == "gcsfuse" and not self.bucket:
            raise ValueError("cache.type gcsfuse needs cache.bucket")
        return self


class Objective(Model):
    """A service objective, per user. The planner keeps only plans predicted to meet it."""

    prompt_tokens: int = Field(ge=1, le=16_777_216, description="Prompt tokens of a typical request.")
    output_tokens: int = Field(ge=1, le=16_777_216, description="Output tokens of a typical request.")
    concurrency: int = Field(ge=1, le=1_000_000, description="Requests in flight at once, over all replicas.")
    ttft_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Longest acceptable predicted time to first token, in seconds."
    )
    output_tokens_per_second: float | None = Field(
        default=None, gt=0, le=100_000, description="Least acceptable predicted output tokens/s each user sees."
    )


class ParentReference(Model):
    """A Gateway to attach to, as Gateway API's HTTPRoute spells a parentRef."""

    group: str | None = Field(default=None, max_length=253, pattern=r"^$|" + DNS_SUBDOMAIN[1:],
                              description="Group of the parent (default gateway.networking.k8s.io).")  # fmt: skip
    kind: str | None = Field(default=None, min_length=1, max_length=63, pattern=r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
                             description="Kind of the parent (default Gateway).")  # fmt: skip
    namespace: str | None = Field(default=None, min_length=1, max_length=63,
                                  pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                                  description="Namespace of the parent (default: the GemmaDeployment's).")  # fmt: skip
    name: str = Field(min_length=1, max_length=MAX_NAME, description="Name of the parent (the Gateway).")
    section_name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN,
                                     description="A listener of the Gateway, by name.")  # fmt: skip
    port: int | None = Field(default=None, ge=1, le=65535, description="A listener of the Gateway, by port.")


class GatewaySpec(Model):
    """Serve behind a Gateway API Gateway through an InferencePool and its endpoint picker (GKE Inference Gateway)."""

    parent_refs: list[ParentReference] = Field(
        min_length=1, max_length=32,
        description="The Gateway(s) the HTTPRoute attaches to, as HTTPRoute's spec.parentRefs.",
    )  # fmt: skip


class GemmaDeploymentSpec(Model):
    model: ModelSpec = Field(default_factory=ModelSpec, description="Which Gemma to serve.")
    quantization: Quantization = Field(
        default="auto",
        description="Weight precision. auto: 16-bit when it fits, then 8-bit, then 4-bit "
        "(q4_0 GGUF on CPU).",
    )
    runtime: Runtime = Field(
        default="auto", description="Inference server. auto: vLLM on GPUs and TPUs, llama.cpp on CPUs."
    )
    accelerator: str = Field(
        default="auto",
        max_length=63,
        pattern=r"^(auto|[a-z0-9][a-z0-9-]*)$",
        description="Catalog accelerator name (nvidia-l4, nvidia-tesla-t4, tpu-v5e, cpu, ...). "
        "auto: the best pool the model fits on.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=1,
        le=16_777_216,
        description="Context length in tokens. Default: the largest that fits, capped by the model.",
    )
    replicas: int = Field(default=1, ge=0, le=1000, description="Model server replicas (without autoscaling).")
    autoscaling: Autoscaling | None = Field(
        default=None, description="Scale on the server's queue or KV-cache use; replicas is then ignored."
    )
    accept_operator_updates: bool | None = Field(
        default=None,
        description="true: a new operator version's rendering rolls the pods out; false: the running pod "
        "template is kept and status reports UpdateAvailable. Unset: the chart's rollout policy.",
    )
    hf_token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret with a Hugging Face token, for gated models."
    )
    image: str | None = Field(
        default=None, max_length=512, pattern=r"^[^\s]+$", description="Overrides the catalog's runtime image. It runs as the catalog's image for that runtime "
        "would: as the catalog's non-root user (root on TPUs), with HOME on an emptyDir."
    )
    extra_args: list[Annotated[Arg, AfterValidator(_not_refused)]] = Field(
        default_factory=list,
        max_length=64,
        description="Extra server arguments, appended after the planned ones. Flags the plan sets, and "
        f"{', '.join(REFUSED_FLAGS)}, are refused.",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(a, " + " && ".join(f"!a.startsWith('{f}')" for f in REFUSED_SPELLINGS) + ")",
                    "message": f"extraArgs may not carry {', '.join(REFUSED_FLAGS)}, in any spelling a server reads as them",
                }
            ]
        },
    )
    env: list[EnvVar] = Field(default_factory=list, max_length=64, description="Extra environment variables.")
    resources: Resources | None = Field(default=None, description="Extra container resources.")
    node_selector: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Restricts the nodes considered; merged into the pod's nodeSelector.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Added to the tolerations the plan needs."
    )
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec, description="Where the weights are downloaded and kept.")
    gateway: GatewaySpec | None = Field(
        default=None,
        description="Route through a Gateway: an InferencePool (inference.networking.k8s.io/v1) over the model pods, "
        "its endpoint picker, and an HTTPRoute to it from parentRefs. Needs the InferencePool and HTTPRoute CRDs.",
    )
    objective: Objective | None = Field(
        default=None,
        description="Speed to plan for: only pools, sizes and precisions predicted to meet it are chosen; none "
        "that does is a NoFit with the best prediction and the nearest change. status.selection.predicted "
        "shows the prediction.",
    )

    # A field validator, so that the error names spec.env, not the whole spec.
    @field_validator("env")
    @classmethod
    def _env_names_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        names = [var.name for var in env]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"env names must be unique; repeated: {', '.join(repeated)}")
        return env


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class PredictedWorkload(Model):
    prompt_tokens: int
    output_tokens: int
    concurrency: int


class Predicted(Model):
    """performance.py's roofline prediction for the selection (estimates; see the README)."""

    workload: PredictedWorkload = Field(description="What it is predicted for: spec.objective, or the default workload.")
    ttft_seconds: float = Field(description="Time to first token at that concurrency.")
    output_tokens_per_second_per_user: float
    output_tokens_per_second: float = Field(description="All users together, over the replicas.")
    max_concurrency: int = Field(description="Sequences of prompt + output tokens one replica holds at once.")
    replicas: int = Field(description="Replicas the workload's concurrency needs.")
    cost_per_million_tokens: float | None = Field(
        default=None, description="USD per million output tokens at the workload, counting its replicas."
    )
    cost_per_million_tokens_full_load: float | None = Field(
        default=None, description="USD per million output tokens with one replica at maxConcurrency."
    )
    price_per_hour: float | None = Field(default=None, description="USD per hour of one replica's share of its node.")
    price_verified: bool = Field(default=False, description="false: the catalog's price is remembered or estimated.")


class Selection(Model):
    model_id: str = Field(description="Hugging Face repo being served.")
    model_file: str | None = Field(default=None, description="GGUF file inside the repo (llama.cpp).")
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
    reasons: list[str] = Field(default_factory=list, description="Why each choice was made.")


class CacheStatus(Model):
    type: CacheType
    claim: str | None = Field(default=None, description="PersistentVolumeClaim (pvc).")
    bucket: str | None = Field(default=None, description="Bucket (gcsfuse).")
    bytes: int = Field(description="Bytes of the checkpoint the cache holds.")
    state: Literal["Filling", "Ready", "Failed"] | None = Field(
        default=None, description="The loader Job's progress (pvc, gcsfuse)."
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
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
