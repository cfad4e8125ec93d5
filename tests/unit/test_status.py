"""status.compute: phases and kstatus conditions from what the children report."""

from __future__ import annotations

import pytest

from gemma_operator import pods
from gemma_operator.status import Observed, Outcome, compute, events_for, patch_for

SELECTION = {"modelId": "google/gemma-4-E2B-it", "accelerator": "nvidia-l4", "runtime": "vllm", "pool": "nvidia-l4-x1"}
APPLIED = Outcome("Applied", selection=SELECTION, endpoint="http://chat.default.svc.cluster.local:8000/v1")
T0, T1 = "2026-11-22T00:00:00Z", "2026-11-22T00:05:00Z"


def deployment(ready=0, replicas=1, updated=1, generation=1, observed=1, conditions=()):
    return {
        "metadata": {"generation": generation},
        "status": {"readyReplicas": ready, "replicas": replicas, "updatedReplicas": updated,
                   "observedGeneration": observed, "conditions": list(conditions)},
    }  # fmt: skip


COMPLETE = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
ROLLING = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}


def conditions(status):
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize(
    ("child", "wanted", "phase", "ready", "progressing", "stalled"),
    [
        (None, 1, "Deploying", "False", "True", "False"),
        (deployment(ready=0), 1, "Deploying", "False", "True", "False"),
        (deployment(ready=1), 1, "Ready", "True", "False", "False"),
        (deployment(ready=1, replicas=2, updated=2, conditions=[COMPLETE]), 2, "Degraded", "False", "True", "False"),
        # A first start of two replicas: one loads faster; the rollout is still within its deadline.
        (deployment(ready=1, replicas=2, updated=2, conditions=[ROLLING]), 2, "Deploying", "False", "True", "False"),
        (deployment(ready=2, replicas=2, updated=2), 2, "Ready", "True", "False", "False"),
        (deployment(ready=1, generation=2, observed=1), 1, "Deploying", "False", "True", "False"),
        (deployment(ready=0, replicas=0, updated=0), 0, "Ready", "True", "False", "False"),
        (deployment(conditions=[{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]), 1,
         "Degraded", "False", "False", "True"),
    ],
)  # fmt: skip
def test_ready_follows_the_deployment(child, wanted, phase, ready, progressing, stalled):
    st = compute(APPLIED, generation=3, wanted_replicas=wanted, observed=Observed(deployment=child), previous=None,
                 now=T0)
    assert st["phase"] == phase
    got = conditions(st)
    assert (got["Ready"][0], got["Progressing"][0], got["Stalled"][0]) == (ready, progressing, stalled)
    assert st["observedGeneration"] == 3
    assert st["selection"] == SELECTION and st["endpoint"].endswith(":8000/v1")
    assert all(c["reason"][0].isupper() and " " not in c["reason"] for c in st["conditions"])


@pytest.mark.parametrize("kind", ["NoFit", "Invalid"])
def test_terminal_states_stall_and_keep_what_still_serves(kind):
    st = compute(Outcome(kind, "needs 54 GiB, has 20"), generation=2, wanted_replicas=1,
                 previous={"selection": SELECTION}, now=T0)  # fmt: skip
    assert st["phase"] == kind
    assert conditions(st)["Stalled"] == ("True", "InvalidSpec" if kind == "Invalid" else "NoFit")
    assert conditions(st)["Ready"][0] == "False"
    assert "selection" not in st  # left as it was: the model already serving keeps serving
    assert next(c for c in st["conditions"] if c["type"] == "Stalled")["message"] == "needs 54 GiB, has 20"


def test_transition_time_moves_only_when_the_status_flips():
    first = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(deployment=deployment(ready=0)), previous=None, now=T0)
    same = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(deployment=deployment(ready=0)), previous=first, now=T1)
    assert same == first
    assert patch_for(first, same) is None
    ready = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(deployment=deployment(ready=1)), previous=first, now=T1)
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times == {"Ready": T1, "Progressing": T1, "Stalled": T0}


def test_patch_for_sends_only_differences():
    assert patch_for({"phase": "Ready", "replicas": 1}, {"phase": "Ready", "replicas": 2}) == {"replicas": 2}
    assert patch_for(None, {"phase": "Deploying"}) == {"phase": "Deploying"}
    assert patch_for({}, {"endpoint": None}) is None
    assert patch_for({"endpoint": "x"}, {"endpoint": None}) == {"endpoint": None}


def test_a_refused_first_apply_claims_no_selection():
    """The CRD requires the selection's fields: an empty selection would get the status patch a 422."""
    st = compute(Outcome("ApplyFailed", "HTTP 403: exceeded quota"), generation=1, wanted_replicas=1,
                 previous=None, now=T0)  # fmt: skip
    assert st["phase"] == "Degraded" and conditions(st)["Ready"] == ("False", "ApplyFailed")
    assert "selection" not in st and "endpoint" not in st
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["message"] == "HTTP 403: exceeded quota"
    known = compute(Outcome("ApplyFailed", "no Secret", SELECTION, "http://x/v1"), generation=1, wanted_replicas=1,
                    previous=None, now=T0)  # fmt: skip
    assert known["selection"] == SELECTION and known["endpoint"] == "http://x/v1"


def test_patch_for_replaces_nested_maps_exactly():
    """A merge patch merges maps key by key: keys the new selection lacks must be sent as null."""
    l4 = {**SELECTION, "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}
    cpu = {"modelId": "google/gemma-3-1b-it-qat-q4_0-gguf", "modelFile": "gemma-3-1b-it-q4_0.gguf",
           "accelerator": "cpu", "runtime": "llamacpp", "nodeSelector": {"kubernetes.io/arch": "amd64"}}  # fmt: skip
    patch = patch_for({"phase": "Ready", "selection": l4}, {"phase": "Ready", "selection": cpu})
    assert patch == {"selection": {
        "modelId": cpu["modelId"], "modelFile": cpu["modelFile"], "accelerator": "cpu", "runtime": "llamacpp",
        "pool": None, "nodeSelector": {"kubernetes.io/arch": "amd64", "cloud.google.com/gke-accelerator": None}}}
    back = patch_for({"selection": cpu}, {"selection": l4})
    assert back["selection"]["modelFile"] is None
    assert patch_for({"selection": l4}, {"selection": dict(l4)}) is None
    # Top level: what is not mentioned stays (NoFit keeps the selection that still serves).
    assert patch_for({"selection": l4, "phase": "Ready"}, {"phase": "NoFit"}) == {"phase": "NoFit"}


def test_a_model_loading_within_its_deadline_is_progressing_and_says_how_long_it_may_take():
    loading = deployment(ready=0, conditions=[ROLLING])
    loading["spec"] = {"progressDeadlineSeconds": 2210}
    st = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(deployment=loading), previous=None, now=T0)
    assert st["phase"] == "Deploying"
    assert conditions(st) == {"Ready": ("False", "RollingOut"), "Progressing": ("True", "RollingOut"),
                              "Stalled": ("False", "RollingOut")}  # fmt: skip
    message = next(c for c in st["conditions"] if c["type"] == "Progressing")["message"]
    assert "0/1 replicas ready" in message and "37 min" in message
    timed_out = deployment(conditions=[{"type": "Progressing", "status": "False",
                                        "reason": "ProgressDeadlineExceeded"}])
    timed_out["spec"] = {"progressDeadlineSeconds": 2210}
    st = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(deployment=timed_out), previous=None, now=T0)
    assert st["phase"] == "Degraded" and conditions(st)["Stalled"] == ("True", "ProgressDeadlineExceeded")
    assert "37 min" in next(c for c in st["conditions"] if c["type"] == "Stalled")["message"]


def test_extra_conditions_and_the_scale_fields_come_with_an_applied_plan_only():
    extra = [("ScalingActive", "False", "FailedGetPodsMetric", "no custom metrics API"),
             ("UpdateAvailable", "True", "OperatorRenderingChanged", "spec.containers[vllm].args: ...")]  # fmt: skip
    scale = {"desiredReplicas": 3, "selector": "app.kubernetes.io/name=gemma-server,app.kubernetes.io/instance=chat"}
    applied = compute(APPLIED, generation=1, wanted_replicas=3, observed=Observed(deployment=deployment(ready=3, replicas=3, updated=3)),
                      previous=None, now=T0, extra=extra, scale=scale)  # fmt: skip
    assert conditions(applied)["ScalingActive"] == ("False", "FailedGetPodsMetric")
    assert conditions(applied)["UpdateAvailable"] == ("True", "OperatorRenderingChanged")
    assert (applied["desiredReplicas"], applied["selector"]) == (3, scale["selector"])
    # The update applied: the condition goes (the patch replaces the list).
    later = compute(APPLIED, generation=1, wanted_replicas=3, observed=Observed(deployment=deployment(ready=3, replicas=3, updated=3)),
                    previous=applied, now=T1, extra=extra[:1], scale=scale)  # fmt: skip
    assert "UpdateAvailable" not in conditions(later)
    assert patch_for(applied, later) == {"conditions": later["conditions"]}
    nofit = compute(Outcome("NoFit", "nothing fits"), generation=2, wanted_replicas=3,
                    previous=applied, now=T1, extra=extra, scale=scale)  # fmt: skip
    assert set(conditions(nofit)) == {"Ready", "Progressing", "Stalled"}
# --- what the model pods show ------------------------------------------------------------
NOW = "2026-11-22T00:20:00Z"


def unschedulable_pod(since="2026-11-22T00:18:00Z", name="chat-1"):
    return pods.essentials({"metadata": {"name": name}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": since,
         "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}})  # fmt: skip


def oom_pod(name="chat-1"):
    return pods.essentials({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "vllm", "resources": {"limits": {"memory": "20Gi"}}}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "vllm", "ready": False, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}})  # fmt: skip


def by_type(status):
    return {c["type"]: c for c in status["conditions"]}


def test_a_pod_that_cannot_come_up_stalls_with_its_reason():
    selection = {**SELECTION, "estimatedMemoryGiB": 17.5}
    st = compute(Outcome("Applied", selection=selection, endpoint="http://x/v1"), generation=1, wanted_replicas=1,
                 observed=Observed(deployment=deployment(ready=0), pods=(oom_pod(),)), previous=None, now=NOW)  # fmt: skip
    assert st["phase"] == "Degraded"
    assert conditions(st) == {"Ready": ("False", "OutOfMemory"), "Progressing": ("False", "OutOfMemory"),
                              "Stalled": ("True", "OutOfMemory")}  # fmt: skip
    assert "memory limit of 20Gi" in by_type(st)["Stalled"]["message"]
    assert "estimated 17.5 GiB" in by_type(st)["Stalled"]["message"]


def test_waiting_for_capacity_progresses_within_the_budget_then_stalls():
    within = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(
        deployment=deployment(ready=0), pods=(unschedulable_pod(),), scale_up_budget_s=600), previous=None, now=NOW)
    assert within["phase"] == "Deploying"
    assert conditions(within) == {"Ready": ("False", "WaitingForCapacity"), "Progressing": ("True", "WaitingForCapacity"),
                                  "Stalled": ("False", "WaitingForCapacity")}  # fmt: skip
    assert "2 Insufficient nvidia.com/gpu" in by_type(within)["Progressing"]["message"]
    assert "Waiting since 2026-11-22T00:18:00Z for a node to be added (scale-up budget 10 min)" in by_type(within)[
        "Progressing"]["message"]  # fmt: skip
    late = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(
        deployment=deployment(ready=0), pods=(unschedulable_pod("2026-11-22T00:05:00Z"),), scale_up_budget_s=600),
        previous=within, now=NOW)  # fmt: skip
    assert late["phase"] == "Degraded" and conditions(late)["Stalled"] == ("True", "WaitingForCapacity")
    assert events_for(None, within) == [("Normal", "WaitingForCapacity", by_type(within)["Progressing"]["message"])]
    assert events_for(within, within) == []  # no transition, no Event
    assert events_for(within, late) == [("Warning", "WaitingForCapacity", by_type(late)["Stalled"]["message"])]


def loading_pod(started="2026-11-22T00:17:00Z", name="chat-1"):
    return pods.essentials({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "vllm", "startupProbe": {"periodSeconds": 10, "failureThreshold": 90}}]},
        "status": {"phase": "Running", "containerStatuses": [{
            "name": "vllm", "ready": False, "started": False, "state": {"running": {"startedAt": started}}}]}})  # fmt: skip


def test_a_loading_model_records_its_start_once_and_drops_it_when_ready():
    later = "2026-11-22T00:29:00Z"
    loading = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(
        deployment=deployment(ready=0), pods=(loading_pod(),)), previous=None, now=NOW)  # fmt: skip
    assert loading["loadingSince"] == "2026-11-22T00:17:00Z"
    assert conditions(loading)["Progressing"] == ("True", "LoadingModel")
    again = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(
        deployment=deployment(ready=0), pods=(loading_pod(),)), previous=loading, now=later)  # fmt: skip
    assert patch_for(loading, again) is None, "minutes passing while the model loads changed the status"
    ready = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(deployment=deployment(ready=1)),
                    previous=again, now=later)  # fmt: skip
    assert ready["loadingSince"] is None and patch_for(again, ready)["loadingSince"] is None  # deleted
    never = compute(APPLIED, generation=1, wanted_replicas=1, observed=Observed(deployment=deployment(ready=0)),
                    previous=None, now=NOW)  # fmt: skip
    assert "loadingSince" not in never  # nothing to delete: the key is not sent


def test_pods_are_not_read_once_the_deployment_is_ready():
    """An evicted pod lingers (Failed) after its replacement is Ready: the model serves."""
    evicted = pods.essentials({"metadata": {"name": "chat-old"}, "status": {"phase": "Failed", "reason": "Evicted",
                                                                           "message": "The node was low on memory."}})
    st = compute(APPLIED, generation=1, wanted_replicas=1,
                 observed=Observed(deployment=deployment(ready=1), pods=(evicted,)), previous=None, now=NOW)
    assert st["phase"] == "Ready" and conditions(st)["Ready"] == ("True", "ReplicasReady")
    assert events_for(None, st) == []
