"""spec.model.inputs (issue 18, part 2): which sizes take the inputs, how each runtime is told, and
what the encoders cost, as tables of (fixture, spec) -> plan and rendered flags."""

from __future__ import annotations

import json

import pydantic
import pytest

from gemma_operator import sizing
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.cache import plan_cache, size_gib
from gemma_operator.planner import InvalidSpec, NoFit
from tests.conftest import decide, planned, server_args as args

GIB = 2**30


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


GEMMA3_IMAGE = {"model": {"family": "gemma3", "inputs": ["image"]}}

# (fixture, spec) -> (modelId, runtime, the multimodal flags rendered)
PLANS = [
    # The repro: Gemma 3 with images on CPUs is llama.cpp with the projector of the QAT GGUF's repo.
    ("gke-cpu-only", GEMMA3_IMAGE, ("google/gemma-3-4b-it-qat-q4_0-gguf", "llamacpp", ["--mmproj-auto"])),
    # ...and on an L4, vLLM with a limit per prompt (1 image by default).
    ("gke-l4", GEMMA3_IMAGE, ("google/gemma-3-4b-it", "vllm", ["--limit-mm-per-prompt", '{"image":1}'])),
    ("gke-l4", {"model": {"family": "gemma3", "inputs": ["text", "image"], "imagesPerPrompt": 4}},
     ("google/gemma-3-4b-it", "vllm", ["--limit-mm-per-prompt", '{"image":4}'])),
    # Gemma 3n: images asked, audio not: its audio tower is switched off (a limit of 0).
    ("gke-l4", {"model": {"family": "gemma3n", "inputs": ["image"]}},
     ("google/gemma-3n-E2B-it", "vllm", ["--limit-mm-per-prompt", '{"image":1,"audio":0}'])),
    ("gke-l4", {"model": {"family": "gemma3n", "inputs": ["audio", "image"], "audiosPerPrompt": 2}},
     ("google/gemma-3n-E2B-it", "vllm", ["--limit-mm-per-prompt", '{"image":1,"audio":2}'])),
    # Gemma 4 26B A4B: images, and its video input off.
    ("gke-h100x8", {"model": {"family": "gemma4", "size": "26b-a4b", "inputs": ["image"]}},
     ("google/gemma-4-26B-A4B-it", "vllm", ["--limit-mm-per-prompt", '{"image":1,"video":0}'])),
    # Text only on a multimodal checkpoint: the language model alone, in each runtime's words.
    ("gke-l4", {"model": {"family": "gemma3", "size": "4b"}}, ("google/gemma-3-4b-it", "vllm", ["--language-model-only"])),
    ("gke-cpu-only", {"model": {"family": "gemma3", "size": "4b"}},
     ("google/gemma-3-4b-it-qat-q4_0-gguf", "llamacpp", ["--no-mmproj"])),
    # A text-only checkpoint: no multimodal flag at all.
    ("gke-l4", {"model": {"family": "gemma3", "size": "1b"}}, ("google/gemma-3-1b-it", "vllm", [])),
    ("gke-cpu-only", {"model": {"family": "gemma3", "size": "1b"}}, ("google/gemma-3-1b-it-qat-q4_0-gguf", "llamacpp", [])),
]  # fmt: skip
MM_FLAGS = ("--limit-mm-per-prompt", "--language-model-only", "--mmproj-auto", "--no-mmproj")


def multimodal_flags(argv: list[str]) -> list[str]:
    """The multimodal flags of a server's argv, in order, with --limit-mm-per-prompt's value."""
    rendered = []
    for i, arg in enumerate(argv):
        if arg in MM_FLAGS:
            rendered += [arg] + ([argv[i + 1]] if arg == "--limit-mm-per-prompt" else [])
    return rendered


@pytest.mark.parametrize(("fixture", "spec", "expected"), PLANS, ids=lambda v: str(v))
def test_inputs_plan_and_flags(catalog, fixture, spec, expected):
    result = planned(catalog, spec, fixture)
    assert (result.model_id, result.runtime, multimodal_flags(args(catalog, spec, fixture))) == expected


def test_sizes_without_the_encoder_are_left_out_and_the_reasons_say_so(catalog):
    result = decide(catalog, GEMMA3_IMAGE, "gke-cpu-only")
    assert result.size == "4b"
    said = [r for r in result.reasons if r.startswith("Inputs text, image: 270m and 1b left out")]
    assert said == ["Inputs text, image: 270m and 1b left out, with no image encoder (270m and 1b take text only; "
                    "catalog modalities)."]  # fmt: skip
    largest = decide(catalog, {"model": {**GEMMA3_IMAGE["model"], "sizePolicy": "largest"}}, "gke-h100x8")
    assert largest.size == "27b" and largest.selection()["inputs"] == ["text", "image"]


def test_the_projector_is_in_the_plan_the_cache_and_the_memory(catalog):
    text = decide(catalog, {"model": {"family": "gemma3", "size": "4b"}}, "gke-cpu-only")
    image = decide(catalog, {"model": {"family": "gemma3", "size": "4b", "inputs": ["image"]}}, "gke-cpu-only")
    projector = catalog.families["gemma3"].sizes["4b"].checkpoints[0].projector
    assert image.selection()["projectorFile"] == projector.file == "mmproj-model-f16-4B.gguf"
    assert "projectorFile" not in text.selection() and "inputs" not in text.selection()
    assert image.checkpoint_bytes == text.checkpoint_bytes + projector.bytes
    assert image.estimated_memory_gib == pytest.approx(text.estimated_memory_gib + projector.bytes / GIB, abs=0.05)
    spec = GemmaDeploymentSpec.model_validate({"model": {"family": "gemma3", "size": "4b", "inputs": ["image"]}})
    assert plan_cache(image, spec).size == f"{size_gib(text.checkpoint_bytes + projector.bytes)}Gi"
    assert any("mmproj-model-f16-4B.gguf" in r and "--mmproj-auto" in r for r in image.reasons)


def test_vllm_text_only_leaves_out_the_siglip_encoder_and_images_count_it(catalog):
    text = decide(catalog, {"model": {"family": "gemma3", "size": "4b"}, "maxModelLen": 8192}, "gke-l4")
    image = decide(catalog, {"model": {"family": "gemma3", "size": "4b", "inputs": ["image"]}, "maxModelLen": 8192},
                   "gke-l4")  # fmt: skip
    siglip = catalog.families["gemma3"].sizes["4b"].encoders["image"]
    assert siglip.in_params and siglip.params_b == 0.417
    # Per-device weights: the model card's 4.3B hold SigLIP; a text-only server loads 4.3 - 0.417.
    assert image.weights_gib - text.weights_gib == pytest.approx(siglip.params_b * 1e9 * 2 / GIB, rel=0.06)
    assert any("neither loaded nor profiled" in r and "--language-model-only" in r for r in text.reasons)


def test_an_encoder_outside_the_parameter_count_is_added(catalog):
    size = catalog.families["gemma4"].sizes["31b"]
    assert not size.encoders["image"].in_params
    assert sizing.encoders_gib(size, "vllm", ["text", "image"], "bf16") == pytest.approx(0.55e9 * 2 / GIB)
    assert sizing.encoders_gib(size, "vllm", ["text"], "bf16") == 0.0
    gemma3 = catalog.families["gemma3"].sizes["27b"]
    assert sizing.encoders_gib(gemma3, "vllm", ["text"], "fp8") == pytest.approx(-0.417e9 / GIB)
    assert sizing.encoders_gib(gemma3, "llamacpp", ["text", "image"], "q4_0", 858_000_000) == pytest.approx(858e6 / GIB)
    assert sizing.encoders_gib(gemma3, "llamacpp", ["text"], "q4_0", 858_000_000) == 0.0


INVALID = [
    # A size named without the encoder: the field, and the sizes that have it.
    ({"model": {"family": "gemma3", "size": "1b", "inputs": ["image"]}}, "spec.model.inputs",
     "gemma3 1b has no image encoder (it takes text); 4b, 12b or 27b do"),
    ({"model": {"family": "gemma3", "inputs": ["audio"]}}, "spec.model.inputs", "no gemma3 size takes audio"),
    ({"model": {"id": "google/gemma-3-1b-it", "inputs": ["image"]}}, "spec.model.inputs",
     "google/gemma-3-1b-it (gemma3 1b) takes text, not image"),
    # Audio: only where a pinned runtime serves it for the family.
    ({"model": {"family": "gemma2", "inputs": ["audio"]}}, "spec.model.inputs", "no gemma2 size takes audio"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field", "text"), INVALID, ids=lambda v: str(v))
def test_inputs_no_cluster_could_serve_are_invalid(catalog, spec, field, text):
    with pytest.raises(InvalidSpec) as err:
        decide(catalog, spec, "gke-l4")
    assert err.value.field == field and text in str(err.value), str(err.value)


def test_audio_on_cpus_without_a_projector_gguf_is_a_nofit_that_says_so(catalog):
    result = decide(catalog, {"model": {"family": "gemma3n", "inputs": ["audio"]}}, "gke-cpu-only")
    assert isinstance(result, NoFit)
    assert "with a projector for audio input in the catalog" in result.message, result.message


def test_counts_need_their_input_and_inputs_are_unique():
    with pytest.raises(pydantic.ValidationError, match="imagesPerPrompt needs image in inputs"):
        GemmaDeploymentSpec.model_validate({"model": {"imagesPerPrompt": 2}})
    with pytest.raises(pydantic.ValidationError, match="repeated: image"):
        GemmaDeploymentSpec.model_validate({"model": {"inputs": ["image", "image"]}})
    with pytest.raises(pydantic.ValidationError):
        GemmaDeploymentSpec.model_validate({"model": {"inputs": ["video"]}})
    assert GemmaDeploymentSpec.model_validate({}).model.media == {}


@pytest.mark.parametrize("arg", ["--limit-mm-per-prompt={\"image\":9}", "--language-model-only"])
def test_the_plan_owns_the_multimodal_flags(catalog, arg):
    with pytest.raises(InvalidSpec, match="set by the plan"):
        args(catalog, {"model": {"family": "gemma3", "size": "4b"}, "extraArgs": [arg]}, "gke-l4")


def test_limit_is_json_vllm_reads(catalog):
    argv = args(catalog, {"model": {"family": "gemma3n", "inputs": ["image", "audio"]}}, "gke-l4")
    assert json.loads(flag(argv, "--limit-mm-per-prompt")) == {"image": 1, "audio": 1}
