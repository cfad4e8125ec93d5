"""Faults from the API server and crashes of the operator: it retries, never duplicates, ends consistent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from gemma_operator import metrics
from tests.conftest import ROOT
from tests.integration.test_operator import Cluster, condition


@pytest.fixture
def emulator(kube_api):
    if kube_api.emulator is None:
        pytest.skip("fault injection needs the emulator")
    yield kube_api
    kube_api.emulator.clear_faults()


@pytest.fixture
def cluster(kube_api, namespace):
    return Cluster(kube_api, namespace)


@pytest.fixture
def operator(run_operator, kube_api, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    monkeypatch.setenv(metrics.PORT_ENV, "0")
    return lambda: run_operator("gemma_operator.handlers")


def settled(cluster: Cluster, name: str) -> bool:
    gd = cluster.gd(name)
    st = gd.get("status") or {}
    return (
        cluster.deployment(name) is not None
        and cluster.service(name) is not None
        and st.get("phase") == "Deploying"
        and st.get("observedGeneration") == gd["metadata"]["generation"]
        and condition(gd, "Progressing").get("status") == "True"
    )


def deployments_in(cluster: Cluster) -> list[str]:
    items = cluster.api.request("GET", f"/apis/apps/v1/namespaces/{cluster.ns}/deployments")["items"]
    return [d["metadata"]["name"] for d in items]


@pytest.mark.parametrize(
    ("verb", "resource", "status"),
    [
        ("apply", "deployments", 409),
        ("apply", "deployments", 500),
        ("apply", "services", 503),
        ("apply", "deployments", 429),
        ("patch", "gemmadeployments/status", 409),
        ("patch", "gemmadeployments/status", 500),
        ("get", "secrets", 503),
    ],
)
def test_the_operator_retries_api_faults_and_ends_consistent(emulator, operator, cluster, create_nodes,
                                                             verb, resource, status):  # fmt: skip
    create_nodes.from_fixture("gke-l4")
    fault = emulator.inject(verb=verb, resource=resource, namespace=cluster.ns, status=status, times=2)
    operator()
    spec = {"hfTokenSecretRef": {"name": "hf"}} if resource == "secrets" else {}
    if spec:
        cluster.api.request("POST", f"/api/v1/namespaces/{cluster.ns}/secrets",
                            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"token": "x"}})  # fmt: skip
    cluster.create("chat", spec)
    cluster.wait(lambda: settled(cluster, "chat"), f"recovery from {status} on {verb} {resource}", timeout=30)
    assert fault.hits == 2, "the fault was not exercised"
    assert deployments_in(cluster) == ["chat"]


def test_a_slow_api_server_only_slows_things_down(emulator, operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    emulator.inject(verb="apply", resource="deployments", namespace=cluster.ns, delay=2.0, times=1)
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource", timeout=30)
    assert deployments_in(cluster) == ["chat"]


def test_kill_9_in_the_middle_of_a_reconcile_then_a_restart(emulator, operator, cluster, create_nodes, tmp_path):
    create_nodes.from_fixture("gke-l4")
    # Hold the Deployment apply for long enough to kill the operator while it waits.
    stalled = emulator.inject(verb="apply", resource="deployments", namespace=cluster.ns, delay=30.0, times=1)
    env = {**os.environ, "KUBECONFIG": str(emulator.kubeconfig), metrics.PORT_ENV: "0", "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gemma_operator", "run", "--standalone", "--log-format=plain"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        cluster.create("chat", {})
        cluster.api.wait_for(lambda: stalled.hits == 1, timeout=30, message="the operator to be mid-apply")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    emulator.emulator.clear_faults()
    operator()
    cluster.wait(lambda: settled(cluster, "chat"), "a consistent end state after the restart", timeout=30)
    assert deployments_in(cluster) == ["chat"]
    assert cluster.gd("chat")["status"]["selection"]["accelerator"] == "nvidia-l4"


def test_events_are_not_repeated_within_a_minute(emulator, operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-cpu-only")
    operator()
    cluster.create("chat", {"accelerator": "nvidia-l4"})
    cluster.wait(lambda: cluster.phase("chat") == "NoFit", "phase NoFit")
    for _ in range(3):  # node churn wakes the NoFit resource again and again
        create_nodes([{"metadata": {"name": f"churn-{time.monotonic_ns()}", "labels": {"kubernetes.io/arch": "arm64"}},
                       "status": {"allocatable": {"cpu": "1", "memory": "1Gi"},
                                  "conditions": [{"type": "Ready", "status": "False"}]}}])  # fmt: skip
        time.sleep(1.3)
    reasons = [e["reason"] for e in cluster.events("chat")]
    assert reasons.count("NoFit") == 1, reasons


def _start(env: dict, log, *options: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gemma_operator", "run", "--log-format=plain", *options],
                            env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip


def test_two_replicas_with_peering_only_one_acts(emulator, cluster, create_nodes, tmp_path):
    crds = tmp_path / "crds"
    crds.mkdir()
    (crds / "kopf.yaml").write_text((ROOT / "charts/gemma-operator/files/kopf-peering-crds.yaml").read_text())
    emulator.apply_crds(crds)
    peering = "/apis/kopf.dev/v1/clusterkopfpeerings"
    if not cluster.get(f"{peering}/gemma"):
        emulator.request("POST", peering, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                           "metadata": {"name": "gemma"}})  # fmt: skip
    create_nodes.from_fixture("gke-l4")
    env = {**os.environ, "KUBECONFIG": str(emulator.kubeconfig), metrics.PORT_ENV: "0", "PYTHONUNBUFFERED": "1"}
    logs = {p: (tmp_path / f"priority-{p}.log") for p in (100, 50)}
    handles = {p: path.open("w") for p, path in logs.items()}
    procs = [_start(env, handles[p], "--peering=gemma", f"--priority={p}") for p in (100, 50)]
    try:
        # Both replicas announce themselves in the peering object; the lower priority one then
        # pauses (or starts paused, when the other was there first).
        emulator.wait_for(lambda: len((cluster.get(f"{peering}/gemma") or {}).get("status") or {}) >= 2,
                          timeout=30, message="both replicas to announce themselves")  # fmt: skip
        time.sleep(1.0)
        cluster.create("chat", {})
        cluster.wait(lambda: settled(cluster, "chat"), "the resource served", timeout=30)
        time.sleep(1.0)
        assert all(p.poll() is None for p in procs)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)
        for handle in handles.values():
            handle.close()
    leader, follower = logs[100].read_text(), logs[50].read_text()
    assert "Serving google/gemma-4-E2B-it" in leader
    assert "Serving" not in follower and "spec_changed" not in follower, follower[-2000:]
