"""spec.adapters through kopf and the real handlers (issue 19): the Deployment downloads and serves the
adapters, a change to the list rolls out with a RollingOut Event naming it, an adapter for another base
is Invalid and nothing is applied, and the API server refuses a repeated name or a source-less adapter."""

from __future__ import annotations

import kubernetes
import pytest

from tests.integration.test_operator import Cluster, condition, operator  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

BASE = {"model": {"family": "gemma3", "size": "1b"}}
SUPPORT = {"name": "support-bot", "repo": "acme/support-lora", "rank": 16}
SQL = {"name": "sql-writer", "repo": "acme/sql-lora"}


@pytest.fixture
def cluster(kube_api, namespace):
    return Cluster(kube_api, namespace)


def _args(deployment: dict) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_adapters_are_downloaded_and_served_and_a_change_rolls_out_naming_it(operator, cluster, create_nodes):  # noqa: F811
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {**BASE, "adapters": [SUPPORT]})
    deployment = cluster.wait(lambda: cluster.deployment("chat"), "the Deployment")
    assert "support-bot=/models/adapters/support-bot" in _args(deployment)
    (loader,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert loader["name"] == "adapters" and "acme/support-lora" in loader["command"]
    selection = cluster.wait(lambda: (cluster.gd("chat").get("status") or {}).get("selection"), "the selection")
    assert selection["adapters"] == ["support-bot"]

    cluster.patch_spec("chat", {"adapters": [SUPPORT, SQL]})
    cluster.wait(lambda: "sql-writer=/models/adapters/sql-writer" in _args(cluster.deployment("chat")), "the new adapter")
    rolling = cluster.wait(lambda: [e["message"] for e in cluster.events("chat") if e["reason"] == "RollingOut"],
                           "the RollingOut Event")  # fmt: skip
    assert any("args[" in m and "sql-writer=/models/adapters/sql-writer" in m for m in rolling), rolling
    cluster.wait(lambda: cluster.gd("chat")["status"]["selection"].get("adapters") == ["support-bot", "sql-writer"],
                 "the selection names both")  # fmt: skip


def test_an_adapter_for_another_base_is_invalid_and_nothing_is_applied(operator, cluster, create_nodes):  # noqa: F811
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {**BASE, "adapters": [{**SQL, "baseModel": "google/gemma-3-4b-it"}]})
    cluster.wait(lambda: cluster.phase("chat") == "Invalid", "phase Invalid")
    message = condition(cluster.gd("chat"), "Stalled")["message"]
    assert "spec.adapters[0].baseModel: adapter sql-writer is made for google/gemma-3-4b-it" in message
    assert cluster.deployment("chat") is None


@pytest.mark.parametrize("adapters", [
    [SUPPORT, {**SQL, "name": "support-bot"}],   # the list is keyed by name
    [{"name": "no-source"}],                      # CEL: repo, or bucket and path
])  # fmt: skip
def test_the_api_refuses_a_repeated_name_or_an_adapter_without_a_source(cluster, adapters):
    with pytest.raises(kubernetes.client.ApiException) as info:
        cluster.create("bad", {**BASE, "adapters": adapters})
    assert info.value.status == 422


# ------------------------------------------------------------------ a shared store (issue 19's loose end)
PVC = {"type": "pvc", "storageClassName": "standard-rwx", "accessModes": ["ReadWriteMany"]}


def _jobs(cluster: Cluster) -> dict[str, dict]:
    return {j["metadata"]["name"]: j for j in cluster.get(f"/apis/batch/v1/namespaces/{cluster.ns}/jobs")["items"]}


def _adapter_jobs(cluster: Cluster) -> dict[str, dict]:
    return {name: j for name, j in _jobs(cluster).items() if j["spec"]["template"]["spec"]["containers"][0]["name"] == "adapter"}


def _cache(cluster: Cluster, name: str) -> dict:
    return (cluster.gd(name).get("status") or {}).get("cache") or {}


def _two_adapters_on_a_claim(operator, cluster, create_nodes) -> tuple[dict[str, dict], str]:
    """gke-l4, the operator, and "chat" with two adapters on a pvc cache: its adapter Jobs and loader Job's name."""
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {**BASE, "cache": PVC, "adapters": [SUPPORT, SQL]})
    jobs = cluster.wait(lambda: len(_adapter_jobs(cluster)) == 2 and _adapter_jobs(cluster), "two adapter Jobs")
    return jobs, cluster.wait(lambda: _cache(cluster, "chat").get("claim"), "the claim in status")


def test_a_filled_cache_gets_one_job_per_adapter_then_the_deployment(operator, cluster, create_nodes, kube_api):  # noqa: F811
    """Job status is written here as the Job controller would (no kubelet runs them, on either tier)."""
    adapter_jobs, loader = _two_adapters_on_a_claim(operator, cluster, create_nodes)
    assert set(_jobs(cluster)) == {loader, *adapter_jobs}
    stores = set()
    for job in adapter_jobs.values():
        (container,) = job["spec"]["template"]["spec"]["containers"]
        stores.add(container["command"][-2])  # the folder the download writes
        assert job["spec"]["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
        assert {r["name"] for r in job["metadata"]["ownerReferences"]} == {"chat"}
    assert len(stores) == 2 and all(s.startswith("/models/huggingface/hub/adapters/") for s in stores)

    kube_api.set_job_finished(cluster.ns, loader, succeeded=True)
    cluster.wait(lambda: "support-bot, sql-writer once" in (_cache(cluster, "chat").get("message") or ""),
                 "the fill waits for the adapters, naming them")  # fmt: skip
    assert cluster.deployment("chat") is None
    for name in adapter_jobs:
        kube_api.set_job_finished(cluster.ns, name, succeeded=True)
    deployment = cluster.wait(lambda: cluster.deployment("chat"), "the Deployment once every Job completed")
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["persistentVolumeClaim"] == {"claimName": loader, "readOnly": True}
    modules = _args(deployment)[_args(deployment).index("--lora-modules") + 1:][:2]
    assert {m.split("=", 1)[1] for m in modules} == stores
    cluster.wait(lambda: _cache(cluster, "chat").get("state") == "Ready", "the cache Ready")

    # One more adapter: only its Job is created; the Deployment waits, then rolls out naming it.
    cluster.patch_spec("chat", {"adapters": [SUPPORT, SQL, {"name": "faq-bot", "repo": "acme/faq-lora"}]})
    added = cluster.wait(lambda: set(_adapter_jobs(cluster)) - set(adapter_jobs), "the new adapter's Job")
    assert len(added) == 1 and set(adapter_jobs) < set(_adapter_jobs(cluster))
    assert "faq-bot" not in str(_args(cluster.deployment("chat")))
    kube_api.set_job_finished(cluster.ns, added.pop(), succeeded=True)
    cluster.wait(lambda: any("faq-bot=" in a for a in _args(cluster.deployment("chat"))), "the Deployment with faq-bot")
    rolling = cluster.wait(lambda: [e["message"] for e in cluster.events("chat") if e["reason"] == "RollingOut"],
                           "the RollingOut Event")  # fmt: skip
    assert any("faq-bot=/models/huggingface/hub/adapters/" in m for m in rolling), rolling


def test_a_refused_adapter_stalls_naming_it_and_nothing_is_applied(operator, cluster, create_nodes, kube_api):  # noqa: F811
    jobs, loader = _two_adapters_on_a_claim(operator, cluster, create_nodes)
    kube_api.set_job_finished(cluster.ns, loader, succeeded=True)
    sql = next(n for n, j in jobs.items() if "acme/sql-lora" in j["spec"]["template"]["spec"]["containers"][0]["command"])
    # What the Job controller writes when the download exits with the rank refusal's code (rule 0).
    kube_api.set_job_finished(cluster.ns, sql, succeeded=False, reason="PodFailurePolicy",
                              message="Container adapter for pod x/y failed with exit code 3 matching FailJob rule at index 0")
    cluster.wait(lambda: condition(cluster.gd("chat"), "Stalled").get("status") == "True", "Stalled")
    stalled = condition(cluster.gd("chat"), "Stalled")
    assert stalled["reason"] == "CacheFillFailed"
    assert "Adapter sql-writer (spec.adapters[1], acme/sql-lora) was refused" in stalled["message"]
    assert "Set spec.adapters[1].rank to its rank" in stalled["message"]
    assert cluster.deployment("chat") is None
