"""The decision, as tables: (spec, node fixture) -> selection; bad specs -> InvalidSpec; too little -> NoFit."""

from __future__ import annotations

import pytest

from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import InvalidSpec, NoFit, Plan, plan
from tests.conftest import node_list


def decide(catalog, spec: dict, fixture: str) -> Plan | NoFit:
    parsed = GemmaDeploymentSpec.model_validate(spec)
    return plan(parsed, pools(node_list(fixture), catalog, parsed.node_selector), catalog)


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
     ("google/gemma-3-12b-it", "vllm", "fp8", "nvidia-l4", 1, 1, 106496)),
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
    result = decide(catalog, spec, fixture)
    assert isinstance(result, Plan), getattr(result, "message", result)
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


def test_sticky_inputs_give_the_same_plan(catalog):
    assert decide(catalog, {}, "gke-l4") == decide(catalog, {}, "gke-l4")


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
    ("gke-cpu-only", {"accelerator": "nvidia-l4"}, "No nvidia-l4 nodes"),
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
