"""charts/gemma-operator/files/argocd-health.lua, run in Lua 5.1 (Argo CD's gopher-lua dialect) via lupa."""

from __future__ import annotations

from typing import Any

import pytest

from .chart_files import CHART, ROOT

lupa = pytest.importorskip("lupa.lua51", reason="lupa (the `test` extra) runs the Argo CD health script")

SCRIPT = (CHART / "files" / "argocd-health.lua").read_text()
READY = {"type": "Ready", "status": "True", "reason": "Serving", "message": "1 of 1 replicas ready."}
NOT_READY = {"type": "Ready", "status": "False", "reason": "Deploying", "message": "0 of 1 replicas ready."}
PROGRESSING = {"type": "Progressing", "status": "True", "reason": "RollingOut", "message": "Waiting for 1 replica."}
STALLED_OFF = {"type": "Stalled", "status": "False", "reason": "Fits", "message": ""}


def stalled(reason: str, message: str) -> dict[str, str]:
    return {"type": "Stalled", "status": "True", "reason": reason, "message": message}


def lua_value(runtime: Any, value: Any) -> Any:
    """Python data as Lua values: lists become 1-based sequences, as Argo CD's obj has them."""
    if isinstance(value, dict):
        return runtime.table_from({key: lua_value(runtime, item) for key, item in value.items()})
    if isinstance(value, list):
        return runtime.table_from([lua_value(runtime, item) for item in value])
    return value


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Runs the script the way Argo CD does: a chunk with a global `obj`, returning hs."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = lua_value(runtime, obj)
    hs = runtime.execute(SCRIPT)
    return dict(hs.items())


def gemma(generation: int = 2, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "gemma.dev/v1alpha1",
        "kind": "GemmaDeployment",
        "metadata": {"name": "chat", "namespace": "gemma", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


ENDPOINT = "http://chat.gemma.svc.cluster.local:8000/v1"
CASES = [
    ("ready", gemma(status={"observedGeneration": 2, "phase": "Ready", "conditions": [READY, STALLED_OFF],
                            "endpoint": ENDPOINT}), "Healthy", "1 of 1 replicas ready. Endpoint: " + ENDPOINT),
    ("ready-no-endpoint", gemma(status={"observedGeneration": 2, "phase": "Ready", "conditions": [READY]}),
     "Healthy", "1 of 1 replicas ready."),
    ("no-status", gemma(), "Progressing", "Waiting for gemma-operator to plan this GemmaDeployment."),
    ("empty-status", gemma(status={}), "Progressing", "Waiting for gemma-operator to plan this GemmaDeployment."),
    ("stale-ready", gemma(generation=3, status={"observedGeneration": 2, "phase": "Ready", "conditions": [READY]}),
     "Progressing", "Waiting for gemma-operator to observe generation 3."),
    ("stale-stalled", gemma(generation=3, status={"observedGeneration": 2, "phase": "NoFit",
                                                  "conditions": [stalled("NoFit", "old spec")]}),
     "Progressing", "Waiting for gemma-operator to observe generation 3."),
    ("no-observed-generation", gemma(status={"phase": "Ready", "conditions": [READY]}),
     "Progressing", "Waiting for gemma-operator to observe generation 2."),
    ("planning", gemma(status={"observedGeneration": 2, "phase": "Planning", "conditions": [NOT_READY]}),
     "Progressing", "0 of 1 replicas ready."),
    ("deploying", gemma(status={"observedGeneration": 2, "phase": "Deploying",
                                "conditions": [NOT_READY, PROGRESSING, STALLED_OFF]}),
     "Progressing", "Waiting for 1 replica."),
    ("phase-only", gemma(status={"observedGeneration": 2, "phase": "Deploying"}), "Progressing", "Deploying."),
    ("nofit", gemma(status={"observedGeneration": 2, "phase": "NoFit", "conditions": [
        {**NOT_READY, "reason": "NoFit"}, stalled("NoFit", "gemma3 27b needs 54 GiB; the largest pool has 24 GiB.")]}),
     "Degraded", "NoFit: gemma3 27b needs 54 GiB; the largest pool has 24 GiB."),
    ("invalid", gemma(status={"observedGeneration": 2, "phase": "Invalid", "conditions": [
        stalled("Invalid", "spec.model.family: unknown family gemma9.")]}),
     "Degraded", "Invalid: spec.model.family: unknown family gemma9."),
    ("stalled-without-message", gemma(status={"observedGeneration": 2, "conditions": [stalled("NoFit", "")]}),
     "Degraded", "NoFit: see kubectl describe gemmadeployment."),
    ("degraded-phase", gemma(status={"observedGeneration": 2, "phase": "Degraded", "conditions": [
        {**NOT_READY, "reason": "ReplicasUnavailable", "message": "0 of 2 replicas ready: CrashLoopBackOff."}]}),
     "Degraded", "Degraded: 0 of 2 replicas ready: CrashLoopBackOff."),
    ("nofit-phase-without-conditions", gemma(status={"observedGeneration": 2, "phase": "NoFit"}),
     "Degraded", "NoFit: see kubectl describe gemmadeployment."),
    ("ready-false-but-stalled-wins", gemma(status={"observedGeneration": 2, "phase": "Ready", "conditions": [
        READY, stalled("Invalid", "bad")]}), "Degraded", "Invalid: bad"),
]


@pytest.mark.parametrize("name, obj, status, message", CASES, ids=[case[0] for case in CASES])
def test_health(name, obj, status, message):
    assert health(obj) == {"status": status, "message": message}


def test_object_without_generation_is_judged_on_conditions():
    obj = gemma(status={"observedGeneration": 1, "phase": "Ready", "conditions": [READY]})
    del obj["metadata"]["generation"]
    assert health(obj)["status"] == "Healthy"


def test_registration_is_documented():
    """The argocd-cm key Argo CD looks up: resource.customizations.health.<group>_<kind>."""
    readme = (ROOT / "examples" / "03-argocd" / "README.md").read_text()
    assert "resource.customizations.health.gemma.dev_GemmaDeployment" in readme
    assert "charts/gemma-operator/files/argocd-health.lua" in readme


def test_a_normal_first_start_reads_progressing_until_its_deadline():
    """The operator's own status for a first start of two replicas, one still downloading its
    weights: Argo CD must not call it Degraded before the Deployment's deadline passes."""
    from gemma_operator.status import Observed, Outcome, compute

    selection = {"modelId": "google/gemma-4-31B-it", "accelerator": "nvidia-h100-80gb", "runtime": "vllm"}
    loading = {"metadata": {"generation": 1}, "spec": {"progressDeadlineSeconds": 2210},
               "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1,
                          "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}}  # fmt: skip
    status = compute(Outcome("Applied", selection=selection, endpoint=ENDPOINT), generation=2, wanted_replicas=2,
                     observed=Observed(deployment=loading), previous=None, now="2026-11-22T00:00:00Z")  # fmt: skip
    hs = health(gemma(status=status))
    assert hs["status"] == "Progressing", hs
    assert "may take up to 37 min" in hs["message"]


@pytest.mark.parametrize(("pod_status", "expected"), [
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                          "message": "0/1 nodes are available", "lastTransitionTime": "2026-11-22T00:00:00Z"}]},
     "Progressing"),  # waiting for the autoscaler, within its budget
    ({"phase": "Running", "containerStatuses": [{"name": "vllm", "ready": False, "restartCount": 1,
                                                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                                 "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]},
     "Degraded"),
])  # fmt: skip
def test_what_blocks_the_model_pods_reads_as_argo_cd_health(pod_status, expected):
    from gemma_operator import pods
    from gemma_operator.status import Observed, Outcome, compute

    selection = {"modelId": "google/gemma-4-E2B-it", "accelerator": "nvidia-l4", "runtime": "vllm"}
    rolling = {"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1}}
    model_pod = pods.essentials({"metadata": {"name": "chat-1"}, "status": pod_status})
    status = compute(Outcome("Applied", selection=selection, endpoint=ENDPOINT), generation=2, wanted_replicas=1,
                     observed=Observed(deployment=rolling, pods=(model_pod,)), previous=None,
                     now="2026-11-22T00:03:00Z")  # fmt: skip
    assert health(gemma(status=status))["status"] == expected
