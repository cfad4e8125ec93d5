"""GemmaDeployment v1alpha1: the spec users write (the status the operator reports is in `status.py`).

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
Input = Literal["text", "image", "audio"]
# Most images or audio clips one request may carry (vLLM's --limit-mm-per-prompt); each is memory profiled.
MAX_MEDIA_PER_PROMPT = 64


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
        "default workload; model.task embed: per million input tokens at full load). cheapest also picks the pool "
        "and precision when size is set.",
    )
    tuning: Tuning = Field(default="it", description="it: instruction-tuned (chat); pt: pre-trained (base).")
    id: str | None = Field(
        default=None,
        max_length=193,
        pattern=HF_REPO_ID,
        description="Explicit Hugging Face repo id (owner/name). Overrides family, size and tuning when it is "
        "in the catalog; for a fine-tune outside it, also set family and size of its base model.",
    )
    inputs: list[Input] = Field(
        default_factory=lambda: ["text"],
        min_length=1,
        max_length=3,
        description="What requests carry: text (always), image, audio. Only sizes whose encoders take every input "
        "are planned; without image or audio, multimodal checkpoints run their language model only.",
    )
    images_per_prompt: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MEDIA_PER_PROMPT,
        description="With image in inputs: the most images one request may carry (default 1).",
    )
    audios_per_prompt: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MEDIA_PER_PROMPT,
        description="With audio in inputs: the most audio clips one request may carry (default 1).",
    )

    @field_validator("inputs")
    @classmethod
    def _inputs_unique(cls, inputs: list[str]) -> list[str]:
        repeated = sorted({i for i in inputs if inputs.count(i) > 1})
        if repeated:
            raise ValueError(f"inputs must be unique; repeated: {', '.join(repeated)}")
        return inputs

    @model_validator(mode="after")
    def _counts_need_their_input(self) -> ModelSpec:
        for field, count, modality in (("imagesPerPrompt", self.images_per_prompt, "image"),
                                       ("audiosPerPrompt", self.audios_per_prompt, "audio")):  # fmt: skip
            if count is not None and modality not in self.inputs:
                raise ValueError(f"{field} needs {modality} in inputs")
        return self

    @property
    def media(self) -> dict[str, int]:
        """The inputs beyond text, each with the most items one request may carry."""
        counts = {"image": self.images_per_prompt or 1, "audio": self.audios_per_prompt or 1}
        return {m: counts[m] for m in ("image", "audio") if m in self.inputs}


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
    """A service objective, per user. The planner keeps only plans predicted to meet it. For model.task embed:
    promptTokens, concurrency and ttftSeconds (the request's latency); outputTokens and outputTokensPerSecond
    are Invalid there."""

    prompt_tokens: int = Field(
        ge=1, le=16_777_216, description="Prompt tokens of a typical request (model.task embed: its input tokens)."
    )
    output_tokens: int | None = Field(
        default=None, ge=1, le=16_777_216,
        description="Output tokens of a typical request. Required for chat models; refused for model.task embed.",
    )
    concurrency: int = Field(ge=1, le=1_000_000, description="Requests in flight at once, over all replicas.")
    ttft_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Longest acceptable predicted time to first token, in seconds "
        "(model.task embed: the whole request's latency, one forward pass).",
    )
    output_tokens_per_second: float | None = Field(
        default=None, gt=0, le=100_000,
        description="Least acceptable predicted output tokens/s each user sees. Chat models only.",
    )


# A served model name (OpenAI `model`): what vLLM's --lora-modules and llama.cpp's aliases accept
# without quoting, and what an HTTPRoute header match can carry.
SERVED_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
# PEFT's LoRA ranks are positive integers; vLLM 0.32 plans at most 512 (--max-lora-rank's largest choice).
MAX_LORA_RANK = 512


ADAPTER_SOURCE_MESSAGE = "an adapter comes from repo (with an optional revision), or from bucket and path"


class Adapter(Model):
    """A LoRA fine-tune served on the base model under its own name: a Hugging Face repo holding a PEFT
    LoRA (adapter_config.json + adapter_model.safetensors), or a folder of one in a GCS bucket."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.repo) ? !has(self.bucket) && !has(self.path) : has(self.bucket) && has(self.path) && !has(self.revision)",
                 "message": ADAPTER_SOURCE_MESSAGE},
            ]
        }
    )  # fmt: skip

    name: str = Field(max_length=63, pattern=SERVED_NAME,
                      description="Served model name clients pass as `model` to reach this adapter.")  # fmt: skip
    repo: str | None = Field(default=None, max_length=193, pattern=HF_REPO_ID,
                             description="Hugging Face repo (owner/name) holding the PEFT LoRA.")  # fmt: skip
    revision: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$",
                                 description="Branch, tag or commit of repo (default: main).")  # fmt: skip
    bucket: str | None = Field(default=None, max_length=63, pattern=GCS_BUCKET, description="GCS bucket holding the adapter.")
    path: str | None = Field(default=None, max_length=1024, pattern=r"^[A-Za-z0-9._-][A-Za-z0-9._/-]*$",
                             description="Folder in bucket holding adapter_config.json and its weights.")  # fmt: skip
    rank: int | None = Field(default=None, ge=1, le=MAX_LORA_RANK,
                             description="The LoRA rank (adapter_config.json `r`), when known: sizes the plan. Unset: "
                             "the plan assumes vLLM's default 16, and the download refuses a larger one.")  # fmt: skip
    base_model: str | None = Field(default=None, max_length=193, pattern=HF_REPO_ID,
                                   description="The adapter's base (adapter_config.json `base_model_name_or_path`), when "
                                   "known: it must be the served model. The download checks it too.")  # fmt: skip
    gguf: str | None = Field(default=None, max_length=255, pattern=r"^[A-Za-z0-9._/-]+\.gguf$",
                             description="The adapter's GGUF file (llama.cpp's --lora), in repo or under path. llama.cpp "
                             "plans need it.")  # fmt: skip

    @model_validator(mode="after")
    def _one_source(self) -> Adapter:
        from_repo = self.repo is not None and self.bucket is None and self.path is None
        from_bucket = self.repo is None and self.revision is None and self.bucket is not None and self.path is not None
        if not (from_repo or from_bucket):
            raise ValueError(f"adapter {self.name}: {ADAPTER_SOURCE_MESSAGE}")
        if self.path and ".." in self.path.split("/"):
            raise ValueError(f"adapter {self.name}: path may not climb out of the bucket (..)")
        return self


# An inline chat template travels as one server argument; real templates are a few KiB (Gemma 3's: ~1.5).
MAX_CHAT_TEMPLATE = 65536


class ConfigMapKeyRef(Model):
    name: str = Field(max_length=MAX_NAME, pattern=DNS_SUBDOMAIN, description="ConfigMap in the same namespace.")
    key: str = Field(max_length=MAX_NAME, pattern=r"^[-._a-zA-Z0-9]+$", description="Key holding the template.")


class ChatTemplate(Model):
    """A Jinja chat template in place of the checkpoint's: exactly one of inline or configMapRef."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "has(self.inline) != has(self.configMapRef)",
                 "message": "chatTemplate needs exactly one of inline or configMapRef"},
            ]
        }
    )  # fmt: skip

    inline: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CHAT_TEMPLATE,
        description="The template itself (Jinja, as in a checkpoint's chat_template.jinja).",
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key holding the template; mounted into the model pod."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ChatTemplate:
        if (self.inline is None) == (self.config_map_ref is None):
            raise ValueError("chatTemplate needs exactly one of inline or configMapRef")
        return self

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


def _names_unique(items: list[Any], what: str) -> list[Any]:
    """`items` (each with a `name`) as given, or a ValueError naming the repeated names."""
    names = [item.name for item in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} names must be unique; repeated: {', '.join(repeated)}")
    return items


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
    adapters: list[Adapter] = Field(
        default_factory=list,
        max_length=32,
        description="LoRA adapters served on the base model, each under its own served model name (vLLM: "
        "--lora-modules; llama.cpp: --lora on each adapter's GGUF). Downloaded into the weights' cache.",
    )  # names are the list's key in the CRD (crd.py): the API server refuses a repeated one
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
    chat_template: ChatTemplate | None = Field(
        default=None,
        description="Overrides the checkpoint's chat template. Parsed in jinja2's sandbox before it runs: a syntax "
        "error is Invalid, naming the line; `gemma-operator plan` prints the prompt a sample conversation becomes.",
    )

    # Field validators, so that the error names spec.adapters or spec.env, not the whole spec.
    @field_validator("adapters")
    @classmethod
    def _adapter_names_unique(cls, adapters: list[Adapter]) -> list[Adapter]:
        return _names_unique(adapters, "adapter")

    @field_validator("env")
    @classmethod
    def _env_names_unique(cls, env: list[EnvVar]) -> list[EnvVar]:
        return _names_unique(env, "env")
