"""spec.cache: every cache type on every node fixture renders valid objects; sizes come from the catalog."""

from __future__ import annotations

import kubernetes_validate
import pytest

from gemma_operator import cache as cache_mod
from gemma_operator.api.v1alpha1 import CacheSpec, GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import Plan, plan
from gemma_operator.render import render
from gemma_operator.inventory import quantity
from gemma_operator.runtimes import HOME_SIZE, PROBE_PERIOD_S, startup_seconds
from tests.conftest import NODES, node_list
from tests.unit.test_render import KUBE_VERSION, OWNER, restricted_violations

FIXTURES = sorted(p.stem for p in NODES.glob("*.yaml"))
CACHES = {
    "emptyDir": {},
    "pvc": {"type": "pvc"},
    "pvc-filestore": {"type": "pvc", "storageClassName": "standard-rwx", "accessModes": ["ReadWriteMany"]},
    "gcsfuse": {"type": "gcsfuse", "bucket": "team-a-models", "serviceAccountName": "model-reader"},
}


def rendered(catalog, fixture: str, spec: dict, defaults: CacheSpec | None = None) -> tuple[Plan, list[dict]]:
    parsed = GemmaDeploymentSpec.model_validate(spec)
    result = plan(parsed, pools(node_list(fixture), catalog, parsed.node_selector), catalog)
    assert isinstance(result, Plan), result
    return result, render(result, "chat", "team-a", parsed, OWNER, cache_defaults=defaults)


def by_kind(objs: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o for o in objs}


def pod_selector(objs: list[dict]) -> dict:
    return by_kind(objs)["Deployment"]["spec"]["template"]["spec"]["nodeSelector"]


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("cache", sorted(CACHES))
def test_every_cache_type_on_every_fixture_is_valid_strict(catalog, fixture, cache):
    _, objs = rendered(catalog, fixture, {"cache": CACHES[cache]})
    for obj in objs:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    kinds = [o["kind"] for o in objs]
    expected = {"emptyDir": [], "gcsfuse": ["Job"]}.get(cache, ["PersistentVolumeClaim", "Job"])
    assert kinds == [*expected, "Deployment", "Service"]


def pod_templates(objs: list[dict]) -> list[tuple[str, dict]]:
    return [(o["kind"], o["spec"]["template"]["spec"]) for o in objs if o["kind"] in ("Deployment", "Job")]


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("cache", sorted(CACHES))
def test_every_disk_backed_empty_dir_is_bounded_and_requested(catalog, fixture, cache):
    """No emptyDir the operator renders can fill a node's disk (issue 20: HOME had no sizeLimit), and
    the scheduler counts each one: the container's ephemeral-storage request is their sum."""
    _, objs = rendered(catalog, fixture, {"cache": CACHES[cache]})
    for kind, pod in pod_templates(objs):
        disk = [v for v in pod["volumes"] if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"]
        assert all("sizeLimit" in v["emptyDir"] for v in disk), (kind, disk)
        (container,) = pod["containers"]
        total = sum(quantity(v["emptyDir"]["sizeLimit"]) for v in disk)
        requested = container["resources"].get("requests", {}).get("ephemeral-storage")
        assert (quantity(requested) if requested else 0) == total, (kind, requested, disk)


@pytest.mark.parametrize("cache", sorted(CACHES))
def test_the_xet_chunk_cache_stays_out_of_the_size_limited_volumes(catalog, cache):
    """hf_xet's chunk cache (10 GB by default before hf_xet 1.2.1) would land under HF_HOME, on the
    weights' emptyDir, or under the loader's HOME: off wherever huggingface_hub downloads."""
    _, objs = rendered(catalog, "gke-l4", {"cache": CACHES[cache]})  # vLLM
    for kind, pod in pod_templates(objs):
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env.get("HF_XET_CHUNK_CACHE_SIZE_BYTES") == "0", kind
    # llama.cpp's own downloader is plain HTTP: no hf_xet, nothing to turn off.
    _, objs = rendered(catalog, "gke-cpu-only", {"cache": CACHES[cache]})
    for kind, pod in pod_templates(objs):
        assert "HF_XET_CHUNK_CACHE_SIZE_BYTES" not in str(pod["containers"][0]["env"]), kind


def test_the_31b_bf16_pvc_plan_of_the_issue(catalog):
    """Done-when: a 62+ GB claim sized from the catalog, a loader Job, a read-only offline mount."""
    result, objs = rendered(catalog, "gke-h100x8", {"model": {"family": "gemma4", "size": "31b"},
                                                    "quantization": "bf16", "cache": {"type": "pvc"}})  # fmt: skip
    size = catalog.families["gemma4"].sizes["31b"]
    assert result.checkpoint_bytes == max(size.params_b * 2e9, size.published_memory_gb["bf16"] * 1e9)
    claim, job, deployment = (by_kind(objs)[k] for k in ("PersistentVolumeClaim", "Job", "Deployment"))
    storage = claim["spec"]["resources"]["requests"]["storage"]
    assert storage.endswith("Gi") and int(storage[:-2]) * 2**30 >= 62e9
    assert int(storage[:-2]) == cache_mod.size_gib(result.checkpoint_bytes)
    loader_pod = job["spec"]["template"]["spec"]
    assert loader_pod["containers"][0]["command"] == [
        "hf", "download", "google/gemma-4-31B-it", "--cache-dir", "/models/huggingface/hub"]
    loader = loader_pod["containers"][0]
    assert {"name": "model-cache", "mountPath": "/models/huggingface/hub"} in loader["volumeMounts"]
    # A zonal disk is created where the loader runs: in the model pods' pool; written through the group.
    assert loader_pod["nodeSelector"] == pod_selector(objs)
    assert loader_pod["securityContext"]["fsGroup"] == result.run_as[1]
    assert "nvidia.com/gpu" not in str(loader_pod["containers"][0]["resources"])  # the loader takes no GPU
    assert job["spec"]["activeDeadlineSeconds"] == cache_mod.fill_deadline_seconds(result.checkpoint_bytes)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    store = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert store["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
    assert {"name": "model-cache", "mountPath": "/models/huggingface/hub", "readOnly": True} in container["volumeMounts"]
    # The weights are on the claim: the request is the scratch /models and HOME emptyDirs only.
    assert container["resources"]["requests"]["ephemeral-storage"] == "5Gi"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HOME"] == "/models/huggingface"
    # Warm: the start-up budget leaves out the download (20 s per GiB of weights).
    assert container["startupProbe"]["failureThreshold"] * PROBE_PERIOD_S == startup_seconds(result, download=False)
    assert startup_seconds(result, download=False) < startup_seconds(result)
    assert pod["securityContext"]["runAsNonRoot"] is True and not restricted_violations(pod)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_empty_dir_plans_carry_a_size_limit_and_an_ephemeral_storage_request(catalog, fixture):
    result, objs = rendered(catalog, fixture, {})
    pod = by_kind(objs)["Deployment"]["spec"]["template"]["spec"]
    models = next(v for v in pod["volumes"] if v["name"] == "models")
    want = f"{cache_mod.size_gib(result.checkpoint_bytes)}Gi"
    assert models["emptyDir"] == {"sizeLimit": want}
    home = int(HOME_SIZE[result.runtime][:-2]) if result.run_as else 0  # HOME's emptyDir, when non-root
    request = pod["containers"][0]["resources"]["requests"]["ephemeral-storage"]
    assert request == f"{int(want[:-2]) + home}Gi"
    assert result.checkpoint_bytes * 1.1 < int(want[:-2]) * 2**30


def test_gguf_plans_fill_with_llamas_own_downloader_and_start_offline(catalog):
    result, objs = rendered(catalog, "gke-cpu-only", {"cache": {"type": "pvc"}})
    job, deployment = by_kind(objs)["Job"], by_kind(objs)["Deployment"]
    checkpoints = catalog.families[result.family].sizes[result.size].checkpoints
    checkpoint = next(c for c in checkpoints if c.file == result.model_file)
    assert result.checkpoint_bytes == checkpoint.bytes
    loader = job["spec"]["template"]["spec"]["containers"][0]
    assert loader["command"] == ["/app/llama", "download", "--hf-repo", result.model_id, "--hf-file", result.model_file]
    assert {"name": "LLAMA_CACHE", "value": "/models"} in loader["env"]
    assert loader["image"] == result.image  # the runtime image's own downloader
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][-1] == "--offline"
    assert {"name": "model-cache", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]


def test_the_gcsfuse_volume_has_the_drivers_documented_attributes(catalog):
    result, objs = rendered(catalog, "gke-l4", {"cache": CACHES["gcsfuse"]})
    deployment, job = by_kind(objs)["Deployment"], by_kind(objs)["Job"]
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"] == {"gke-gcsfuse/volumes": "true"}
    assert job["spec"]["template"]["metadata"]["annotations"] == {"gke-gcsfuse/volumes": "true"}
    pod = template["spec"]
    assert pod["serviceAccountName"] == "model-reader"
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["csi"]["driver"] == "gke-gcsfuse.csi.storage.gke.io" and volume["csi"]["readOnly"] is True
    attributes = volume["csi"]["volumeAttributes"]
    # The volume attributes the driver reads (GoogleCloudPlatform/gcs-fuse-csi-driver; GKE's page
    # "Access Cloud Storage buckets with the Cloud Storage FUSE CSI driver"); every value a string.
    documented = {"bucketName", "mountOptions", "fileCacheCapacity", "fileCacheForRangeRead", "metadataStatCacheCapacity",
                  "metadataTypeCacheCapacity", "metadataCacheTTLSeconds", "gcsfuseLoggingSeverity",
                  "skipCSIBucketAccessCheck", "gcsfuseMetadataPrefetchOnMount"}  # fmt: skip
    assert set(attributes) <= documented and all(isinstance(v, str) for v in attributes.values())
    assert attributes["bucketName"] == "team-a-models"
    assert attributes["fileCacheCapacity"] == "-1" and attributes["fileCacheForRangeRead"] == "true"
    options = attributes["mountOptions"].split(",")
    assert "file-cache:enable-parallel-downloads:true" in options
    assert " " not in attributes["mountOptions"]  # comma-separated, no spaces (GKE's guide)
    assert {f"uid={result.run_as[0]}", f"gid={result.run_as[1]}"} <= set(options)  # non-root server
    # The sidecar's file cache: a volume sized for the checkpoint, and a request for it.
    size = f"{cache_mod.size_gib(result.checkpoint_bytes)}Gi"
    assert {"name": "gke-gcsfuse-cache", "emptyDir": {"sizeLimit": size}} in pod["volumes"]
    # ... beside the scratch /models (1Gi) and HOME (4Gi) emptyDirs.
    assert pod["containers"][0]["resources"]["requests"]["ephemeral-storage"] == f"{int(size[:-2]) + 5}Gi"
    loader = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "model-cache")
    assert loader["csi"]["readOnly"] is False and "fileCacheCapacity" not in loader["csi"]["volumeAttributes"]
    assert "nodeSelector" not in job["spec"]["template"]["spec"]  # a bucket is reachable from any zone
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "model-reader"


def test_one_claim_per_checkpoint_and_storage(catalog):
    cases = {
        "a": {"cache": {"type": "pvc"}},
        "b": {"cache": {"type": "pvc"}, "replicas": 3, "maxModelLen": 4096},  # the same checkpoint and storage
        "rwx": {"cache": {"type": "pvc", "accessModes": ["ReadWriteMany"]}},
        "retain": {"cache": {"type": "pvc", "retention": "Retain"}},
    }
    names = {}
    for case, spec in cases.items():
        _, objs = rendered(catalog, "gke-l4", spec)
        names[case] = by_kind(objs)["PersistentVolumeClaim"]["metadata"]["name"]
        assert len(names[case]) <= 52 and names[case] == by_kind(objs)["Job"]["metadata"]["name"]
    assert names["a"] == names["b"]
    assert len({names["a"], names["rwx"], names["retain"]}) == 3


def test_ownership_follows_the_retention(catalog):
    _, objs = rendered(catalog, "gke-l4", {"cache": {"type": "pvc"}})
    for obj in (by_kind(objs)["PersistentVolumeClaim"], by_kind(objs)["Job"]):
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == OWNER["metadata"]["uid"] and ref["controller"] is False  # shared: no controller
    _, objs = rendered(catalog, "gke-l4", {"cache": {"type": "pvc", "retention": "Retain"}})
    assert "ownerReferences" not in by_kind(objs)["PersistentVolumeClaim"]["metadata"]
    assert "ownerReferences" not in by_kind(objs)["Job"]["metadata"]


def test_chart_defaults_apply_under_the_resources_own_fields(catalog):
    defaults = cache_mod.defaults_from('{"type": "pvc", "storageClassName": "premium-rwo"}')
    _, objs = rendered(catalog, "gke-l4", {}, defaults)
    assert by_kind(objs)["PersistentVolumeClaim"]["spec"]["storageClassName"] == "premium-rwo"
    _, objs = rendered(catalog, "gke-l4", {"cache": {"type": "emptyDir"}}, defaults)
    assert "PersistentVolumeClaim" not in by_kind(objs)
    assert cache_mod.defaults_from("") is None and cache_mod.defaults_from("{}") is None


@pytest.mark.parametrize(
    ("job", "state"),
    [
        (None, "Filling"),
        ({"status": {"active": 1}}, "Filling"),
        ({"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, "Ready"),
        ({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}, "Filling"),
        ({"metadata": {"name": "fill"}, "status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"}]}}, "Failed"),
    ],
)  # fmt: skip
def test_fill_state_of_the_loader_job(job, state):
    got, message = cache_mod.fill_state(job)
    assert got == state
    if state == "Failed":
        assert "Job has reached the specified backoff limit" in message and "kubectl logs job/fill" in message


ADAPTERS = [{"name": "support-bot", "repo": "acme/support-lora"}, {"name": "sql-writer", "bucket": "loras", "path": "team/sql"}]
DONE = {"type": "Complete", "status": "True"}


def _failed(reason: str, message: str) -> dict:
    return {"type": "Failed", "status": "True", "reason": reason, "message": message}


def _rule(index: int) -> dict:
    return _failed("PodFailurePolicy", f"Container adapter for pod ns/p failed with exit code {3 + index} matching "
                                       f"FailJob rule at index {index}")  # fmt: skip


@pytest.mark.parametrize("loader, support, sql, state, words", [
    (None, None, None, "Filling", ""),                      # the loader's own message (status.py's)
    (DONE, None, DONE, "Filling", "with support-bot once"),  # only what is left is named
    (DONE, DONE, DONE, "Ready", ""),
    (_failed("BackoffLimitExceeded", "401"), None, None, "Failed", "The loader Job"),  # the loader first
    (DONE, _rule(0), None, "Failed", "Set spec.adapters[0].rank to its rank"),
    (DONE, DONE, _rule(1), "Failed", "Adapter sql-writer (spec.adapters[1], gs://loras/team/sql) was refused"),
    (DONE, DONE, _rule(1), "Failed", "Remove it from spec.adapters or name an adapter made for google/gemma-3-1b-it"),
    (DONE, _failed("BackoffLimitExceeded", "Job has reached the specified backoff limit"), None, "Failed",
     "for adapter support-bot (spec.adapters[0], acme/support-lora) failed: Job has reached the specified backoff"),
])  # fmt: skip
def test_the_fill_waits_for_the_loader_and_every_adapter_job(catalog, loader, support, sql, state, words):
    spec = {"model": {"family": "gemma3", "size": "1b"}, "cache": {"type": "pvc"}, "adapters": ADAPTERS}
    result, objs = rendered(catalog, "gke-l4", spec)
    cache = cache_mod.plan_cache(result, GemmaDeploymentSpec.model_validate(spec))
    names = [cache.claim, *(cache_mod.adapter_job_name(cache, result, a) for a in result.adapters)]
    assert names == [o["metadata"]["name"] for o in objs if o["kind"] == "Job"]
    jobs = {name: ({"metadata": {"name": name}, "status": {"conditions": [ended]}} if ended else None)
            for name, ended in zip(names, (loader, support, sql), strict=True)}  # fmt: skip
    got, message = cache_mod.fill(cache, result, jobs)
    assert got == state and words in message
    if got == "Failed":
        assert "kubectl logs job/" in message


def _conditions(st: dict) -> dict[str, dict]:
    return {c["type"]: c for c in st["conditions"]}


def test_status_while_filling_and_after_a_failed_fill():
    from gemma_operator import status

    selection = {"modelId": "google/gemma-4-31B-it", "accelerator": "nvidia-h100-80gb", "runtime": "vllm"}
    cache = {"type": "pvc", "claim": "gemma-cache-x", "bytes": 69_900_000_000}

    def compute(state: str, message: str = "") -> dict:
        state_of = {**cache, "state": state, **({"message": message} if message else {})}
        outcome = status.Outcome("Applied", selection=selection, endpoint="http://chat", cache=state_of)
        return status.compute(outcome, generation=1, wanted_replicas=1, previous=None, now="t")

    filling = compute("Filling")
    assert filling["phase"] == "Deploying" and filling["cache"]["state"] == "Filling"
    assert _conditions(filling)["Progressing"]["reason"] == "FillingCache"
    assert "gemma-cache-x" in _conditions(filling)["Progressing"]["message"]
    assert "69.9 GB" in _conditions(filling)["Ready"]["message"]
    assert _conditions(filling)["Stalled"]["status"] == "False"
    failed = compute("Failed", "The loader Job gemma-cache-x failed: Job has reached the specified backoff limit.")
    stalled = _conditions(failed)["Stalled"]
    assert failed["phase"] == "Degraded" and stalled["status"] == "True" and stalled["reason"] == "CacheFillFailed"
    assert "backoff limit" in stalled["message"] and _conditions(failed)["Progressing"]["status"] == "False"
    ready = compute("Ready")
    assert _conditions(ready)["Progressing"]["reason"] == "Creating" and ready["cache"]["state"] == "Ready"


def _claim(request: str, phase: str | None = None, capacity: str | None = None) -> dict:
    status = {**({"phase": phase} if phase else {}), **({"capacity": {"storage": capacity}} if capacity else {})}
    return {"metadata": {"name": "gemma-cache-x", "namespace": "team-a", "resourceVersion": "7"},
            "spec": {"resources": {"requests": {"storage": request}}}, **({"status": status} if status else {})}  # fmt: skip


@pytest.mark.parametrize(
    ("live", "action"),
    [
        (None, "none"),  # not created yet: the create makes it at the rendered size
        (_claim("13Gi", "Bound", "13Gi"), "none"),
        (_claim("20Gi", "Bound"), "none"),  # larger than needed: never shrunk (the API refuses that)
        (_claim("13958643712"), "none"),  # 13Gi in bytes: quantities, not strings, are compared
        (_claim("10Gi", "Bound", "1Ti"), "none"),  # the provisioner gave more than asked (Filestore: 1 TiB)
        (_claim("10Gi", "Bound", "10Gi"), "expand"),
        (_claim("10Gi", "Pending"), "expand"),  # the API server decides (and refuses: not bound)
        (_claim("12G"), "expand"),  # 12 GB < 13 GiB
    ],
)  # fmt: skip
def test_a_claim_smaller_than_the_checkpoint_is_expanded(live, action):
    """Issue 20: a catalog size grows; the claim an older size made is expanded to the rendered size."""
    desired = {"spec": {"resources": {"requests": {"storage": "13Gi"}}}}
    got = cache_mod.resize(live, desired)
    assert got.action == action
    if action == "expand":
        assert got.expand and got.needed == "13Gi" and got.claim == "gemma-cache-x" and not got.too_small
        assert got.answered(None).action == "expanding" and not got.answered(None).too_small


@pytest.mark.parametrize(
    ("phase", "refusal", "remedy"),
    [
        ("Bound", 'persistentvolumeclaims "gemma-cache-x" is forbidden: only dynamically provisioned pvc can be '
                  "resized and the storageclass that provisions the pvc must support resize", "allowVolumeExpansion"),
        ("Pending", 'PersistentVolumeClaim "gemma-cache-x" is invalid: spec: Forbidden: spec is immutable after '
                    "creation except resources.requests and volumeAttributesClassName for bound claims",
         "Only a bound claim can be expanded"),
    ],
)  # fmt: skip
def test_a_refused_expansion_says_the_claim_is_too_small_by_how_much_and_what_to_do(phase, refusal, remedy):
    claim = cache_mod.resize(_claim("10Gi", phase), {"spec": {"resources": {"requests": {"storage": "13Gi"}}}})
    too_small = claim.answered(refusal)
    assert too_small.too_small and not too_small.expand
    state, message = cache_mod.fill_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}},
                                          too_small)  # fmt: skip
    assert state == "TooSmall"  # first, whatever the Job did: the model does not start on it
    assert "requests 10Gi" in message and "needs 13Gi (3 GiB more)" in message and refusal in message
    assert remedy in message and "kubectl delete -n team-a pvc/gemma-cache-x job/gemma-cache-x" in message
    assert cache_mod.deployment_waits({"state": state})
    assert cache_mod.fill_state(None, claim.answered(None)) == ("Filling", "")  # accepted: the fill goes on


def test_status_and_one_event_for_a_claim_too_small():
    from gemma_operator import status

    selection = {"modelId": "google/gemma-4-31B-it", "accelerator": "nvidia-h100-80gb", "runtime": "vllm"}
    cache = {"type": "pvc", "claim": "gemma-cache-x", "bytes": 69_900_000_000, "state": "TooSmall",
             "message": "The cache claim gemma-cache-x requests 10Gi, but the checkpoint now needs 13Gi."}  # fmt: skip
    outcome = status.Outcome("Applied", selection=selection, endpoint="http://chat", cache=cache)
    first = status.compute(outcome, generation=1, wanted_replicas=1, previous=None, now="t")
    stalled = _conditions(first)["Stalled"]
    assert first["phase"] == "Degraded" and first["cache"]["state"] == "TooSmall"
    assert (stalled["status"], stalled["reason"]) == ("True", "CacheClaimTooSmall") and "13Gi" in stalled["message"]
    assert _conditions(first)["Progressing"]["status"] == "False"
    assert status.events_for({}, first) == [("Warning", "CacheClaimTooSmall", cache["message"])]
    again = status.compute(outcome, generation=1, wanted_replicas=1, previous=first, now="t2")
    assert status.events_for(first, again) == []  # once, not per reconcile


def test_the_start_up_budget_follows_the_bytes_downloaded(catalog):
    """An in-flight fp8 plan downloads the bf16 checkpoint: its budget covers that download, not
    the fp8 weights it holds in memory."""
    result, objs = rendered(catalog, "gfd-a10g", {"quantization": "fp8"})
    assert result.vllm_quantization == "fp8"
    bf16 = catalog.families[result.family].sizes[result.size]
    assert result.checkpoint_bytes == max(bf16.params_b * 2e9, bf16.published_memory_gb["bf16"] * 1e9)
    probe = by_kind(objs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= 300 + 20 * result.checkpoint_bytes / 2**30


A, B = ({"kind": "GemmaDeployment", "name": n, "uid": n} for n in ("a", "b"))


@pytest.mark.parametrize(
    ("refs", "mine", "joined"),
    [
        ([], [A], [A]),  # a claim whose owners all left (GC removed their references) gains one again
        ([A], [B], [A, B]),
        ([A, B], [B], None),  # already an owner: no write
        ([], [], None),  # retention Retain: no owner references at all
    ],
)
def test_joining_a_shared_object(refs, mine, joined):
    assert cache_mod.owners_joined(refs, mine) == joined


@pytest.mark.parametrize(
    ("refs", "uid", "left"),
    [
        ([A, B], "a", [B]),  # the others keep it
        ([A], "a", []),  # the last owner: delete it
        ([B], "a", None),  # not ours
        ([], "a", None),  # retained: never pruned
    ],
)
def test_leaving_a_shared_object(refs, uid, left):
    assert cache_mod.owners_left(refs, uid) == left


@pytest.mark.parametrize(
    ("cache", "waits"),
    [(None, False), ({"type": "emptyDir", "bytes": 1}, False), ({"type": "pvc", "state": "Filling"}, True),
     ({"type": "pvc", "state": "Failed"}, True), ({"type": "gcsfuse", "state": "Ready"}, False)],
)  # fmt: skip
def test_the_deployment_waits_for_the_fill(cache, waits):
    assert cache_mod.deployment_waits(cache) is waits
