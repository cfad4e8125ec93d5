"""What the watches miss, found by the resync: kopf + the real handlers against the API server.

After an expired watch (410) kopf re-lists but never reports what vanished in the gap; objects the
operator does not watch at all (KEDA's ScaledObject, the collectors) report nothing. The resync
(a fresh read every GEMMA_OPERATOR_RESYNC_S) finds both. Fault injection needs the emulator.
"""

from __future__ import annotations

import time

import kubernetes
import pytest

from gemma_operator import handlers
from tests.integration.test_faults import HOLDS, cluster, drop_watch, emulator, fast_resync, operator  # noqa: F401
from tests.integration.test_operator import condition
from tests.integration.test_pods import container_status, model_pod, terminated, waits_for, write_pod_status
from tests.integration.test_rbac import remove_third_party_crds, third_party_crd_dirs

pytestmark = pytest.mark.integration


def test_a_pod_deleted_while_its_watch_is_down_and_expired_stops_counting(emulator, fast_resync, operator,  # noqa: F811
                                                                          cluster, create_nodes):  # noqa: F811
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    pod = model_pod(cluster, "chat")
    write_pod_status(cluster, pod, {"phase": "Running", "containerStatuses": [container_status(
        pod, {"waiting": {"reason": "CrashLoopBackOff"}}, terminated("Error", 1, "boom"), restarts=3)]})  # fmt: skip
    waits_for(cluster, "chat", "Stalled", "CrashLoop")
    faults = drop_watch(emulator, "pods", *HOLDS["410"])
    # Not bound to a node: a real API server deletes it at once, too (no kubelet to wait for).
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/pods/{pod['metadata']['name']}")
    cluster.wait(lambda: faults[-1].hits == 1, "the expired reconnect")
    cluster.wait(lambda: condition(cluster.gd("chat"), "Stalled").get("status") == "False",
                 "the crash-looping pod, gone unseen, no longer counted", timeout=10)  # fmt: skip
    gd = cluster.gd("chat")
    assert gd["status"]["phase"] == "Deploying"
    assert condition(gd, "Progressing")["reason"] != "CrashLoop", condition(gd, "Progressing")


# --- third-party children (KEDA's ScaledObject, the collectors): not watched, compared on the resync
KEDA_QUEUE = {"minReplicas": 1, "maxReplicas": 4, "metric": "queue", "target": 4, "provider": "keda"}
SCALED_OBJECTS = "/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects"
POD_MONITORINGS = "/apis/monitoring.googleapis.com/v1/namespaces/{ns}/podmonitorings"
THIRD_PARTY_NAMES = ("servicemonitors.monitoring.coreos.com", "podmonitorings.monitoring.googleapis.com",
                     "scaledobjects.keda.sh")  # fmt: skip


@pytest.fixture
def third_party(kube_api, tmp_path, monkeypatch):
    """serve(kind, ...) installs third-party CRDs (from ../shared/crds); all are removed afterwards,
    and the operator asks discovery on every reconcile."""
    monkeypatch.setenv(handlers.DISCOVERY_ENV, "0")
    dirs = third_party_crd_dirs(tmp_path / "crds")

    def serve(*kinds: str) -> None:
        for kind in kinds:
            kube_api.apply_crds(dirs[kind])

    yield serve
    remove_third_party_crds(kube_api)
    for name in THIRD_PARTY_NAMES:  # a real server deletes a CRD only once its objects are gone
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        kube_api.wait_for(lambda p=path: not _exists(kube_api, p), timeout=30, message=f"CRD {name} deleted")


def _exists(api, path: str) -> bool:
    try:
        api.request("GET", path)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_hand_edits_of_unwatched_children_are_repaired_on_the_resync(fast_resync, third_party, operator,  # noqa: F811
                                                                    cluster, create_nodes):  # noqa: F811
    third_party("ScaledObject", "PodMonitoring")
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"autoscaling": KEDA_QUEUE})
    scaled_path = SCALED_OBJECTS.format(ns=cluster.ns) + "/chat"
    monitoring_path = POD_MONITORINGS.format(ns=cluster.ns) + "/chat"
    scaled = cluster.wait(lambda: cluster.get(scaled_path), "the ScaledObject")
    cluster.wait(lambda: cluster.get(monitoring_path), "the PodMonitoring")
    assert scaled["spec"]["maxReplicaCount"] == 4
    # By hand: the ScaledObject's bounds raised, the PodMonitoring deleted.
    cluster.api.request("PATCH", scaled_path, {"spec": {"maxReplicaCount": 40}},
                        content_type="application/merge-patch+json")  # fmt: skip
    cluster.api.request("DELETE", monitoring_path)
    cluster.wait(lambda: cluster.get(scaled_path)["spec"]["maxReplicaCount"] == 4 and cluster.get(monitoring_path),
                 "both repaired by the resync", timeout=10)  # fmt: skip
    assert cluster.get(scaled_path)["metadata"]["uid"] == scaled["metadata"]["uid"], "re-created, not updated"
    if cluster.api.requests is not None:  # as desired again: the next resync rounds apply nothing
        before = cluster.api.requests.copy()
        time.sleep(2.0)
        sent = cluster.api.requests - before
        assert not [k for k in sent if k[1] in ("scaledobjects", "podmonitorings") and k[0] != "list"], sent


# --- discovery: a kind that appears or vanishes re-queues the resources whose choice depends on it
def test_a_resource_refused_for_want_of_keda_is_applied_once_keda_is_installed(  # noqa: F811
        third_party, operator, cluster, create_nodes, monkeypatch):  # noqa: F811
    monkeypatch.setenv(handlers.DISCOVERY_ENV, "0.5")  # how long what the cluster serves is taken as known
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"autoscaling": KEDA_QUEUE})
    stalled = cluster.wait(lambda: cluster.phase("chat") == "Invalid" and condition(cluster.gd("chat"), "Stalled"),
                           "refused without KEDA")  # fmt: skip
    assert "keda needs KEDA installed" in stalled["message"], stalled
    third_party("ScaledObject")  # KEDA installed; nothing about the resource changes
    scaled_path = SCALED_OBJECTS.format(ns=cluster.ns) + "/chat"
    cluster.wait(lambda: cluster.get(scaled_path), "the ScaledObject, once discovery shows KEDA", timeout=15)
    cluster.wait(lambda: cluster.phase("chat") == "Deploying" and cluster.deployment("chat"), "deployed")
    assert condition(cluster.gd("chat"), "Stalled")["status"] == "False"
