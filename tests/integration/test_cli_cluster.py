"""`gemma-operator plan` without --nodes reads the nodes through a kubeconfig, and says which cluster it read."""

from __future__ import annotations

import io
import json
import pathlib

import pytest
import yaml

from gemma_operator.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def resource(tmp_path):
    path = tmp_path / "gemma.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                    "metadata": {"name": "chat", "namespace": "team"}, "spec": {}}))
    return path


def plan(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["plan", *argv], out, err)
    return code, out.getvalue(), err.getvalue()


def test_plan_reads_the_nodes_of_the_kubeconfig_cluster(kube_api, create_nodes, resource):
    names = create_nodes.from_fixture("gke-l4")
    code, out, err = plan("-f", str(resource), "--kubeconfig", str(kube_api.kubeconfig), "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["selection"]["accelerator"] == "nvidia-l4"
    assert doc["nodes"]["count"] == len(names)
    assert doc["nodes"]["server"].rstrip("/") == kube_api.server.rstrip("/")
    assert doc["nodes"]["context"]


def test_the_quickstart_plans_through_KUBECONFIG_and_names_the_cluster(kube_api, create_nodes, monkeypatch):
    """The README's path: `gemma-operator plan -f examples/01-quickstart/gemmadeployment.yaml`, no --nodes."""
    create_nodes.from_fixture("gke-cpu-only")
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    code, out, err = plan("-f", str(ROOT / "examples" / "01-quickstart" / "gemmadeployment.yaml"))
    assert code == 0, err
    assert "llamacpp" in out
    context = yaml.safe_load(kube_api.kubeconfig.read_text())["current-context"]
    assert f"context {context}" in out and kube_api.server.rstrip("/") in out


def test_plan_with_a_named_context(kube_api, create_nodes, resource, tmp_path):
    create_nodes.from_fixture("gke-l4")
    config = yaml.safe_load(kube_api.kubeconfig.read_text())
    # A second context named as kubectl users name them; the current one points nowhere.
    config["contexts"].append({"name": "emulated", "context": dict(config["contexts"][0]["context"])})
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}})
    config["contexts"][0]["context"]["cluster"] = "nowhere"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    code, out, err = plan("-f", str(resource), "--kubeconfig", str(path), "--context", "emulated", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["nodes"]["context"] == "emulated"


def test_a_cluster_that_cannot_be_reached_exits_1_naming_it(resource, tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "gone", "context": {"cluster": "c", "user": "u"}}],
    }))
    code, out, err = plan("-f", str(resource), "--kubeconfig", str(path))
    assert code == 1 and out == ""
    assert "context gone" in err and "127.0.0.1:1" in err and "--nodes" in err


def test_large_clusters_are_read_in_pages(kube_api, create_nodes, resource, monkeypatch):
    names = create_nodes.from_fixture("gke-l4")
    assert len(names) > 1
    monkeypatch.setattr("gemma_operator.clusterread.PAGE_SIZE", 1)
    before = kube_api.requests
    code, out, err = plan("-f", str(resource), "--kubeconfig", str(kube_api.kubeconfig), "-o", "json")
    assert code == 0, err
    assert json.loads(out)["nodes"]["count"] == len(names)
    if before is not None:  # the emulator counts requests: one list per page, and nothing else
        delta = kube_api.requests - before
        assert delta == {("list", "nodes"): len(names)}
