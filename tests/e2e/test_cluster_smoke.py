"""The e2e fixtures reach a real cluster: the CRD is served and namespaces work."""

from __future__ import annotations


def test_crd_is_served_and_namespace_exists(kube_api, namespace):
    resources = {r["name"] for r in kube_api.request("GET", "/apis/gemma.dev/v1alpha1")["resources"]}
    assert "gemmadeployments" in resources
    assert kube_api.request("GET", f"/api/v1/namespaces/{namespace}")["status"]["phase"] == "Active"
