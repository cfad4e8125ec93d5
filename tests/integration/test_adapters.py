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
