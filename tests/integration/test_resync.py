"""What the watches miss, found by the resync: kopf + the real handlers against the API server.

After an expired watch (410) kopf re-lists but never reports what vanished in the gap; objects the
operator does not watch at all (KEDA's ScaledObject, the collectors) report nothing. The resync
(a fresh read every GEMMA_OPERATOR_RESYNC_S) finds both. Fault injection needs the emulator.
"""

from __future__ import annotations

import pytest

from tests.integration.test_faults import HOLDS, cluster, drop_watch, emulator, fast_resync, operator  # noqa: F401
from tests.integration.test_operator import condition
from tests.integration.test_pods import container_status, model_pod, terminated, waits_for, write_pod_status

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
