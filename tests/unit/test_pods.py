"""pods.worst_pod_state: a table of model pod states (as the API server returns them) -> reason and message."""

from __future__ import annotations

import copy
import datetime

import pytest

from gemma_operator import pods

NOW = datetime.datetime(2026, 11, 29, 21, 30, 0, tzinfo=datetime.UTC)
IMAGE = "vllm/vllm-openai:v0.32.0"


def ago(minutes: float) -> str:
    return (NOW - datetime.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


SPEC = {
    "containers": [{
        "name": "vllm", "image": IMAGE,
        "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}],
        "resources": {"requests": {"cpu": "4", "memory": "24Gi", "nvidia.com/gpu": "1"},
                      "limits": {"memory": "24Gi", "nvidia.com/gpu": "1"}},
        "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "failureThreshold": 66},
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }],
    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
}  # fmt: skip


def pod(name="chat-7d9f8-abcde", *, phase="Pending", conditions=(), statuses=(), **status):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "gemma", "uid": "u-" + name,
                     "labels": {"app.kubernetes.io/instance": "chat"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "chat-7d9f8",
                                          "uid": "rs", "controller": True}],
                     "managedFields": [{"manager": "kube-controller-manager"}]},
        "spec": copy.deepcopy(SPEC),
        "status": {"phase": phase, "conditions": list(conditions), "containerStatuses": list(statuses),
                   "qosClass": "Burstable", **status},
    }  # fmt: skip


def unschedulable(minutes, message="0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                  "2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 Preemption is not helpful."):
    return {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastTransitionTime": ago(minutes)}  # fmt: skip


def scheduled(minutes=10):
    return {"type": "PodScheduled", "status": "True", "lastTransitionTime": ago(minutes)}


def not_ready(minutes=10):
    return {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": ago(minutes),
            "message": "containers with unready status: [vllm]"}  # fmt: skip


def container(state, last=None, *, ready=False, started=False, restarts=0):
    return {"name": "vllm", "image": IMAGE, "imageID": "", "ready": ready, "started": started,
            "restartCount": restarts, "state": state, "lastState": last or {}}  # fmt: skip


def waiting(reason, message=None):
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def terminated(reason, code, message=None):
    return {"terminated": {"reason": reason, "exitCode": code, "startedAt": ago(3), "finishedAt": ago(2),
                           "containerID": "containerd://abc", **({"message": message} if message else {})}}  # fmt: skip


SCALE_UP_EVENTS = [
    {"reason": "NotTriggerScaleUp", "lastTimestamp": ago(4),
     "message": "pod didn't trigger scale-up: 1 node(s) didn't match Pod's node affinity/selector"},
    {"reason": "TriggeredScaleUp", "lastTimestamp": ago(1),
     "message": "pod triggered scale-up: [{https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a/"
                "instanceGroups/gke-l4-pool-grp 0->1 (max: 4)}]"},
    {"reason": "FailedScheduling", "lastTimestamp": ago(1), "message": "0/3 nodes are available"},
]  # fmt: skip
LOG_401 = ("huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo for url "
           "https://huggingface.co/google/gemma-3-4b-it/resolve/main/config.json. Access to model "
           "google/gemma-3-4b-it is restricted. You must have access to it and be authenticated to access it.")
LOG_KV = ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
          "when initializing the engine.")

CASES = [
    # id, pod, events on it, (reason, stalled), words in the message
    ("unschedulable-within-budget", pod(conditions=[unschedulable(2)]), None, ("WaitingForCapacity", False),
     ["cannot be scheduled yet", "2 Insufficient nvidia.com/gpu", f"Waiting since {ago(2)} for a node",
      "(scale-up budget 15 min)"]),
    ("unschedulable-autoscaler-scales-up", pod(conditions=[unschedulable(3)]), SCALE_UP_EVENTS,
     ("WaitingForCapacity", False), ["Cluster autoscaler (TriggeredScaleUp)", "gke-l4-pool-grp 0->1 (max: 4)"]),
    ("unschedulable-past-budget", pod(conditions=[unschedulable(16)]), SCALE_UP_EVENTS[:1],
     ("WaitingForCapacity", True), ["No node came within the 15-min scale-up budget", "NotTriggerScaleUp",
                                    "change spec.accelerator"]),
    ("err-image-pull", pod(conditions=[scheduled(), not_ready()], statuses=[container(waiting(
        "ErrImagePull", f'failed to pull and unpack image "docker.io/{IMAGE}": not found'))]),
     None, ("ImagePullFailed", True), [f"cannot pull image {IMAGE}", "ErrImagePull", "not found"]),
    ("image-pull-backoff", pod(conditions=[scheduled(), not_ready()], statuses=[container(waiting(
        "ImagePullBackOff", f'Back-off pulling image "{IMAGE}"'))]),
     None, ("ImagePullFailed", True), [f"cannot pull image {IMAGE}", "ImagePullBackOff", "spec.image"]),
    ("oom-killed", pod(phase="Running", conditions=[scheduled(), not_ready()], statuses=[container(
        waiting("CrashLoopBackOff", "back-off 40s restarting failed container=vllm"),
        terminated("OOMKilled", 137), restarts=3)]),
     None, ("OutOfMemory", True), ["OOMKilled, exit code 137, 3 restart(s)", "memory limit of 24Gi",
                                   "plan estimated 18.3 GiB", "spec.resources.limits.memory"]),
    ("crash-loop-gated-model", pod(phase="Running", conditions=[scheduled(), not_ready()], statuses=[container(
        waiting("CrashLoopBackOff"), terminated("Error", 1, LOG_401), restarts=5)]),
     None, ("CrashLoop", True), ["exit code 1, 5 restart(s)", "Cannot access gated repo",
                                 "set spec.hfTokenSecretRef"]),
    ("crash-loop-kv-cache", pod(phase="Running", conditions=[scheduled(), not_ready()], statuses=[container(
        waiting("CrashLoopBackOff"), terminated("Error", 1, LOG_KV), restarts=2)]),
     None, ("CrashLoop", True), ["No available memory for the cache blocks", "lower spec.maxModelLen"]),
    ("crash-loop-silent", pod(phase="Running", conditions=[scheduled(), not_ready()], statuses=[container(
        waiting("CrashLoopBackOff"), terminated("Error", 139), restarts=1)]),
     None, ("CrashLoop", True), ["exit code 139", "no termination message", "kubectl logs chat-7d9f8-abcde"]),
    ("secret-missing", pod(conditions=[scheduled(), not_ready()], statuses=[container(waiting(
        "CreateContainerConfigError", 'secret "hf" not found'))]),
     None, ("SecretNotFound", True), ['secret "hf" not found', "spec.hfTokenSecretRef"]),
    ("secret-key-missing", pod(conditions=[scheduled(), not_ready()], statuses=[container(waiting(
        "CreateContainerConfigError", "couldn't find key token in Secret gemma/hf"))]),
     None, ("SecretNotFound", True), ["couldn't find key token in Secret gemma/hf"]),
    ("configmap-missing", pod(conditions=[scheduled(), not_ready()], statuses=[container(waiting(
        "CreateContainerConfigError", 'configmap "settings" not found'))]),
     None, ("StartFailed", True), ['configmap "settings" not found', "spec.env"]),
    ("loading-model", pod(phase="Running", conditions=[scheduled(), not_ready()], startTime=ago(5), statuses=[
        container({"running": {"startedAt": ago(3.5)}})]),
     None, ("LoadingModel", False), [f"since {ago(3.5)}, when its server started (startup budget 11 min)"]),
    ("evicted", pod(phase="Failed", reason="Evicted", message="The node was low on resource: ephemeral-storage. "
                    "Threshold quantity: 10Gi, available: 4Gi. Container vllm was using 30Gi, request is 0.",
                    conditions=[scheduled()]),
     None, ("Evicted", True), ["evicted by the kubelet", "low on resource: ephemeral-storage"]),
]  # fmt: skip


def essentials_with(p, events=None):
    kept = pods.essentials(p)
    if events is not None:
        kept["events"] = pods.autoscaler_events(events)
    return kept


@pytest.mark.parametrize(("pod_", "events", "expected", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_pod_state_has_its_reason_and_an_actionable_message(pod_, events, expected, words):
    state = pods.worst_pod_state([essentials_with(pod_, events)], now=NOW, estimated_memory_gib=18.3)
    assert state is not None
    assert (state.reason, state.stalled, state.count) == (*expected, 1)
    for word in words:
        assert word in state.message, state.message
    assert len(state.message) < 1000
    assert ".." not in state.message, state.message


# The scheduler's, the kubelet's and the autoscaler's messages, ending with a full stop or not: each is
# quoted as one sentence, never with a second full stop.
ENDINGS = [
    # id, pod, events on it, what the message says where the quoted text ends
    ("scheduler-ends-with-a-stop", pod(conditions=[unschedulable(2)]), None,
     "3 Preemption is not helpful. Waiting since"),
    ("scheduler-ends-without", pod(conditions=[unschedulable(2, "0/1 nodes are available: 1 Insufficient cpu")]),
     None, "1 Insufficient cpu. Waiting since"),
    ("scheduler-ends-with-a-stop-and-a-space", pod(conditions=[unschedulable(2, "no nodes available to schedule pods. ")]),
     None, "no nodes available to schedule pods. Waiting since"),
    ("autoscaler-ends-with-a-stop", pod(conditions=[unschedulable(3, "0/1 nodes are available")]),
     [{"reason": "NotTriggerScaleUp", "lastTimestamp": ago(1),
       "message": "pod didn't trigger scale-up: 2 max node group size reached."}],
     "0/1 nodes are available. Cluster autoscaler (NotTriggerScaleUp): pod didn't trigger scale-up: 2 max node "
     "group size reached. Waiting since"),
    ("autoscaler-ends-without", pod(conditions=[unschedulable(3, "0/1 nodes are available.")]), SCALE_UP_EVENTS[:1],
     "0/1 nodes are available. Cluster autoscaler (NotTriggerScaleUp): pod didn't trigger scale-up: 1 node(s) "
     "didn't match Pod's node affinity/selector. Waiting since"),
    ("evicted-ends-with-a-stop", pod(phase="Failed", reason="Evicted", message="The node was low on resource: memory. "
                                     "Container vllm was using 30Gi, request is 0.", conditions=[scheduled()]),
     None, "request is 0. The Deployment replaces it"),
    ("evicted-ends-without", pod(phase="Failed", reason="Evicted", message="The node had condition: [DiskPressure]",
                                 conditions=[scheduled()]),
     None, "The node had condition: [DiskPressure]. The Deployment replaces it"),
    ("evicted-no-message", pod(phase="Failed", reason="Evicted", conditions=[scheduled()]),
     None, "evicted by the kubelet: no reason given. The Deployment"),
]  # fmt: skip


@pytest.mark.parametrize(("pod_", "events", "says"), [c[1:] for c in ENDINGS], ids=[c[0] for c in ENDINGS])
def test_a_quoted_message_ends_its_sentence_once(pod_, events, says):
    state = pods.worst_pod_state([essentials_with(pod_, events)], now=NOW)
    assert state is not None
    assert says in state.message, state.message
    assert ".." not in state.message and ". ." not in state.message, state.message


@pytest.mark.parametrize(("pod_", "why"), [
    (pod(phase="Running", conditions=[scheduled(), {"type": "Ready", "status": "True"}], statuses=[
        container({"running": {"startedAt": ago(9)}}, ready=True, started=True)]), "Ready"),
    (pod(), "Pending with no conditions: no scheduler has looked at it yet"),
    (pod(conditions=[scheduled(1)], statuses=[container(waiting("ContainerCreating"))]), "pulling its image"),
    (pod(phase="Running", conditions=[scheduled(), not_ready()], statuses=[
        container({"running": {"startedAt": ago(9)}}, started=True)]), "started; readiness is the Deployment's"),
    ({**pod(conditions=[unschedulable(30)]), "metadata": {**pod()["metadata"], "deletionTimestamp": ago(0)}},
     "being deleted"),
])  # fmt: skip
def test_what_blocks_nothing(pod_, why):
    assert pods.worst_pod_state([pods.essentials(pod_)], now=NOW) is None, why


def test_several_pods_report_the_worst_and_how_many_show_it():
    ready = pod("chat-a", phase="Running", conditions=[scheduled(), {"type": "Ready", "status": "True"}],
                statuses=[container({"running": {"startedAt": ago(9)}}, ready=True, started=True)])  # fmt: skip
    waiting_1, waiting_2 = pod("chat-b", conditions=[unschedulable(1)]), pod("chat-c", conditions=[unschedulable(2)])
    state = pods.worst_pod_state([pods.essentials(p) for p in (waiting_2, ready, waiting_1)], now=NOW)
    assert (state.reason, state.count) == ("WaitingForCapacity", 2)
    assert state.message.startswith("2 of 3 pods: Pod chat-b cannot be scheduled yet")
    oom = pod("chat-d", phase="Running", conditions=[scheduled()], statuses=[container(
        waiting("CrashLoopBackOff"), terminated("OOMKilled", 137), restarts=1)])  # fmt: skip
    state = pods.worst_pod_state([pods.essentials(p) for p in (waiting_1, oom, waiting_2)], now=NOW)
    assert (state.reason, state.count, state.stalled) == ("OutOfMemory", 1, True)
    assert state.message.startswith("1 of 3 pods: Container vllm of pod chat-d")


def test_the_detectors_run_worst_first():
    assert [reason for reason, _ in pods.DETECTORS] == [
        "OutOfMemory", "ImagePullFailed", "SecretNotFound", "StartFailed", "CrashLoop", "Evicted",
        "WaitingForCapacity", "LoadingModel"]  # fmt: skip


def test_a_long_termination_message_is_capped():
    noisy = pod(phase="Running", conditions=[scheduled()], statuses=[container(
        waiting("CrashLoopBackOff"), terminated("Error", 1, "Traceback ...\n" + "x" * 5000), restarts=1)])  # fmt: skip
    state = pods.worst_pod_state([pods.essentials(noisy)], now=NOW)
    assert state.reason == "CrashLoop" and len(state.message) < pods.MESSAGE_CAP + 400


def test_time_bound_states_say_when_to_look_again():
    within = pods.worst_pod_state([pods.essentials(pod(conditions=[unschedulable(14.5)]))], now=NOW)
    assert not within.stalled and within.recheck_s == pytest.approx(31)  # just after the budget runs out
    past = pods.worst_pod_state([pods.essentials(pod(conditions=[unschedulable(20)]))], now=NOW)
    assert past.stalled and past.recheck_s is None
    shorter = pods.worst_pod_state([pods.essentials(pod(conditions=[unschedulable(6)]))], now=NOW,
                                   scale_up_budget_s=300)  # fmt: skip
    assert shorter.stalled and "5-min scale-up budget" in shorter.message


def test_a_pod_waiting_for_a_node_says_the_same_until_an_autoscaler_event_or_the_budget_changes_it():
    """The message names when the wait started, not the minutes since: a minute later (the next
    recheck) it is the same, so status is not written; a new autoscaler Event or the budget's end
    changes it. The recheck stays every minute, for those."""
    waiting = pods.essentials(pod(conditions=[unschedulable(7)]))
    early, later = (pods.worst_pod_state([waiting], now=NOW - datetime.timedelta(minutes=m)) for m in (5, 0))
    assert early.message == later.message and f"Waiting since {ago(7)} for a node" in later.message
    assert early.recheck_s == later.recheck_s == pods.RECHECK_S
    told = pods.worst_pod_state([{**waiting, "events": pods.autoscaler_events(SCALE_UP_EVENTS)}], now=NOW)
    assert told.message != later.message and "Cluster autoscaler (TriggeredScaleUp)" in told.message
    past = pods.worst_pod_state([waiting], now=NOW + datetime.timedelta(minutes=9))
    assert past.stalled and past.message != later.message


def loading(minutes_ago):
    return pods.essentials(pod(phase="Running", conditions=[scheduled(), not_ready()], statuses=[
        container({"running": {"startedAt": ago(minutes_ago)}})]))  # fmt: skip


def test_a_loading_model_is_looked_at_again_only_when_its_startup_budget_runs_out():
    """The message names the start time, not the minutes since: it stays the same (no status write)
    until the 11-min budget (startupProbe 10 s x 66) runs out, once."""
    early, later = (pods.worst_pod_state([loading(7)], now=NOW - datetime.timedelta(minutes=m)) for m in (6, 0))
    assert early.message == later.message and early.since == later.since == ago(7)
    assert early.recheck_s == pytest.approx(10 * 60 + 1) and later.recheck_s == pytest.approx(4 * 60 + 1)
    past = pods.worst_pod_state([loading(12)], now=NOW)
    assert (past.reason, past.stalled, past.recheck_s, past.since) == ("LoadingModel", False, None, ago(12))
    assert f"since {ago(12)}, longer than its 11-min startup budget" in past.message
    # No startup probe: no budget to run out, nothing to look at again.
    bare = pods.essentials(pod(phase="Running", statuses=[container({"running": {"startedAt": ago(3)}})]))
    bare["containers"][0]["startupBudgetS"] = None
    state = pods.worst_pod_state([bare], now=NOW)
    assert state.recheck_s is None and "startup budget" not in state.message


def test_the_index_keeps_only_what_the_detectors_read():
    kept = pods.essentials(CASES[5][1])
    assert set(kept) == {"name", "deleting", "owner", "phase", "reason", "message", "scheduled", "ready",
                         "startTime", "containers"}  # fmt: skip
    (c,) = kept["containers"]
    assert "env" not in c and c["memoryLimit"] == "24Gi" and c["startupBudgetS"] == 660
    assert kept["owner"] == "ReplicaSet/chat-7d9f8"
    assert pods.autoscaler_events(SCALE_UP_EVENTS)[0]["reason"] == "TriggeredScaleUp"  # newest first, others dropped
    assert [e["reason"] for e in pods.autoscaler_events(SCALE_UP_EVENTS)] == ["TriggeredScaleUp", "NotTriggerScaleUp"]


def test_changes_the_detectors_do_not_read_leave_the_essentials_as_they_were():
    """The pod watch wakes the owner only when the essentials change (handlers.pod_event compares them)."""
    before = pod(phase="Running", conditions=[scheduled(), not_ready()], statuses=[container(
        {"running": {"startedAt": ago(3)}})])  # fmt: skip
    after = copy.deepcopy(before)
    after["metadata"].update(resourceVersion="999", annotations={"example.com/touched": "yes"})
    after["status"].update(podIP="10.8.0.12", hostIP="10.128.0.7")
    after["status"]["containerStatuses"][0].update(imageID="docker.io/vllm/vllm-openai@sha256:abc",
                                                   containerID="containerd://def")  # fmt: skip
    assert pods.essentials(after) == pods.essentials(before)
    after["status"]["containerStatuses"][0].update(started=True)
    assert pods.essentials(after) != pods.essentials(before)
