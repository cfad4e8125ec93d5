"""A model that loads writes its status once: the start time, not the minutes since. So does a pod
waiting for a node, until the cluster autoscaler says something new about it.

kubectl readers compute the age from status.loadingSince (the `Loading` column of `kubectl get gd
-o wide`); the operator looks again only when the start-up budget runs out. On the emulator the
test writes the pod's status as a kubelet would (see test_pods.py); the same holds on a real server.
"""

from __future__ import annotations

import time

import pytest

from gemma_operator import pods, queue
from tests.integration.test_operator import Cluster, condition, operator  # noqa: F401  (fixture)
from tests.integration.test_pods import (
    container_status, model_pod, scale_up_event, scheduled, stamp, waits_for, write_pod_status,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster(kube_api, namespace):
    return Cluster(kube_api, namespace)


def quiet_version(cluster: Cluster, name: str, quiet: float = 1.0, timeout: float = 15.0) -> str:
    """The resource's resourceVersion once nothing has written it for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    version, since = cluster.gd(name)["metadata"]["resourceVersion"], time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = cluster.gd(name)["metadata"]["resourceVersion"]
        if now != version:
            version, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return version
    raise TimeoutError(f"{name} kept being written for {timeout} s")


def test_a_loading_model_writes_its_status_once_over_many_recheck_periods(operator, cluster,  # noqa: F811
                                                                          create_nodes, monkeypatch):  # fmt: skip
    monkeypatch.setattr(pods, "RECHECK_S", 0.5)  # the time-bound recheck (a minute), 120 times faster
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    pod = model_pod(cluster, "chat")
    quiet_version(cluster, "chat")
    # Started 177 s ago: the whole minutes since cross 2 -> 3 within the next few seconds.
    started = stamp(177 / 60)
    write_pod_status(cluster, pod, {"phase": "Running", "conditions": scheduled(), "containerStatuses": [
        container_status(pod, {"running": {"startedAt": started}})]})  # fmt: skip
    progressing = waits_for(cluster, "chat", "Progressing", "LoadingModel")
    version = cluster.gd("chat")["metadata"]["resourceVersion"]
    time.sleep(8.0)  # sixteen recheck periods, across a whole minute since the start
    gd = cluster.gd("chat")
    assert gd["metadata"]["resourceVersion"] == version, f"status written while loading: {condition(gd, 'Progressing')}"
    assert started in progressing["message"], progressing["message"]
    assert gd["status"].get("loadingSince") == started
    # Ready: the start time leaves the status.
    write_pod_status(cluster, pod, {"conditions": [*scheduled()[:1], {"type": "Ready", "status": "True"}],
                                    "containerStatuses": [{**container_status(pod, {"running": {"startedAt": started}}),
                                                           "ready": True, "started": True}]})  # fmt: skip
    cluster.api.set_deployment_ready(cluster.ns, "chat")
    cluster.wait(lambda: cluster.phase("chat") == "Ready", "Ready", timeout=30)
    cluster.wait(lambda: "loadingSince" not in cluster.gd("chat")["status"], "loadingSince cleared")


def test_a_pod_waiting_for_a_node_writes_status_only_when_the_autoscaler_says_something_new(  # noqa: F811
        operator, cluster, create_nodes, monkeypatch):  # fmt: skip
    monkeypatch.setattr(pods, "RECHECK_S", 0.5)  # the time-bound recheck (a minute), 120 times faster
    monkeypatch.setattr(queue, "AUTOSCALER_EVENTS_S", 0.2)  # and the autoscaler Events read as often
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    pod = model_pod(cluster, "chat")
    quiet_version(cluster, "chat")
    since = stamp(177 / 60)  # the whole minutes since cross 2 -> 3 within the next few seconds
    write_pod_status(cluster, pod, {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": since,
        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]})  # fmt: skip
    progressing = waits_for(cluster, "chat", "Progressing", "WaitingForCapacity")
    assert f"Waiting since {since} for a node" in progressing["message"], progressing["message"]
    version = cluster.gd("chat")["metadata"]["resourceVersion"]
    time.sleep(8.0)  # sixteen recheck periods, across a whole minute since the wait started
    gd = cluster.gd("chat")
    assert gd["metadata"]["resourceVersion"] == version, f"status written while waiting: {condition(gd, 'Progressing')}"
    # The cluster autoscaler acts: the next recheck reads its Event, and the status says so, once.
    scale_up_event(cluster, pod, "pod triggered scale-up: [{gke-l4-pool-grp 0->1 (max: 4)}]")
    told = cluster.wait(lambda: "TriggeredScaleUp" in condition(cluster.gd("chat"), "Progressing")["message"]
                        and condition(cluster.gd("chat"), "Progressing"), "the autoscaler's Event in status")  # fmt: skip
    assert f"Waiting since {since} for a node" in told["message"]
    version = quiet_version(cluster, "chat")
    time.sleep(3.0)
    assert cluster.gd("chat")["metadata"]["resourceVersion"] == version, "status written again with nothing new"
