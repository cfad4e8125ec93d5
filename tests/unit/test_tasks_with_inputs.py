"""Where issue 18's two halves meet: spec.model.task (embed, and the specialised families) with
spec.model.inputs and spec.chatTemplate. An embedding model reads text and applies no chat template;
the families that came with the embed work carry their turn formats, encoders and per-runtime inputs."""

from __future__ import annotations

import io
import json

import pytest
import yaml

from gemma_operator import chat_template, sizing
from gemma_operator.__main__ import main
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.planner import InvalidSpec, Plan
from tests.conftest import NODES, decide, planned, server_args
from tests.unit.test_inputs import multimodal_flags

EMBED = {"model": {"task": "embed"}}
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
GIB = 2**30


# An embedding model with an input beyond text or a chat template: Invalid, naming the field, whichever
# way the embedding model was asked for (task with family auto, the family, or its repo id).
INVALID = [
    ({"model": {"task": "embed", "inputs": ["image"]}}, "spec.model.inputs", "reads text only, not image"),
    ({"model": {"task": "embed", "inputs": ["text", "audio"]}}, "spec.model.inputs", "reads text only, not audio"),
    ({"model": {"task": "embed", "family": "embeddinggemma", "size": "300m", "inputs": ["image"]}}, "spec.model.inputs",
     "embeddinggemma is an embedding model"),
    ({"model": {"task": "embed", "id": "google/embeddinggemma-300m", "inputs": ["image"]}}, "spec.model.inputs",
     "reads text only"),
    ({**EMBED, "chatTemplate": {"inline": TEMPLATE}}, "spec.chatTemplate", "applies no chat template"),
    ({**EMBED, "chatTemplate": {"configMapRef": {"name": "tpl", "key": "chat.jinja"}}}, "spec.chatTemplate",
     "applies no chat template"),
    ({"model": {"task": "embed", "id": "google/embeddinggemma-300m"}, "chatTemplate": {"inline": TEMPLATE}},
     "spec.chatTemplate", "applies no chat template"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field", "words"), INVALID, ids=lambda v: str(v))
def test_an_embedding_model_takes_text_only_and_no_chat_template(catalog, spec, field, words):
    with pytest.raises(InvalidSpec) as info:
        decide(catalog, spec, "gke-l4")
    assert info.value.field == field
    assert words in str(info.value)


def test_an_embed_plan_has_no_multimodal_flag_and_no_sample_prompt(catalog):
    for fixture, spec in (("gke-l4", {**EMBED, "accelerator": "nvidia-l4"}), ("gke-cpu-only", EMBED)):
        result = decide(catalog, spec, fixture)
        assert isinstance(result, Plan) and result.task == "embed"
        assert result.media == () and result.modalities == () and not result.language_only
        assert result.encoders_gib == 0.0 and result.projector_file is None
        argv = server_args(catalog, spec, fixture)
        assert not {"--limit-mm-per-prompt", "--language-model-only", "--mmproj-auto", "--no-mmproj",
                    "--chat-template", "--chat-template-file"} & set(argv)  # fmt: skip
        family = catalog.families[result.family]
        assert chat_template.prompt(GemmaDeploymentSpec.model_validate(spec), family, result.tuning) is None


def test_plan_of_an_embedding_model_prints_the_example_and_no_chat_template(tmp_path):
    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                  "metadata": {"name": "embed", "namespace": "rag"}, "spec": EMBED}))  # fmt: skip
    nodes = str(NODES / "gke-cpu-only.yaml")
    out = io.StringIO()
    assert main(["plan", "-f", str(cr), "--nodes", nodes, "-o", "json"], out, io.StringIO()) == 0
    document = json.loads(out.getvalue())
    assert "chatTemplate" not in document and document["example"].startswith("curl ")
    out = io.StringIO()
    assert main(["plan", "-f", str(cr), "--nodes", nodes], out, io.StringIO()) == 0
    assert "Chat template:" not in out.getvalue() and "/v1/embeddings" in out.getvalue()


# The families the embed work added, with the inputs work's facts: (fixture, spec) -> (modelId, runtime,
# the multimodal flags rendered).
PLANS = [
    # MedGemma 4B and 27B are Gemma 3 image-text checkpoints: images on vLLM get a limit per prompt...
    ("gke-l4", {"model": {"family": "medgemma", "inputs": ["image"]}},
     ("google/medgemma-4b-it", "vllm", ["--limit-mm-per-prompt", '{"image":1}'])),
    ("gke-h100x8", {"model": {"family": "medgemma", "size": "27b", "inputs": ["image"], "imagesPerPrompt": 2}},
     ("google/medgemma-27b-it", "vllm", ["--limit-mm-per-prompt", '{"image":2}'])),
    # ...text only runs their language model alone; the 27B text checkpoint has no vision tower at all.
    ("gke-l4", {"model": {"family": "medgemma"}}, ("google/medgemma-4b-it", "vllm", ["--language-model-only"])),
    ("gke-h100x8", {"model": {"family": "medgemma", "size": "27b-text"}}, ("google/medgemma-27b-text-it", "vllm", [])),
    # PaliGemma 2: SigLIP + Gemma 2 on vLLM.
    ("gke-l4", {"model": {"family": "paligemma2", "inputs": ["image"]}},
     ("google/paligemma2-3b-mix-224", "vllm", ["--limit-mm-per-prompt", '{"image":1}'])),
    # TxGemma is text only: no flag.
    ("gke-l4", {"model": {"family": "txgemma"}}, ("google/txgemma-9b-chat", "vllm", [])),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "expected"), PLANS, ids=lambda v: str(v))
def test_new_families_plan_their_inputs(catalog, fixture, spec, expected):
    result = planned(catalog, spec, fixture)
    assert (result.model_id, result.runtime, multimodal_flags(server_args(catalog, spec, fixture))) == expected


def test_medgemma_and_paligemma_count_their_siglip_as_gemma3_does(catalog):
    for family, size in (("medgemma", "4b"), ("medgemma", "27b"), ("paligemma2", "3b"), ("paligemma2", "28b")):
        encoder = catalog.families[family].sizes[size].encoders["image"]
        assert encoder.in_params and "SigLIP" in encoder.name and 0.39 <= encoder.params_b <= 0.42
    assert catalog.families["medgemma"].sizes["27b-text"].encoders == {}
    text = decide(catalog, {"model": {"family": "medgemma"}, "maxModelLen": 8192}, "gke-l4")
    image = decide(catalog, {"model": {"family": "medgemma", "inputs": ["image"]}, "maxModelLen": 8192}, "gke-l4")
    assert image.weights_gib - text.weights_gib == pytest.approx(0.417e9 * 2 / GIB, rel=0.06)
    assert any("MedSigLIP" in r and "--language-model-only" in r for r in text.reasons)
    assert any("MedSigLIP" in r and "--limit-mm-per-prompt" in r for r in image.reasons)
    size = catalog.families["paligemma2"].sizes["3b"]
    assert sizing.encoders_gib(size, "vllm", ["text"], "bf16") == pytest.approx(-0.4e9 * 2 / GIB)


INPUTS_INVALID = [
    # TxGemma and the 27B MedGemma text checkpoint have no vision tower.
    ({"model": {"family": "txgemma", "inputs": ["image"]}}, "spec.model.inputs", "no txgemma size takes image"),
    ({"model": {"family": "medgemma", "size": "27b-text", "inputs": ["image"]}}, "spec.model.inputs",
     "4b or 27b do"),
    # Nothing pinned serves audio for MedGemma or PaliGemma 2.
    ({"model": {"family": "medgemma", "size": "4b", "inputs": ["audio"]}}, "spec.model.inputs", "no audio encoder"),
    ({"model": {"family": "paligemma2", "inputs": ["image"]}, "runtime": "llamacpp"}, "spec.runtime",
     "llamacpp does not support paligemma2"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field", "words"), INPUTS_INVALID, ids=lambda v: str(v))
def test_new_families_refuse_inputs_they_have_no_encoder_for(catalog, spec, field, words):
    with pytest.raises(InvalidSpec) as info:
        decide(catalog, spec, "gke-l4")
    assert info.value.field == field
    assert words in str(info.value)


GEMMA_TURNS = ("<bos><start_of_turn>user\nYou are a concise assistant.\n\nWhat is Gemma?<end_of_turn>\n"
               "<start_of_turn>model\nA family of open models from Google.<end_of_turn>\n"
               "<start_of_turn>user\nWhich sizes are there?<end_of_turn>\n<start_of_turn>model\n")  # fmt: skip


@pytest.mark.parametrize("family", ["medgemma", "txgemma", "t5gemma"])
def test_the_new_chat_families_sample_in_gemma_turns(catalog, family):
    got = chat_template.prompt(GemmaDeploymentSpec(), catalog.families[family], "it")
    assert got is not None and got.text == GEMMA_TURNS


def test_families_without_a_chat_template_say_so_and_take_an_override(catalog):
    paligemma = catalog.families["paligemma2"]
    got = chat_template.prompt(GemmaDeploymentSpec(), paligemma, "it")
    assert got is not None and got.text is None and "PaliGemma 2 has no chat template" in got.note
    pt = chat_template.prompt(GemmaDeploymentSpec(), catalog.families["vaultgemma"], "pt")
    assert pt is not None and "pre-trained" in pt.note
    # An override gives a checkpoint without one a template: checked and shown as for any family.
    spec = GemmaDeploymentSpec.model_validate({"model": {"family": "paligemma2"}, "chatTemplate": {"inline": TEMPLATE}})
    got = chat_template.prompt(spec, paligemma, "it")
    assert got is not None and got.text is not None and got.text.startswith("<|system|>You are a concise assistant.")


def test_paligemma_takes_one_image_per_request(catalog):
    # vLLM 0.32's paligemma.py supports 1 image per prompt and caps a higher limit silently: refuse it here.
    assert catalog.families["paligemma2"].runtimes["vllm"].max_per_prompt == {"image": 1}
    with pytest.raises(InvalidSpec) as info:
        decide(catalog, {"model": {"family": "paligemma2", "inputs": ["image"], "imagesPerPrompt": 2}}, "gke-l4")
    assert info.value.field == "spec.model.imagesPerPrompt"
    assert "2: paligemma2 takes at most 1 image per request" in str(info.value)
    # Gemma 3 has no such cap.
    assert isinstance(decide(catalog, {"model": {"family": "gemma3", "inputs": ["image"], "imagesPerPrompt": 8}},
                             "gke-l4"), Plan)  # fmt: skip
