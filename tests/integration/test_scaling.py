"""Optional children and who owns what, through kopf and the real handlers.

* the PodDisruptionBudget appears with two replicas and is deleted at one;
* with autoscaling on, the Deployment's replicas are the autoscaler's (a change it makes stays),
  with it off again the operator's; the HPA is deleted;
* the HPA's conditions reach the resource's status;
* an operator upgrade keeps the previous release's pod template and says UpdateAvailable; after
  the opt-in, exactly one rollout.

On a real server (envtest with kube-controller-manager) the HPA controller writes the HPA's
status itself (no custom metrics API there: ScalingActive=False); on the emulator the test
writes what that controller would.
"""

from __future__ import annotations

import copy
import pathlib
import time

import pytest
import yaml

from gemma_operator import render as render_mod
from tests.integration.test_operator import Cluster, condition, operator  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

RELEASED = pathlib.Path(__file__).parent / "golden-children" / "l4-default.yaml"
QUEUE = {"minReplicas": 1, "maxReplicas": 4, "metric": "queue", "target": 4, "provider": "hpa"}


@pytest.fixture
def cluster(kube_api, namespace):
    return Scaling(kube_api, namespace)


class Scaling(Cluster):
    def pdb(self, name):
        return self.get(f"/apis/policy/v1/namespaces/{self.ns}/poddisruptionbudgets/{name}")

    def hpa(self, name):
        return self.get(f"/apis/autoscaling/v2/namespaces/{self.ns}/horizontalpodautoscalers/{name}")

    def status(self, name):
        return self.gd(name).get("status") or {}


def test_the_pdb_appears_and_disappears_with_the_replica_count(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"replicas": 2})
    budget = cluster.wait(lambda: cluster.pdb("chat"), "the PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == {"matchLabels": render_mod.selector_labels("chat")}
    (ref,) = budget["metadata"]["ownerReferences"]
    assert ref["kind"] == "GemmaDeployment" and ref["name"] == "chat" and ref["controller"] is True
    deployment = cluster.deployment("chat")
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    cluster.wait(lambda: condition(cluster.gd("chat"), "PodDisruptionBudget").get("status") == "True", "PDB condition")

    cluster.patch_spec("chat", {"replicas": 1})
    cluster.wait(lambda: cluster.pdb("chat") is None, "the PodDisruptionBudget deleted")
    cluster.wait(lambda: cluster.deployment("chat")["spec"]["strategy"]["type"] == "Recreate", "Recreate again")
    single = cluster.wait(lambda: (c := condition(cluster.gd("chat"), "PodDisruptionBudget")).get("status") == "False"
                          and c, "the single-replica condition")  # fmt: skip
    assert single["reason"] == "SingleReplica" and "node upgrade" in single["message"]
    cluster.patch_spec("chat", {"replicas": 3})
    cluster.wait(lambda: cluster.pdb("chat"), "the PodDisruptionBudget back")


def test_the_autoscaler_owns_the_replicas_while_autoscaling_is_on(operator, cluster, create_nodes, kube_api):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"replicas": 2})
    cluster.wait(lambda: (cluster.deployment("chat") or {}).get("spec", {}).get("replicas") == 2, "two replicas")
    cluster.patch_spec("chat", {"autoscaling": QUEUE})
    hpa = cluster.wait(lambda: cluster.hpa("chat"), "the HPA")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat"}
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm:num_requests_waiting"
    cluster.wait(lambda: cluster.pdb("chat") is None, "no PDB at minReplicas 1")
    # The autoscaler scales (on a real server through deployments/scale; a merge patch here).
    path = f"/apis/apps/v1/namespaces/{cluster.ns}/deployments/chat"
    kube_api.request("PATCH", path, {"spec": {"replicas": 3}}, content_type="application/merge-patch+json")
    if not kube_api.controller_manager:  # what the HPA controller would write
        kube_api.request("PATCH", f"/apis/autoscaling/v2/namespaces/{cluster.ns}/horizontalpodautoscalers/chat/status",
                         {"status": {"currentReplicas": 3, "conditions": [  # desiredReplicas stays 0: nothing computed
                             {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale",
                              "message": "the HPA controller was able to get the target's current scale",
                              "lastTransitionTime": "2026-11-29T21:00:00Z"},
                             {"type": "ScalingActive", "status": "False", "reason": "FailedGetPodsMetric",
                              "message": "the HPA was unable to compute the replica count: unable to get metric "
                                         "vllm:num_requests_waiting: no custom metrics API (custom.metrics.k8s.io) registered",
                              "lastTransitionTime": "2026-11-29T21:00:00Z"}]}},
                         content_type="application/merge-patch+json")  # fmt: skip
    try:  # kube-controller-manager's HPA controller first syncs a new HPA up to 15 s after its creation
        active = cluster.wait(lambda: (c := condition(cluster.gd("chat"), "ScalingActive")).get("status") == "False"
                              and c, "the HPA's ScalingActive=False in status", timeout=45)  # fmt: skip
    except TimeoutError as e:  # say which side is late: the HPA controller, or the operator
        raise AssertionError(f"{e}; HPA status: {cluster.hpa('chat').get('status')}; "
                             f"the resource: generation {cluster.gd('chat')['metadata']['generation']}, "
                             f"status {cluster.status('chat')}") from e
    assert active["reason"].startswith("FailedGet") and "metrics adapter" in active["message"]
    # The HPA computed no count (its status.desiredReplicas is 0): the replicas it last set stand.
    cluster.wait(lambda: cluster.status("chat").get("desiredReplicas") == 3, "desired replicas: the Deployment's")
    assert cluster.status("chat")["selector"] == "app.kubernetes.io/name=gemma-server,app.kubernetes.io/instance=chat"
    # Another spec change makes the operator apply the Deployment again: the autoscaler's count stays.
    cluster.patch_spec("chat", {"autoscaling": {**QUEUE, "target": 6}})
    cluster.wait(lambda: cluster.hpa("chat")["spec"]["metrics"][0]["pods"]["target"]["averageValue"] == "6", "HPA updated")
    cluster.wait(lambda: cluster.status("chat").get("observedGeneration") == cluster.gd("chat")["metadata"]["generation"],
                 "the change reconciled")  # fmt: skip
    assert cluster.deployment("chat")["spec"]["replicas"] == 3, "the operator reverted the autoscaler's replicas"

    # Off again: the operator owns the count (and says so by setting it), the HPA goes.
    cluster.patch_spec("chat", {"autoscaling": None, "replicas": 2})
    cluster.wait(lambda: cluster.hpa("chat") is None, "the HPA deleted")
    cluster.wait(lambda: cluster.deployment("chat")["spec"]["replicas"] == 2, "the operator's replicas")
    cluster.wait(lambda: not condition(cluster.gd("chat"), "ScalingActive"), "ScalingActive gone from status")


def _released_children(owner: dict) -> list[dict]:
    objects = [o for o in yaml.safe_load_all(RELEASED.read_text()) if o]
    for obj in objects:
        obj["metadata"]["namespace"] = owner["metadata"]["namespace"]
        obj["metadata"]["ownerReferences"][0]["uid"] = owner["metadata"]["uid"]
    return objects


def _previous_release(cluster, kube_api, create_nodes, image: str | None = None) -> dict:
    """What the previous release left: its children, applied by its field manager, and its status;
    returns the Deployment."""
    create_nodes.from_fixture("gke-l4")
    created = cluster.create("chat", {})
    from gemma_operator import catalog as catalog_mod
    from gemma_operator import inventory, planner
    from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec

    known = catalog_mod.load()
    nodes = yaml.safe_load((pathlib.Path(__file__).parents[1] / "fixtures/nodes/gke-l4.yaml").read_text())["items"]
    selection = planner.plan(GemmaDeploymentSpec(), inventory.pools(nodes, known), known).selection()
    if image:  # the previous release pinned another server image
        selection["image"] = image
    for obj in _released_children(created):
        if image and obj["kind"] == "Deployment":
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = image
        plural = "deployments" if obj["kind"] == "Deployment" else "services"
        base = "/apis/apps/v1" if obj["kind"] == "Deployment" else "/api/v1"
        kube_api.request("PATCH", f"{base}/namespaces/{cluster.ns}/{plural}/{obj['metadata']['name']}", obj,
                         query={"fieldManager": "gemma-operator", "force": "true"},
                         content_type="application/apply-patch+yaml")  # fmt: skip
    kube_api.request("PATCH", cluster.gd_path("chat") + "/status", {"status": {
        "observedGeneration": created["metadata"]["generation"], "phase": "Deploying", "selection": selection}},
        content_type="application/merge-patch+json")  # fmt: skip
    return cluster.deployment("chat")


def _assert_no_rollout(cluster, kube_api, before: dict, kept: dict) -> None:
    """Nothing restarted. Not the generation: the new operator's annotations (applied digest,
    template-for) bump a Deployment's generation on a real server, without a new ReplicaSet."""
    assert kept["metadata"]["generation"] <= before["metadata"]["generation"] + 1, "more than the annotations' write"
    if kube_api.controller_manager:  # the deployment controller has seen the write: still one ReplicaSet
        cluster.wait(lambda: cluster.deployment("chat").get("status", {}).get("observedGeneration", 0)
                     >= kept["metadata"]["generation"], "the deployment controller's sync")  # fmt: skip
        sets = cluster.get(f"/apis/apps/v1/namespaces/{cluster.ns}/replicasets")["items"]
        assert len(sets) == 1, [s["metadata"]["name"] for s in sets]


def test_an_operator_upgrade_keeps_the_released_template_until_the_opt_in(operator, cluster, create_nodes, kube_api):
    """The previous release's children are in the cluster, reconciled; this release renders the
    model container differently (terminationMessagePolicy: FallbackToLogsOnError, since issue 12):
    nothing restarts, UpdateAvailable says what would change, and after the opt-in exactly one
    rollout follows."""
    before = _previous_release(cluster, kube_api, create_nodes)

    operator()
    # The new operator has applied the Deployment once (its digest annotation is on it).
    kept = cluster.wait(lambda: (d := cluster.deployment("chat"))["metadata"].get("annotations", {})
                        .get("gemma.dev/applied-digest") and d, "the new operator's apply", timeout=30)  # fmt: skip
    assert kept["spec"] == before["spec"], "the operator upgrade changed the Deployment's spec"
    _assert_no_rollout(cluster, kube_api, before, kept)
    update = cluster.wait(lambda: (c := condition(cluster.gd("chat"), "UpdateAvailable")).get("status") == "True" and c,
                          "UpdateAvailable", timeout=30)  # fmt: skip
    # The first change in rollout's fixed order (args, env, resources): a text-only Gemma 4 E2B now runs
    # --language-model-only (issue 18); env (hf_xet's chunk cache off) and resources changed too.
    assert "spec.containers[vllm].args" in update["message"] and "acceptOperatorUpdates" in update["message"]
    assert any(e["reason"] == "UpdateAvailable" for e in cluster.events("chat"))
    from gemma_operator import rollout  # here: the previous release has no such module

    assert cluster.deployment("chat")["metadata"]["annotations"][rollout.TEMPLATE_FOR]

    cluster.patch_spec("chat", {"acceptOperatorUpdates": True})
    rolled = cluster.wait(lambda: (d := cluster.deployment("chat"))["spec"]["template"] != before["spec"]["template"]
                          and d, "the rollout after the opt-in")  # fmt: skip
    assert rolled["spec"]["template"]["spec"]["containers"][0]["terminationMessagePolicy"] == "FallbackToLogsOnError"
    cluster.wait(lambda: not condition(cluster.gd("chat"), "UpdateAvailable"), "UpdateAvailable cleared")
    (why,) = [e["message"] for e in cluster.events("chat") if e["reason"] == "RollingOut"]
    assert why.startswith("Replacing the model pods; first change: spec.containers[vllm].args")
    settled = cluster.deployment("chat")["metadata"]["generation"]
    assert settled == kept["metadata"]["generation"] + 1, "more than one rollout"
    # A later reconcile (the Deployment becoming ready) rolls nothing more.
    kube_api.set_deployment_ready(cluster.ns, "chat")
    cluster.wait(lambda: cluster.phase("chat") == "Ready", "Ready", timeout=30)
    time.sleep(1.0)
    assert cluster.deployment("chat")["metadata"]["generation"] == settled
    assert copy.deepcopy(cluster.deployment("chat")["spec"]["template"]) == rolled["spec"]["template"]


def test_an_upgrade_that_pins_a_newer_server_image_restarts_nothing(operator, cluster, create_nodes, kube_api):
    """A release whose catalog pins a newer vLLM image renders the same choice for the same spec:
    the pods keep the image they run, the selection says so, and UpdateAvailable names the new one."""
    older = "vllm/vllm-openai:v0.31.0-cu129"
    before = _previous_release(cluster, kube_api, create_nodes, image=older)
    operator()
    update = cluster.wait(lambda: (c := condition(cluster.gd("chat"), "UpdateAvailable")).get("status") == "True" and c,
                          "UpdateAvailable", timeout=30)  # fmt: skip
    assert f"spec.containers[vllm].image: \"{older}\" ->" in update["message"], update["message"]
    kept = cluster.deployment("chat")
    assert kept["spec"] == before["spec"], "the upgrade changed the Deployment's spec"
    _assert_no_rollout(cluster, kube_api, before, kept)
    assert cluster.status("chat")["selection"]["image"] == older, "the selection names an image that does not run"
