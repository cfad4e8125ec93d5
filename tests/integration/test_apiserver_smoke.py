"""The API-server fixtures work, and the emulator behaves like kube-apiserver where we rely on it.

Every test runs on each tier (emulator always; envtest when real binaries are configured), so
on a real server these same assertions check the emulator's semantics against the real thing.
"""

from __future__ import annotations

import json
import time

import kubernetes
import pytest
import smoke_handlers

GD = "/apis/gemma.dev/v1alpha1/namespaces/{ns}/gemmadeployments"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"


def gemma(name: str, **spec) -> dict:
    return {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
            "metadata": {"name": name}, "spec": spec}


def deployment(name: str, image: str = "registry.example/vllm:1.0", labels: dict | None = None) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "server", "image": image,
                                         "ports": [{"name": "http", "containerPort": 8000}]}]},
            },
        },
    }


def api_error(excinfo) -> dict:
    return json.loads(excinfo.value.body)


# --- discovery and metadata --------------------------------------------------------------------


def test_discovery_names_core_v1_and_the_crd(kube_api):
    assert kube_api.request("GET", "/api")["versions"] == ["v1"]
    assert kube_api.request("GET", "/api/v1")["groupVersion"] == "v1"
    resources = {r["name"]: r for r in kube_api.request("GET", "/apis/gemma.dev/v1alpha1")["resources"]}
    assert resources["gemmadeployments"]["namespaced"] is True
    assert resources["gemmadeployments"]["kind"] == "GemmaDeployment"
    assert "gemmadeployments/status" in resources
    groups = {g["name"] for g in kube_api.request("GET", "/apis")["groups"]}
    assert {"apps", "events.k8s.io", "coordination.k8s.io", "gemma.dev"} <= groups


def test_official_client_lists_namespaces_and_nodes(kube, namespace):
    core = kubernetes.client.CoreV1Api(kube)
    assert namespace in [ns.metadata.name for ns in core.list_namespace().items]
    assert core.list_node().kind == "NodeList"


def test_create_fills_server_fields_and_takes_namespace_from_url(kube_api, namespace):
    created = kube_api.request("POST", GD.format(ns=namespace), gemma("a"))
    meta = created["metadata"]
    assert meta["namespace"] == namespace
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert meta["generation"] == 1
    assert created["spec"]["replicas"] == 1  # defaulted from the CRD schema
    named = kube_api.request("POST", CONFIGMAPS.format(ns=namespace),
                             {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "cm-"}})
    assert named["metadata"]["name"].startswith("cm-") and len(named["metadata"]["name"]) == 8


def test_create_in_a_missing_namespace_is_not_found(kube_api):
    with pytest.raises(kubernetes.client.ApiException) as excinfo:
        kube_api.request("POST", CONFIGMAPS.format(ns="no-such-namespace"),
                         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
    assert excinfo.value.status == 404


def test_invalid_spec_is_refused_by_the_crd_schema(kube_api, namespace):
    with pytest.raises(kubernetes.client.ApiException) as excinfo:
        kube_api.request("POST", GD.format(ns=namespace), gemma("bad", replicas="many"))
    assert excinfo.value.status == 422
    assert "spec.replicas" in api_error(excinfo)["message"]


def test_generation_follows_spec_only_and_status_is_a_subresource(kube_api, namespace):
    url = GD.format(ns=namespace) + "/g"
    first = kube_api.request("POST", GD.format(ns=namespace), gemma("g"))
    labelled = kube_api.request("PATCH", url, {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Hacked"}},
                                content_type=MERGE)
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert "status" not in labelled  # the main resource ignores status
    status = kube_api.request("PATCH", url + "/status", {"spec": {"replicas": 5}, "status": {"phase": "Ready"}},
                              content_type=MERGE)
    assert status["status"]["phase"] == "Ready" and status["spec"]["replicas"] == 1  # /status ignores spec
    assert status["metadata"]["generation"] == 1
    bumped = kube_api.request("PATCH", url, {"spec": {"replicas": 2}}, content_type=MERGE)
    assert bumped["metadata"]["generation"] == 2 and bumped["status"]["phase"] == "Ready"


def test_stale_resource_version_is_a_conflict(kube_api, namespace):
    created = kube_api.request("POST", GD.format(ns=namespace), gemma("c"))
    url = GD.format(ns=namespace) + "/c"
    kube_api.request("PATCH", url, {"spec": {"replicas": 2}}, content_type=MERGE)
    stale = dict(created, spec={"replicas": 3})
    with pytest.raises(kubernetes.client.ApiException) as excinfo:
        kube_api.request("PUT", url, stale)
    assert excinfo.value.status == 409


def test_a_write_that_changes_nothing_keeps_the_resource_version(kube_api, namespace):
    url = GD.format(ns=namespace) + "/n"
    kube_api.request("POST", GD.format(ns=namespace), gemma("n", replicas=2))
    before = kube_api.request("GET", url)["metadata"]["resourceVersion"]
    after = kube_api.request("PATCH", url, {"spec": {"replicas": 2}}, content_type=MERGE)
    assert after["metadata"]["resourceVersion"] == before


# --- server-side apply ---------------------------------------------------------------------------


def _apply(kube_api, namespace, body, *, manager="gemma-operator", force=True):
    query = {"fieldManager": manager}
    if force:
        query["force"] = "true"
    return kube_api.request("PATCH", DEPLOYMENTS.format(ns=namespace) + "/" + body["metadata"]["name"],
                            body, query=query, content_type=APPLY)


def test_apply_creates_then_a_repeat_is_a_no_op(kube_api, namespace):
    created = _apply(kube_api, namespace, deployment("web"))
    managers = {(m["manager"], m["operation"]) for m in created["metadata"]["managedFields"]}
    assert ("gemma-operator", "Apply") in managers
    assert created["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    url = DEPLOYMENTS.format(ns=namespace) + "/web"
    # The repeat answers with the stored version. With kube-controller-manager, the Deployment
    # controller writes status meanwhile (new resourceVersions that are not the apply's): compare
    # with a read made just before the repeat, a few times, once the controller has caught up.
    for _ in range(5):
        current = kube_api.request("GET", url)
        again = _apply(kube_api, namespace, deployment("web"))
        if again["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]:
            break
        time.sleep(0.5)
    assert again["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"], "every repeat wrote"
    assert again["metadata"]["generation"] == created["metadata"]["generation"]
    if kube_api.writes is not None:
        writes = kube_api.writes
        _apply(kube_api, namespace, deployment("web"))
        new_writes = kube_api.writes - writes
        assert new_writes[("apply", "deployments")] == 0, new_writes  # counted as a request, not as a write


def _upgrade_ownership(kube_api, url) -> None:
    """As the operator does (ownership.upgrade), from managedFields as its index keeps them; a 422 (a
    newer version: the Deployment controller writes too) reads it again."""
    from gemma_operator import ownership

    for _ in range(5):
        meta = kube_api.request("GET", url)["metadata"]
        entries = ownership.index_metadata(meta)["managedFields"]
        patch = ownership.upgrade(entries, meta["resourceVersion"])
        assert patch, entries
        try:
            kube_api.request("PATCH", url, list(patch), query={"fieldManager": "gemma-operator"},
                             content_type="application/json-patch+json")
            return
        except kubernetes.client.ApiException as exc:
            assert exc.status == 422, exc
    raise AssertionError("the upgrade kept failing its test ops")


@pytest.mark.parametrize("upgraded", [False, True], ids=["as-created", "upgraded"])
def test_a_created_objects_fields_are_dropped_by_a_later_apply_only_once_its_ownership_is_upgraded(
        kube_api, namespace, upgraded):
    """A create's fields belong to its manager's Update entry, which a later apply by the same
    manager name does not replace: a label the apply stops sending stays, unless ownership.upgrade's
    JSON patch made that entry the Apply entry first (what the operator relies on; see ownership.py)."""
    from gemma_operator import ownership

    url = DEPLOYMENTS.format(ns=namespace) + "/web"
    created = kube_api.request("POST", DEPLOYMENTS.format(ns=namespace),
                               deployment("web", labels={"app": "web", "extra": "1"}),
                               query={"fieldManager": "gemma-operator"})
    ours = [(m["manager"], m["operation"]) for m in created["metadata"]["managedFields"]]
    assert ("gemma-operator", "Update") in ours and ("gemma-operator", "Apply") not in ours
    if upgraded:
        _upgrade_ownership(kube_api, url)
        after = kube_api.request("GET", url)
        ours = [(m["manager"], m["operation"]) for m in after["metadata"]["managedFields"]
                if m["manager"] == "gemma-operator"]
        assert ours == [("gemma-operator", "Apply")]
        assert ownership.index_metadata(after["metadata"]).get("managedFields") is None  # nothing left to upgrade
    applied = _apply(kube_api, namespace, deployment("web"))
    assert ("extra" not in applied["metadata"]["labels"]) is upgraded, applied["metadata"]["labels"]
    if not upgraded:  # both entries now: the Apply entry takes the union (the index keeps our two whole)
        _upgrade_ownership(kube_api, url)
        again = _apply(kube_api, namespace, deployment("web"))
        assert "extra" not in again["metadata"]["labels"], again["metadata"]["labels"]


def test_apply_conflicts_with_a_hand_edit_until_forced(kube_api, namespace):
    _apply(kube_api, namespace, deployment("web"))
    url = DEPLOYMENTS.format(ns=namespace) + "/web"
    edit = {"spec": {"template": {"spec": {"containers": [{"name": "server", "image": "evil:1"}]}}}}
    kube_api.request("PATCH", url, edit, query={"fieldManager": "kubectl-edit"},
                     content_type="application/strategic-merge-patch+json")
    with pytest.raises(kubernetes.client.ApiException) as excinfo:
        _apply(kube_api, namespace, deployment("web"), force=False)
    assert excinfo.value.status == 409
    assert "kubectl-edit" in api_error(excinfo)["message"]
    reverted = _apply(kube_api, namespace, deployment("web"))
    assert reverted["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/vllm:1.0"
    assert reverted["metadata"]["generation"] == 3


def test_deployment_readiness_can_be_driven(kube_api, namespace):
    _apply(kube_api, namespace, deployment("web"))
    ready = kube_api.set_deployment_ready(namespace, "web")
    assert ready["status"]["readyReplicas"] == 1
    assert kube_api.set_deployment_ready(namespace, "web", ready=0)["status"].get("readyReplicas", 0) == 0


def test_apply_removes_fields_the_manager_stopped_applying(kube_api, namespace):
    _apply(kube_api, namespace, deployment("web", labels={"app": "web", "tier": "llm"}))
    trimmed = _apply(kube_api, namespace, deployment("web", labels={"app": "web"}))
    assert trimmed["metadata"]["labels"] == {"app": "web"}


def test_apply_that_fills_an_empty_map_it_owned_keeps_the_new_field(kube_api, namespace):
    """`emptyDir: {}`, then `emptyDir: {sizeLimit: ...}` from the same manager: the server removes
    what the manager stopped applying, then adds back what it still owns, so the map stays."""
    def with_scratch(scratch: dict) -> dict:
        body = deployment("web")
        pod = body["spec"]["template"]["spec"]
        pod["volumes"] = [{"name": "models", "emptyDir": scratch}]
        pod["containers"][0]["volumeMounts"] = [{"name": "models", "mountPath": "/models"}]
        return body

    _apply(kube_api, namespace, with_scratch({}))
    filled = _apply(kube_api, namespace, with_scratch({"sizeLimit": "13Gi"}))
    (volume,) = filled["spec"]["template"]["spec"]["volumes"]
    assert (volume["name"], volume.get("emptyDir")) == ("models", {"sizeLimit": "13Gi"})


# --- lists, watches, deletion ---------------------------------------------------------------------


def test_lists_have_a_kind_and_honour_label_selectors(kube_api, namespace):
    for name, tier in (("a", "llm"), ("b", "web")):
        kube_api.request("POST", CONFIGMAPS.format(ns=namespace), {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"tier": tier}}})
    listed = kube_api.request("GET", CONFIGMAPS.format(ns=namespace), query={"labelSelector": "tier=llm"})
    assert listed["kind"] == "ConfigMapList"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    both = kube_api.request("GET", CONFIGMAPS.format(ns=namespace), query={"labelSelector": "tier in (llm,web)"})
    assert len(both["items"]) == 2


def test_watch_resumes_from_a_resource_version(kube_api, namespace):
    url = CONFIGMAPS.format(ns=namespace)
    since = kube_api.request("GET", url)["metadata"]["resourceVersion"]
    kube_api.request("POST", url, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w"}})
    kube_api.request("PATCH", url + "/w", {"data": {"k": "v"}}, content_type=MERGE)
    events = kube_api.watch(url, query={"resourceVersion": since})
    # Only the test's own: the controller-manager publishes kube-root-ca.crt in every namespace,
    # at a moment of its choosing.
    ours = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["object"]["metadata"]["name"] == "w"]
    assert ours == [("ADDED", "w"), ("MODIFIED", "w")]
    assert int(events[-1]["object"]["metadata"]["resourceVersion"]) > int(since)


def test_every_namespace_gets_the_root_ca_configmap(kube_api, namespace):
    """kube-controller-manager publishes kube-root-ca.crt in every namespace; the emulator does
    too, so a test that assumes an empty namespace fails on both."""
    if kube_api.emulator is None and not kube_api.controller_manager:
        pytest.skip("kube-root-ca.crt is published by kube-controller-manager, which is not running")
    path = CONFIGMAPS.format(ns=namespace) + "/kube-root-ca.crt"
    published = kube_api.wait_for(lambda: kube_api.request("GET", path), timeout=20, message="kube-root-ca.crt")
    assert "-----BEGIN CERTIFICATE-----" in published["data"]["ca.crt"]


def test_deleting_an_owner_collects_its_dependents(kube_api, namespace):
    if kube_api.kind != "emulator" and not kube_api.controller_manager:
        pytest.skip("garbage collection needs kube-controller-manager on a real server")
    owner = kube_api.request("POST", GD.format(ns=namespace), gemma("owner"))
    ref = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "name": "owner",
           "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    kube_api.request("POST", CONFIGMAPS.format(ns=namespace), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", "ownerReferences": [ref]}})
    kube_api.request("DELETE", GD.format(ns=namespace) + "/owner")

    def gone() -> bool:
        try:
            kube_api.request("GET", CONFIGMAPS.format(ns=namespace) + "/child")
        except kubernetes.client.ApiException as e:
            return e.status == 404
        return False

    kube_api.wait_for(gone, timeout=20, message="the dependent ConfigMap to be collected")


def test_nodes_are_created_with_status(kube_api, create_nodes):
    names = create_nodes.from_fixture("gke-l4")
    node = kube_api.request("GET", f"/api/v1/nodes/{names[-1]}")
    assert node["status"]["allocatable"]
    assert node["metadata"]["labels"]["cloud.google.com/gke-nodepool"]


# --- emulator-only instruments --------------------------------------------------------------------


def test_request_counts_and_fault_injection(kube_api, namespace):
    if kube_api.emulator is None:
        pytest.skip("request counts and fault injection are emulator features")
    url = CONFIGMAPS.format(ns=namespace)
    before = kube_api.requests
    kube_api.request("POST", url, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "f"}})
    fault = kube_api.inject(verb="get", resource="configmaps", namespace=namespace, status=503)
    with pytest.raises(kubernetes.client.ApiException) as excinfo:
        kube_api.request("GET", url + "/f")
    assert excinfo.value.status == 503 and fault.hits == 1
    # With Retry-After, the official client retries a GET by itself (client-go semantics).
    throttled = kube_api.inject(verb="get", resource="configmaps", status=429, retry_after=0)
    assert kube_api.request("GET", url + "/f")["metadata"]["name"] == "f"
    assert throttled.hits == 1
    delta = kube_api.requests - before
    assert delta[("create", "configmaps")] == 1 and delta[("get", "configmaps")] == 3


# --- kopf end to end --------------------------------------------------------------------------------


def test_kopf_runs_handlers_against_the_server(kube_api, namespace, run_operator):
    run_operator(smoke_handlers.register)
    url = GD.format(ns=namespace) + "/smoke"
    kube_api.request("POST", GD.format(ns=namespace), gemma("smoke"))

    def status_at(generation: int):
        obj = kube_api.request("GET", url)
        status = obj.get("status") or {}
        return obj if status.get("observedGeneration") == generation else None

    first = kube_api.wait_for(lambda: status_at(1), timeout=8, message="the smoke handler's status")
    assert first["status"]["phase"] == "Planning"
    kube_api.request("PATCH", url, {"spec": {"replicas": 2}}, content_type=MERGE)
    kube_api.wait_for(lambda: status_at(2), timeout=8, message="the smoke handler to see generation 2")


def test_apply_replacing_a_list_item_leaves_no_residue(kube_api, namespace):
    _apply(kube_api, namespace, deployment("web"))
    switched = deployment("web")
    switched["spec"]["template"]["spec"]["containers"] = [
        {"name": "llama", "image": "registry.example/llama:1", "command": ["/app/llama-server"]}]
    result = _apply(kube_api, namespace, switched)
    containers = result["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["llama"]
    assert containers[0]["command"] == ["/app/llama-server"]


def test_apply_puts_a_new_list_item_where_it_was_applied(kube_api, namespace):
    """Server-side apply keeps the applied order of an associative list (structured-merge-diff's
    visitListItems): an env var added between two others lands between them, not at the end. The
    operator's drift check compares lists in order, so an emulator that appended it would see
    drift after every apply."""
    def with_env(*names: str) -> dict:
        body = deployment("web")
        body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": n, "value": "1"} for n in names]
        return body

    _apply(kube_api, namespace, with_env("HOME", "HF_HOME", "VLLM_NO_USAGE_STATS"))
    result = _apply(kube_api, namespace, with_env("HOME", "HF_HOME", "HF_XET_CHUNK_CACHE_SIZE_BYTES", "VLLM_NO_USAGE_STATS"))
    env = result["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["HOME", "HF_HOME", "HF_XET_CHUNK_CACHE_SIZE_BYTES", "VLLM_NO_USAGE_STATS"]
    # Reordered by the applier: the applied order wins.
    result = _apply(kube_api, namespace, with_env("VLLM_NO_USAGE_STATS", "HOME", "HF_HOME"))
    env = result["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e["name"] for e in env] == ["VLLM_NO_USAGE_STATS", "HOME", "HF_HOME"]


def test_emulator_collects_a_dependent_created_after_its_owner_is_gone(kube_api, namespace):
    if kube_api.emulator is None:
        pytest.skip("on a real server kube-controller-manager's garbage collector does this")
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "00000000-0000-4000-8000-00000000dead",
           "controller": True}  # fmt: skip
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orphan", "ownerReferences": [ref]},
            "spec": {"ports": [{"port": 80}]}}  # fmt: skip
    kube_api.request("POST", f"/api/v1/namespaces/{namespace}/services", body)
    with pytest.raises(kubernetes.client.ApiException) as info:
        kube_api.request("GET", f"/api/v1/namespaces/{namespace}/services/orphan")
    assert info.value.status == 404


def test_a_claims_request_grows_only_when_bound_and_its_class_allows_it(kube_api, namespace):
    """What the operator's claim expansion meets (kube.expand_claim): 422 on an unbound claim
    (validation: its spec is immutable), 403 on a bound one whose StorageClass does not allow
    expansion (the PersistentVolumeClaimResize admission plugin), never a smaller request."""
    claims = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
    for name in ("unbound", "bound"):
        kube_api.request("POST", claims, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": f"none-{namespace}",
                     "resources": {"requests": {"storage": "1Gi"}}}})  # fmt: skip
    grow = {"spec": {"resources": {"requests": {"storage": "2Gi"}}}}
    with pytest.raises(kubernetes.client.ApiException) as excinfo:
        kube_api.request("PATCH", f"{claims}/unbound", grow, content_type=MERGE)
    assert excinfo.value.status == 422 and "immutable" in excinfo.value.body
    _, volume = kube_api.bind_claim(namespace, "bound")
    try:
        with pytest.raises(kubernetes.client.ApiException) as excinfo:
            kube_api.request("PATCH", f"{claims}/bound", grow, content_type=MERGE)
        assert excinfo.value.status == 403 and "must support resize" in excinfo.value.body
        with pytest.raises(kubernetes.client.ApiException) as excinfo:
            kube_api.request("PATCH", f"{claims}/bound", {"spec": {"resources": {"requests": {"storage": "512Mi"}}}},
                             content_type=MERGE)  # fmt: skip
        assert excinfo.value.status == 422
        # The same size in other units is no change.
        kube_api.request("PATCH", f"{claims}/bound", {"spec": {"resources": {"requests": {"storage": "1024Mi"}}}},
                         content_type=MERGE)  # fmt: skip
    finally:
        kube_api.request("DELETE", f"/api/v1/persistentvolumes/{volume}")
