"""Plans that hold on the hardware they name: time-sliced GPUs, real checkpoint file sizes, the
compute capability each pinned image needs, and a selection that describes what really runs."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from gemma_operator import sizing
from gemma_operator.__main__ import main
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import NoFit, Plan, plan
from gemma_operator.render import render
from tests.conftest import decide, node_list, NODES

GIB = 2**30
OWNER = {"metadata": {"name": "chat", "uid": "0000"}}


def _pod(objects: list[dict]) -> dict:
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]


# -- time-sliced GPUs (issue 11, item 2) ---------------------------------------------------------


def test_the_pod_on_time_sliced_gpus_selects_nodes_that_exist(catalog):
    parsed = GemmaDeploymentSpec.model_validate({})
    nodes = node_list("gfd-l4-shared")
    result = plan(parsed, pools(nodes, catalog), catalog)
    assert isinstance(result, Plan), result
    pod = _pod(render(result, "chat", "team-a", parsed, OWNER))
    for node in nodes:
        labels = node["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in pod["nodeSelector"].items()), (pod["nodeSelector"], labels)
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_no_tensor_parallelism_over_replicas_of_one_gpu(catalog):
    # 4 allocatable replicas per node are one L4: the largest Gemma must fit one L4, not four.
    result = decide(catalog, {"model": {"sizePolicy": "largest"}}, "gfd-l4-shared")
    assert isinstance(result, Plan), result
    assert (result.tensor_parallel_size, result.accelerator_count) == (1, 1)
    assert result.estimated_memory_gib <= 22.5


def _vllm_args(result: Plan, spec: GemmaDeploymentSpec) -> list[str]:
    (container,) = [c for c in _pod(render(result, "chat", "team-a", spec, OWNER))["containers"] if c["name"] == "vllm"]
    return container["args"]


@pytest.mark.parametrize(("strategy", "utilization"), [("time-slicing", "0.225"), ("mps", "0.90")])
def test_vllm_on_a_shared_gpu_claims_only_its_share(catalog, strategy, utilization):
    # vLLM's --gpu-memory-utilization is a fraction of the whole device, per instance (vLLM's engine
    # arguments). Time-slicing shows each pod all of the GPU, so 4 pods claim a quarter of 0.9 each;
    # an MPS client's device is its share already (issue 20, item 3).
    nodes = node_list("gfd-l4-shared")
    for node in nodes:
        node["metadata"]["labels"]["nvidia.com/gpu.sharing-strategy"] = strategy
    spec = GemmaDeploymentSpec.model_validate({"runtime": "vllm", "model": {"family": "gemma3", "size": "1b"}})
    result = plan(spec, pools(nodes, catalog), catalog)
    assert isinstance(result, Plan), getattr(result, "message", result)
    args = _vllm_args(result, spec)
    assert args[args.index("--gpu-memory-utilization") + 1] == utilization


# -- checkpoint file sizes (issue 11, item 3) ----------------------------------------------------


def test_gemma3_27b_q4_0_on_an_l4_is_planned_with_the_real_file_size(catalog):
    result = decide(catalog, {"model": {"family": "gemma3", "size": "27b"}, "quantization": "q4_0"}, "gke-l4")
    assert isinstance(result, Plan), result
    assert (result.runtime, result.model_file) == ("llamacpp", "gemma-3-27b-it-q4_0.gguf")
    file_gib = 17_229_630_496 / GIB  # 16.05 GiB, not params x 18/32 = 14.35 GiB
    assert result.weights_gib >= file_gib
    # What llama.cpp really holds at the planned context fits the L4's 22.5 GiB (23.1 GiB at the old plan's).
    arch = catalog.families["gemma3"].sizes["27b"].architecture
    real = file_gib + sizing.overhead_gib("llamacpp", file_gib) + sizing.kv_cache_gib(arch, result.max_model_len)
    assert real <= result.estimated_memory_gib + 0.01
    assert real <= 22.5 * 0.95


# -- the images' compute capability (issue 11, item 4) -------------------------------------------


def test_vllm_cuda_image_needs_turing(catalog):
    # PyTorch's CUDA 12.8+ builds dropped Volta from release 2.11 on; vLLM 0.32 is built on torch 2.13.
    assert catalog.images["vllm-gpu"].min_compute_capability == "7.5"
    # llama.cpp's CUDA 12 build carries PTX for compute capability 7.0 (and older).
    assert catalog.images["llamacpp-cuda"].min_cc <= (7, 0)


def test_a_v100_gets_llamacpp_on_cuda_and_the_reason(catalog):
    result = decide(catalog, {}, "gke-v100")
    assert isinstance(result, Plan), result
    assert (result.runtime, result.image_key) == ("llamacpp", "llamacpp-cuda")
    assert result.pool.accelerator == "nvidia-tesla-v100"
    assert result.image == catalog.images["llamacpp-cuda"].ref
    runtime_reason = next(r for r in result.reasons if r.startswith("Runtime llamacpp on CUDA"))
    assert "needs compute capability 7.5+" in runtime_reason and "7.0" in runtime_reason


def test_vllm_asked_on_a_v100_is_a_no_fit_that_says_why(catalog):
    result = decide(catalog, {"runtime": "vllm"}, "gke-v100")
    assert isinstance(result, NoFit)
    assert "vllm/vllm-openai:v0.32.0-cu129 needs compute capability 7.5+, NVIDIA V100 16GB has 7.0" in result.message


def test_a_t4_still_runs_vllm(catalog):
    result = decide(catalog, {}, "gke-t4")
    assert isinstance(result, Plan) and result.runtime == "vllm"


# -- the selection describes what runs (issue 11, item 5) ----------------------------------------

OVERRIDES = {
    "image": "registry.example.com/vllm-openai:patched",
    "nodeSelector": {"cloud.google.com/gke-nodepool": "l4-pool"},
}


def test_selection_names_the_image_and_node_selector_the_pod_gets(catalog):
    parsed = GemmaDeploymentSpec.model_validate(OVERRIDES)
    result = plan(parsed, pools(node_list("gke-l4"), catalog, parsed.node_selector), catalog)
    assert isinstance(result, Plan), result
    pod = _pod(render(result, "chat", "team-a", parsed, OWNER))
    selection = result.selection()  # what handlers.py writes to status.selection
    assert selection["image"] == pod["containers"][0]["image"] == OVERRIDES["image"]
    assert selection["nodeSelector"] == pod["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-nodepool": "l4-pool",
    }
    image_reason = next(r for r in selection["reasons"] if r.startswith("Image "))
    assert image_reason.startswith(f"Image {OVERRIDES['image']}: set by spec.image")
    assert catalog.images["vllm-gpu"].ref in image_reason  # what it replaces


def test_plan_json_shows_the_overrides(catalog, tmp_path):
    cr = tmp_path / "gd.yaml"
    cr.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                  "metadata": {"name": "chat"}, "spec": OVERRIDES}))  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    args = ["plan", "-f", str(cr), "--nodes", str(NODES / "gke-l4.yaml"), "-o", "json", "--manifests"]
    assert main(args, out, err) == 0
    document = json.loads(out.getvalue())
    pod = _pod(document["manifests"])
    assert document["selection"]["image"] == pod["containers"][0]["image"] == OVERRIDES["image"]
    assert document["selection"]["nodeSelector"] == pod["nodeSelector"]


@pytest.mark.parametrize("spec", [{}, {"image": "registry.example.com/x:1"}, {"nodeSelector": {"team": "a"}}])
def test_a_sticky_plan_keeps_its_effective_selection(catalog, spec):
    parsed = GemmaDeploymentSpec.model_validate(spec)
    nodes = node_list("gke-l4")
    for node in nodes:
        node["metadata"]["labels"]["team"] = "a"
    first = plan(parsed, pools(nodes, catalog, parsed.node_selector), catalog)
    again = plan(parsed, pools(nodes, catalog, parsed.node_selector), catalog, previous=first.selection())
    assert again.selection() == first.selection()
