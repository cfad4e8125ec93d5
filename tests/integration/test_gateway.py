"""spec.gateway through kopf and the real handlers: with the InferencePool and Gateway API CRDs
served, the pool, its endpoint picker and the route appear, owned by the resource, and go once
spec.gateway is removed; without them, the status names what is missing and nothing of the
gateway is applied. The CRDs are the published ones, read from ../shared/crds."""

from __future__ import annotations

import os
import pathlib

import kubernetes
import pytest

from gemma_operator import handlers
from tests.integration.test_faults import fast_resync  # noqa: F401  (fixture)
from tests.integration.test_operator import Cluster, condition, operator  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]
THIRD_PARTY_CRDS = pathlib.Path(os.environ.get("GEMMA_THIRD_PARTY_CRDS", ROOT.parent / "shared" / "crds"))
CRDS = {  # file -> CRD name
    "inference.networking.k8s.io_inferencepools.yaml": "inferencepools.inference.networking.k8s.io",
    "gateway.networking.k8s.io_httproutes.yaml": "httproutes.gateway.networking.k8s.io",
    "gateway.networking.k8s.io_gateways.yaml": "gateways.gateway.networking.k8s.io",
}
GATEWAY = {"parentRefs": [{"name": "inference-gateway", "namespace": "gateways"}]}
EPP = [("apps/v1", "deployments"), ("v1", "services"), ("v1", "serviceaccounts"), ("v1", "configmaps"),
       ("rbac.authorization.k8s.io/v1", "roles"), ("rbac.authorization.k8s.io/v1", "rolebindings")]  # fmt: skip
POOL = ("inference.networking.k8s.io/v1", "inferencepools")
ROUTE = ("gateway.networking.k8s.io/v1", "httproutes")


@pytest.fixture
def cluster(kube_api, namespace, monkeypatch):
    monkeypatch.setenv(handlers.DISCOVERY_ENV, "0")  # see the CRDs come and go at once
    remove_crds(kube_api)
    yield Cluster(kube_api, namespace)
    remove_crds(kube_api)


def remove_crds(api) -> None:
    for name in CRDS.values():
        try:
            api.request("DELETE", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise
    api.wait_for(lambda: all(_absent(api, n) for n in CRDS.values()), timeout=30, message="the gateway CRDs removed")


def _absent(api, name: str) -> bool:
    try:
        api.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    except kubernetes.client.ApiException as e:
        return e.status == 404
    return False


def apply_crds(api, tmp: pathlib.Path) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    for file in CRDS:
        source = THIRD_PARTY_CRDS / file
        if not source.exists():
            pytest.skip(f"{source} is missing (the third-party CRDs live in ../shared/crds)")
        (tmp / file).symlink_to(source)
    api.apply_crds(tmp)


def child(cluster: Cluster, api_version: str, plural: str, name: str):
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return cluster.get(f"{base}/namespaces/{cluster.ns}/{plural}/{name}")


def test_without_the_crds_the_status_names_what_is_missing(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"gateway": GATEWAY})
    missing = cluster.wait(lambda: (c := condition(cluster.gd("chat"), "Gateway")).get("reason") == "CRDsNotServed"
                           and c, "the Gateway condition")  # fmt: skip
    assert missing["status"] == "False"
    assert "InferencePool (inference.networking.k8s.io/v1)" in missing["message"]
    assert "HTTPRoute (gateway.networking.k8s.io/v1)" in missing["message"]
    assert cluster.deployment("chat") is not None  # the model serves through its Service meanwhile
    assert cluster.gd("chat")["status"]["endpoint"].startswith("http://chat.")
    for api_version, plural in EPP:
        assert child(cluster, api_version, plural, "chat-epp") is None, plural


def test_the_pool_picker_and_route_come_and_go_with_spec_gateway(operator, cluster, create_nodes, kube_api, tmp_path):
    apply_crds(kube_api, tmp_path / "crds")
    create_nodes.from_fixture("gke-l4")
    operator()
    created = cluster.create("chat", {"gateway": GATEWAY})
    route = cluster.wait(lambda: child(cluster, *ROUTE, "chat"), "the HTTPRoute", 30)
    pool = child(cluster, *POOL, "chat")
    assert pool["spec"]["endpointPickerRef"]["name"] == "chat-epp"
    assert pool["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "chat"
    assert route["spec"]["rules"][0]["backendRefs"][0]["kind"] == "InferencePool"
    assert route["spec"]["parentRefs"][0]["name"] == "inference-gateway"
    for api_version, plural in EPP:
        obj = child(cluster, api_version, plural, "chat-epp")
        assert obj is not None, plural
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == created["metadata"]["uid"] and ref["controller"] is True
    attached = cluster.wait(lambda: (c := condition(cluster.gd("chat"), "Gateway")).get("status") == "True" and c,
                            "the Gateway condition")  # fmt: skip
    assert attached["reason"] == "Attached"

    cluster.patch_spec("chat", {"gateway": None})
    cluster.wait(lambda: child(cluster, *ROUTE, "chat") is None and child(cluster, *POOL, "chat") is None,
                 "the route and pool deleted", 30)  # fmt: skip
    cluster.wait(lambda: all(child(cluster, a, p, "chat-epp") is None for a, p in EPP), "the picker deleted", 30)
    assert cluster.deployment("chat") is not None and cluster.service("chat") is not None
    cluster.wait(lambda: not condition(cluster.gd("chat"), "Gateway"), "the Gateway condition gone")


def test_the_crds_installed_later_bring_the_gateway_without_a_change_of_the_resource(operator, cluster, create_nodes,
                                                                                   kube_api, tmp_path):  # fmt: skip
    """Discovery follows while a resource has spec.gateway: the CRDs appearing requeue it (no edit of it)."""
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"gateway": GATEWAY})
    cluster.wait(lambda: condition(cluster.gd("chat"), "Gateway").get("reason") == "CRDsNotServed", "CRDsNotServed")
    apply_crds(kube_api, tmp_path / "crds")
    cluster.wait(lambda: child(cluster, *ROUTE, "chat") and child(cluster, *POOL, "chat"),
                 "the route and pool, once discovery shows their CRDs", 30)  # fmt: skip
    cluster.wait(lambda: condition(cluster.gd("chat"), "Gateway").get("reason") == "Attached", "Attached")


def test_hand_deletions_and_edits_of_the_unwatched_gateway_objects_are_repaired_on_the_resync(
        fast_resync, operator, cluster, create_nodes, kube_api, tmp_path):  # noqa: F811
    apply_crds(kube_api, tmp_path / "crds")
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("chat", {"gateway": GATEWAY})
    route = cluster.wait(lambda: child(cluster, *ROUTE, "chat"), "the HTTPRoute", 30)
    cluster.wait(lambda: child(cluster, "v1", "configmaps", "chat-epp"), "the picker's ConfigMap", 30)
    base = f"/apis/{POOL[0]}/namespaces/{cluster.ns}/{POOL[1]}/chat"
    # By hand: the route and the picker's ConfigMap and Role deleted, the pool pointed elsewhere.
    cluster.api.request("DELETE", f"/apis/{ROUTE[0]}/namespaces/{cluster.ns}/{ROUTE[1]}/chat")
    cluster.api.request("DELETE", f"/api/v1/namespaces/{cluster.ns}/configmaps/chat-epp")
    cluster.api.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{cluster.ns}/roles/chat-epp")
    cluster.api.request("PATCH", base, {"spec": {"targetPorts": [{"number": 9999}]}},
                        content_type="application/merge-patch+json")  # fmt: skip
    cluster.wait(lambda: (child(cluster, *ROUTE, "chat") and child(cluster, "v1", "configmaps", "chat-epp")
                          and child(cluster, "rbac.authorization.k8s.io/v1", "roles", "chat-epp")
                          and child(cluster, *POOL, "chat")["spec"]["targetPorts"] == [{"number": 8000}]),
                 "all repaired by the resync", timeout=15)  # fmt: skip
    assert child(cluster, *ROUTE, "chat")["metadata"]["uid"] != route["metadata"]["uid"], "re-created"
