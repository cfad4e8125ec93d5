"""Nodes -> pools: one table over the shared fixtures, then the edge cases."""

from __future__ import annotations

import copy

import pytest

from gemma_operator.inventory import pools, quantity
from tests.conftest import node_list


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("gke-cpu-only", {"cpu-e2-standard-8": ("cpu", 0, 0)}),
        ("gke-l4", {"cpu-e2-standard-4": ("cpu", 0, 0), "nvidia-l4-x1": ("nvidia-l4", 1, 22.5)}),
        ("gke-t4", {"cpu-e2-standard-4": ("cpu", 0, 0), "nvidia-tesla-t4-x1": ("nvidia-tesla-t4", 1, 15.0)}),
        ("gke-a100-80gb", {"cpu-e2-standard-4": ("cpu", 0, 0), "nvidia-a100-80gb-x1": ("nvidia-a100-80gb", 1, 80.0)}),
        ("gke-h100x8", {"cpu-e2-standard-4": ("cpu", 0, 0), "nvidia-h100-80gb-x8": ("nvidia-h100-80gb", 8, 79.6)}),
        ("gke-tpu-v5e-2x2", {"cpu-e2-standard-4": ("cpu", 0, 0), "tpu-v5e-2x2": ("tpu-v5e", 4, 16)}),
        ("gke-tpu-v6e-2x4", {"cpu-e2-standard-4": ("cpu", 0, 0), "tpu-v6e-2x4": ("tpu-v6e", 8, 32)}),
        ("gfd-a10g", {"nvidia-a10g-x1": ("nvidia-a10g", 1, 22.5)}),
        # Four time-slicing replicas of one L4 per node: one GPU a pod can use, not four, and a
        # quarter of its memory, which time-slicing does not partition (issue 20, item 3).
        ("gfd-l4-shared", {"nvidia-l4-shared4-x1": ("nvidia-l4", 1, 5.6)}),
        ("gke-v100", {"cpu-e2-standard-4": ("cpu", 0, 0), "nvidia-tesla-v100-x1": ("nvidia-tesla-v100", 1, 15.8)}),
    ],
)
def test_fixture_pools(catalog, fixture, expected):
    inventory = pools(node_list(fixture), catalog)
    got = {p.name: (p.accelerator, p.devices_per_node, p.device_memory_gib) for p in inventory.pools}
    assert got == expected
    assert inventory.skipped == []


def test_gke_gpu_pool_selector_and_tolerations(catalog):
    (l4,) = [p for p in pools(node_list("gke-l4"), catalog).pools if p.kind == "gpu"]
    assert l4.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert l4.tolerations == ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"},)
    assert (l4.bf16, l4.fp8, l4.compute_capability) == (True, True, "8.9")
    assert l4.resource_name == "nvidia.com/gpu"
    assert l4.node_cpu == pytest.approx(7.91)


def test_tpu_pool_selects_accelerator_and_topology(catalog):
    (tpu,) = [p for p in pools(node_list("gke-tpu-v5e-2x2"), catalog).pools if p.kind == "tpu"]
    assert tpu.node_selector == {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
        "cloud.google.com/gke-tpu-topology": "2x2",
    }
    assert (tpu.tpu_topology, tpu.resource_name, tpu.devices_per_node) == ("2x2", "google.com/tpu", 4)


def test_gfd_only_gpu_is_found_by_product(catalog):
    (gpu,) = pools(node_list("gfd-a10g"), catalog).pools
    assert gpu.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert gpu.tolerations == ()


def _gpu_node(name: str = "n", **labels: str) -> dict:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/arch": "amd64", **labels}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def test_unknown_gfd_gpu_is_sized_from_its_labels(catalog):
    node = _gpu_node(**{
        "nvidia.com/gpu.product": "NVIDIA-GeForce-RTX-4090",
        "nvidia.com/gpu.memory": "24564",
        "nvidia.com/gpu.compute.major": "8",
        "nvidia.com/gpu.compute.minor": "9",
    })  # fmt: skip
    (gpu,) = pools([node], catalog).pools
    assert (gpu.accelerator, gpu.device_memory_gib, gpu.bf16, gpu.fp8) == ("nvidia-geforce-rtx-4090", 24.0, True, True)


def test_time_sliced_gpu_is_the_same_device(catalog):
    node = _gpu_node(**{"nvidia.com/gpu.product": "NVIDIA-L4-SHARED", "nvidia.com/gpu.replicas": "2"})
    (gpu,) = pools([node], catalog).pools
    assert gpu.accelerator == "nvidia-l4"
    # Without a sharing-strategy label (device plugins before MPS support), -SHARED is time-slicing.
    assert (gpu.sharing, gpu.replicas, gpu.device_memory_gib) == ("shared", 2, 11.2)


@pytest.mark.parametrize("replicas", [None, "many", "0"])
def test_a_time_sliced_gpu_without_its_replica_count_is_not_used(catalog, replicas):
    labels = {"nvidia.com/gpu.product": "NVIDIA-L4-SHARED", "nvidia.com/gpu.sharing-strategy": "time-slicing"}
    if replicas is not None:
        labels["nvidia.com/gpu.replicas"] = replicas
    inventory = pools([_gpu_node("ts", **labels)], catalog)
    # Its pods' share of the memory is unknown: planning at the whole GPU would run out of memory.
    assert inventory.pools == []
    (skipped,) = inventory.skipped
    assert skipped.startswith("ts: ") and "nvidia.com/gpu.replicas" in skipped


def test_time_sliced_nodes_with_other_replica_counts_are_other_pools(catalog):
    labels = {"nvidia.com/gpu.product": "NVIDIA-L4-SHARED", "nvidia.com/gpu.sharing-strategy": "time-slicing"}
    nodes = [_gpu_node("ts2", **labels, **{"nvidia.com/gpu.replicas": "2"}),
             _gpu_node("ts8", **labels, **{"nvidia.com/gpu.replicas": "8"})]  # fmt: skip
    by_name = {p.name: p for p in pools(nodes, catalog).pools}
    # A plan for a half of an L4 must not land where eight pods share it.
    assert {name: (p.nodes, p.device_memory_gib) for name, p in by_name.items()} == {
        "nvidia-l4-shared2-x1": (("ts2",), 11.2),
        "nvidia-l4-shared8-x1": (("ts8",), 2.8),
    }
    for pool in by_name.values():
        assert [n["metadata"]["name"] for n in nodes if _selects(pool.node_selector, n)] == list(pool.nodes)


def _selects(selector: dict, node: dict) -> bool:
    labels = node["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in selector.items())


def test_time_sliced_pool_selects_the_label_value_its_nodes_carry(catalog):
    nodes = node_list("gfd-l4-shared")
    (gpu,) = pools(nodes, catalog).pools
    # The scheduler matches the label as written (NVIDIA-L4-SHARED); the catalog entry sizes it.
    assert gpu.node_selector == {
        "nvidia.com/gpu.product": "NVIDIA-L4-SHARED",
        "nvidia.com/gpu.sharing-strategy": "time-slicing",
        "nvidia.com/gpu.replicas": "4",
    }
    assert all(_selects(gpu.node_selector, node) for node in nodes)
    assert (gpu.name, gpu.accelerator, gpu.sharing, gpu.replicas) == ("nvidia-l4-shared4-x1", "nvidia-l4", "time-slicing", 4)
    # 4 allocatable replicas are one GPU: two of them may be the same device, so never tensor-parallel.
    assert gpu.devices_per_node == 1
    assert "time-sliced" in gpu.describe()


def test_shared_and_whole_gpus_of_one_model_are_different_pools(catalog):
    shared = node_list("gfd-l4-shared")
    whole = _gpu_node("whole-l4", **{"nvidia.com/gpu.product": "NVIDIA-L4"})
    inventory = pools([*shared, whole], catalog)
    by_name = {p.name: p for p in inventory.pools}
    assert set(by_name) == {"nvidia-l4-shared4-x1", "nvidia-l4-x1"}
    for pool in inventory.pools:
        picked = {n["metadata"]["name"] for n in [*shared, whole] if _selects(pool.node_selector, n)}
        assert picked == set(pool.nodes)
    assert by_name["nvidia-l4-x1"].nodes == ("whole-l4",)
    assert by_name["nvidia-l4-x1"].sharing is None


def test_mps_client_gets_its_share_of_device_memory(catalog):
    node = _gpu_node(**{
        "nvidia.com/gpu.product": "NVIDIA-L4-SHARED",
        "nvidia.com/gpu.sharing-strategy": "mps",
        "nvidia.com/gpu.replicas": "4",
    })  # fmt: skip
    node["status"]["allocatable"]["nvidia.com/gpu"] = "4"
    (gpu,) = pools([node], catalog).pools
    # The MPS control daemon limits each client to an equal fraction of the device memory.
    assert (gpu.name, gpu.devices_per_node, gpu.device_memory_gib) == ("nvidia-l4-mps4-x1", 1, 5.6)
    assert gpu.node_selector == {
        "nvidia.com/gpu.product": "NVIDIA-L4-SHARED",
        "nvidia.com/gpu.sharing-strategy": "mps",
        "nvidia.com/gpu.replicas": "4",
    }


@pytest.mark.parametrize(
    ("labels", "why"),
    [
        ({"nvidia.com/gpu.product": "Mystery-GPU", "nvidia.com/gpu.memory": "lots",
          "nvidia.com/gpu.compute.major": "8", "nvidia.com/gpu.compute.minor": "0"}, "non-numeric"),
        ({"nvidia.com/gpu.product": "Mystery-GPU"}, "missing or non-numeric"),
        ({"cloud.google.com/gke-accelerator": "nvidia-quantum-9000"}, "unknown GPU"),
        ({"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice", "cloud.google.com/gke-tpu-topology": "2x"},
         "malformed"),
        ({"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice", "cloud.google.com/gke-tpu-topology": "4x4"},
         "spans several hosts"),
        ({"cloud.google.com/gke-tpu-accelerator": "tpu-v99"}, "unknown TPU"),
        ({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}, "MIG"),
    ],
)  # fmt: skip
def test_malformed_labels_skip_the_node_with_a_reason(catalog, labels, why):
    inventory = pools([_gpu_node("bad", **labels)], catalog)
    assert inventory.pools == []
    assert len(inventory.skipped) == 1
    assert inventory.skipped[0].startswith("bad: ") and why in inventory.skipped[0]


def test_not_ready_cordoned_and_driverless_nodes_are_skipped(catalog):
    ready = _gpu_node("ok", **{"cloud.google.com/gke-accelerator": "nvidia-l4"})
    not_ready = copy.deepcopy(ready)
    not_ready["metadata"]["name"] = "sick"
    not_ready["status"]["conditions"][0]["status"] = "False"
    cordoned = copy.deepcopy(ready)
    cordoned["metadata"]["name"] = "cordoned"
    cordoned["spec"]["unschedulable"] = True
    driverless = copy.deepcopy(ready)
    driverless["metadata"]["name"] = "nodriver"
    driverless["status"]["allocatable"]["nvidia.com/gpu"] = "0"
    inventory = pools([ready, not_ready, cordoned, driverless], catalog)
    assert [p.nodes for p in inventory.pools] == [("ok",)]
    assert [s.split(":")[0] for s in inventory.skipped] == ["sick", "cordoned", "nodriver"]


def test_tpu_node_whose_chips_disagree_with_topology_is_skipped(catalog):
    node = _gpu_node("half", **{
        "cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice", "cloud.google.com/gke-tpu-topology": "2x4",
    })  # fmt: skip
    node["status"]["allocatable"] = {"cpu": "100", "memory": "700Gi", "google.com/tpu": "4"}
    inventory = pools([node], catalog)
    assert inventory.pools == [] and "does not match topology 2x4" in inventory.skipped[0]


def test_node_selector_restricts_the_nodes(catalog):
    nodes = node_list("gke-l4")
    inventory = pools(nodes, catalog, {"cloud.google.com/gke-nodepool": "l4-pool"})
    assert [p.name for p in inventory.pools] == ["nvidia-l4-x1"]
    assert inventory.skipped == ["1 node(s) do not match spec.nodeSelector"]


def test_system_taints_are_not_tolerated(catalog):
    node = _gpu_node(**{"cloud.google.com/gke-accelerator": "nvidia-l4"})
    node["spec"]["taints"] = [
        {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"},
        {"key": "dedicated", "value": "ml", "effect": "NoExecute"},
        {"key": "soft", "effect": "PreferNoSchedule"},
    ]
    (gpu,) = pools([node], catalog).pools
    assert gpu.tolerations == ({"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"},)


@pytest.mark.parametrize(
    ("text", "value"),
    [("3920m", 3.92), ("8", 8), ("32Gi", 32 * 2**30), ("13609708Ki", 13609708 * 1024), ("1.5G", 1.5e9), (2, 2)],
)
def test_quantity(text, value):
    assert quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "lots", "12Qi", "1e3x"])
def test_quantity_rejects_garbage(text):
    with pytest.raises(ValueError):
        quantity(text)
