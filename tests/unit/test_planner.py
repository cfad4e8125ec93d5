"""The decision, as tables: (spec, node fixture) -> selection; bad specs -> InvalidSpec; too little -> NoFit."""

from __future__ import annotations

import re

import pytest

from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.crd import crd
from gemma_operator.inventory import pools
from gemma_operator.planner import InvalidSpec, NoFit, Plan, plan, replans
from tests.conftest import decide, node_list, planned


def gpu_nodes(fixture: str) -> list[dict]:
    """The GPU nodes of a GKE fixture (each fixture also has a small CPU pool)."""
    return [n for n in node_list(fixture) if "cloud.google.com/gke-accelerator" in n["metadata"]["labels"]]


def cordoned(node: dict) -> dict:
    return {**node, "spec": {**(node.get("spec") or {}), "unschedulable": True}}


def renamed(node: dict, name: str, labels: dict | None = None, allocatable: dict | None = None) -> dict:
    meta = {**node["metadata"], "name": name, "labels": {**node["metadata"]["labels"], **(labels or {})}}
    status = {**node["status"], "allocatable": {**node["status"]["allocatable"], **(allocatable or {})}}
    return {**node, "metadata": meta, "status": status}


# (fixture, spec) -> (modelId, runtime, quantization, accelerator, tensorParallelSize, acceleratorCount, maxModelLen)
DECISIONS = [
    # "a Gemma, please": Gemma 4 E2B IT everywhere, at 16 bits where the device can.
    ("gke-cpu-only", {}, ("google/gemma-4-E2B-it-qat-q4_0-gguf", "llamacpp", "q4_0", "cpu", 1, 0, 131072)),
    ("gke-l4", {}, ("google/gemma-4-E2B-it", "vllm", "bf16", "nvidia-l4", 1, 1, 131072)),
    ("gke-t4", {}, ("google/gemma-4-E2B-it", "vllm", "fp16", "nvidia-tesla-t4", 1, 1, 131072)),
    ("gke-a100-80gb", {}, ("google/gemma-4-E2B-it", "vllm", "bf16", "nvidia-a100-80gb", 1, 1, 131072)),
    ("gke-h100x8", {}, ("google/gemma-4-E2B-it", "vllm", "bf16", "nvidia-h100-80gb", 1, 1, 131072)),
    ("gke-tpu-v5e-2x2", {}, ("google/gemma-4-E2B-it", "vllm", "bf16", "tpu-v5e", 4, 4, 131072)),
    ("gke-tpu-v6e-2x4", {}, ("google/gemma-4-E2B-it", "vllm", "bf16", "tpu-v6e", 8, 8, 131072)),
    ("gfd-a10g", {}, ("google/gemma-4-E2B-it", "vllm", "bf16", "nvidia-a10g", 1, 1, 131072)),
    # Gemma 3 on a T4: no bf16, and vLLM refuses float16 for gemma3 -> llama.cpp on CUDA with the QAT GGUF.
    ("gke-t4", {"model": {"family": "gemma3"}},
     ("google/gemma-3-1b-it-qat-q4_0-gguf", "llamacpp", "q4_0", "nvidia-tesla-t4", 1, 1, 32768)),
    ("gke-l4", {"model": {"family": "gemma3"}}, ("google/gemma-3-270m-it", "vllm", "bf16", "nvidia-l4", 1, 1, 32768)),
    # sizePolicy largest: the biggest Gemma 4 each cluster can hold.
    # The W4A16 checkpoint's files (~21.7 GiB) leave an L4 no room; the QAT GGUF (16.4 GiB) fits.
    ("gke-l4", {"model": {"sizePolicy": "largest"}},
     ("google/gemma-4-31B-it-qat-q4_0-gguf", "llamacpp", "q4_0", "nvidia-l4", 1, 1, 43520)),
    ("gke-h100x8", {"model": {"sizePolicy": "largest"}},
     ("google/gemma-4-31B-it", "vllm", "bf16", "nvidia-h100-80gb", 2, 2, 262144)),
    ("gke-a100-80gb", {"model": {"sizePolicy": "largest"}},
     ("google/gemma-4-31B-it", "vllm", "bf16", "nvidia-a100-80gb", 1, 1, 17664)),
    ("gke-tpu-v5e-2x2", {"model": {"sizePolicy": "largest"}},
     ("google/gemma-4-12B-it", "vllm", "bf16", "tpu-v5e", 4, 4, 262144)),
    ("gke-tpu-v6e-2x4", {"model": {"sizePolicy": "largest"}},
     ("google/gemma-4-31B-it", "vllm", "bf16", "tpu-v6e", 8, 8, 262144)),
    ("gke-cpu-only", {"model": {"sizePolicy": "largest"}},
     ("google/gemma-4-31B-it-qat-q4_0-gguf", "llamacpp", "q4_0", "cpu", 1, 0, 72448)),
    # 27B needs more than one L4 at 16 or 8 bits, and vLLM has no 4-bit checkpoint of it:
    # llama.cpp on CUDA serves Google's QAT Q4_0 GGUF instead.
    ("gke-l4", {"model": {"family": "gemma3", "size": "27b"}},
     ("google/gemma-3-27b-it-qat-q4_0-gguf", "llamacpp", "q4_0", "nvidia-l4", 1, 1, 53504)),
    ("gke-l4", {"model": {"family": "gemma3", "size": "12b"}},
     ("google/gemma-3-12b-it", "vllm", "fp8", "nvidia-l4", 1, 1, 113152)),
    # Overrides are honoured.
    ("gke-l4", {"accelerator": "cpu"}, ("google/gemma-4-E2B-it-qat-q4_0-gguf", "llamacpp", "q4_0", "cpu", 1, 0, 131072)),
    ("gke-l4", {"runtime": "llamacpp"},
     ("google/gemma-4-E2B-it-qat-q4_0-gguf", "llamacpp", "q4_0", "nvidia-l4", 1, 1, 131072)),
    ("gke-l4", {"quantization": "fp8"}, ("google/gemma-4-E2B-it", "vllm", "fp8", "nvidia-l4", 1, 1, 131072)),
    ("gke-l4", {"maxModelLen": 8192}, ("google/gemma-4-E2B-it", "vllm", "bf16", "nvidia-l4", 1, 1, 8192)),
    ("gke-l4", {"model": {"tuning": "pt"}}, ("google/gemma-4-E2B", "vllm", "bf16", "nvidia-l4", 1, 1, 131072)),
    ("gke-l4", {"model": {"id": "google/gemma-3-4b-it"}},
     ("google/gemma-3-4b-it", "vllm", "bf16", "nvidia-l4", 1, 1, 131072)),
    ("gke-cpu-only", {"model": {"id": "google/gemma-3-27b-it-qat-q4_0-gguf"}},
     ("google/gemma-3-27b-it-qat-q4_0-gguf", "llamacpp", "q4_0", "cpu", 1, 0, 82688)),
    # A fine-tune outside the catalog, sized as its base model.
    ("gke-l4", {"model": {"id": "acme/gemma-3-4b-support-bot", "family": "gemma3", "size": "4b"}},
     ("acme/gemma-3-4b-support-bot", "vllm", "bf16", "nvidia-l4", 1, 1, 131072)),
    ("gke-h100x8", {"model": {"family": "gemma3", "size": "27b"}, "quantization": "bf16"},
     ("google/gemma-3-27b-it", "vllm", "bf16", "nvidia-h100-80gb", 1, 1, 131072)),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "expected"), DECISIONS, ids=lambda v: str(v))
def test_decision(catalog, fixture, spec, expected):
    result = planned(catalog, spec, fixture)
    got = result.selection()
    keys = ("modelId", "runtime", "quantization", "accelerator", "tensorParallelSize", "acceleratorCount", "maxModelLen")
    assert tuple(got[k] for k in keys) == expected
    assert len(got["reasons"]) >= 6 and all(r.endswith(".") for r in got["reasons"])
    assert got["estimatedMemoryGiB"] > 0


def test_every_decision_explains_each_choice(catalog):
    reasons = decide(catalog, {}, "gke-l4").selection()["reasons"]
    for topic in ("Family", "Size", "Tuning", "Accelerator", "Quantization", "Runtime", "Tensor parallelism", "Context", "Image"):
        assert any(r.startswith(topic) for r in reasons), topic


def test_reasons_name_the_pools_that_lost(catalog):
    reasons = decide(catalog, {"model": {"family": "gemma3"}}, "gke-t4").selection()["reasons"]
    runtime = next(r for r in reasons if r.startswith("Runtime"))
    assert "has no bf16 and vLLM refuses float16 for gemma3" in runtime


def test_tpu_pod_takes_every_chip_and_tp_divides_heads(catalog):
    # Gemma 3 1B has 4 attention heads: on an 8-chip host vLLM can shard over 4, the pod still takes 8.
    result = decide(catalog, {"model": {"family": "gemma3", "size": "1b"}}, "gke-tpu-v6e-2x4")
    assert (result.tensor_parallel_size, result.accelerator_count) == (4, 8)


def test_a_previous_selection_holds_its_pool_and_its_words_until_the_pool_goes(catalog):
    spec = GemmaDeploymentSpec.model_validate({})
    t4 = gpu_nodes("gke-t4")
    serving = plan(spec, pools(t4, catalog), catalog)
    assert serving.pool.name == "nvidia-tesla-t4-x1"
    # An L4 pool appears and a cordoned node changes what a fresh plan would say: the serving
    # plan keeps its pool and its reasons word for word.
    grown = t4 + gpu_nodes("gke-l4") + [cordoned(node_list("gke-cpu-only")[0])]
    fresh = plan(spec, pools(grown, catalog), catalog)
    assert fresh.pool.name == "nvidia-l4-x1"
    kept = plan(spec, pools(grown, catalog), catalog, previous=serving.selection())
    assert kept.selection() == serving.selection()
    # Once the T4 pool is gone, the plan moves to the best pool left.
    moved = plan(spec, pools(gpu_nodes("gke-l4"), catalog), catalog, previous=serving.selection())
    assert moved.pool.name == "nvidia-l4-x1" and moved.quantization == "bf16"
    # A previous selection the pool can no longer give (another model) is planned afresh, on that pool.
    other = {**serving.selection(), "modelId": "google/gemma-4-E4B-it", "size": "e4b"}
    again = plan(spec, pools(grown, catalog), catalog, previous=other)
    assert again.pool.name == "nvidia-tesla-t4-x1" and again.size == "e2b"
    assert again.reasons != tuple(other["reasons"])


# spec -> (field, words in the message)
INVALID = [
    ({"model": {"family": "gemma99"}}, "spec.model.family", "unknown family 'gemma99'"),
    ({"model": {"family": "gemma3", "size": "3b"}}, "spec.model.size", "gemma3 has no size '3b'"),
    ({"model": {"family": "codegemma", "size": "2b", "tuning": "it"}}, "spec.model.tuning", "no it checkpoint"),
    ({"model": {"family": "gemma3", "size": "1b"}, "maxModelLen": 100000}, "spec.maxModelLen", "beyond gemma3"),
    ({"model": {"family": "gemma2"}, "maxModelLen": 1000000}, "spec.maxModelLen", "8192 tokens at most"),
    ({"model": {"id": "someone/llama-3-8b"}}, "spec.model.id", "not in the catalog"),
    ({"model": {"id": "google/gemma-3-4b-it", "size": "27b"}}, "spec.model.size", "contradicts model.id"),
    ({"runtime": "vllm", "quantization": "q4_0"}, "spec.quantization", "GGUF format"),
    ({"runtime": "llamacpp", "quantization": "fp8"}, "spec.quantization", "vLLM quantization"),
    ({"model": {"family": "gemma3"}, "runtime": "vllm", "quantization": "fp16"}, "spec.quantization",
     "vLLM refuses float16 for gemma3"),
    ({"accelerator": "tpu-v9000"}, "spec.accelerator", "unknown accelerator"),
    ({"accelerator": "cpu", "runtime": "vllm"}, "spec.runtime", "vLLM on GPUs and TPUs only"),
    ({"model": {"id": "google/gemma-3-27b-it-qat-q4_0-gguf"}, "quantization": "q8_0"}, "spec.quantization",
     "contradicts model.id"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field", "words"), INVALID, ids=lambda v: str(v))
def test_invalid_specs_are_refused_with_the_field(catalog, spec, field, words):
    with pytest.raises(InvalidSpec) as info:
        decide(catalog, spec, "gke-l4")
    assert info.value.field == field
    assert words in str(info.value)


NOFIT = [
    # No node, and no GKE shape to scale up (a GKE GPU with none plans on its standard shape: test_capacity).
    ("gke-cpu-only", {"accelerator": "nvidia-a10g"}, "No nvidia-a10g nodes"),
    ("gke-t4", {"model": {"family": "gemma4", "size": "31b"}}, "Nothing fits gemma-4-31b-it"),
    ("gke-l4", {"model": {"family": "gemma3", "size": "27b"}, "quantization": "bf16"}, "Nothing fits gemma-3-27b-it"),
    ("gke-tpu-v5e-2x2", {"model": {"family": "gemma4", "size": "31b"}, "accelerator": "tpu-v5e"}, "Nothing fits"),
    ("gke-l4", {"maxModelLen": 131072, "model": {"family": "gemma3", "size": "27b"}, "quantization": "q4_0"},
     "Nothing fits"),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "words"), NOFIT, ids=lambda v: str(v))
def test_no_fit_says_what_was_needed_and_what_there_is(catalog, fixture, spec, words):
    result = decide(catalog, spec, fixture)
    assert isinstance(result, NoFit)
    assert words in result.message
    assert "The cluster has:" in result.message


def test_no_fit_gives_memory_figures(catalog):
    result = decide(catalog, {"model": {"family": "gemma3", "size": "27b"}, "quantization": "bf16"}, "gke-l4")
    assert "needs 5" in result.message and "GiB per GPU" in result.message and "has 20.2" in result.message
    assert "nvidia-l4-x1: 1 node(s) x 1 NVIDIA L4" in result.message


def test_a_serving_plan_stays_when_unrelated_nodes_come_and_go(catalog):
    spec = GemmaDeploymentSpec.model_validate({})
    before = plan(spec, pools(node_list("gke-cpu-only"), catalog), catalog)
    assert before.pool.kind == "cpu"
    # An L4 pool appears: a fresh plan would move to it, the serving one stays where it is.
    bigger = node_list("gke-cpu-only") + node_list("gke-l4")
    assert plan(spec, pools(bigger, catalog), catalog).pool.kind == "gpu"
    after = plan(spec, pools(bigger, catalog), catalog, previous=before.selection())
    assert after.selection() == before.selection()


def test_a_plan_moves_when_its_pool_disappears(catalog):
    spec = GemmaDeploymentSpec.model_validate({})
    both = node_list("gke-cpu-only") + node_list("gke-l4")
    serving = plan(spec, pools(both, catalog), catalog)
    assert serving.pool.name == "nvidia-l4-x1"
    moved = plan(spec, pools(node_list("gke-cpu-only"), catalog), catalog, previous=serving.selection())
    assert moved.pool.name == "cpu-e2-standard-8"


# --- Ranking pools for the same model: precision, then the device, then the fewest devices. ---

V5E_2X4 = {"cloud.google.com/gke-tpu-topology": "2x4", "node.kubernetes.io/instance-type": "ct5lp-hightpu-8t"}

# (nodes, spec) -> (winning pool, the losing pool, words that say why it lost)
RANKING = [
    # The T4 has no bf16: the L4 serves the same model at bf16, whatever the T4's smaller memory.
    (lambda: gpu_nodes("gke-l4") + gpu_nodes("gke-t4"), {}, ("nvidia-l4-x1", "nvidia-tesla-t4-x1", "no bf16")),
    # Same precision: the newer compute capability wins (L4 8.9 over A10G 8.6).
    (lambda: node_list("gfd-a10g") + gpu_nodes("gke-l4"), {}, ("nvidia-l4-x1", "nvidia-a10g-x1", "compute capability 8.6")),
    # TPUs: same precision, no compute capability: memory bandwidth decides (v6e 1638 GB/s over v5e 819).
    (lambda: node_list("gke-tpu-v5e-2x2") + node_list("gke-tpu-v6e-2x4"), {"accelerator": "auto"},
     ("tpu-v6e-2x4", "tpu-v5e-2x2", "819 GB/s")),
    # The same device in two shapes: the fewest devices win.
    (lambda: node_list("gke-tpu-v5e-2x2")
     + [renamed(node_list("gke-tpu-v5e-2x2")[1], "v5e-8t", V5E_2X4, {"google.com/tpu": "8"})], {},
     ("tpu-v5e-2x2", "tpu-v5e-2x4", "8 chips")),
]  # fmt: skip


@pytest.mark.parametrize(("nodes", "spec", "expected"), RANKING,
                         ids=["bf16-over-fp16", "compute-capability", "memory-bandwidth", "fewest-devices"])  # fmt: skip
def test_the_best_pool_wins_and_the_reasons_say_why_the_others_lost(catalog, nodes, spec, expected):
    winner, loser, words = expected
    result = planned(catalog, spec, nodes())
    assert result.pool.name == winner
    accelerator = next(r for r in result.reasons if r.startswith("Accelerator"))
    assert loser in accelerator and words in accelerator, accelerator


def test_l4_and_t4_pools_plan_the_l4_at_bf16(catalog):
    result = decide(catalog, {}, gpu_nodes("gke-l4") + gpu_nodes("gke-t4"))
    assert (result.pool.accelerator, result.quantization, result.dtype) == ("nvidia-l4", "bf16", "bfloat16")


def test_every_gpu_and_tpu_has_a_sourced_memory_bandwidth(catalog):
    for name, accelerator in catalog.accelerators.items():
        if accelerator.kind != "cpu":
            assert accelerator.memory_bandwidth_gbps and accelerator.memory_bandwidth_gbps > 0, name


# --- Reasons that say why. ---


def test_sizes_whose_context_is_too_short_are_named(catalog):
    result = decide(catalog, {"maxModelLen": 200000}, "gke-l4")
    size = next(r for r in result.reasons if r.startswith("Size"))
    assert result.size == "12b"
    assert "e2b" in size and "e4b" in size and "131072" in size, size


@pytest.mark.parametrize(
    ("nodes", "skipped", "words"),
    [
        (lambda: node_list("gke-cpu-only") + [cordoned(n) for n in gpu_nodes("gke-l4")], "gke-demo-l4-pool-0", "cordoned"),
        (lambda: node_list("gke-cpu-only")
         + [renamed(node_list("gke-tpu-v5e-2x2")[1], "v5e-4x4", {"cloud.google.com/gke-tpu-topology": "4x4"})],
         "v5e-4x4", "spans several hosts"),
    ],
    ids=["cordoned", "multi-host-tpu"],
)  # fmt: skip
def test_a_plan_names_the_nodes_it_skipped_and_why(catalog, nodes, skipped, words):
    result = decide(catalog, {}, nodes())
    assert isinstance(result, Plan) and result.pool.kind == "cpu"
    named = [r for r in result.reasons if skipped in r]
    assert named and words in named[0], result.reasons


def test_no_fit_for_any_size_gives_each_sizes_blocker(catalog):
    result = decide(catalog, {"quantization": "bf16"}, "gke-cpu-only")
    assert isinstance(result, NoFit)
    for size in ("e2b", "e4b", "12b", "26b-a4b", "31b"):
        assert f"no bf16 GGUF of gemma4 {size} it" in result.message, size


@pytest.mark.parametrize(
    ("spec", "fixture", "words"),
    [
        ({"model": {"family": "gemma3n", "size": "e4b"}, "runtime": "llamacpp"}, "gke-l4", "no bf16 or fp16 GGUF"),
        ({"model": {"family": "gemma3n", "size": "e4b"}}, "gke-cpu-only", "no q4_0 GGUF"),
    ],
)
def test_a_quantization_forced_by_missing_checkpoints_says_so(catalog, spec, fixture, words):
    result = decide(catalog, spec, fixture)
    assert result.quantization == "q8_0"
    quantization = next(r for r in result.reasons if r.startswith("Quantization"))
    assert "do not fit" not in quantization and words in quantization, quantization


def test_memory_still_explains_a_lower_precision(catalog):
    result = decide(catalog, {"model": {"family": "gemma3", "size": "27b"}}, "gke-l4")
    quantization = next(r for r in result.reasons if r.startswith("Quantization"))
    assert "do not fit NVIDIA L4" in quantization and "vLLM bf16" in quantization, quantization


# --- Accelerator names: GKE's label values are aliases; near misses get a suggestion. ---


def test_every_gke_label_value_names_its_accelerator(catalog):
    (version,) = crd()["spec"]["versions"]
    field = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["accelerator"]
    for name, accelerator in catalog.accelerators.items():
        for alias in (*accelerator.match.gke_accelerator, *accelerator.match.gke_tpu_accelerator):
            # The CRD admits it, as the API server would check it.
            assert re.fullmatch(field["pattern"], alias) and len(alias) <= field["maxLength"], alias
            spec = GemmaDeploymentSpec.model_validate({"accelerator": alias})
            result = plan(spec, pools(node_list("gke-cpu-only"), catalog), catalog)
            if name == "cpu":
                continue
            if alias in catalog.machines.standard:
                # No such node: the catalog's standard GKE shape, selected by the label value as written.
                assert isinstance(result, Plan), (alias, result.message)
                assert result.selection()["capacity"] == "scale-up", alias
                label = "cloud.google.com/gke-tpu-accelerator" if accelerator.kind == "tpu" else "cloud.google.com/gke-accelerator"
                assert result.node_selector[label] == alias
            else:
                assert isinstance(result, NoFit) and f"No {name} nodes" in result.message, (alias, result)


@pytest.mark.parametrize(
    ("alias", "fixture", "accelerator"),
    [
        ("tpu-v5-lite-podslice", "gke-tpu-v5e-2x2", "tpu-v5e"),
        ("tpu-v6e-slice", "gke-tpu-v6e-2x4", "tpu-v6e"),
        ("nvidia-h100-mega-80gb", "gke-h100x8", "nvidia-h100-80gb"),
    ],
)
def test_gke_label_values_plan_on_their_pool(catalog, alias, fixture, accelerator):
    result = decide(catalog, {"accelerator": alias}, fixture)
    assert isinstance(result, Plan) and result.pool.accelerator == accelerator
    assert any(alias in r for r in result.reasons if r.startswith("Accelerator"))


@pytest.mark.parametrize(
    ("asked", "words"),
    [
        ("nvidia-h100", "did you mean nvidia-h100-80gb or nvidia-h100-mega-80gb?"),
        ("tpu-v5-lite", "did you mean tpu-v5-lite-device or tpu-v5-lite-podslice?"),
        ("nvidia-l4x", "did you mean nvidia-l4"),
    ],
)
def test_a_near_miss_gets_did_you_mean(catalog, asked, words):
    with pytest.raises(InvalidSpec) as info:
        decide(catalog, {"accelerator": asked}, "gke-l4")
    assert info.value.field == "spec.accelerator" and words in str(info.value)


def test_an_uncatalogued_gpu_in_the_cluster_is_still_accepted_by_its_slug(catalog):
    node = renamed(node_list("gfd-a10g")[0], "rtx", {"nvidia.com/gpu.product": "NVIDIA-RTX-A6000",
                                                     "nvidia.com/gpu.memory": "49140"})  # fmt: skip
    result = decide(catalog, {"accelerator": "nvidia-rtx-a6000"}, [node])
    assert isinstance(result, Plan) and result.pool.accelerator == "nvidia-rtx-a6000"


# --- Replicas beyond what the pool can place. ---


@pytest.mark.parametrize(
    ("fixture", "replicas", "placeable"),
    [("gke-l4", 5, 1), ("gke-tpu-v5e-2x2", 2, 1), ("gke-cpu-only", 3, 2),
     # Two nodes whose L4 four pods share, each planned at its share.
     ("gfd-l4-shared", 9, 8)],
)
def test_replicas_beyond_the_pool_are_named(catalog, fixture, replicas, placeable):
    result = decide(catalog, {"replicas": replicas}, fixture)
    said = [r for r in result.reasons if r.startswith("Replicas")]
    assert said and f"only {placeable}" in said[0] and "until the pool grows" in said[0], result.reasons


@pytest.mark.parametrize(("fixture", "replicas"), [("gke-h100x8", 8), ("gke-l4", 1), ("gke-cpu-only", 2)])
def test_replicas_that_fit_say_nothing_more(catalog, fixture, replicas):
    result = decide(catalog, {"replicas": replicas}, fixture)
    assert not [r for r in result.reasons if r.startswith("Replicas")]


# --- GPUs shared by time-slicing: each pod plans for its share (issue 20, item 3). ---


def shared_l4(replicas: int, strategy: str = "time-slicing") -> list[dict]:
    """gfd-l4-shared's two nodes, each L4 shared by `replicas` pods."""
    labels = {"nvidia.com/gpu.replicas": str(replicas), "nvidia.com/gpu.sharing-strategy": strategy}
    return [renamed(n, n["metadata"]["name"], labels, {"nvidia.com/gpu": str(replicas)}) for n in node_list("gfd-l4-shared")]


# (pods per L4, sharing strategy, spec) -> the memory one pod may plan for (GiB), or the refusal's words.
# Time-slicing does not partition a GPU's memory: every pod sees all of it, so a plan at the whole
# 22.5 GiB runs out of memory as soon as a second pod lands on the GPU.
SHARED_GPUS = [
    (4, "time-slicing", {}, 5.6),
    (2, "time-slicing", {"model": {"sizePolicy": "largest"}}, 11.2),
    (4, "time-slicing", {"runtime": "vllm", "model": {"family": "gemma3", "size": "1b"}}, 5.6),
    (4, "time-slicing", {"runtime": "llamacpp"}, 5.6),
    # MPS already gave each client its share; it stays so.
    (4, "mps", {}, 5.6),
    # 48 pods of one L4 get 0.5 GiB each: no Gemma fits, and the refusal says it is the share.
    (48, "time-slicing", {}, "Nothing fits any gemma4 size"),
]  # fmt: skip


@pytest.mark.parametrize(("replicas", "strategy", "spec", "expected"), SHARED_GPUS, ids=lambda v: str(v))
def test_a_time_sliced_gpu_is_planned_at_its_share(catalog, replicas, strategy, spec, expected):
    result = decide(catalog, spec, shared_l4(replicas, strategy))
    if isinstance(expected, str):
        assert isinstance(result, NoFit), result
        assert expected in result.message
        assert f"a 1/{replicas} share of a time-sliced NVIDIA L4" in result.message, result.message
        return
    assert isinstance(result, Plan), getattr(result, "message", result)
    assert result.pool.device_memory_gib == expected
    assert result.estimated_memory_gib <= expected
    if strategy == "time-slicing":
        (said,) = [r for r in result.reasons if r.startswith("Time-sliced GPU")]
        assert f"{replicas} pods share each NVIDIA L4" in said and f"1/{replicas} share" in said, said
        assert f"{expected:g} GiB" in said
    quantization = next(r for r in result.reasons if r.startswith("Quantization"))
    if "do not fit" in quantization:
        assert f"do not fit a 1/{replicas} share of NVIDIA L4" in quantization, quantization


# --- NoFit: suggestions, the nearest change that would fit. ---

# (fixture, spec) -> (field, value) of the first suggestion
SUGGESTIONS = [
    ("gke-l4", {"model": {"family": "gemma3", "size": "27b"}, "quantization": "bf16"}, ("spec.quantization", "q4_0")),
    ("gke-cpu-only", {"accelerator": "nvidia-a10g"}, ("spec.accelerator", "cpu")),
    ("gke-l4", {"maxModelLen": 131072, "model": {"family": "gemma3", "size": "27b"}, "quantization": "q4_0"},
     ("spec.maxModelLen", 53504)),
    ("gke-t4", {"model": {"family": "gemma4", "size": "31b"}}, ("spec.model.size", "12b")),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "expected"), SUGGESTIONS, ids=lambda v: str(v))
def test_no_fit_suggests_the_nearest_change_that_fits(catalog, fixture, spec, expected):
    result = decide(catalog, spec, fixture)
    assert isinstance(result, NoFit)
    assert result.suggestions, result.message
    first = result.suggestions[0]
    assert (first.field, first.value) == expected
    # The one-line message (status, events, JSON) carries it too.
    assert "\n" not in result.message and f"Would fit: {first.field}: {first.value} (" in result.message


def test_a_suggestion_applied_plans(catalog):
    spec = {"model": {"family": "gemma3", "size": "27b"}, "quantization": "bf16"}
    suggestion = decide(catalog, spec, "gke-l4").suggestions[0]
    assert isinstance(decide(catalog, {**spec, "quantization": suggestion.value}, "gke-l4"), Plan)


def test_no_fit_without_a_single_change_suggests_nothing(catalog):
    result = decide(catalog, {"model": {"family": "gemma3", "size": "270m"}}, [])
    assert isinstance(result, NoFit) and result.suggestions == ()


# --- gated checkpoints -------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "gated"), [
    ({"model": {"family": "gemma3"}}, True),            # google/gemma-3-270m-it: Google's license gate
    ({"model": {"family": "gemma3"}, "accelerator": "cpu"}, True),  # the QAT GGUF is gated too
    ({}, False),                                        # Gemma 4 (Apache 2.0): no gate
])  # fmt: skip
def test_a_gated_checkpoint_without_a_token_says_so(catalog, spec, gated):
    from gemma_operator.planner import token_warning

    result = decide(catalog, spec, "gke-l4")
    assert result.gated is gated
    warning = token_warning(result, GemmaDeploymentSpec.model_validate(spec))
    if gated:
        assert warning and result.model_id in warning and "spec.hfTokenSecretRef" in warning
        assert warning in result.reasons
    else:
        assert warning is None and not any("gated" in r for r in result.reasons)
    with_token = GemmaDeploymentSpec.model_validate({**spec, "hfTokenSecretRef": {"name": "hf"}})
    assert token_warning(result, with_token) is None
    assert not any("gated" in r for r in decide(catalog, {**spec, "hfTokenSecretRef": {"name": "hf"}}, "gke-l4").reasons)


def test_every_checkpoint_records_whether_it_is_gated_with_a_source(catalog):
    import pydantic

    from gemma_operator.catalog import Checkpoint, ModelSize

    for family in catalog.families.values():
        for size in family.sizes.values():
            assert isinstance(size.gated, bool) and str(size.gated_source).startswith("https://")
            for checkpoint in size.checkpoints:
                assert isinstance(checkpoint.gated, bool) and str(checkpoint.gated_source).startswith("https://")
    size = catalog.families["gemma3"].sizes["1b"].model_dump()
    with pytest.raises(pydantic.ValidationError, match="gated"):
        ModelSize.model_validate({k: v for k, v in size.items() if k != "gated"})
    with pytest.raises(pydantic.ValidationError, match="gated_source"):
        Checkpoint.model_validate({k: v for k, v in size["checkpoints"][0].items() if k != "gated_source"})


@pytest.mark.parametrize(("old", "new", "expected"), [
    (None, {"modelId": "a", "pool": "l4", "capacity": "scale-up", "reasons": ["x"]}, True),
    ({"modelId": "a", "pool": "l4", "capacity": "scale-up", "reasons": ["x"]},
     {"modelId": "a", "pool": "l4", "capacity": "ready", "reasons": ["y"]}, False),  # the scale-up completed
    ({"modelId": "a", "pool": "l4", "capacity": "ready"}, {"modelId": "a", "pool": "t4", "capacity": "ready"}, True),
    ({"modelId": "a", "nodeSelector": {"k": "v"}}, {"modelId": "a", "nodeSelector": {"k": "w"}}, True),
])  # fmt: skip
def test_a_completed_scale_up_or_new_words_are_not_a_new_plan(old, new, expected):
    """The operator announces a plan (Event "Planned") only when what serves changes."""
    assert replans(old, new) is expected
