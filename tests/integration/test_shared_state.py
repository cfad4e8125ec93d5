"""kopf hands each object's handlers a shallow copy of memo (made when it first sees the object):
operator-wide state the background work renews must be updated in place, or the spec handlers of
resources seen earlier keep deciding on the old one."""

from __future__ import annotations

import time

import pytest

from tests.integration.test_faults import a10g_nodes, cluster, operator, settled  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def test_a_spec_change_after_a_node_pool_came_plans_on_the_new_pool(operator, cluster, create_nodes):  # noqa: F811
    create_nodes.from_fixture("gke-cpu-only")
    operator()
    cluster.create("chat", {})  # planned on CPU: its spec handler's memo caches that inventory
    cluster.wait(lambda: settled(cluster, "chat"), "a settled resource")
    create_nodes(a10g_nodes())
    time.sleep(2.0)  # the node changes settle (1 s) and the inventories are dropped
    cluster.patch_spec("chat", {"accelerator": "nvidia-a10g"})
    cluster.wait(lambda: (st := cluster.gd("chat")["status"]).get("observedGeneration") == 2
                 and st.get("phase") == "Deploying", "planned on the new A10G pool")  # fmt: skip
    assert cluster.gd("chat")["status"]["selection"]["accelerator"] == "nvidia-a10g"
