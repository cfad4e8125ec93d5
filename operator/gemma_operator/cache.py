"""Plan + spec.cache (+ the chart's defaults) -> where the weights live. Pure.

* `emptyDir` (default): each pod downloads into its own emptyDir, with a `sizeLimit` and an
  ephemeral-storage request of the checkpoint's bytes plus a margin, so that the scheduler only
  picks a node whose disk holds the weights.
* `pvc`: one PersistentVolumeClaim per checkpoint (and storage settings) in the namespace, shared
  by every GemmaDeployment serving it, filled once by a loader Job that runs the runtime image's own
  downloader; the model pods mount it read-only and start offline.
* `gcsfuse`: a Cloud Storage bucket through the GCS FUSE CSI driver, filled the same way (the
  loader mounts it read-write), mounted read-only with the file cache GKE advises for serving.

spec.adapters follow the weights: in the emptyDir with them, or, with a claim or bucket, each filled
once by its own Job into the store's adapters/KEY (adapters.store_key: what it is, so that resources
sharing the store with other lists, or one name for other repos, never collide); the Deployment
waits for every Job its plan needs, and adding an adapter fills only that one.

The claim (or bucket) root is a Hugging Face hub cache (`models--org--name/...`): what
`hf download --cache-dir` writes and vLLM reads under HF_HOME/hub, and what llama.cpp reads and
writes under LLAMA_CACHE (b11434 `common/hf-cache.cpp`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from . import adapters
from .api.v1alpha1 import Adapter, CacheSpec, GemmaDeploymentSpec
from .inventory import quantity
from .planner import Plan
from .runtimes import (CACHE_DIR, HOME_DIR, STARTUP_FLOOR_S, STARTUP_S_PER_WEIGHT_GIB, XET_CHUNK_CACHE_OFF,
                       container_security_context, disk_request, home_volume, token_env)  # fmt: skip
from .sentences import sentence

GIB = 2**30
# Beyond the checkpoint's bytes: tokenizer and config files, a download's partial file, file-system
# overhead; 10% and 1 GiB, whichever sum is rounded up to whole GiB.
MARGIN_FRACTION = 0.10
MARGIN_GIB = 1
# The writable /models beside a read-only cache (vLLM's HF_HOME keeps small files there).
SCRATCH_SIZE = "1Gi"
# An adapter Job's container (its podFailurePolicy names it) and its resources: small files, streamed.
ADAPTER_CONTAINER = "adapter"
ADAPTER_RESOURCES = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
# The loader's HOME (non-root images): `hf download --cache-dir` writes the weights into the store;
# under HOME only huggingface_hub's small files (token, Xet metadata; the chunk cache is off), and
# llama.cpp's downloader writes into LLAMA_CACHE.
LOADER_HOME_SIZE = "1Gi"
MANAGER = "gemma-operator"
CLAIM_LABEL = "gemma.dev/cache"
VOLUME = "model-cache"
FILL_BACKOFF_LIMIT = 3
# The downloaders stream to disk; room for their buffers (hf_xet reassembles chunks in memory).
# unverified: hf_xet's peak memory on a 60 GB repository was not measured here.
LOADER_RESOURCES = {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}
# A fill that hangs fails (DeadlineExceeded) instead of filling forever: each try may take the
# start-up budget's download time (>= ~50 MiB/s) plus its floor.
HUB_DIR = {"vllm": f"{CACHE_DIR}/huggingface/hub", "llamacpp": CACHE_DIR}  # where each runtime reads the hub cache
DOWNLOADER = {"vllm": "hf download (huggingface_hub)", "llamacpp": "llama download (llama.cpp)"}

# GCS FUSE CSI driver (GKE): the ephemeral volume and the pod annotation that injects its sidecar.
# https://cloud.google.com/kubernetes-engine/docs/how-to/persistent-volumes/cloud-storage-fuse-csi-driver
# (volume attribute names as the driver reads them: https://github.com/GoogleCloudPlatform/gcs-fuse-csi-driver)
GCSFUSE_DRIVER = "gke-gcsfuse.csi.storage.gke.io"
GCSFUSE_ANNOTATION = "gke-gcsfuse/volumes"
# The driver authenticates with the pod's service account through the CSIDriver's token requests,
# so the pods keep automountServiceAccountToken: false. unverified on a live cluster.
# Serving settings from GKE's performance guide: metadata cached for the mount's life (the weights
# never change under a mount), an unlimited file cache that also caches range reads (safetensors and
# GGUF are read by ranges), and parallel downloads into it.
# https://cloud.google.com/kubernetes-engine/docs/how-to/cloud-storage-fuse-csi-driver-perf
# https://cloud.google.com/storage/docs/gcsfuse-performance
GCSFUSE_SERVING_ATTRIBUTES = {
    "fileCacheCapacity": "-1",
    "fileCacheForRangeRead": "true",
    "metadataCacheTTLSeconds": "-1",
    "metadataStatCacheCapacity": "-1",
    "metadataTypeCacheCapacity": "-1",
}
GCSFUSE_SERVING_OPTIONS = ("file-cache:enable-parallel-downloads:true",)
# The sidecar keeps its file cache in a volume of this name when the pod has one (else in its own
# small emptyDir): an emptyDir sized for the checkpoint, with an ephemeral-storage request to match.
GCSFUSE_FILE_CACHE_VOLUME = "gke-gcsfuse-cache"


@dataclass(frozen=True)
class Cache:
    """The resolved cache of one plan."""

    type: str
    bytes: int
    size: str  # the claim's request, the emptyDir's sizeLimit and the ephemeral-storage request
    settings: CacheSpec
    claim: str | None = None  # pvc: the claim; pvc and gcsfuse: the name of the loader Job too
    bucket: str | None = None

    @property
    def filled(self) -> bool:
        """Filled once by a loader Job, then mounted read-only."""
        return self.type in ("pvc", "gcsfuse")

    def status(self, state: str | None = None, message: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "bytes": self.bytes}
        if self.type == "pvc":
            out["claim"] = self.claim
        if self.bucket:
            out["bucket"] = self.bucket
        if state:
            out["state"] = state
        if message:
            out["message"] = message
        return out


DEFAULTS_ENV = "GEMMA_OPERATOR_CACHE"  # the chart's `cache` values, as JSON


def defaults_from(text: str | None) -> CacheSpec | None:
    """The chart-wide defaults; a wrong value stops the operator at start, naming the field."""
    return CacheSpec.model_validate_json(text) if text and text.strip() not in ("", "{}", "null") else None


def resolve(spec: CacheSpec, defaults: CacheSpec | None = None) -> CacheSpec:
    """The resource's settings over the chart's, field by field."""
    merged = (defaults or CacheSpec()).model_dump(exclude_none=True)
    merged.update(spec.model_dump(exclude_none=True))
    merged.setdefault("type", "emptyDir")
    merged.setdefault("retention", "Delete")
    return CacheSpec.model_validate(merged)


def size_gib(checkpoint_bytes: int) -> int:
    return math.ceil(checkpoint_bytes * (1 + MARGIN_FRACTION) / GIB) + MARGIN_GIB


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def claim_name(plan: Plan, settings: CacheSpec) -> str:
    """DNS-safe, at most 52 characters (a Job's name leaves room for its pods'), and one per
    checkpoint and storage: deployments share a claim only if they would create the same one."""
    parts = (plan.model_id.lower(), plan.model_file, settings.type, settings.bucket, settings.storage_class_name,
             ",".join(settings.access_modes or []), settings.retention)  # fmt: skip
    key = "|".join(part or "" for part in parts)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"gemma-cache-{_slug(plan.model_id.split('/')[-1])[:28].strip('-')}-{digest}"


def plan_cache(plan: Plan, spec: GemmaDeploymentSpec, defaults: CacheSpec | None = None) -> Cache:
    settings = resolve(spec.cache, defaults)
    # The adapters land beside the weights (a claim shared with other adapter lists grows when one
    # needs more: resize).
    size = f"{size_gib(plan.checkpoint_bytes + plan.adapter_bytes)}Gi"
    name = claim_name(plan, settings) if settings.type in ("pvc", "gcsfuse") else None
    return Cache(type=settings.type or "emptyDir", bytes=plan.checkpoint_bytes, size=size, settings=settings,
                 claim=name, bucket=settings.bucket if settings.type == "gcsfuse" else None)  # fmt: skip


def _gcsfuse_volume(cache: Cache, plan: Plan, read_only: bool) -> dict[str, Any]:
    """Read-only with the serving caches for the model pods; read-write, uncached, for the loader."""
    options = ["implicit-dirs", *(GCSFUSE_SERVING_OPTIONS if read_only else ())]
    if plan.run_as:  # a non-root server must own what it reads (GKE: set uid and gid for non-root images)
        options += [f"uid={plan.run_as[0]}", f"gid={plan.run_as[1]}"]
    attributes = {"bucketName": cache.bucket, "mountOptions": ",".join(options)}
    if read_only:
        attributes.update(GCSFUSE_SERVING_ATTRIBUTES)
    return {"name": VOLUME, "csi": {"driver": GCSFUSE_DRIVER, "readOnly": read_only, "volumeAttributes": attributes}}


def _store_volume(cache: Cache, plan: Plan, read_only: bool) -> dict[str, Any]:
    if cache.type == "gcsfuse":
        return _gcsfuse_volume(cache, plan, read_only)
    return {"name": VOLUME, "persistentVolumeClaim": {"claimName": cache.claim, "readOnly": read_only}}


def apply_to_pod(cache: Cache, plan: Plan, pod_spec: dict[str, Any], pod_meta: dict[str, Any]) -> None:
    """Point the model pod (as the runtime rendered it, with an emptyDir `models` at /models) at the cache."""
    (container,) = pod_spec["containers"]
    models = next(v for v in pod_spec["volumes"] if v["name"] == "models")
    if not cache.filled:  # the ephemeral-storage request counts it (render: runtimes.disk_request)
        models["emptyDir"] = {"sizeLimit": cache.size}
        return
    hub = HUB_DIR[plan.runtime]
    store = _store_volume(cache, plan, read_only=True)
    if hub == CACHE_DIR:  # llama.cpp reads the hub cache at /models itself
        pod_spec["volumes"][pod_spec["volumes"].index(models)] = store
        mount = next(m for m in container["volumeMounts"] if m["name"] == "models")
        mount.update(name=VOLUME, readOnly=True)
    else:  # vLLM: a small writable HF_HOME, the read-only hub cache (and the adapters) inside it
        models["emptyDir"] = {"sizeLimit": SCRATCH_SIZE}
        pod_spec["volumes"].append(store)
        container["volumeMounts"].append({"name": VOLUME, "mountPath": hub, "readOnly": True})
    # Offline: the weights are there, and nothing may try to write into the read-only cache.
    if plan.runtime == "vllm":
        container["env"].insert(0, {"name": "HF_HUB_OFFLINE", "value": "1"})
    else:
        container["args"].append("--offline")
    if cache.type == "gcsfuse":
        pod_meta.setdefault("annotations", {})[GCSFUSE_ANNOTATION] = "true"
        pod_spec["volumes"].append({"name": GCSFUSE_FILE_CACHE_VOLUME, "emptyDir": {"sizeLimit": cache.size}})
    if cache.settings.service_account_name:
        pod_spec["serviceAccountName"] = cache.settings.service_account_name


def _labels(cache: Cache) -> dict[str, str]:
    return {"app.kubernetes.io/name": "gemma-cache", "app.kubernetes.io/component": "model-cache",
            "app.kubernetes.io/managed-by": MANAGER, CLAIM_LABEL: cache.claim or ""}  # fmt: skip


def loader_command(plan: Plan) -> list[str]:
    """The runtime image's own downloader, into the hub cache the server reads."""
    if plan.runtime == "vllm":
        return ["hf", "download", plan.model_id, "--cache-dir", HUB_DIR["vllm"]]
    source = ["--hf-repo", plan.model_id, "--hf-file", plan.model_file] if plan.model_file else \
        ["--hf-repo", f"{plan.model_id}:{plan.quantization.upper()}"]  # fmt: skip
    # `llama download` (b11434 app/download.cpp) is llama-server's own -hf download, without the server.
    return ["/app/llama", "download", *source]


def objects(cache: Cache, plan: Plan, spec: GemmaDeploymentSpec, namespace: str, tolerations: list[dict[str, Any]],
            pod_security_context: dict[str, Any], owner_ref: Mapping[str, Any] | None) -> list[dict[str, Any]]:  # fmt: skip
    """The claim (pvc) and the loader Job (pvc, gcsfuse); none for emptyDir. `owner_ref` is the
    GemmaDeployment as one owner among several (no controller), kept only with retention Delete."""
    if not cache.filled:
        return []
    refs = [dict(owner_ref)] if owner_ref is not None and cache.settings.retention == "Delete" else None
    out: list[dict[str, Any]] = []
    if cache.type == "pvc":
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": cache.claim, "namespace": namespace, "labels": _labels(cache)},
            "spec": {
                "accessModes": list(cache.settings.access_modes or ["ReadWriteOnce"]),
                "resources": {"requests": {"storage": cache.size}},
            },
        }
        if cache.settings.storage_class_name:
            claim["spec"]["storageClassName"] = cache.settings.storage_class_name
        out.append(claim)
    out.append(_job(cache, plan, spec, namespace, cache.claim or "", "loader", loader_command(plan), tolerations,
                    pod_security_context, dict(LOADER_RESOURCES), fill_deadline_seconds(cache.bytes)))  # fmt: skip
    base_ids = tuple(dict.fromkeys((plan.base_id, plan.model_id)))
    for adapter in plan.adapters:
        out.append(_job(cache, plan, spec, namespace, adapter_job_name(cache, plan, adapter), ADAPTER_CONTAINER,
                        adapter_command(plan, adapter, base_ids), tolerations, pod_security_context,
                        dict(ADAPTER_RESOURCES), fill_deadline_seconds(adapter_bytes(plan, adapter)),
                        refusals=plan.runtime == "vllm"))  # fmt: skip
    if refs:
        for obj in out:
            obj["metadata"]["ownerReferences"] = refs
    return out


def adapter_bytes(plan: Plan, adapter: Adapter) -> int:
    """One adapter's share of plan.adapter_bytes (adapters.download_bytes: a MiB each, and weights in
    proportion to the rank): its Job's spec depends on it alone, never on the list it came in."""
    ranks = [a.rank or adapters.DEFAULT_RANK for a in plan.adapters]
    per_rank = (plan.adapter_bytes - len(ranks) * 2**20) / sum(ranks)
    return int(per_rank * (adapter.rank or adapters.DEFAULT_RANK)) + 2**20


def adapter_command(plan: Plan, adapter: Adapter, base_ids: tuple[str, ...]) -> list[str]:
    """The adapter's download into the store, as the Job mounts it (where the pods mount it too)."""
    if plan.runtime == "vllm":
        return adapters.vllm_store_command(adapter, base_ids, HUB_DIR["vllm"])
    return adapters.llamacpp_download_command(adapter, HUB_DIR["llamacpp"])


def adapter_job_name(cache: Cache, plan: Plan, adapter: Adapter) -> str:
    """One Job per adapter and store, named for what it downloads and checks (its store_key, the rank
    bound and the bases it is checked against), never for the name a resource gives it; at most 52
    characters, as the loader's."""
    key = adapters.store_key(adapter, plan.runtime)
    checked = f"{cache.claim}|{key}|{adapters.rank_bound(adapter)}|{plan.base_id}|{plan.model_id}|{plan.runtime}"
    digest = hashlib.sha256(checked.encode()).hexdigest()[:10]
    return f"gemma-lora-{key.rsplit('-', 1)[0][:28].strip('-') or 'adapter'}-{digest}"


def _job(cache: Cache, plan: Plan, spec: GemmaDeploymentSpec, namespace: str, name: str, container: str,
         command: list[str],
         tolerations: list[dict[str, Any]], pod_security_context: dict[str, Any], resources: dict[str, Any],
         deadline_s: int, refusals: bool = False) -> dict[str, Any]:  # fmt: skip
    """A Job that writes into the store with the runtime image: the loader (the weights) or an adapter's."""
    # vLLM's image: HF_HOME stays under HOME (hf writes more than the hub cache there); the hub
    # cache is the store, named by --cache-dir. llama.cpp: LLAMA_CACHE is the hub cache itself.
    # hf download's Xet chunk cache would land under HOME (runtimes.XET_CHUNK_CACHE_OFF); llama.cpp's
    # downloader is plain HTTP (common/download.cpp: one GET into a .downloadInProgress file).
    env = [dict(XET_CHUNK_CACHE_OFF)] if plan.runtime == "vllm" else [{"name": "LLAMA_CACHE", "value": CACHE_DIR}]
    env += token_env(spec)
    volumes = [_store_volume(cache, plan, read_only=False)]
    mounts = [{"name": VOLUME, "mountPath": HUB_DIR[plan.runtime]}]
    if plan.run_as:
        home, home_mount = home_volume(LOADER_HOME_SIZE)
        volumes.append(home)
        mounts.append(home_mount)
        env.insert(0, {"name": "HOME", "value": HOME_DIR})
    resources = {part: dict(values) for part, values in resources.items()}
    disk = disk_request(volumes)
    if disk:
        resources["requests"]["ephemeral-storage"] = disk
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{
            "name": container,
            "image": plan.image,
            "imagePullPolicy": "IfNotPresent",
            "command": command,
            "env": env,
            "resources": resources,
            "volumeMounts": mounts,
            "securityContext": container_security_context(),
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": volumes,
        "automountServiceAccountToken": False,
        "securityContext": dict(pod_security_context),
    }  # fmt: skip
    if plan.run_as and cache.type == "pvc":
        # A new volume's root belongs to root: the non-root downloader writes through its group.
        pod_spec["securityContext"].update(fsGroup=plan.run_as[1], fsGroupChangePolicy="OnRootMismatch")
    if cache.type == "pvc":
        # Where the model pods run: a zonal disk is created in the zone of its first pod
        # (WaitForFirstConsumer), and the model pods must reach it.
        pod_spec["nodeSelector"] = plan.node_selector
        if tolerations:
            pod_spec["tolerations"] = tolerations
    if cache.settings.service_account_name:
        pod_spec["serviceAccountName"] = cache.settings.service_account_name
    # Not managed-by: the loader's pods are no model pods (the pod index selects on that label).
    pod_labels = {k: v for k, v in _labels(cache).items() if k != "app.kubernetes.io/managed-by"}
    pod_meta: dict[str, Any] = {"labels": pod_labels}
    if cache.type == "gcsfuse":
        pod_meta["annotations"] = {GCSFUSE_ANNOTATION: "true"}
    job_spec: dict[str, Any] = {"backoffLimit": FILL_BACKOFF_LIMIT, "activeDeadlineSeconds": deadline_s,
                                "template": {"metadata": pod_meta, "spec": pod_spec}}  # fmt: skip
    if refusals:
        # The download's refusals (a rank, a base) fail the Job at once, each by its own rule: retrying
        # cannot change an adapter_config.json, and the rule's index says which (fill_state).
        job_spec["podFailurePolicy"] = {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": container, "operator": "In", "values": [code]}}
            for code in adapters.REFUSALS]}  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels(cache)},
            "spec": job_spec}  # fmt: skip


def owners_joined(refs: list[dict[str, Any]], mine: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """A shared object's owners once this deployment joins; None when nothing changes (it is one
    already, or the object is retained and has no owners)."""
    if not mine or mine[0]["uid"] in {r.get("uid") for r in refs}:
        return None
    return [*refs, *mine]


def owners_left(refs: list[dict[str, Any]], uid: str) -> list[dict[str, Any]] | None:
    """The owners that stay once this deployment stops using a shared object; an empty list when it
    was the last (then the object is deleted, as garbage collection would once it is gone); None
    when it was no owner (a retained object, or another deployment's)."""
    if uid not in {r.get("uid") for r in refs}:
        return None
    return [r for r in refs if r.get("uid") != uid]


def deployment_waits(cache_status: Mapping[str, Any] | None) -> bool:
    """The model Deployment is applied only once its cache is filled (a filled cache's pods mount
    it read-only, and a ReadWriteOnce disk can't be both filled and read)."""
    return bool(cache_status) and cache_status.get("state") not in (None, "Ready")


def fill_deadline_seconds(fetched_bytes: int) -> int:
    per_try = STARTUP_FLOOR_S + STARTUP_S_PER_WEIGHT_GIB * math.ceil(fetched_bytes / GIB)
    return per_try * (FILL_BACKOFF_LIMIT + 1)


@dataclass(frozen=True)
class Resize:
    """A live cache claim against the claim the plan renders now (a catalog size may have grown since
    it was created): `none`, `expand` (patch spec.resources.requests.storage to `needed`), `expanding`
    (the API server accepted that), or `too-small` (it refused: `refusal` is its answer)."""

    action: Literal["none", "expand", "expanding", "too-small"]
    claim: str = ""
    namespace: str = ""
    requested: str = ""  # the live claim's request
    needed: str = ""  # the rendered claim's request
    bound: bool = False
    refusal: str | None = None

    @property
    def expand(self) -> bool:
        return self.action == "expand"

    @property
    def too_small(self) -> bool:
        return self.action == "too-small"

    def answered(self, refusal: str | None) -> Resize:
        """The API server's answer to the expansion: None once accepted, else why it refused."""
        return replace(self, action="too-small" if refusal else "expanding", refusal=refusal)

    def message(self) -> str:
        short = math.ceil((quantity(self.needed) - quantity(self.requested)) / GIB)
        delete = f"`kubectl delete -n {self.namespace} pvc/{self.claim} job/{self.claim}`"
        if self.bound:
            remedy = (
                f"Allow expansion on its StorageClass (allowVolumeExpansion: true) and expand it (`kubectl patch -n "
                f"{self.namespace} pvc/{self.claim} -p '{{\"spec\":{{\"resources\":{{\"requests\":{{\"storage\":"
                f"\"{self.needed}\"}}}}}}}}'`), or delete it and its loader Job ({delete}) so that the operator creates "
                f"it at {self.needed} and fills it again."
            )
        else:
            remedy = (f"Only a bound claim can be expanded: delete it and its loader Job ({delete}) so that the "
                      f"operator creates it at {self.needed}.")  # fmt: skip
        why = (self.refusal or "").strip().split("\n")[0] or "no reason given"  # a 422 goes on with the spec's diff
        return (
            f"The cache claim {self.claim} requests {self.requested}, but the checkpoint now needs {self.needed} "
            f"({short} GiB more), and the API server refused to expand it: {sentence(why)} {remedy} "
            f"The model pods do not start on it until it is large enough."
        )


def resize(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Resize:
    """What a live cache claim needs for the claim rendered now. Large enough when its request, or
    the capacity it was given (provisioners round up), holds the rendered request; otherwise the
    operator asks to expand it, as PersistentVolumeClaim expansion works: a larger
    spec.resources.requests.storage on a bound claim of a StorageClass with allowVolumeExpansion."""
    if not live:
        return Resize("none")
    needed = ((desired.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
    requested = ((live.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
    status = live.get("status") or {}
    capacity = (status.get("capacity") or {}).get("storage")
    if not needed or not requested or quantity(requested) >= quantity(needed):
        return Resize("none")
    if capacity and quantity(capacity) >= quantity(needed):
        return Resize("none")
    meta = live.get("metadata") or {}
    return Resize("expand", claim=meta.get("name", ""), namespace=meta.get("namespace", ""), requested=requested,
                  needed=needed, bound=status.get("phase") == "Bound")  # fmt: skip


def fill_state(job: Mapping[str, Any] | None, claim: Resize | None = None) -> tuple[str, str]:
    """(state, message) of a loader Job: Filling until it completes, Failed with the Job's own message;
    TooSmall first when the claim it fills is smaller than the checkpoint and cannot be expanded."""
    if claim is not None and claim.too_small:
        return "TooSmall", claim.message()
    conditions = _ended(job)
    name = ((job or {}).get("metadata") or {}).get("name", "")
    if "Complete" in conditions:
        return "Ready", ""
    if "Failed" in conditions:
        failed = conditions["Failed"]
        why = failed.get("message") or failed.get("reason") or "failed"
        return "Failed", (
            f"The loader Job {name} failed: {sentence(why)} See `kubectl logs job/{name}`; fix the cause (the token in "
            f"spec.hfTokenSecretRef, the storage class, the bucket's permissions), then delete the Job to fill again."
        )
    return "Filling", ""


def _ended(job: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    return {c.get("type"): c for c in ((job or {}).get("status") or {}).get("conditions") or []
            if c.get("status") == "True"}  # fmt: skip


# The Job controller's message when a podFailurePolicy rule fails the Job (kubernetes
# pkg/controller/job/pod_failure_policy.go): "... matching FailJob rule at index N".
RULE_INDEX = re.compile(r"rule at index (\d+)")


def _adapter_failure(index: int, adapter: Adapter, job: str, failed: Mapping[str, Any], plan: Plan) -> str:
    source = adapter.repo or f"gs://{adapter.bucket}/{adapter.path}"
    why = failed.get("message") or failed.get("reason") or "failed"
    rule = RULE_INDEX.search(why) if failed.get("reason") == "PodFailurePolicy" else None
    code = adapters.REFUSALS[int(rule.group(1))] if rule and int(rule.group(1)) < len(adapters.REFUSALS) else None
    head = f"Adapter {adapter.name} (spec.adapters[{index}], {source}) was refused by its download, Job {job}: "
    logs = f"`kubectl logs job/{job}` shows"
    if code == adapters.EXIT_RANK:
        return (f"{head}its rank (adapter_config.json `r`) is above {adapters.rank_bound(adapter)}, the rank planned "
                f"for it. Set spec.adapters[{index}].rank to its rank ({logs} it); no model pod starts until then.")
    if code == adapters.EXIT_BASE:
        return (f"{head}it is made for another base (adapter_config.json base_model_name_or_path; {logs} which), "
                f"not {plan.model_id}. Remove it from spec.adapters or name an adapter made for {plan.model_id}; no "
                f"model pod starts until then.")
    return (f"The adapter Job {job} for adapter {adapter.name} (spec.adapters[{index}], {source}) failed: "
            f"{sentence(why)} See `kubectl logs job/{job}`; fix the cause (the token in spec.hfTokenSecretRef, the "
            f"repo and revision, the bucket's permissions), then delete the Job to fill again.")


def fill(cache: Cache, plan: Plan, jobs: Mapping[str, Mapping[str, Any] | None],
         claim: Resize | None = None) -> tuple[str, str]:  # fmt: skip
    """(state, message) of every Job a filled cache needs for this plan, by name: the loader's first
    (fill_state), then each adapter's in spec order. Failed names the adapter and what to change; Filling
    with a message while only adapters are left (a list that grew: only the new one fills)."""
    state, message = fill_state(jobs.get(cache.claim or ""), claim)
    if state in ("TooSmall", "Failed"):
        return state, message
    waiting = []
    for index, adapter in enumerate(plan.adapters):
        name = adapter_job_name(cache, plan, adapter)
        ended = _ended(jobs.get(name))
        if "Failed" in ended:
            return "Failed", _adapter_failure(index, adapter, name, ended["Failed"], plan)
        if "Complete" not in ended:
            waiting.append(adapter.name)
    if state == "Filling" or not waiting:
        return state, message
    return "Filling", (f"The adapter Jobs fill the cache {cache.claim if cache.type == 'pvc' else cache.bucket} with "
                       f"{', '.join(waiting)} once; the model pods start when they complete.")  # fmt: skip
