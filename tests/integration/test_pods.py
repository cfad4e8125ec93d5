"""What blocks the model pods reaches the GemmaDeployment's conditions and Events within seconds.

Nothing here schedules or runs pods: there is no scheduler or kubelet. On the emulator (and on a real
server without kube-controller-manager) the test creates the model pod from the Deployment's template,
as the ReplicaSet controller would; with kube-controller-manager it takes the pod that controller
created. Then it writes the pod's status as a scheduler or kubelet would, through pods/status.
"""

from __future__ import annotations

import datetime
import json
import time

import kubernetes
import pytest

from gemma_operator import handlers, pods
from tests.integration.test_operator import Cluster, condition, operator  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration
IMAGE_PULL_MESSAGE = 'Back-off pulling image "{image}": ErrImagePull: failed to resolve reference: not found'
LOG_401 = ("huggingface_hub.errors.GatedRepoError: 401 Client Error. Cannot access gated repo for url "
           "https://huggingface.co/google/gemma-3-270m-it/resolve/main/config.json.")  # fmt: skip


def stamp(minutes_ago: float = 0.0) -> str:
    moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=minutes_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def cluster(kube_api, namespace):
    return Cluster(kube_api, namespace)


def create_unless_present(cluster: Cluster, collection: str, obj: dict) -> None:
    try:
        cluster.api.request("POST", collection, obj)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise


def model_pod(cluster: Cluster, name: str) -> dict:
    """A pod of the GemmaDeployment's Deployment, as the ReplicaSet controller makes it."""
    deployment = cluster.wait(lambda: cluster.deployment(name), "the Deployment")
    pods_path = f"/api/v1/namespaces/{cluster.ns}/pods"
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    if cluster.api.controller_manager:
        return cluster.wait(lambda: (cluster.api.request("GET", pods_path, query={"labelSelector": selector})["items"]
                                     or [None])[0], "the ReplicaSet's pod", timeout=30)  # fmt: skip
    # The ServiceAccount admission plugin needs the namespace's default account (the controller's job).
    create_unless_present(cluster, f"/api/v1/namespaces/{cluster.ns}/serviceaccounts",
                          {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}})
    template = deployment["spec"]["template"]
    body = {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
            "metadata": {"generateName": f"{name}-", "labels": template["metadata"]["labels"]}}  # fmt: skip
    return cluster.api.request("POST", pods_path, body)


def write_pod_status(cluster: Cluster, pod: dict, status: dict) -> None:
    """What a scheduler or kubelet writes: conditions and container states replace the old ones."""
    path = f"/api/v1/namespaces/{cluster.ns}/pods/{pod['metadata']['name']}/status"
    cluster.api.request("PATCH", path, {"status": status}, content_type="application/merge-patch+json")


def scale_up_event(cluster: Cluster, pod: dict, message: str) -> None:
    """The cluster autoscaler's TriggeredScaleUp Event on `pod`, as it posts one."""
    name = pod["metadata"]["name"]
    cluster.api.request("POST", f"/api/v1/namespaces/{cluster.ns}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"{name}.scaleup"},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": cluster.ns,
                           "uid": pod["metadata"]["uid"]},
        "reason": "TriggeredScaleUp", "type": "Normal", "source": {"component": "cluster-autoscaler"},
        "message": message, "firstTimestamp": stamp(), "lastTimestamp": stamp(), "count": 1})  # fmt: skip


def container_status(pod: dict, state: dict, last: dict | None = None, *, restarts: int = 0) -> dict:
    (container,) = pod["spec"]["containers"]
    return {"name": container["name"], "image": container["image"], "imageID": "", "ready": False,
            "started": False, "restartCount": restarts, "state": state, "lastState": last or {}}  # fmt: skip


def terminated(reason: str, code: int, message: str | None = None) -> dict:
    return {"terminated": {"reason": reason, "exitCode": code, "startedAt": stamp(2), "finishedAt": stamp(1),
                           "containerID": "containerd://0123456789abcdef", **({"message": message} if message else {})}}


def scheduled() -> list[dict]:
    return [{"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(5)},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": stamp(5)}]


def reason_of(cluster: Cluster, name: str, type_: str) -> tuple[str, str]:
    found = condition(cluster.gd(name), type_)
    return found.get("reason"), found.get("status")


def waits_for(cluster: Cluster, name: str, type_: str, reason: str, status: str = "True", timeout: float = 10.0):
    cluster.wait(lambda: reason_of(cluster, name, type_) == (reason, status), f"{type_}={status} {reason}", timeout)
    return condition(cluster.gd(name), type_)


def events_of(cluster: Cluster, name: str) -> set[tuple[str, str]]:
    return {(e["type"], e["reason"]) for e in cluster.events(name)}


def test_an_unschedulable_pod_waits_for_capacity_then_stalls_past_the_budget(operator, cluster, create_nodes,  # noqa: F811
                                                                             monkeypatch, capsys):  # fmt: skip
    monkeypatch.setenv(pods.SCALE_UP_BUDGET_ENV, "600")
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    pod = model_pod(cluster, "chat")
    # The cluster autoscaler says what it does about the pod, in an Event on it.
    scale_up_event(cluster, pod, "pod triggered scale-up: [{https://www.googleapis.com/compute/v1/projects/p/zones/"
                                 "us-central1-a/instanceGroups/gke-l4-pool-grp 0->1 (max: 4)}]")
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": stamp(2),
                     "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are "
                                "available: 2 No preemption victims found for incoming pod."}  # fmt: skip
    start = time.monotonic()
    write_pod_status(cluster, pod, {"phase": "Pending", "conditions": [unschedulable]})
    progressing = waits_for(cluster, "chat", "Progressing", "WaitingForCapacity")
    latency = time.monotonic() - start
    assert "2 Insufficient nvidia.com/gpu" in progressing["message"]
    assert "Cluster autoscaler (TriggeredScaleUp)" in progressing["message"] and "0->1 (max: 4)" in progressing["message"]
    assert f"Waiting since {unschedulable['lastTransitionTime']} for a node" in progressing["message"]
    assert "(scale-up budget 10 min)" in progressing["message"]
    gd = cluster.gd("chat")
    assert gd["status"]["phase"] == "Deploying" and condition(gd, "Stalled")["status"] == "False"
    cluster.wait(lambda: ("Normal", "WaitingForCapacity") in events_of(cluster, "chat"), "a WaitingForCapacity Event")
    # Past the budget: the same pod, waiting since 12 minutes ago.
    write_pod_status(cluster, pod, {"conditions": [{**unschedulable, "lastTransitionTime": stamp(12)}]})
    stalled = waits_for(cluster, "chat", "Stalled", "WaitingForCapacity")
    assert "No node came within the 10-min scale-up budget" in stalled["message"]
    assert cluster.gd("chat")["status"]["phase"] == "Degraded"
    cluster.wait(lambda: ("Warning", "WaitingForCapacity") in events_of(cluster, "chat"), "the Warning Event")
    with capsys.disabled():
        print(f"\n[{cluster.api.kind}] pod status written -> WaitingForCapacity in status: {latency * 1000:.0f} ms")


def test_each_failing_pod_state_stalls_with_its_reason_and_an_event(operator, cluster, create_nodes,  # noqa: F811
                                                                    capsys):  # fmt: skip
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"model": {"family": "gemma3"}})
    pod = model_pod(cluster, "chat")
    image = pod["spec"]["containers"][0]["image"]
    assert pod["spec"]["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    states = [
        ("ImagePullFailed", {"phase": "Pending", "conditions": scheduled(), "containerStatuses": [container_status(
            pod, {"waiting": {"reason": "ImagePullBackOff", "message": IMAGE_PULL_MESSAGE.format(image=image)}})]},
         [f"cannot pull image {image}", "ImagePullBackOff"]),
        ("OutOfMemory", {"phase": "Running", "startTime": stamp(4), "containerStatuses": [container_status(
            pod, {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}},
            terminated("OOMKilled", 137), restarts=2)]},
         ["OOMKilled, exit code 137, 2 restart(s)", "memory limit of", "the plan estimated"]),
        ("CrashLoop", {"phase": "Running", "containerStatuses": [container_status(
            pod, {"waiting": {"reason": "CrashLoopBackOff"}}, terminated("Error", 1, LOG_401), restarts=3)]},
         ["exit code 1, 3 restart(s)", "Cannot access gated repo", "spec.hfTokenSecretRef"]),
    ]  # fmt: skip
    latencies = []
    for reason, pod_status, words in states:
        start = time.monotonic()
        write_pod_status(cluster, pod, pod_status)
        stalled = waits_for(cluster, "chat", "Stalled", reason)
        latencies.append(time.monotonic() - start)
        for word in words:
            assert word in stalled["message"], stalled["message"]
        gd = cluster.gd("chat")
        assert gd["status"]["phase"] == "Degraded"
        assert (condition(gd, "Ready")["reason"], condition(gd, "Progressing")["status"]) == (reason, "False")
        cluster.wait(lambda r=reason: ("Warning", r) in events_of(cluster, "chat"), f"a {reason} Event")
    # The model loads: running, not yet started (its startup probe has not passed).
    write_pod_status(cluster, pod, {"phase": "Running", "containerStatuses": [container_status(
        pod, {"running": {"startedAt": stamp(3)}}, terminated("Error", 1, LOG_401), restarts=3)]})  # fmt: skip
    progressing = waits_for(cluster, "chat", "Progressing", "LoadingModel")
    assert "when its server started (startup budget" in progressing["message"], progressing["message"]
    assert cluster.gd("chat")["status"]["loadingSince"] in progressing["message"]
    assert condition(cluster.gd("chat"), "Stalled")["status"] == "False"
    assert cluster.gd("chat")["status"]["phase"] == "Deploying"
    # Evicted by the kubelet: a terminal phase, so last.
    write_pod_status(cluster, pod, {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: "
                                    "ephemeral-storage. Threshold quantity: 10Gi, available: 2Gi."})  # fmt: skip
    stalled = waits_for(cluster, "chat", "Stalled", "Evicted")
    assert "low on resource: ephemeral-storage" in stalled["message"]
    with capsys.disabled():
        print(f"\n[{cluster.api.kind}] pod status written -> reason in status: "
              f"{', '.join(f'{s[0]} {t * 1000:.0f} ms' for s, t in zip(states, latencies))}")


def test_a_missing_token_secret_shows_on_the_pod_and_the_operator_reads_no_secret(operator, cluster,  # noqa: F811
                                                                                  create_nodes, kube_api, caplog):  # fmt: skip
    token = "hf_SENTINEL_7f3c9a1b2d"
    create_nodes.from_fixture("gke-l4")
    before = kube_api.requests.copy() if kube_api.requests is not None else None
    operator()
    cluster.create("gated", {"hfTokenSecretRef": {"name": "hf", "key": "token"}})
    pod = model_pod(cluster, "gated")  # applied without looking for the Secret
    env = pod["spec"]["containers"][0]["env"]
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in env
    write_pod_status(cluster, pod, {"phase": "Pending", "conditions": scheduled(), "containerStatuses": [
        container_status(pod, {"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "hf" not found'}})]})
    stalled = waits_for(cluster, "gated", "Stalled", "SecretNotFound")
    assert 'secret "hf" not found' in stalled["message"] and "spec.hfTokenSecretRef" in stalled["message"]
    cluster.wait(lambda: ("Warning", "SecretNotFound") in events_of(cluster, "gated"), "a SecretNotFound Event")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf", "namespace": cluster.ns},
              "stringData": {"token": token}, "type": "Opaque"}  # fmt: skip
    cluster.api.request("POST", f"/api/v1/namespaces/{cluster.ns}/secrets", secret)
    write_pod_status(cluster, pod, {"phase": "Running", "containerStatuses": [
        container_status(pod, {"running": {"startedAt": stamp()}})]})
    waits_for(cluster, "gated", "Progressing", "LoadingModel")
    if before is not None:  # the emulator counts requests: no read of a Secret (the test created one)
        reads = [k for k, v in kube_api.requests.items()
                 if k[1] == "secrets" and k[0] in ("get", "list", "watch") and v - before.get(k, 0)]  # fmt: skip
        assert not reads
    seen = json.dumps([cluster.deployment("gated"), cluster.gd("gated"), cluster.events("gated")]) + caplog.text
    assert token not in seen


def test_the_early_secret_check_runs_only_behind_its_switch(operator, cluster, create_nodes, monkeypatch):  # noqa: F811
    """secretCheck.enabled in the chart: nothing is applied until the Secret exists (needs `get` on Secrets)."""
    monkeypatch.setenv(handlers.SECRET_CHECK_ENV, "true")
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("gated", {"hfTokenSecretRef": {"name": "hf", "key": "token"}})
    ready = waits_for(cluster, "gated", "Ready", "ApplyFailed", "False")
    assert "Secret 'hf' (spec.hfTokenSecretRef) does not exist" in ready["message"]
    assert ("Warning", "SecretNotFound") in events_of(cluster, "gated")
    assert cluster.deployment("gated") is None


def test_a_gated_checkpoint_without_a_token_posts_token_missing(operator, cluster, create_nodes):  # noqa: F811
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"model": {"family": "gemma3"}})
    cluster.wait(lambda: ("Warning", "TokenMissing") in events_of(cluster, "chat"), "a TokenMissing Event")
    message = next(e["message"] for e in cluster.events("chat") if e["reason"] == "TokenMissing")
    assert "google/gemma-3-270m-it is gated" in message
    # The Event is posted before the status it explains is written (handlers._emit): wait for both.
    cluster.wait(lambda: message in ((cluster.gd("chat").get("status") or {}).get("selection") or {}).get("reasons", []),
                 "the reason in status.selection")  # fmt: skip
    cluster.create("open", {})  # Gemma 4 is not gated
    cluster.wait(lambda: (cluster.gd("open").get("status") or {}).get("selection"), "the selection")
    assert ("Warning", "TokenMissing") not in events_of(cluster, "open")
