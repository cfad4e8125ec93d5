"""spec.cache against an API server: one loader Job per checkpoint, the Deployment waits for the fill,
a failed fill stalls, and the shared claim follows its retention rule.

There is no kubelet: Jobs stay un-run, and the tests write their end as the Job controller would
(`set_job_finished`). Garbage collection is the server's (the emulator's, or kube-controller-manager's).
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

from tests.integration.test_operator import Cluster, cluster, condition, operator  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration
PVC = {"type": "pvc", "storageClassName": "standard-rwx", "accessModes": ["ReadWriteMany"]}


def claims(cluster: Cluster) -> list[dict]:
    return cluster.get(f"/api/v1/namespaces/{cluster.ns}/persistentvolumeclaims")["items"]


def jobs(cluster: Cluster) -> list[dict]:
    return cluster.get(f"/apis/batch/v1/namespaces/{cluster.ns}/jobs")["items"]


def cache_status(cluster: Cluster, name: str) -> dict:
    return (cluster.gd(name).get("status") or {}).get("cache") or {}


def owners(obj: dict) -> set[str]:
    return {ref["name"] for ref in obj["metadata"].get("ownerReferences") or []}


def test_one_loader_per_checkpoint_and_the_deployments_wait_for_the_fill(operator, cluster, create_nodes,  # noqa: F811
                                                                          kube_api):  # fmt: skip
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"cache": PVC})
    cluster.create("chat-2", {"cache": PVC, "maxModelLen": 8192})
    for name in ("chat", "chat-2"):
        cluster.wait(lambda n=name: cache_status(cluster, n).get("state") == "Filling", f"{name} filling")
    cluster.wait(lambda: len(jobs(cluster)) == 1 and owners(jobs(cluster)[0]) == {"chat", "chat-2"},
                 "one Job, two owners")  # fmt: skip
    (claim,) = claims(cluster)
    (job,) = jobs(cluster)
    assert owners(claim) == {"chat", "chat-2"}
    assert claim["metadata"]["name"] == job["metadata"]["name"] == cache_status(cluster, "chat")["claim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["storageClassName"] == "standard-rwx"
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["hf", "download"]
    gd = cluster.gd("chat")
    assert condition(gd, "Progressing")["reason"] == "FillingCache" and condition(gd, "Stalled")["status"] == "False"
    # The Deployments wait: not created while the Job runs.
    assert cluster.deployment("chat") is None and cluster.deployment("chat-2") is None
    assert cache_status(cluster, "chat")["bytes"] > 0

    kube_api.set_job_finished(cluster.ns, job["metadata"]["name"], succeeded=True)
    for name in ("chat", "chat-2"):
        deployment = cluster.wait(lambda n=name: cluster.deployment(n), f"{name}'s Deployment after the fill")
        pod = deployment["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
        assert volume["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"], "readOnly": True}
        assert {"name": "HF_HUB_OFFLINE", "value": "1"} in pod["containers"][0]["env"]
        cluster.wait(lambda n=name: cache_status(cluster, n).get("state") == "Ready", f"{name}'s cache Ready")
    assert len(jobs(cluster)) == 1 and len(claims(cluster)) == 1

    # Retention Delete: the claim goes with the last deployment that uses it, not before.
    cluster.api.request("DELETE", cluster.gd_path("chat"))
    cluster.wait(lambda: claims(cluster) and owners(claims(cluster)[0]) == {"chat-2"}, "chat's owner reference gone")
    assert len(jobs(cluster)) == 1
    cluster.api.request("DELETE", cluster.gd_path("chat-2"))
    cluster.wait(lambda: not claims(cluster) and not jobs(cluster), "the claim and Job collected with the last owner",
                 30)  # fmt: skip


def test_a_failed_fill_stalls_with_the_jobs_message(operator, cluster, create_nodes, kube_api):  # noqa: F811
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"cache": {"type": "gcsfuse", "bucket": "team-models"}})
    (job,) = cluster.wait(lambda: jobs(cluster), "the loader Job")
    assert not claims(cluster)  # gcsfuse: the bucket holds the weights, no claim
    kube_api.set_job_finished(cluster.ns, job["metadata"]["name"], succeeded=False,
                              message="Job has reached the specified backoff limit")  # fmt: skip
    cluster.wait(lambda: condition(cluster.gd("chat"), "Stalled").get("status") == "True", "Stalled")
    gd = cluster.gd("chat")
    stalled = condition(gd, "Stalled")
    assert stalled["reason"] == "CacheFillFailed"
    assert "Job has reached the specified backoff limit" in stalled["message"]
    assert f"kubectl logs job/{job['metadata']['name']}" in stalled["message"]
    assert gd["status"]["cache"]["state"] == "Failed" and gd["status"]["cache"]["bucket"] == "team-models"
    assert gd["status"]["phase"] == "Degraded"
    assert cluster.deployment("chat") is None
    cluster.wait(lambda: any(e["reason"] == "CacheFillFailed" for e in cluster.events("chat")), "a warning Event")


def test_leaving_the_cache_prunes_what_only_it_used_and_retain_keeps_it(operator, cluster, create_nodes,  # noqa: F811
                                                                        kube_api):  # fmt: skip
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"cache": {"type": "pvc"}})
    cluster.wait(lambda: jobs(cluster) and claims(cluster), "the claim and its Job")
    cluster.patch_spec("chat", {"cache": {"type": "emptyDir"}})
    deployment = cluster.wait(lambda: cluster.deployment("chat"), "the Deployment on an emptyDir")
    models = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "models")
    assert models["emptyDir"]["sizeLimit"].endswith("Gi")
    # It was their only owner: switching away deletes them (what GC would do once it is deleted).
    cluster.wait(lambda: not jobs(cluster) and not claims(cluster), "the unused claim and Job deleted", 30)

    cluster.create("kept", {"cache": {"type": "pvc", "retention": "Retain"}})
    (job,) = cluster.wait(lambda: jobs(cluster), "the retained loader Job")
    assert "ownerReferences" not in job["metadata"]
    # A download takes longer than the operator takes to report it: the fill ends after Filling.
    cluster.wait(lambda: cache_status(cluster, "kept").get("state") == "Filling", "kept filling")
    kube_api.set_job_finished(cluster.ns, job["metadata"]["name"], succeeded=True)
    cluster.wait(lambda: cluster.deployment("kept"), "kept's Deployment after the fill")
    cluster.api.request("DELETE", cluster.gd_path("kept"))
    cluster.wait(lambda: cluster.deployment("kept") is None, "kept's Deployment collected", 30)
    assert len(claims(cluster)) == 1 and len(jobs(cluster)) == 1  # Retain: they stay for the next deployment


def rendered_claim(namespace: str, spec: dict) -> dict:
    """The claim the operator renders for `spec` on the gke-l4 fixture: its name, labels and size."""
    from gemma_operator import catalog as catalog_mod
    from gemma_operator import inventory, planner, render
    from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec

    known = catalog_mod.load()
    nodes = yaml.safe_load((pathlib.Path(__file__).parents[1] / "fixtures/nodes/gke-l4.yaml").read_text())["items"]
    parsed = GemmaDeploymentSpec.model_validate(spec)
    result = planner.plan(parsed, inventory.pools(nodes, known), known)
    return next(o for o in render.render(result, "chat", namespace, parsed) if o["kind"] == "PersistentVolumeClaim")


def create_smaller_claim(cluster: Cluster, cache: dict) -> tuple[dict, str]:
    """The claim of spec.cache `cache` as an earlier operator made it, when the catalog listed a smaller
    checkpoint (1Gi); returns it and the size the checkpoint needs now."""
    claim = rendered_claim(cluster.ns, {"cache": cache})
    needed = claim["spec"]["resources"]["requests"]["storage"]
    claim["spec"]["resources"]["requests"]["storage"] = "1Gi"
    return cluster.api.request("POST", f"/api/v1/namespaces/{cluster.ns}/persistentvolumeclaims", claim), needed


def storage(claim: dict) -> str:
    return claim["spec"]["resources"]["requests"]["storage"]


def test_a_claim_too_small_that_cannot_be_expanded_is_reported_and_nothing_starts(operator, cluster,  # noqa: F811
                                                                                  create_nodes):  # fmt: skip
    """Unbound (a real API server answers 422: only a bound claim's request may change): status.cache
    says by how much and what to do, one Warning Event, no fill and no model pods; the remedy works."""
    create_nodes.from_fixture("gke-l4")
    operator()
    small, needed = create_smaller_claim(cluster, PVC)
    name = small["metadata"]["name"]
    cluster.create("chat", {"cache": PVC})
    cluster.wait(lambda: cache_status(cluster, "chat").get("state") == "TooSmall", "the claim reported too small")
    gd = cluster.gd("chat")
    stalled = condition(gd, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "CacheClaimTooSmall")
    assert gd["status"]["phase"] == "Degraded"
    message = gd["status"]["cache"]["message"]
    assert f"{name} requests 1Gi" in message and f"now needs {needed}" in message
    assert "Only a bound claim can be expanded" in message and f"pvc/{name} job/{name}" in message
    assert cluster.deployment("chat") is None and not jobs(cluster)  # nothing fills it, no model pod starts on it
    (live,) = claims(cluster)
    assert storage(live) == "1Gi" and owners(live) == {"chat"}
    cluster.wait(lambda: any(e["reason"] == "CacheClaimTooSmall" for e in cluster.events("chat")), "a warning Event")

    # What the message says to do: delete it; the operator creates it at the size needed, and fills it.
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/persistentvolumeclaims/{name}")
    cluster.wait(lambda: (c := claims(cluster)) and storage(c[0]) == needed and jobs(cluster),
                 "the claim created again at its size, and its loader Job", 30)  # fmt: skip
    cluster.wait(lambda: cache_status(cluster, "chat").get("state") == "Filling", "filling")
    assert [e["reason"] for e in cluster.events("chat")].count("CacheClaimTooSmall") == 1


def test_a_bound_claim_of_an_expandable_class_is_expanded(operator, cluster, create_nodes, kube_api):  # noqa: F811
    """A bound claim whose StorageClass allows expansion: the operator raises its request to what the
    checkpoint needs now (the resizer does the rest), and the fill goes on."""
    storage_class = f"expandable-{cluster.ns}"  # cluster-scoped: one per test
    kube_api.request("POST", "/apis/storage.k8s.io/v1/storageclasses", {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": storage_class},
        "provisioner": "volumes.example.gemma.dev", "allowVolumeExpansion": True})  # fmt: skip
    volume = None
    try:
        spec = {"type": "pvc", "storageClassName": storage_class}
        small, needed = create_smaller_claim(cluster, spec)
        _, volume = kube_api.bind_claim(cluster.ns, small["metadata"]["name"])
        create_nodes.from_fixture("gke-l4")
        operator()
        cluster.create("chat", {"cache": spec})
        cluster.wait(lambda: (c := claims(cluster)) and storage(c[0]) == needed, "the claim expanded", 30)
        cluster.wait(lambda: cache_status(cluster, "chat").get("state") == "Filling" and jobs(cluster), "filling")
        assert not any(e["reason"] == "CacheClaimTooSmall" for e in cluster.events("chat"))
    finally:
        if volume:
            kube_api.request("DELETE", f"/api/v1/persistentvolumes/{volume}")
        kube_api.request("DELETE", f"/apis/storage.k8s.io/v1/storageclasses/{storage_class}")
