"""Declared capacity: the capacity file -> pools with no node; the planner with them; the pod they render."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from gemma_operator import capacity
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import NoFit, Plan, plan
from gemma_operator.render import deployment
from tests.conftest import ROOT, node_list

GPU = "cloud.google.com/gke-accelerator"
TPU = "cloud.google.com/gke-tpu-accelerator"
TOPOLOGY = "cloud.google.com/gke-tpu-topology"
L4_SPOT = {"name": "l4-spot", "accelerator": "nvidia-l4", "acceleratorCount": 1, "machineType": "g2-standard-8",
           "maxNodes": 4, "spot": True}  # fmt: skip
A100 = {"name": "a100", "accelerator": "nvidia-a100-80gb", "machineType": "a2-ultragpu-1g"}
TPU_2X4 = {"name": "v5e-8", "accelerator": "tpu-v5-lite-podslice", "tpuTopology": "2x4"}


def without_l4(fixture: str = "gke-l4") -> list[dict]:
    return [n for n in node_list(fixture) if GPU not in n["metadata"]["labels"]]


def declared(catalog, *entries: dict) -> list:
    return capacity.parse({"pools": list(entries)}, catalog)


def decide(catalog, spec: dict, nodes: list[dict], *entries: dict, previous: dict | None = None) -> Plan | NoFit:
    parsed = GemmaDeploymentSpec.model_validate(spec)
    inventory = pools(nodes, catalog, parsed.node_selector, declared(catalog, *entries))
    return plan(parsed, inventory, catalog, previous=previous)


# --- The capacity file: shapes from the catalog, validated with the entry and field named. ---


def test_a_declared_pool_takes_its_shape_from_the_catalog(catalog):
    (pool,) = declared(catalog, L4_SPOT)
    assert (pool.name, pool.source, pool.nodes, pool.accelerator) == ("l4-spot", "declared", (), "nvidia-l4")
    assert (pool.devices_per_node, pool.machine_type, pool.max_nodes) == (1, "g2-standard-8", 4)
    # g2-standard-8 is 8 vCPUs and 32 GiB; GKE keeps 90m CPU and (with the kernel's share) 4.6 GiB.
    assert (pool.node_cpu, pool.node_memory_gib) == (7.91, 27.44)
    assert pool.node_selector == {GPU: "nvidia-l4", "cloud.google.com/gke-spot": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in pool.tolerations
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in pool.tolerations


def test_the_reserve_matches_what_gke_nodes_report(catalog):
    """The fixtures are nodes as GKE lists them: the shape's allocatable must not exceed theirs."""
    reserve, machines = catalog.machines.reserve, catalog.machines.machines
    for fixture, machine in (("gke-l4", "g2-standard-8"), ("gke-l4", "e2-standard-4")):
        node = next(n for n in node_list(fixture) if n["metadata"]["labels"].get("node.kubernetes.io/instance-type") == machine)
        observed = pools([node], catalog).pools[0]
        cpu, memory = reserve.allocatable(machines[machine].vcpus, machines[machine].memory_gib)
        assert cpu == pytest.approx(observed.node_cpu, abs=0.001), machine
        assert observed.node_memory_gib * 0.95 < memory <= observed.node_memory_gib, machine


@pytest.mark.parametrize(
    ("entry", "selector", "count", "machine"),
    [
        # A TPU shape: accelerator and topology, the chips its host has, the smallest host for it.
        (TPU_2X4, {TPU: "tpu-v5-lite-podslice", TOPOLOGY: "2x4"}, 8, "ct5lp-hightpu-8t"),
        ({"name": "v5e", "accelerator": "tpu-v5e", "machineType": "ct5lp-hightpu-4t"},
         {TPU: "tpu-v5-lite-podslice", TOPOLOGY: "2x2"}, 4, "ct5lp-hightpu-4t"),
        # No machine type: the smallest GKE machine with that many devices.
        ({"name": "l4x2", "accelerator": "nvidia-l4", "acceleratorCount": 2}, {GPU: "nvidia-l4"}, 2, "g2-standard-24"),
        ({"name": "t4", "accelerator": "nvidia-tesla-t4"}, {GPU: "nvidia-tesla-t4"}, 1, "n1-standard-4"),
        # A CPU shape is pinned to its machine type, so it never lands on the system pool.
        ({"name": "big-cpu", "accelerator": "cpu", "machineType": "n2-highmem-16"},
         {"kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "n2-highmem-16"}, 0, "n2-highmem-16"),
        # A ComputeClass: its selector (and toleration) on top of the shape's.
        ({"name": "nap-l4", "accelerator": "nvidia-l4", "nodeSelector": {"cloud.google.com/compute-class": "gemma-l4"}},
         {GPU: "nvidia-l4", "cloud.google.com/compute-class": "gemma-l4"}, 1, "g2-standard-4"),
    ],
)  # fmt: skip
def test_declared_shapes(catalog, entry, selector, count, machine):
    (pool,) = declared(catalog, entry)
    assert (pool.node_selector, pool.devices_per_node, pool.machine_type) == (selector, count, machine)
    if "cloud.google.com/compute-class" in selector:
        assert {"key": "cloud.google.com/compute-class", "operator": "Equal", "value": "gemma-l4",
                "effect": "NoSchedule"} in pool.tolerations  # fmt: skip


def test_cpu_and_memory_may_replace_the_machine_type(catalog):
    (pool,) = declared(catalog, {"name": "custom", "accelerator": "nvidia-l4", "cpu": 8, "memoryGiB": 32})
    assert (pool.node_cpu, pool.node_memory_gib) == (7.91, 27.44)


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([{"name": "x", "accelerator": "nvidia-l5"}], "pools[0] (x).accelerator: unknown accelerator 'nvidia-l5'; did you mean"),
        ([{"name": "x", "accelerator": "nvidia-l4", "machineType": "g2-standard-7"}],
         "pools[0] (x).machineType: 'g2-standard-7' is not among the catalog's GKE machine shapes"),
        ([{"name": "x", "accelerator": "nvidia-l4", "acceleratorCount": 2, "machineType": "g2-standard-8"}],
         "pools[0] (x).machineType: g2-standard-8 takes 1 nvidia-l4, not 2"),
        ([{"name": "x", "accelerator": "nvidia-l4", "machineType": "a2-highgpu-1g"}],
         "pools[0] (x).machineType: a2-highgpu-1g takes no nvidia-l4"),
        ([{"name": "x", "accelerator": "tpu-v5e", "tpuTopology": "4x4"}], "pools[0] (x).tpuTopology: 4x4 spans several"),
        ([{"name": "x", "accelerator": "tpu-v5e"}], "pools[0] (x).tpuTopology: a TPU shape needs its topology"),
        ([{"name": "x", "accelerator": "cpu"}], "pools[0] (x): a cpu shape needs machineType, or cpu and memoryGiB"),
        ([{"name": "x", "accelerator": "nvidia-l4", "cpu": 8}], "pools[0] (x): give both cpu and memoryGiB"),
        ([{"name": "x", "accelerator": "nvidia-a10g"}], "pools[0] (x).accelerator: nvidia-a10g has no GKE node label"),
        ([{"name": "x", "accelerator": "nvidia-l4", "acceleratorCount": 0}],
         "pools[0] (x).acceleratorCount: Input should be greater than or equal to 1"),
        ([{"name": "x", "accelerator": "nvidia-l4", "maxnodes": 3}], "pools[0] (x).maxnodes: Extra inputs are not permitted"),
        ([{"name": "L4", "accelerator": "nvidia-l4"}], "pools[0] (L4).name: String should match pattern"),
        ([{"name": "a", "accelerator": "nvidia-l4"}, {"name": "a", "accelerator": "nvidia-l4"}],
         "pools[1] (a).name: 'a' is declared twice"),
        ([{"name": "x", "accelerator": "nvidia-l4", "nodeSelector": {GPU: "nvidia-tesla-t4"}}],
         "pools[0] (x).nodeSelector: cloud.google.com/gke-accelerator=nvidia-tesla-t4 contradicts"),
    ],
)  # fmt: skip
def test_invalid_entries_name_the_entry_and_field(catalog, entries, words):
    with pytest.raises(capacity.CapacityError) as info:
        capacity.parse({"pools": entries}, catalog)
    assert words in str(info.value)


def test_an_empty_file_declares_nothing(catalog):
    assert capacity.parse_text("", catalog) == [] and capacity.parse_text("pools: []", catalog) == []
    with pytest.raises(capacity.CapacityError, match="expected a mapping"):
        capacity.parse_text("- name: l4", catalog)


# --- The planner with declared pools. ---

# (nodes, spec, declared) -> (pool, capacity, runtime, quantization, size)
DECISIONS = [
    # The first newcomer repro: no L4 node, a declared L4 pool: the L4, scaled up, not the system pool.
    (without_l4(), {}, [L4_SPOT], ("l4-spot", "scale-up", "vllm", "bf16", "e2b")),
    # Ready capacity serves the same plan as well: no scale-up for nothing.
    (node_list("gke-l4"), {}, [L4_SPOT], ("nvidia-l4-x1", "ready", "vllm", "bf16", "e2b")),
    # A declared pool wins on precision: the ready T4 has no bf16.
    (node_list("gke-t4"), {}, [L4_SPOT], ("l4-spot", "scale-up", "vllm", "bf16", "e2b")),
    # ... and on size under sizePolicy largest: 31B in bf16 on an 80 GB A100, not 4-bit on the ready L4.
    (node_list("gke-l4"), {"model": {"sizePolicy": "largest"}}, [A100], ("a100", "scale-up", "vllm", "bf16", "31b")),
    # ... and on context: 12B fp8 on the ready L4 stops short of the 12B's context; the A100 holds it all.
    (node_list("gke-l4"), {"model": {"family": "gemma3", "size": "12b"}}, [A100],
     ("a100", "scale-up", "vllm", "bf16", "12b")),
    # An explicit accelerator plans on its declared pool when no node carries it.
    (without_l4(), {"accelerator": "nvidia-l4"}, [L4_SPOT], ("l4-spot", "scale-up", "vllm", "bf16", "e2b")),
    # A TPU shape.
    (without_l4(), {"accelerator": "tpu-v5e", "model": {"sizePolicy": "largest"}}, [TPU_2X4],
     ("v5e-8", "scale-up", "vllm", "bf16", "31b")),
    # No capacity file: accelerator auto never guesses a shape.
    (without_l4(), {}, [], ("cpu-e2-standard-4", "ready", "llamacpp", "q4_0", "e2b")),
    # The second newcomer repro: a named accelerator with no node and no declared pool: its standard GKE shape.
    (without_l4(), {"accelerator": "nvidia-l4"}, [], ("nvidia-l4-g2-standard-4", "scale-up", "vllm", "bf16", "e2b")),
    (without_l4(), {"accelerator": "tpu-v5-lite-podslice"}, [],
     ("tpu-v5e-ct5lp-hightpu-1t", "scale-up", "vllm", "bf16", "e2b")),
]  # fmt: skip


@pytest.mark.parametrize(("nodes", "spec", "entries", "expected"), DECISIONS, ids=lambda v: str(v)[:60])
def test_planner_with_declared_pools(catalog, nodes, spec, entries, expected):
    result = decide(catalog, spec, nodes, *entries)
    assert isinstance(result, Plan), result.message
    selection = result.selection()
    got = (selection["pool"], selection["capacity"], result.runtime, result.quantization, result.size)
    assert got == expected
    if selection["capacity"] == "scale-up":
        said = [r for r in result.reasons if r.startswith("Capacity scale-up")]
        assert said and selection["pool"] in said[0] + " ".join(result.reasons), result.reasons


def test_the_reasons_name_the_pool_to_scale_up_and_why_not_the_ready_one(catalog):
    result = decide(catalog, {}, node_list("gke-t4"), L4_SPOT)
    text = " ".join(result.reasons)
    assert "Capacity scale-up: the declared pool l4-spot has no node yet" in text
    assert "Spot g2-standard-8 node to it, up to 4" in text
    assert "nvidia-tesla-t4-x1 (NVIDIA T4 16GB has no bf16, so fp16, not bf16)" in text


def test_a_ready_pool_says_which_declared_pool_was_not_scaled_up(catalog):
    result = decide(catalog, {"accelerator": "nvidia-l4"}, node_list("gke-l4"), L4_SPOT)
    assert result.pool.name == "nvidia-l4-x1"
    assert any("Not scaled up: l4-spot" in r for r in result.reasons), result.reasons


def test_a_declared_pool_with_its_nodes_is_ready_and_keeps_the_plan(catalog):
    """After the scale-up the plan stays on the declared pool (sticky) and says ready; the pod is unchanged."""
    spec = GemmaDeploymentSpec.model_validate({})
    before = decide(catalog, {}, without_l4(), L4_SPOT)
    spot_l4 = [dict(n, metadata={**n["metadata"], "labels": {**n["metadata"]["labels"], "cloud.google.com/gke-spot": "true"}})
               for n in node_list("gke-l4") if GPU in n["metadata"]["labels"]]  # fmt: skip
    after = decide(catalog, {}, without_l4() + spot_l4, L4_SPOT, previous=before.selection())
    assert (after.pool.name, after.selection()["capacity"], after.pool.nodes) == ("l4-spot", "ready", ("gke-demo-l4-pool-0",))
    assert any(r.startswith("Capacity ready: the declared pool l4-spot has 1 ready node") for r in after.reasons)
    assert deployment("chat", "gemma", spec, after) == deployment("chat", "gemma", spec, before)


def test_a_node_without_the_declared_labels_does_not_make_it_ready(catalog):
    # The L4 node is not Spot: it is another pool than l4-spot.
    result = decide(catalog, {"accelerator": "nvidia-l4"}, node_list("gke-l4"), L4_SPOT)
    (pool,) = [p for p in pools(node_list("gke-l4"), catalog, None, declared(catalog, L4_SPOT)).pools if p.name == "l4-spot"]
    assert pool.nodes == () and result.pool.name == "nvidia-l4-x1"


def test_spec_node_selector_leaves_out_declared_pools_it_contradicts(catalog):
    result = decide(catalog, {"nodeSelector": {"cloud.google.com/gke-spot": "false"}}, without_l4(), L4_SPOT)
    assert isinstance(result, NoFit) and "l4-spot" not in result.message
    kept = decide(catalog, {"nodeSelector": {"cloud.google.com/gke-spot": "true"}}, without_l4(), L4_SPOT)
    assert kept.pool.name == "l4-spot" and kept.node_selector["cloud.google.com/gke-spot"] == "true"


def test_replicas_beyond_max_nodes_are_named(catalog):
    result = decide(catalog, {"replicas": 6}, without_l4(), L4_SPOT)
    said = [r for r in result.reasons if r.startswith("Replicas")]
    assert said and "only 4 can be placed on l4-spot (maxNodes 4" in said[0]
    assert not [r for r in decide(catalog, {"replicas": 6}, without_l4(), {**L4_SPOT, "maxNodes": None}).reasons
                if r.startswith("Replicas")]  # fmt: skip


def test_an_accelerator_without_a_standard_shape_is_still_no_fit(catalog):
    result = decide(catalog, {"accelerator": "nvidia-a10g"}, without_l4())
    assert isinstance(result, NoFit) and "No nvidia-a10g nodes" in result.message


# --- The pod: exactly what makes GKE add the shape. ---


def test_the_pod_asks_for_the_declared_shape(catalog):
    spec = GemmaDeploymentSpec.model_validate({})
    result = decide(catalog, {}, without_l4(), L4_SPOT)
    pod = deployment("chat", "gemma", spec, result)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {GPU: "nvidia-l4", "cloud.google.com/gke-spot": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in pod["tolerations"]
    requests = pod["containers"][0]["resources"]["requests"]
    assert requests["nvidia.com/gpu"] == "1"
    # Requests fit the machine type's allocatable (g2-standard-8: 7.91 CPUs, 27.4 GiB).
    assert float(requests["cpu"]) <= result.pool.node_cpu
    assert float(requests["memory"].removesuffix("Gi")) <= result.pool.node_memory_gib


@pytest.mark.parametrize(
    ("spec", "entry"),
    [({"accelerator": "tpu-v5e", "model": {"sizePolicy": "largest"}}, TPU_2X4),
     ({"accelerator": "nvidia-l4", "model": {"sizePolicy": "largest"}}, {"name": "small", "accelerator": "nvidia-l4"}),
     ({"accelerator": "cpu", "model": {"sizePolicy": "largest"}},
      {"name": "cpu", "accelerator": "cpu", "machineType": "e2-standard-8"}),
     ({"accelerator": "nvidia-l4"}, None),
     ({"accelerator": "nvidia-h100-80gb", "model": {"sizePolicy": "largest"}}, None)],
)  # fmt: skip
def test_requests_fit_the_shapes_allocatable(catalog, spec, entry):
    nodes = without_l4() if spec.get("accelerator") != "cpu" else []
    result = decide(catalog, spec, nodes, *([entry] if entry else []))
    assert isinstance(result, Plan) and result.selection()["capacity"] == "scale-up", getattr(result, "message", "")
    pod = deployment("chat", "gemma", GemmaDeploymentSpec.model_validate(spec), result)["spec"]["template"]["spec"]
    requests = pod["containers"][0]["resources"]["requests"]
    assert float(requests["cpu"]) <= result.pool.node_cpu
    assert float(requests["memory"].removesuffix("Gi")) <= result.pool.node_memory_gib
    if result.pool.kind == "tpu":
        assert pod["nodeSelector"][TOPOLOGY] == result.pool.tpu_topology
        assert requests["google.com/tpu"] == str(result.pool.devices_per_node)
        assert {"key": "google.com/tpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in pod["tolerations"]


# --- The CLI: both newcomer repros from the issue. ---


def run_plan(tmp_path, resource: str, *extra: str) -> subprocess.CompletedProcess:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": without_l4()}))
    return subprocess.run(
        [sys.executable, "-m", "gemma_operator", "plan", "-f", resource, "--nodes", str(nodes), "-o", "json",
         "--manifests", *extra],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip


def test_cli_spec_empty_with_a_declared_l4_pool_scales_up_the_l4(tmp_path):
    resource = tmp_path / "chat.yaml"
    resource.write_text("apiVersion: gemma.dev/v1alpha1\nkind: GemmaDeployment\nmetadata: {name: chat}\nspec: {}\n")
    caps = tmp_path / "capacity.yaml"
    caps.write_text(yaml.safe_dump({"pools": [L4_SPOT]}))
    done = run_plan(tmp_path, str(resource), "--capacity", str(caps))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["selection"]["pool"], document["selection"]["capacity"]) == ("l4-spot", "scale-up")
    pod = document["manifests"][0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"][GPU] == "nvidia-l4" and pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"


def test_cli_named_accelerator_without_nodes_plans_on_the_standard_shape(tmp_path):
    done = run_plan(tmp_path, "examples/02-helm-gke/gemma-l4.yaml")
    assert done.returncode == 0, done.stderr
    selection = json.loads(done.stdout)["selection"]
    assert (selection["accelerator"], selection["capacity"], selection["pool"]) == (
        "nvidia-l4", "scale-up", "nvidia-l4-g2-standard-4")


def test_cli_invalid_capacity_exits_2_naming_the_entry(tmp_path):
    caps = tmp_path / "capacity.yaml"
    caps.write_text(yaml.safe_dump({"pools": [{"name": "l4", "accelerator": "nvidia-l4", "machineType": "g2-standard-7"}]}))
    done = run_plan(tmp_path, "examples/02-helm-gke/gemma-l4.yaml", "--capacity", str(caps))
    assert done.returncode == 2
    assert "invalid capacity:" in done.stderr and "pools[0] (l4).machineType" in done.stderr, done.stderr


# --- The operator's capacity file: re-read when its content changes. ---


def test_the_watch_reports_each_change_once(tmp_path, catalog):
    path = tmp_path / "capacity.yaml"
    path.write_text(yaml.safe_dump({"pools": [L4_SPOT]}))
    watch = capacity.watch_from_env(catalog, {capacity.ENV: str(path)})
    assert [p.name for p in watch.poll()] == ["l4-spot"]
    assert watch.poll() is None  # unchanged
    path.write_text(yaml.safe_dump({"pools": [A100]}))
    assert [p.name for p in watch.poll()] == ["a100"]
    path.write_text("pools: [{name: x}]")
    with pytest.raises(capacity.CapacityError, match="accelerator"):
        watch.poll()
    assert watch.poll() is None  # the same bad content is reported once
    path.unlink()
    assert watch.poll() == []  # no file: nothing declared
    assert capacity.watch_from_env(catalog, {}) is None


def test_a_plan_on_the_standard_shape_stays_when_the_node_comes(catalog):
    """The pod asked GKE for the node; when it comes the plan (and the pod) stay, and capacity turns ready."""
    spec = GemmaDeploymentSpec.model_validate({"accelerator": "nvidia-l4"})
    before = decide(catalog, {"accelerator": "nvidia-l4"}, without_l4())
    after = decide(catalog, {"accelerator": "nvidia-l4"}, node_list("gke-l4"), previous=before.selection())
    assert (after.pool.name, after.selection()["capacity"]) == ("nvidia-l4-g2-standard-4", "ready")
    assert deployment("chat", "gemma", spec, after) == deployment("chat", "gemma", spec, before)
    # A fresh plan (a spec change) moves to the observed pool.
    assert decide(catalog, {"accelerator": "nvidia-l4"}, node_list("gke-l4")).pool.name == "nvidia-l4-x1"


# --- The catalog's machine shapes: checked at load. ---


def test_every_gke_gpu_and_tpu_label_with_a_standard_shape_is_carried_by_it(catalog):
    machines = catalog.machines
    for label, machine in machines.standard.items():
        assert label in machines.machines[machine].accelerators, (label, machine)
    # The GKE GPUs the catalog matches by label have a standard shape, except those GKE offers only on
    # hosts the operator does not plan for (GB200: Arm) or that are new (RTX PRO 6000, TPU7x).
    named = {v for a in catalog.accelerators.values() for v in (*a.match.gke_accelerator, *a.match.gke_tpu_accelerator)}
    assert named - set(machines.standard) == {"nvidia-gb200", "nvidia-rtx-pro-6000", "tpu-v5-lite-device", "tpu7x"}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda m: m["standard"].update({"nvidia-l4": "e2-standard-4"}), "standard shape e2-standard-4 for nvidia-l4"),
        (lambda m: m["machines"]["ct5lp-hightpu-8t"].update(tpu_topology="4x4"), "topology 4x4 is not a single-host"),
        (lambda m: m["machines"]["g2-standard-8"].update(accelerators={"nvidia-l5": [1]}), "'nvidia-l5' is no accelerator"),
    ],
)  # fmt: skip
def test_a_wrong_machine_shape_fails_at_load(catalog, change, words):
    from pydantic import ValidationError

    from gemma_operator.catalog import Catalog

    data = catalog.model_dump(mode="json", by_alias=True)
    change(data["machines"])
    with pytest.raises(ValidationError, match=words):
        Catalog.model_validate(data)
