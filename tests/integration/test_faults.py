"""Faults from the API server and crashes of the operator: it retries, never duplicates, ends consistent."""

from __future__ import annotations

import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from gemma_operator import handlers, metrics, tuning
from tests.conftest import NODES, ROOT
from tests.integration.test_operator import Cluster, args_of, condition


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


def services_in(cluster: Cluster) -> list[str]:
    items = cluster.api.request("GET", f"/api/v1/namespaces/{cluster.ns}/services")["items"]
    return [s["metadata"]["name"] for s in items]


@pytest.mark.parametrize(
    ("verb", "resource", "status"),
    [
        ("create", "deployments", 409),  # a Conflict, not AlreadyExists: retried, not applied instead
        ("create", "deployments", 500),
        ("create", "services", 503),
        ("create", "deployments", 429),
        ("patch", "gemmadeployments/status", 409),
        ("patch", "gemmadeployments/status", 500),
        ("get", "secrets", 503),
    ],
)
def test_the_operator_retries_api_faults_and_ends_consistent(emulator, operator, cluster, create_nodes,
                                                             verb, resource, status, monkeypatch):  # fmt: skip
    if resource == "secrets":  # the early Secret check, on only with the chart's secretCheck.enabled
        monkeypatch.setenv(handlers.SECRET_CHECK_ENV, "true")
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
    emulator.inject(verb="create", resource="deployments", namespace=cluster.ns, delay=2.0, times=1)
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource", timeout=30)
    assert deployments_in(cluster) == ["chat"]


def test_kill_9_in_the_middle_of_a_reconcile_then_a_restart(emulator, operator, cluster, create_nodes, tmp_path):
    create_nodes.from_fixture("gke-l4")
    # Hold the Deployment's create (first sight) long enough to kill the operator while it waits.
    stalled = emulator.inject(verb="create", resource="deployments", namespace=cluster.ns, delay=30.0, times=1)
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
    # An A10G: no such node, and no GKE shape to scale up (a GKE GPU would plan on its standard shape).
    cluster.create("chat", {"accelerator": "nvidia-a10g"})
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


# --- dropped watches ---------------------------------------------------------------------------
# kopf resumes a broken watch at once from the last resourceVersion it saw (no re-list); a failed
# reconnect (5xx, 429) is retried inside the request with networking.error_backoffs (1, 1, 2, ... s);
# a 410 ERROR event ends the stream and kopf re-lists after watching.reconnect_backoff.


def drop_watch(emulator, resource: str, *faults: dict) -> list:
    """Cut the operator's watch of ``resource``; its reconnects meet ``faults`` in order.

    Returns once the first reconnect met the first fault: the watch is down from then on, for as
    long as the faults last.
    """
    emulator.wait_for(lambda: emulator.open_watches(resource) >= 1, message=f"the {resource} watch")
    injected = [emulator.inject(verb="watch", resource=resource, **fault) for fault in faults]
    assert emulator.drop_watches(resource) >= 1
    if injected:
        emulator.wait_for(lambda: injected[0].hits >= 1, timeout=10, message=f"a {resource} reconnect")
    return injected


def test_the_emulator_cuts_and_expires_watches_as_a_real_server_does(emulator, namespace):
    url = f"/api/v1/namespaces/{namespace}/configmaps"
    outcome: dict = {}

    def watch() -> None:
        try:
            outcome["events"] = emulator.watch(url, timeout_seconds=10)
        except Exception as e:  # noqa: BLE001 - what the client makes of a cut stream
            outcome["error"] = e

    thread = threading.Thread(target=watch)
    thread.start()
    emulator.wait_for(lambda: emulator.open_watches("configmaps") == 1, message="the watch")
    assert emulator.drop_watches("configmaps") == 1
    thread.join(5)
    assert "error" in outcome, f"a cut watch ended cleanly: {outcome}"
    assert emulator.open_watches("configmaps") == 0 and emulator.drop_watches("configmaps") == 0
    # An expired resourceVersion is not an HTTP error on a watch: 200, then one ERROR event.
    emulator.inject(verb="watch", resource="configmaps", status=410)
    (event,) = emulator.watch(url, query={"resourceVersion": "1"})
    assert (event["type"], event["object"]["code"], event["object"]["reason"]) == ("ERROR", 410, "Expired")


def uids(cluster: Cluster, name: str) -> tuple[str, str]:
    return cluster.deployment(name)["metadata"]["uid"], cluster.service(name)["metadata"]["uid"]


HOLDS = {  # ways a broken watch stays down: its reconnects fail, or hang
    "503": [{"status": 503, "times": 2}],
    "500": [{"status": 500, "times": 2}],
    "429": [{"status": 429, "times": 2}],
    "slow": [{"delay": 2.0}],
    "flapping": [{"drop_after_events": 0, "times": 3}, {"status": 503}],
    "410": [{"status": 503}, {"status": 410}],  # expired on reconnect: kopf re-lists
}


@pytest.mark.parametrize("hold", HOLDS.values(), ids=HOLDS.keys())
def test_a_spec_change_while_the_resource_watch_is_down_is_applied_once_it_is_back(emulator, operator, cluster,
                                                                                    create_nodes, hold):  # fmt: skip
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource")
    before, lists = uids(cluster, "chat"), emulator.requests[("list", "gemmadeployments")]
    faults = drop_watch(emulator, "gemmadeployments", *hold)
    cluster.patch_spec("chat", {"replicas": 2, "maxModelLen": 8192})
    cluster.wait(
        lambda: settled(cluster, "chat") and (d := cluster.deployment("chat"))["spec"]["replicas"] == 2
        and "8192" in args_of(d),
        "the change applied once the watch is back", timeout=30,
    )  # fmt: skip
    assert [f.hits for f in faults] == [f.times for f in faults], "the watch was not held down as meant"
    assert deployments_in(cluster) == ["chat"] and services_in(cluster) == ["chat"]
    assert uids(cluster, "chat") == before, "a child was re-created instead of updated"
    assert cluster.gd("chat")["status"]["selection"]["maxModelLen"] == 8192
    relisted = emulator.requests[("list", "gemmadeployments")] - lists
    assert relisted == (1 if faults[-1].status == 410 else 0)


def test_a_child_changed_while_its_watch_is_down_is_repaired_once_it_is_back(emulator, operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource")
    deployment_uid, _ = uids(cluster, "chat")
    # Both child watches down for 1 + 1 + 2 s of reconnects.
    held = drop_watch(emulator, "deployments", {"status": 503, "times": 3})
    held += drop_watch(emulator, "services", {"status": 500, "times": 3})
    cluster.patch_spec("chat", {"maxModelLen": 8192})  # applied while the operator is blind to its children
    cluster.wait(lambda: "8192" in args_of(cluster.deployment("chat")), "the new spec applied")
    path = f"/apis/apps/v1/namespaces/{cluster.ns}/deployments/chat"
    cluster.api.request("PATCH", path, {"spec": {"replicas": 5}}, content_type="application/strategic-merge-patch+json")
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/services/chat")
    cluster.wait(
        lambda: all(f.hits == f.times for f in held) and cluster.service("chat") is not None
        and cluster.deployment("chat")["spec"]["replicas"] == 1 and settled(cluster, "chat"),
        "the hand edit reverted and the Service back once the watches are", timeout=30,
    )  # fmt: skip
    assert deployments_in(cluster) == ["chat"] and services_in(cluster) == ["chat"]
    assert cluster.deployment("chat")["metadata"]["uid"] == deployment_uid
    assert "8192" in args_of(cluster.deployment("chat"))


@pytest.mark.parametrize("hold", [HOLDS["503"], HOLDS["410"]], ids=["503", "410"])
def test_a_node_pool_added_while_the_node_watch_is_down_is_seen_once_it_is_back(emulator, operator, cluster,
                                                                                 create_nodes, hold):  # fmt: skip
    create_nodes.from_fixture("gke-cpu-only")
    operator()
    cluster.create("chat", {"accelerator": "nvidia-a10g"})  # no GKE shape to scale up: NoFit until nodes come
    cluster.wait(lambda: cluster.phase("chat") == "NoFit", "phase NoFit")
    faults = drop_watch(emulator, "nodes", *hold)
    create_nodes(a10g_nodes())
    cluster.wait(lambda: settled(cluster, "chat"), "a plan on the new A10G pool once the node watch is back", timeout=30)
    assert [f.hits for f in faults] == [f.times for f in faults]
    assert cluster.gd("chat")["status"]["selection"]["accelerator"] == "nvidia-a10g"
    assert deployments_in(cluster) == ["chat"] and services_in(cluster) == ["chat"]


def a10g_nodes():
    items = yaml.safe_load((NODES / "gfd-a10g.yaml").read_text())["items"]
    return [n for n in items if "nvidia.com/gpu.product" in n["metadata"]["labels"]]


# After a 410 kopf re-lists, but never reports what vanished in the gap, so its indices keep it;
# the operator's resync (a names-only list every GEMMA_OPERATOR_RESYNC_S) finds those deletions.
@pytest.fixture
def fast_resync(monkeypatch):
    monkeypatch.setenv(handlers.RESYNC_ENV, "0.5")


def test_a_child_deleted_while_its_watch_is_down_and_expired_is_re_created(emulator, fast_resync, operator, cluster,
                                                                           create_nodes):  # fmt: skip
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource")
    uid = cluster.deployment("chat")["metadata"]["uid"]
    faults = drop_watch(emulator, "services", *HOLDS["410"])
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/services/chat")
    cluster.wait(lambda: faults[-1].hits == 1, "the expired reconnect")
    cluster.wait(lambda: cluster.service("chat") is not None, "the Service re-created", timeout=10)
    assert services_in(cluster) == ["chat"] and deployments_in(cluster) == ["chat"]
    assert cluster.deployment("chat")["metadata"]["uid"] == uid, "the running model was left alone"


def test_a_node_pool_deleted_while_the_node_watch_is_down_and_expired_is_noticed(emulator, fast_resync, operator,
                                                                                 cluster, create_nodes):  # fmt: skip
    names = create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource")
    faults = drop_watch(emulator, "nodes", *HOLDS["410"])
    for name in names:
        create_nodes.delete(name)
    cluster.wait(lambda: faults[-1].hits == 1, "the expired reconnect")
    cluster.wait(lambda: cluster.phase("chat") == "NoFit", "a re-plan without the deleted pool", timeout=10)


def test_resync_with_nothing_gone_writes_nothing(emulator, fast_resync, operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource")
    time.sleep(1.0)
    before = emulator.writes
    time.sleep(2.0)  # four resync rounds
    assert emulator.writes - before == collections.Counter()


def test_an_api_outage_longer_than_kopfs_default_retries_does_not_stop_the_operator(emulator, run_operator, cluster,
                                                                                    create_nodes, monkeypatch):  # fmt: skip
    """kopf gives up on a watch after its error back-offs and the whole operator stops; the
    operator's longer schedule (about 10 minutes) rides an outage out. Here the schedule is kept
    at its length with short pauses, and the watch fails more often than kopf's default allows."""
    seen = []

    def shorter(settings):
        seen.append(tuple(settings.networking.error_backoffs))
        settings.networking.error_backoffs = [0.05] * len(seen[0])

    monkeypatch.setenv("KUBECONFIG", str(emulator.kubeconfig))
    monkeypatch.setenv(metrics.PORT_ENV, "0")
    create_nodes.from_fixture("gke-l4")
    running = run_operator("gemma_operator.handlers", configure=shorter)
    assert seen == [tuning.API_ERROR_BACKOFFS_S] and sum(seen[0]) >= 600
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource")
    kopf_default = 8  # kopf's NetworkingSettings.error_backoffs: 1, 1, 2, 3, 5, 8, 13, 21
    faults = drop_watch(emulator, "gemmadeployments", {"status": 503, "times": kopf_default + 4})
    cluster.patch_spec("chat", {"replicas": 2})
    cluster.wait(lambda: faults[0].hits == faults[0].times, "the outage to pass", timeout=20)
    cluster.wait(lambda: settled(cluster, "chat") and cluster.deployment("chat")["spec"]["replicas"] == 2,
                 "the change applied after the outage", timeout=20)  # fmt: skip
    assert running.error is None and running._thread.is_alive()


@pytest.mark.parametrize("resource", ["deployments", "services"])
def test_a_refused_apply_on_a_never_planned_resource_says_why_and_backs_off(emulator, operator, cluster,
                                                                            create_nodes, resource):  # fmt: skip
    """A 403 (a ResourceQuota, an admission webhook, missing RBAC) on the first write (a create): the
    status names the server's answer, and the retries back off instead of hammering the API."""
    create_nodes.from_fixture("gke-l4")
    refused = emulator.inject(verb="create", resource=resource, namespace=cluster.ns, status=403, times=None)
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: condition(cluster.gd("chat"), "Ready").get("reason") == "ApplyFailed",
                 "an ApplyFailed condition", timeout=20)  # fmt: skip
    st = cluster.gd("chat")["status"]
    assert st["phase"] == "Degraded"
    assert f"injected fault for create {resource}" in condition(cluster.gd("chat"), "Ready")["message"]
    assert "HTTP 403" in condition(cluster.gd("chat"), "Ready")["message"]
    if resource == "deployments":  # nothing was applied: no selection is claimed
        assert "selection" not in st and "endpoint" not in st
    attempts = refused.hits
    time.sleep(4.0)
    assert refused.hits - attempts <= 1, f"{refused.hits - attempts} applies in 4 s: no back-off"
    assert not any(e["reason"] == "Ready" for e in cluster.events("chat"))


def test_a_refused_apply_backs_off_even_when_the_status_cannot_be_written(emulator, operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    refused = emulator.inject(verb="create", resource="deployments", namespace=cluster.ns, status=403, times=None)
    mute = emulator.inject(verb="patch", resource="gemmadeployments/status", namespace=cluster.ns, status=403,
                           times=None)
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: refused.hits >= 1 and mute.hits >= 1, "a refused apply and a refused status write")
    time.sleep(4.0)
    assert refused.hits <= 2, f"{refused.hits} applies in about 4 s: no back-off"
    assert any(e["reason"] == "ApplyFailed" for e in cluster.events("chat")), "the Event still says why"


# --- peering: a demoted replica --------------------------------------------------------------------
class Peering:
    """The peering object two operators meet in: cluster-wide, or one per watched namespace."""

    def __init__(self, api, name: str, namespace: str | None):
        self.api, self.name, self.namespace = api, name, namespace
        self.collection = ("/apis/kopf.dev/v1/clusterkopfpeerings" if namespace is None
                           else f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings")  # fmt: skip

    def operator_options(self) -> dict:
        return {"peering": self.name, "priority": 100,
                **({"namespaces": (self.namespace,)} if self.namespace else {})}  # fmt: skip

    def rival(self, priority: int | None) -> None:
        """Announce (or, with None, withdraw) a second operator, as its kopf would."""
        import datetime

        entry = None if priority is None else {
            "priority": priority, "lifetime": 60, "lastseen": datetime.datetime.now(datetime.UTC).isoformat()}
        self.api.request("PATCH", f"{self.collection}/{self.name}", {"status": {"rival": entry}},
                         content_type="application/merge-patch+json")  # fmt: skip


@pytest.fixture(params=["cluster-wide", "namespaced"])
def peering(request, kube_api, namespace):
    kube_api.apply_crds(ROOT / "charts/gemma-operator/files")
    scoped = request.param == "namespaced"
    where = Peering(kube_api, f"gemma-{namespace}", namespace if scoped else None)
    kind = "KopfPeering" if scoped else "ClusterKopfPeering"
    body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": where.name}}
    kube_api.request("POST", where.collection, body)
    yield where
    kube_api.request("DELETE", f"{where.collection}/{where.name}")


def test_a_demoted_replica_writes_nothing_until_it_leads_again(kube_api, run_operator, cluster, create_nodes,
                                                               peering, fast_resync, monkeypatch, caplog):  # fmt: skip
    """kopf pauses its watches when a higher-priority peer appears; the operator's own queue, resync
    and pool watcher must pause with it. A Service deleted meanwhile is what the resync would repair."""
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    monkeypatch.setenv(metrics.PORT_ENV, "0")
    caplog.set_level(logging.INFO, logger="kopf._core.engines.peering")
    create_nodes.from_fixture("gke-l4")
    run_operator("gemma_operator.handlers", **peering.operator_options())
    cluster.create("chat", {})
    cluster.wait(lambda: settled(cluster, "chat"), "the leader serving the resource", timeout=30)
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/services/chat")
    cluster.wait(lambda: cluster.service("chat") is not None, "the leader re-creating a deleted Service")
    peering.rival(200)
    cluster.wait(lambda: "Pausing operations in favour of" in caplog.text, "kopf to pause in favour of the rival")
    time.sleep(1.0)  # what was in flight when kopf paused ends
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/services/chat")
    before = kube_api.writes
    time.sleep(3.0)  # six resync rounds, each of which finds the Service gone
    assert cluster.service("chat") is None, "a paused replica re-created the Service"
    if before is not None:
        written = {k: n for k, n in (kube_api.writes - before).items() if "kopfpeerings" not in k[1]}
        assert not written, f"a paused replica wrote: {written}"
    peering.rival(None)
    cluster.wait(lambda: "Resuming operations after the pause" in caplog.text, "kopf to resume")
    cluster.wait(lambda: cluster.service("chat") is not None, "the Service re-created once the replica leads again")
    assert services_in(cluster) == ["chat"] and deployments_in(cluster) == ["chat"]


def test_following_one_object_survives_cut_and_expired_watches(emulator):
    """kube.follow, which the peering pause rides on: every change is seen, across a watch cut
    mid-stream and one that comes back expired (410)."""
    import asyncio

    from gemma_operator import kube

    collection = "/apis/kopf.dev/v1/clusterkopfpeerings"
    emulator.apply_crds(ROOT / "charts/gemma-operator/files")
    name = f"follow-{time.monotonic_ns()}"
    emulator.request("POST", collection, {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                          "metadata": {"name": name}})  # fmt: skip

    def mark(value):
        emulator.request("PATCH", f"{collection}/{name}", {"status": {"mark": value}},
                         content_type="application/merge-patch+json")  # fmt: skip

    async def scenario():
        client = kube.Kube.connect(emulator.connection_info())
        seen = []

        async def follow():
            async for obj in client.follow("kopf.dev/v1", "ClusterKopfPeering", None, name):
                seen.append(((obj or {}).get("status") or {}).get("mark"))

        async def until(value):
            for _ in range(200):
                if seen and seen[-1] == value:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"never saw {value!r}: {seen}")

        task = asyncio.create_task(follow())
        try:
            await until(None)
            await asyncio.to_thread(mark, "a")
            await until("a")
            await asyncio.to_thread(emulator.drop_watches, "clusterkopfpeerings")
            await asyncio.to_thread(mark, "b")
            await until("b")
            expired.append(emulator.inject(verb="watch", resource="clusterkopfpeerings", status=410))
            await asyncio.to_thread(emulator.drop_watches, "clusterkopfpeerings")
            await asyncio.to_thread(mark, "c")
            await until("c")
            await asyncio.to_thread(emulator.request, "DELETE", f"{collection}/{name}")
            for _ in range(200):
                if seen[-1] is None and len(seen) > 1:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
        return seen

    expired: list = []
    seen = asyncio.run(scenario())
    assert expired[0].hits == 1, "the expired watch was not exercised"
    assert [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]] == [None, "a", "b", "c", None], seen
