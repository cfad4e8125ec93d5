"""status.compute: phases and kstatus conditions from what the children report."""

from __future__ import annotations

import pytest

from gemma_operator.status import Outcome, compute, patch_for

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
    st = compute(APPLIED, generation=3, wanted_replicas=wanted, deployment=child, previous=None, now=T0)
    assert st["phase"] == phase
    got = conditions(st)
    assert (got["Ready"][0], got["Progressing"][0], got["Stalled"][0]) == (ready, progressing, stalled)
    assert st["observedGeneration"] == 3
    assert st["selection"] == SELECTION and st["endpoint"].endswith(":8000/v1")
    assert all(c["reason"][0].isupper() and " " not in c["reason"] for c in st["conditions"])


@pytest.mark.parametrize("kind", ["NoFit", "Invalid"])
def test_terminal_states_stall_and_keep_what_still_serves(kind):
    st = compute(Outcome(kind, "needs 54 GiB, has 20"), generation=2, wanted_replicas=1, deployment=None,
                 previous={"selection": SELECTION}, now=T0)  # fmt: skip
    assert st["phase"] == kind
    assert conditions(st)["Stalled"] == ("True", "InvalidSpec" if kind == "Invalid" else "NoFit")
    assert conditions(st)["Ready"][0] == "False"
    assert "selection" not in st  # left as it was: the model already serving keeps serving
    assert next(c for c in st["conditions"] if c["type"] == "Stalled")["message"] == "needs 54 GiB, has 20"


def test_transition_time_moves_only_when_the_status_flips():
    first = compute(APPLIED, generation=1, wanted_replicas=1, deployment=deployment(ready=0), previous=None, now=T0)
    same = compute(APPLIED, generation=1, wanted_replicas=1, deployment=deployment(ready=0), previous=first, now=T1)
    assert same == first
    assert patch_for(first, same) is None
    ready = compute(APPLIED, generation=1, wanted_replicas=1, deployment=deployment(ready=1), previous=first, now=T1)
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
                 deployment=None, previous=None, now=T0)  # fmt: skip
    assert st["phase"] == "Degraded" and conditions(st)["Ready"] == ("False", "ApplyFailed")
    assert "selection" not in st and "endpoint" not in st
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["message"] == "HTTP 403: exceeded quota"
    known = compute(Outcome("ApplyFailed", "no Secret", SELECTION, "http://x/v1"), generation=1, wanted_replicas=1,
                    deployment=None, previous=None, now=T0)  # fmt: skip
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
    st = compute(APPLIED, generation=1, wanted_replicas=1, deployment=loading, previous=None, now=T0)
    assert st["phase"] == "Deploying"
    assert conditions(st) == {"Ready": ("False", "RollingOut"), "Progressing": ("True", "RollingOut"),
                              "Stalled": ("False", "RollingOut")}  # fmt: skip
    message = next(c for c in st["conditions"] if c["type"] == "Progressing")["message"]
    assert "0/1 replicas ready" in message and "37 min" in message
    timed_out = deployment(conditions=[{"type": "Progressing", "status": "False",
                                        "reason": "ProgressDeadlineExceeded"}])
    timed_out["spec"] = {"progressDeadlineSeconds": 2210}
    st = compute(APPLIED, generation=1, wanted_replicas=1, deployment=timed_out, previous=None, now=T0)
    assert st["phase"] == "Degraded" and conditions(st)["Stalled"] == ("True", "ProgressDeadlineExceeded")
    assert "37 min" in next(c for c in st["conditions"] if c["type"] == "Stalled")["message"]
