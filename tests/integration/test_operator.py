"""The operator loop: kopf + the real handlers against an API server (emulator; envtest when available)."""

from __future__ import annotations

import collections
import json
import time

import kubernetes
import pytest
import yaml

from gemma_operator import metrics
from tests.conftest import NODES

GROUP_PATH = "/apis/gemma.dev/v1alpha1"


@pytest.fixture
def operator(run_operator, kube_api, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    monkeypatch.setenv(metrics.PORT_ENV, "0")

    def start():
        return run_operator("gemma_operator.handlers")

    return start


class Cluster:
    """Small verbs over the fixture's raw API access, named for what the tests do."""

    def __init__(self, api, namespace):
        self.api, self.ns = api, namespace

    def gd_path(self, name=""):
        return f"{GROUP_PATH}/namespaces/{self.ns}/gemmadeployments" + (f"/{name}" if name else "")

    def create(self, name, spec):
        body = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                "metadata": {"name": name, "namespace": self.ns}, "spec": spec}  # fmt: skip
        return self.api.request("POST", self.gd_path(), body)

    def gd(self, name):
        return self.api.request("GET", self.gd_path(name))

    def patch_spec(self, name, spec):
        return self.api.request("PATCH", self.gd_path(name), {"spec": spec}, content_type="application/merge-patch+json")

    def deployment(self, name):
        return self.get(f"/apis/apps/v1/namespaces/{self.ns}/deployments/{name}")

    def service(self, name):
        return self.get(f"/api/v1/namespaces/{self.ns}/services/{name}")

    def get(self, path):
        try:
            return self.api.request("GET", path)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def events(self, name):
        """Events on the GemmaDeployment: on a real cluster the Deployment of the same name has its own."""
        items = self.api.request("GET", f"/api/v1/namespaces/{self.ns}/events")["items"]
        return [e for e in items if (e.get("involvedObject") or {}).get("name") == name
                and e["involvedObject"].get("kind") == "GemmaDeployment"]

    def phase(self, name):
        return (self.gd(name).get("status") or {}).get("phase")

    def wait(self, predicate, message, timeout=15.0):
        return self.api.wait_for(predicate, timeout=timeout, message=message)


@pytest.fixture
def cluster(kube_api, namespace):
    return Cluster(kube_api, namespace)


def gpu_nodes(fixture):
    """Only the accelerator nodes of a fixture (its CPU node shares a name with other fixtures')."""
    items = yaml.safe_load((NODES / f"{fixture}.yaml").read_text())["items"]
    return [n for n in items if "cloud.google.com/gke-accelerator" in n["metadata"]["labels"]]


def args_of(deployment):
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def condition(gd, type_):
    return next((c for c in (gd.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def test_create_gives_an_owned_deployment_a_service_and_an_explained_status(operator, cluster, create_nodes, capsys):
    create_nodes.from_fixture("gke-l4")
    operator()
    start = time.monotonic()
    created = cluster.create("chat", {})
    deployment = cluster.wait(lambda: cluster.deployment("chat"), "the Deployment")
    latency = time.monotonic() - start
    service = cluster.wait(lambda: cluster.service("chat"), "the Service")
    for child in (deployment, service):
        (ref,) = child["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
            "GemmaDeployment", "chat", created["metadata"]["uid"], True)
        managers = {m["manager"] for m in child["metadata"].get("managedFields") or []}
        assert "gemma-operator" in managers
    assert "google/gemma-4-E2B-it" in args_of(deployment)
    assert deployment["spec"]["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}

    gd = cluster.wait(lambda: (g := cluster.gd("chat")).get("status", {}).get("selection") and g, "status")
    st = gd["status"]
    assert st["phase"] == "Deploying"
    assert st["observedGeneration"] == gd["metadata"]["generation"]
    assert st["selection"]["accelerator"] == "nvidia-l4" and st["selection"]["runtime"] == "vllm"
    assert any(r.startswith("Quantization bf16") for r in st["selection"]["reasons"])
    assert st["endpoint"] == f"http://chat.{cluster.ns}.svc.cluster.local:8000/v1"
    assert condition(gd, "Ready")["status"] == "False" and condition(gd, "Progressing")["status"] == "True"
    assert condition(gd, "Stalled")["status"] == "False"
    # The first plan is in status.selection (and the Ready Event): a Planned Event says a plan changed.
    assert not any(e["reason"] == "Planned" for e in cluster.events("chat"))
    with capsys.disabled():
        print(f"\n[{cluster.api.kind}] CR create -> Deployment exists: {latency * 1000:.0f} ms")


def test_ready_follows_the_deployment(operator, cluster, create_nodes, kube_api):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: cluster.deployment("chat"), "the Deployment")
    kube_api.set_deployment_ready(cluster.ns, "chat", ready=1)
    cluster.wait(lambda: condition(cluster.gd("chat"), "Ready").get("status") == "True", "Ready=True")
    gd = cluster.gd("chat")
    assert gd["status"]["phase"] == "Ready" and gd["status"]["readyReplicas"] == 1
    cluster.wait(lambda: any(e["reason"] == "Ready" for e in cluster.events("chat")), "a Ready Event")
    kube_api.set_deployment_ready(cluster.ns, "chat", ready=0)
    cluster.wait(lambda: condition(cluster.gd("chat"), "Ready").get("status") == "False", "Ready=False again")


def test_spec_change_rolls_out_the_new_plan(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: cluster.deployment("chat"), "the Deployment")
    cluster.patch_spec("chat", {"maxModelLen": 8192})
    cluster.wait(lambda: "8192" in args_of(cluster.deployment("chat")), "--max-model-len 8192")
    gd = cluster.wait(
        lambda: (g := cluster.gd("chat"))["status"].get("observedGeneration") == g["metadata"]["generation"] and g,
        "observedGeneration to catch up",
    )
    assert gd["status"]["selection"]["maxModelLen"] == 8192


def env_names(deployment):
    return {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0].get("env") or []}


def test_a_child_created_on_first_sight_drops_what_a_newer_rendering_drops(operator, cluster, create_nodes):
    """First sight creates the children (a POST: its fields are our manager's Update entry, not an
    Apply entry); the next change upgrades that entry before applying (ownership.py), so an env var
    the spec no longer asks for is removed, where an apply beside the Update entry would keep it."""
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"env": [{"name": "EXTRA_SETTING", "value": "1"}]})
    first = cluster.wait(lambda: (d := cluster.deployment("chat")) and "EXTRA_SETTING" in env_names(d) and d,
                         "the Deployment with the extra env var")  # fmt: skip
    ours = lambda d: sorted(m["operation"] for m in d["metadata"]["managedFields"] if m["manager"] == "gemma-operator")  # noqa: E731
    assert ours(first) == ["Update"], first["metadata"]["managedFields"]  # created, not applied
    assert ours(cluster.wait(lambda: cluster.service("chat"), "the Service")) == ["Update"]
    cluster.patch_spec("chat", {"env": None})
    dropped = cluster.wait(lambda: (d := cluster.deployment("chat")) and "EXTRA_SETTING" not in env_names(d) and d,
                           "the env var gone from the Deployment")  # fmt: skip
    assert ours(dropped) == ["Apply"], dropped["metadata"]["managedFields"]
    assert env_names(dropped) == env_names(first) - {"EXTRA_SETTING"}


def test_hand_edits_of_children_are_reverted(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    original = cluster.wait(lambda: cluster.deployment("chat"), "the Deployment")
    image = original["spec"]["template"]["spec"]["containers"][0]["image"]
    path = f"/apis/apps/v1/namespaces/{cluster.ns}/deployments/chat"
    edit = {"spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "vllm", "image": "evil:latest"}]}}}}
    cluster.api.request("PATCH", path, edit, content_type="application/strategic-merge-patch+json")
    cluster.wait(
        lambda: (d := cluster.deployment("chat"))["spec"]["replicas"] == 1
        and d["spec"]["template"]["spec"]["containers"][0]["image"] == image,
        "the hand edit to be reverted",
    )
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/services/chat")
    cluster.wait(lambda: cluster.service("chat"), "the deleted Service to come back")


def test_no_fit_stalls_with_figures_and_plans_when_a_pool_appears(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-cpu-only")
    operator()
    # An A10G: no such node and no GKE shape to scale up (a GKE GPU would plan on its standard shape).
    cluster.create("chat", {"accelerator": "nvidia-a10g"})
    cluster.wait(lambda: cluster.phase("chat") == "NoFit", "phase NoFit")
    gd = cluster.gd("chat")
    stalled = condition(gd, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "NoFit"
    assert "No nvidia-a10g nodes" in stalled["message"] and "The cluster has:" in stalled["message"]
    assert any(e["reason"] == "NoFit" and e["type"] == "Warning" for e in cluster.events("chat"))
    assert cluster.deployment("chat") is None
    items = yaml.safe_load((NODES / "gfd-a10g.yaml").read_text())["items"]
    create_nodes([n for n in items if "nvidia.com/gpu.product" in n["metadata"]["labels"]])
    cluster.wait(lambda: cluster.deployment("chat"), "a Deployment once an A10G pool appears")
    cluster.wait(lambda: cluster.phase("chat") == "Deploying", "phase Deploying")


def test_invalid_spec_is_refused_without_applying_anything(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"model": {"family": "gemma99"}})
    cluster.wait(lambda: cluster.phase("chat") == "Invalid", "phase Invalid")
    stalled = condition(cluster.gd("chat"), "Stalled")
    assert stalled["status"] == "True" and "spec.model.family: unknown family 'gemma99'" in stalled["message"]
    assert any(e["reason"] == "InvalidSpec" for e in cluster.events("chat"))
    assert cluster.deployment("chat") is None
    cluster.patch_spec("chat", {"model": {"family": "gemma3"}})
    cluster.wait(lambda: cluster.deployment("chat"), "a Deployment once the spec is fixed")


@pytest.mark.parametrize(
    ("spec", "cel"),
    [
        ({"replicas": -1}, False),
        ({"runtime": "tensorrt"}, False),
        ({"model": {"id": "not a repo"}}, False),
        ({"extraArgs": ["y" * 100_000]}, False),
        ({"env": [{"name": "HF_TOKEN", "value": "hf_literal"}]}, True),
        ({"extraArgs": ["--trust-remote-code"]}, True),
    ],
)
def test_schema_refuses_bad_specs_at_the_api(cluster, kube_api, spec, cel):
    with pytest.raises(kubernetes.client.ApiException) as info:
        cluster.create("bad", spec)
    assert info.value.status == 422


def ends_invalid_applying_nothing(cluster, spec, words):
    cluster.create("chat", spec)
    cluster.wait(lambda: cluster.phase("chat") == "Invalid", "phase Invalid")
    assert words in condition(cluster.gd("chat"), "Stalled")["message"]
    assert cluster.deployment("chat") is None


def test_what_the_schema_lets_through_ends_invalid(operator, cluster, create_nodes):
    """A spec the CRD accepts but the plan can't use: a variable the operator sets itself."""
    create_nodes.from_fixture("gke-l4")
    operator()
    ends_invalid_applying_nothing(cluster, {"env": [{"name": "HF_HOME", "value": "/tmp"}]},
                                  "spec.env: HF_HOME is set by the operator")  # fmt: skip


def test_a_literal_token_stored_before_the_cel_rule_still_ends_invalid(operator, cluster, create_nodes, kube_api,
                                                                        monkeypatch):  # fmt: skip
    """Defence in depth: a resource stored while the CRD lacked its CEL rule (an older CRD, or
    validation off) is refused by the operator too, and nothing is applied."""
    if kube_api.kind != "emulator":
        pytest.skip("a real API server can't be asked to skip its CEL rules")
    from kubeapi import schema  # the emulator's

    monkeypatch.setattr(schema, "CHECK_CEL", False)
    create_nodes.from_fixture("gke-l4")
    operator()
    ends_invalid_applying_nothing(cluster, {"env": [{"name": "HF_TOKEN", "value": "hf_literal"}]},
                                  "spec.env[0]: HF_TOKEN is never a literal")  # the CLI's plain words, not pydantic's
    assert "Value error" not in condition(cluster.gd("chat"), "Stalled")["message"]


def test_deleting_the_resource_leaves_no_orphans(operator, cluster, create_nodes, kube_api):
    if kube_api.kind == "envtest" and not kube_api.controller_manager:
        pytest.skip("garbage collection needs kube-controller-manager")
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: cluster.service("chat") and cluster.deployment("chat"), "the children")
    cluster.api.request("DELETE", cluster.gd_path("chat"))
    cluster.wait(lambda: cluster.deployment("chat") is None and cluster.service("chat") is None, "garbage collection")


def test_unrelated_nodes_do_not_move_a_serving_model(operator, cluster, create_nodes, kube_api):
    create_nodes.from_fixture("gke-cpu-only")
    operator()
    cluster.create("chat", {})
    before = cluster.wait(lambda: cluster.deployment("chat"), "the Deployment")
    cluster.wait(lambda: cluster.phase("chat") == "Deploying", "phase Deploying")
    # The model comes up: the Deployment controller writes its status (a new resourceVersion).
    kube_api.set_deployment_ready(cluster.ns, "chat")
    cluster.wait(lambda: cluster.phase("chat") == "Ready", "phase Ready")
    create_nodes(gpu_nodes("gke-l4"))  # a better pool appears; the running model stays
    time.sleep(2.5)
    after = cluster.deployment("chat")
    # Status writes change the resourceVersion; a move would change the spec (generation) and the pods.
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]
    assert cluster.gd("chat")["status"]["selection"]["accelerator"] == "cpu"


def test_losing_the_chosen_pool_replans(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-cpu-only")
    l4 = create_nodes(gpu_nodes("gke-l4"))
    operator()
    cluster.create("chat", {})
    cluster.wait(lambda: cluster.gd("chat").get("status", {}).get("selection", {}).get("accelerator") == "nvidia-l4",
                 "the L4 plan")  # fmt: skip
    for name in l4:
        create_nodes.delete(name)
    cluster.wait(lambda: "/app/llama-server" in cluster.deployment("chat")["spec"]["template"]["spec"]["containers"][0].get("command", ()),
                 "a move to llama.cpp on CPU")  # fmt: skip


def test_a_restart_with_nothing_changed_writes_nothing(operator, cluster, create_nodes, kube_api, capsys):
    create_nodes.from_fixture("gke-l4")
    first = operator()
    cluster.create("chat", {})
    cluster.wait(lambda: cluster.deployment("chat") and cluster.service("chat"), "the children")
    cluster.wait(lambda: cluster.phase("chat") == "Deploying", "a settled status")
    time.sleep(1.0)  # let the echoes of our own writes come back and settle
    # The Deployment controller writes the Deployment too (status, a revision annotation): what
    # the operator wrote there is the spec (generation) and its own managedFields entries.
    versions = lambda: (  # noqa: E731
        cluster.gd("chat")["metadata"]["resourceVersion"],
        (d := cluster.deployment("chat"))["metadata"]["generation"],
        [m for m in d["metadata"]["managedFields"] if m["manager"] == "gemma-operator"],
        cluster.service("chat")["metadata"]["resourceVersion"],
    )
    settled = versions()
    time.sleep(1.5)
    assert versions() == settled, "an idle operator wrote something"
    first.stop()
    before = kube_api.writes.copy() if kube_api.writes is not None else None
    resumes = metrics.RECONCILES.labels("resume", "Applied")._value.get()
    operator()
    cluster.wait(lambda: metrics.RECONCILES.labels("resume", "Applied")._value.get() > resumes, "the resume")
    time.sleep(1.0)
    assert versions() == settled, "the restart wrote to the resource or its children"
    if before is not None:  # the emulator also counts writes that changed something
        writes = {k: v - before.get(k, 0) for k, v in kube_api.writes.items() if v - before.get(k, 0) > 0}
        with capsys.disabled():
            print(f"\n[{kube_api.kind}] write requests during a restart with nothing changed: {writes or 0}")
        assert not writes


def planned_selection(kube_api, spec):
    """The selection the planner makes from the nodes the cluster has now (the pure path, no operator)."""
    from gemma_operator import catalog, inventory, planner
    from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec

    nodes = [inventory.essentials(n) for n in kube_api.request("GET", "/api/v1/nodes")["items"]]
    known = catalog.load()
    result = planner.plan(GemmaDeploymentSpec.model_validate(spec), inventory.pools(nodes, known), known)
    return result.selection()


def without_reasons(selection):
    return {k: v for k, v in selection.items() if k != "reasons"}


def test_a_pool_move_leaves_no_stale_keys_in_status_and_an_idle_operator_writes_nothing(operator, cluster,
                                                                                        create_nodes, kube_api):  # fmt: skip
    create_nodes.from_fixture("gke-cpu-only")
    l4 = create_nodes(gpu_nodes("gke-l4"))
    operator()
    cluster.create("chat", {})
    selection = lambda: cluster.gd("chat").get("status", {}).get("selection", {})  # noqa: E731
    cluster.wait(lambda: selection().get("accelerator") == "nvidia-l4", "the L4 plan")
    for name in l4:  # L4 -> CPU: vLLM on a GPU pool becomes llama.cpp on the CPU pool
        create_nodes.delete(name)
    cluster.wait(lambda: selection().get("accelerator") == "cpu", "the move to the CPU pool")
    moved = selection()
    assert "cloud.google.com/gke-accelerator" not in moved["nodeSelector"], moved["nodeSelector"]
    assert without_reasons(moved) == without_reasons(planned_selection(kube_api, {}))
    assert moved["nodeSelector"] == cluster.deployment("chat")["spec"]["template"]["spec"]["nodeSelector"]
    cpu = [n["metadata"]["name"] for n in kube_api.request("GET", "/api/v1/nodes")["items"]]
    create_nodes(gpu_nodes("gke-l4"))
    for name in cpu:  # CPU -> L4: the llama.cpp plan's modelFile must go
        create_nodes.delete(name)
    cluster.wait(lambda: selection().get("accelerator") == "nvidia-l4", "the move back to the L4 pool")
    back = selection()
    assert "modelFile" not in back
    assert without_reasons(back) == without_reasons(planned_selection(kube_api, {}))
    assert cluster.gd("chat")["status"]["phase"] == "Deploying"
    if kube_api.controller_manager:  # its status updates of the Deployment are not the operator's writes
        cluster.wait(lambda: (d := cluster.deployment("chat")).get("status", {}).get("observedGeneration")
                     == d["metadata"]["generation"], "the Deployment controller to observe the move")  # fmt: skip
    time.sleep(1.0)  # the echoes of the operator's own writes settle
    if kube_api.requests is not None:  # a reconcile with nothing changed sends no status patch at all
        sent = kube_api.requests[("patch", "gemmadeployments/status")]
        checks = metrics.RECONCILES.labels("child", "Applied")._value.get()
        cluster.api.request("PATCH", f"/api/v1/namespaces/{cluster.ns}/services/chat",
                            {"metadata": {"annotations": {"example.com/note": "a hand edit the operator does not own"}}},
                            content_type="application/merge-patch+json")  # fmt: skip
        cluster.wait(lambda: metrics.RECONCILES.labels("child", "Applied")._value.get() > checks, "the owner re-checked")
        assert kube_api.requests[("patch", "gemmadeployments/status")] == sent, "the status was patched again"
    if kube_api.writes is not None:
        before = kube_api.writes
        time.sleep(3.0)
        assert kube_api.writes - before == collections.Counter(), "an idle operator wrote"
    else:  # a real server: the Deployment controller may write the Deployment, never the resource
        version = cluster.gd("chat")["metadata"]["resourceVersion"]
        time.sleep(3.0)
        assert cluster.gd("chat")["metadata"]["resourceVersion"] == version


def test_the_status_subresource_is_validated_against_the_crd(cluster):
    """What made a refused first apply leave no status: `selection: {}` lacks the required fields.
    The emulator answers as kube-apiserver does (422, one cause per missing field)."""
    cluster.create("chat", {})
    with pytest.raises(kubernetes.client.ApiException) as info:
        cluster.api.request("PATCH", cluster.gd_path("chat") + "/status",
                            {"status": {"phase": "Degraded", "selection": {}}},
                            content_type="application/merge-patch+json")  # fmt: skip
    assert info.value.status == 422
    causes = {(c["field"], c["message"]) for c in json.loads(info.value.body)["details"]["causes"]}
    assert ("status.selection.modelId", "Required value") in causes
    assert cluster.gd("chat").get("status") in (None, {}), "a refused status write changed nothing"


def test_declared_capacity_plans_a_scale_up_and_edits_are_picked_up_without_a_restart(
        operator, cluster, create_nodes, monkeypatch, tmp_path):  # fmt: skip
    """Issue 12: a GKE pool at zero nodes, declared in the capacity file the chart mounts from a ConfigMap."""
    from gemma_operator import capacity, handlers

    nodes = yaml.safe_load((NODES / "gke-l4.yaml").read_text())["items"]
    create_nodes([n for n in nodes if "cloud.google.com/gke-accelerator" not in n["metadata"]["labels"]])
    path = tmp_path / "capacity.yaml"
    l4 = {"name": "l4-spot", "accelerator": "nvidia-l4", "machineType": "g2-standard-8", "maxNodes": 4, "spot": True}
    path.write_text(yaml.safe_dump({"pools": [l4]}))
    monkeypatch.setenv(capacity.ENV, str(path))
    monkeypatch.setenv(handlers.CAPACITY_POLL_ENV, "0.2")
    running = operator()
    cluster.create("chat", {})

    gd = cluster.wait(lambda: (g := cluster.gd("chat")).get("status", {}).get("selection") and g, "a selection")
    selection = gd["status"]["selection"]
    assert (selection["pool"], selection["capacity"], selection["accelerator"]) == ("l4-spot", "scale-up", "nvidia-l4")
    assert any(r.startswith("Capacity scale-up: the declared pool l4-spot") for r in selection["reasons"])
    pod = cluster.wait(lambda: cluster.deployment("chat"), "the Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4", "cloud.google.com/gke-spot": "true"}
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in pod["tolerations"]
    requests = pod["containers"][0]["resources"]["requests"]
    assert requests["nvidia.com/gpu"] == "1" and int(requests["cpu"]) <= 7 and int(requests["memory"].removesuffix("Gi")) <= 27

    # The pool turns on-demand: the same operator re-reads the file, and the pod no longer asks for Spot.
    path.write_text(yaml.safe_dump({"pools": [{**l4, "spot": False}]}))
    cluster.wait(lambda: "cloud.google.com/gke-spot" not in cluster.deployment("chat")["spec"]["template"]["spec"]["nodeSelector"],
                 "the Deployment without the Spot selector")  # fmt: skip
    # The pool is no longer declared: the resource re-plans on what is ready.
    path.write_text("pools: []\n")
    cluster.wait(lambda: (cluster.gd("chat")["status"]["selection"] or {}).get("capacity") == "ready", "capacity ready")
    selection = cluster.gd("chat")["status"]["selection"]
    assert (selection["pool"], selection["runtime"]) == ("cpu-e2-standard-4", "llamacpp")
    assert running.memo.declared == []  # the operator that started is the one that followed


def test_an_invalid_capacity_file_stops_the_start_naming_the_entry(kube_api, tmp_path):
    """Validated at start, like KubeAI's resource profiles: the operator exits with the entry and field."""
    import os
    import subprocess
    import sys

    from gemma_operator import capacity

    path = tmp_path / "capacity.yaml"
    path.write_text(yaml.safe_dump({"pools": [{"name": "l4", "accelerator": "nvidia-l4", "machineType": "g2-standard-7"}]}))
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig), metrics.PORT_ENV: "0", capacity.ENV: str(path)}
    done = subprocess.run([sys.executable, "-m", "gemma_operator", "run", "--standalone", "--log-format=plain"],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    assert "Invalid declared capacity" in done.stdout + done.stderr
    assert "pools[0] (l4).machineType: 'g2-standard-7' is not among the catalog's GKE machine shapes" in done.stdout + done.stderr
