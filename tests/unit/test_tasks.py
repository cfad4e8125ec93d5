"""Tasks and specialised families, as tables: spec.model.task embed -> EmbeddingGemma on /v1/embeddings;
the catalog's other Gemma variants plan (or say why not) with their request format and license."""

from __future__ import annotations

import json

import pytest

from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.planner import InvalidSpec, NoFit
from gemma_operator.render import API_PATH_ANNOTATION, endpoint, example_request, render
from gemma_operator.runtimes import llamacpp, vllm
from gemma_operator import sizing
from tests.conftest import decide, planned

EMBED = {"model": {"task": "embed"}}


# (fixture, spec) -> (modelId, runtime, quantization, accelerator, acceleratorCount, maxModelLen, batchTokens)
EMBED_DECISIONS = [
    # The cheapest pool that fits: a CPU node serves a 308M embedding model without reserving a GPU.
    ("gke-cpu-only", EMBED, ("ggml-org/embeddinggemma-300M-GGUF", "llamacpp", "q8_0", "cpu", 0, 2048, 2048)),
    ("gke-l4", EMBED, ("ggml-org/embeddinggemma-300M-GGUF", "llamacpp", "q8_0", "cpu", 0, 2048, 2048)),
    ("gke-h100x8", EMBED, ("ggml-org/embeddinggemma-300M-GGUF", "llamacpp", "q8_0", "cpu", 0, 2048, 2048)),
    # Asked onto a GPU: vLLM's pooling runner on the bf16 safetensors, a batch in place of a KV cache.
    ("gke-l4", {**EMBED, "accelerator": "nvidia-l4"},
     ("google/embeddinggemma-300m", "vllm", "bf16", "nvidia-l4", 1, 2048, 8192)),
    ("gke-h100x8", {**EMBED, "accelerator": "nvidia-h100-80gb"},
     ("google/embeddinggemma-300m", "vllm", "bf16", "nvidia-h100-80gb", 1, 2048, 8192)),
    # A T4 has no bf16 and vLLM refuses float16 for gemma3_text: llama.cpp on CUDA.
    ("gke-t4", {**EMBED, "accelerator": "nvidia-tesla-t4"},
     ("ggml-org/embeddinggemma-300M-GGUF", "llamacpp", "q8_0", "nvidia-tesla-t4", 1, 2048, 2048)),
    ("gke-l4", {**EMBED, "maxModelLen": 512, "accelerator": "nvidia-l4"},
     ("google/embeddinggemma-300m", "vllm", "bf16", "nvidia-l4", 1, 512, 8192)),
    ("gke-l4", {"model": {"task": "embed", "family": "embeddinggemma", "size": "300m"}},
     ("ggml-org/embeddinggemma-300M-GGUF", "llamacpp", "q8_0", "cpu", 0, 2048, 2048)),
    ("gke-l4", {"model": {"task": "embed", "id": "google/embeddinggemma-300m"}, "accelerator": "nvidia-l4"},
     ("google/embeddinggemma-300m", "vllm", "bf16", "nvidia-l4", 1, 2048, 8192)),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "expected"), EMBED_DECISIONS, ids=lambda v: str(v))
def test_embed_decision(catalog, fixture, spec, expected):
    result = planned(catalog, spec, fixture)
    got = result.selection()
    keys = ("modelId", "runtime", "quantization", "accelerator", "acceleratorCount", "maxModelLen", "batchTokens")
    assert tuple(got[k] for k in keys) == expected
    assert got["task"] == "embed" and got["family"] == "embeddinggemma"
    assert got["embeddingDimensions"] == [768, 512, 256, 128]
    assert all(r.endswith(".") for r in got["reasons"])
    assert any("no KV cache" in r and f"batch of {expected[-1]} tokens" in r for r in got["reasons"])


def test_embed_memory_is_weights_overhead_and_one_batch_not_a_kv_cache(catalog):
    size = catalog.families["embeddinggemma"].sizes["300m"]
    got = sizing.fit_embedding(size, "bf16", "vllm", 20.0)
    assert got is not None and got.max_model_len == 2048
    weights = size.params_b * 1e9 * 2 / 2**30
    assert got.weights_gib == pytest.approx(weights)
    # 8192 tokens x 16 x 768 x 4 bytes, plus 4 sequences x 3 heads x 2048^2 x 4 bytes of scores.
    assert got.kv_gib == pytest.approx((8192 * 16 * 768 * 4 + 4 * 3 * 2048 * 2048 * 4) / 2**30)
    assert sizing.kv_cache_gib(size.architecture, 2048) > 0  # what a chat plan would have counted instead
    assert sizing.fit_embedding(size, "bf16", "vllm", got.total_gib - 0.01) is None


# spec -> (field, words): chat-only fields on an embedding model, and tasks a family does not serve.
INVALID = [
    ({**EMBED, "maxModelLen": 4096}, "spec.maxModelLen", "beyond embeddinggemma's input limit"),
    ({**EMBED, "autoscaling": {"maxReplicas": 3, "metric": "kvCache", "target": 80}}, "spec.autoscaling.metric",
     "keeps no KV cache"),
    # An embedding model generates no tokens: the chat-only objective fields are refused by name.
    ({**EMBED, "objective": {"promptTokens": 512, "outputTokens": 1, "concurrency": 1}}, "spec.objective.outputTokens",
     "embeddinggemma is an embedding model and generates no tokens"),
    ({**EMBED, "objective": {"promptTokens": 512, "concurrency": 1, "outputTokensPerSecond": 20}},
     "spec.objective.outputTokensPerSecond", "ttftSeconds (the request's latency)"),
    # ...and a chat objective still needs its output tokens.
    ({"objective": {"promptTokens": 512, "concurrency": 1}}, "spec.objective.outputTokens", "required for gemma4"),
    ({"model": {"family": "embeddinggemma"}}, "spec.model.task", "embedding model, served at /v1/embeddings"),
    ({"model": {"id": "google/embeddinggemma-300m"}}, "spec.model.task", "set model.task embed"),
    ({"model": {"family": "gemma3", "task": "embed"}}, "spec.model.task", "the embed families are embeddinggemma"),
    ({"model": {"family": "vaultgemma"}}, "spec.model.tuning", "no it checkpoints"),
    ({"model": {"family": "txgemma", "size": "2b"}}, "spec.model.tuning", "no it checkpoint"),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "field", "words"), INVALID, ids=lambda v: str(v))
def test_invalid_task_specs_name_the_field(catalog, spec, field, words):
    with pytest.raises(InvalidSpec) as info:
        decide(catalog, spec, "gke-l4")
    assert info.value.field == field
    assert words in str(info.value)


# Embedding objectives and sizePolicy cheapest: (fixture, spec) -> (runtime, accelerator), words the reasons carry.
# gke-l4 has an e2-standard-4 CPU node ($0.134/h) and a g2-standard-8 with one L4 ($0.8536/h).
EMBED_OBJECTIVES = [
    # No objective: the CPU pool, cheaper per hour, though the L4 is cheaper per million input tokens at full load.
    ("gke-l4", EMBED, ("llamacpp", "cpu"),
     ["Price: cpu-e2-standard-4 costs $0.1340/h a replica against $0.8536/h on nvidia-l4-x1",
      "at full load $0.1222 against $0.0010 per million input tokens (305 against 235055 input tokens/s)"]),
    # sizePolicy cheapest ranks by cost per million input tokens: the L4, and the CPU pool's figure as runner-up.
    ("gke-l4", {"model": {"task": "embed", "sizePolicy": "cheapest"}}, ("vllm", "nvidia-l4"),
     ["by the lowest predicted cost per million input tokens (sizePolicy cheapest",
      "Cost: 300m bf16 on nvidia-l4-x1 has the lowest predicted cost per million input tokens at full load ($0.0010, "
      "at $0.8536/h a replica, 235055 input tokens/s)", "next: 300m q8_0 on cpu-e2-standard-4 $0.1222"]),
    # Four 512-token requests at once within 0.5 s: on the CPU they share one pass of 4 x 128.56e9 FLOPs at
    # 78.4 GFLOPS = 6.56 s, a miss; on the L4, 8.5 ms.
    ("gke-l4", {**EMBED, "objective": {"promptTokens": 512, "concurrency": 4, "ttftSeconds": 0.5}}, ("vllm", "nvidia-l4"),
     ["Objective: met (request latency 0.008 s <= 0.5 s)", "512 input tokens a request, 4 at once"]),
    # 40 at once: 8192 // 512 = 16 inputs a pass, so ceil(40 / 16) = 3 replicas.
    ("gke-l4", {**EMBED, "objective": {"promptTokens": 512, "concurrency": 40}, "accelerator": "nvidia-l4"},
     ("vllm", "nvidia-l4"), ["need 3 replicas (16 inputs per forward pass each); spec.replicas is 1"]),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "expected", "words"), EMBED_OBJECTIVES, ids=lambda v: str(v))
def test_embed_objectives_and_cheapest_say_why_in_numbers(catalog, fixture, spec, expected, words):
    result = planned(catalog, spec, fixture)
    assert (result.runtime, result.pool.accelerator) == expected
    text = " ".join(result.reasons)
    for word in words:
        assert word in text
    assert "latencySeconds" in result.predicted and "ttftSeconds" not in result.predicted


def test_an_embed_objective_no_pool_meets_is_a_no_fit_with_the_nearest_latency(catalog):
    # One 512-token request on the L4: 128.56e9 FLOPs at 60.5 TFLOPS = 2.125 ms; 1 ms is a miss everywhere.
    result = decide(catalog, {**EMBED, "objective": {"promptTokens": 512, "concurrency": 1, "ttftSeconds": 0.001}},
                    "gke-l4")  # fmt: skip
    assert isinstance(result, NoFit)
    assert "No plan is predicted to meet the objective (512 input tokens a request, 1 at once)" in result.message
    assert "request latency 0.002 s > 0.001 s" in result.message
    assert [(s.field, s.value) for s in result.suggestions] == [("spec.objective.ttftSeconds", "0.0022")]


# (fixture, spec) -> (modelId, runtime, accelerator), and words the reasons must carry
FAMILIES = [
    ("gke-l4", {"model": {"family": "medgemma"}}, ("google/medgemma-4b-it", "vllm", "nvidia-l4"),
     ["Health AI Developer Foundations Terms of Use", "google/medgemma-4b-it is gated", "Not for clinical decisions"]),
    ("gke-h100x8", {"model": {"family": "medgemma", "size": "27b"}}, ("google/medgemma-27b-it", "vllm", "nvidia-h100-80gb"),
     ["Health AI Developer Foundations", "gated"]),
    ("gke-h100x8", {"model": {"family": "medgemma", "size": "27b-text"}},
     ("google/medgemma-27b-text-it", "vllm", "nvidia-h100-80gb"), ["Health AI Developer Foundations"]),
    ("gke-l4", {"model": {"family": "txgemma"}}, ("google/txgemma-9b-chat", "vllm", "nvidia-l4"),
     ["Therapeutics Data Commons", "Health AI Developer Foundations"]),
    ("gke-l4", {"model": {"family": "txgemma", "tuning": "pt"}}, ("google/txgemma-2b-predict", "vllm", "nvidia-l4"),
     ["predict models"]),
    ("gke-l4", {"model": {"family": "paligemma2"}}, ("google/paligemma2-3b-mix-224", "vllm", "nvidia-l4"),
     ["caption en", "no Gemma chat template"]),
    ("gke-l4", {"model": {"family": "vaultgemma", "tuning": "pt"}}, ("google/vaultgemma-1b", "vllm", "nvidia-l4"),
     ["/v1/completions", "Gemma Terms of Use"]),
    # The request formats the model cards give, in the reasons.
    ("gke-l4", {"model": {"family": "shieldgemma"}}, ("google/shieldgemma-2b", "vllm", "nvidia-l4"),
     ["policy prompt", "'Yes' or 'No'", "Yes and No token probabilities", "/v1/completions"]),
    ("gke-l4", {"model": {"family": "codegemma"}}, ("google/codegemma-1.1-7b-it", "vllm", "nvidia-l4"),
     ["<|fim_prefix|>", "<|fim_middle|>", "7B IT takes Gemma chat turns", "/v1/chat/completions"]),
    ("gke-l4", {"model": {"family": "codegemma", "tuning": "pt"}}, ("google/codegemma-1.1-2b", "vllm", "nvidia-l4"),
     ["fill-in-the-middle"]),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "expected", "words"), FAMILIES, ids=lambda v: str(v))
def test_specialised_families_plan_with_their_request_format_and_license(catalog, fixture, spec, expected, words):
    result = planned(catalog, spec, fixture)
    assert (result.model_id, result.runtime, result.pool.accelerator) == expected
    text = " ".join(result.reasons)
    for word in words:
        assert word in text
    assert all(r.endswith(".") for r in result.reasons)


def test_core_plans_keep_their_reasons_free_of_request_format_and_license(catalog):
    result = decide(catalog, {}, "gke-l4")
    assert not any(r.startswith(("Requests", "License")) for r in result.reasons)


NOFIT = [
    ("gke-l4", {"model": {"family": "t5gemma"}}, ["No runtime gemma-operator pins can serve t5gemma",
                                                  "encoder-decoder", "not in vLLM 0.32's model registry"]),
    ("gke-h100x8", {"model": {"family": "t5gemma", "size": "9b-9b"}}, ["No runtime gemma-operator pins can serve"]),
    ("gke-l4", {"model": {"family": "shieldgemma2"}}, ["No runtime gemma-operator pins can serve shieldgemma2"]),
    # Served by vLLM only: a CPU-only cluster says llama.cpp does not support it.
    ("gke-cpu-only", {"model": {"family": "vaultgemma", "tuning": "pt"}}, ["llama.cpp does not support vaultgemma"]),
    ("gke-cpu-only", {"model": {"family": "paligemma2"}}, ["llama.cpp does not support paligemma2"]),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "words"), NOFIT, ids=lambda v: str(v))
def test_families_no_pinned_runtime_serves_are_a_no_fit_that_says_so(catalog, fixture, spec, words):
    result = decide(catalog, spec, fixture)
    assert isinstance(result, NoFit)
    for word in words:
        assert word in result.message


def test_every_family_records_its_task_prompt_format_and_license(catalog):
    for key, family in catalog.families.items():
        assert family.prompt_format.strip(), key
        assert family.license and family.license_url, key
        assert family.task in ("chat", "embed")
    embed = [k for k, f in catalog.families.items() if f.task == "embed"]
    assert embed == ["embeddinggemma"]
    unservable = sorted(k for k, f in catalog.families.items() if not f.servable)
    assert unservable == ["shieldgemma2", "t5gemma"]


# (fixture, spec) -> the server's arguments that make it an embedding server
ARGS = [
    ("gke-cpu-only", EMBED, ["--embeddings", "--pooling", "mean", "--batch-size", "2048", "--ubatch-size", "2048"]),
    ("gke-l4", {**EMBED, "accelerator": "nvidia-l4"},
     ["--runner", "pooling", "--max-num-batched-tokens", "8192",
      "--hf-overrides", json.dumps({"matryoshka_dimensions": [768, 512, 256, 128]})]),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "spec", "expected"), ARGS, ids=lambda v: str(v))
def test_embedding_servers_get_their_flags(catalog, fixture, spec, expected):
    result = decide(catalog, spec, fixture)
    args = (vllm if result.runtime == "vllm" else llamacpp).args(result)
    start = args.index(expected[0])
    assert args[start:start + len(expected)] == expected
    assert "--jinja" not in args  # no chat template to apply


def test_chat_servers_get_no_embedding_flags(catalog):
    for fixture in ("gke-cpu-only", "gke-l4"):
        result = decide(catalog, {}, fixture)
        args = (vllm if result.runtime == "vllm" else llamacpp).args(result)
        assert not {"--embeddings", "--pooling", "--runner", "--hf-overrides"} & set(args)


def test_the_service_and_endpoint_name_v1_embeddings(catalog):
    spec = GemmaDeploymentSpec.model_validate(EMBED)
    result = decide(catalog, EMBED, "gke-cpu-only")
    objects = render(result, "embed", "rag", spec)
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["metadata"]["annotations"] == {API_PATH_ANNOTATION: "/v1/embeddings"}
    url = endpoint("embed", "rag", spec)
    assert url == "http://embed.rag.svc.cluster.local:8000/v1/embeddings"
    example = example_request(url, result)
    assert example.startswith(f"curl -s {url} ") and '"model": "embeddinggemma-300m"' in example
    assert "task: search result | query:" in example


def test_chat_services_carry_no_api_path_and_no_example(catalog):
    spec = GemmaDeploymentSpec.model_validate({})
    result = decide(catalog, {}, "gke-l4")
    service = next(o for o in render(result, "chat", "team-a", spec) if o["kind"] == "Service")
    assert "annotations" not in service["metadata"]
    assert endpoint("chat", "team-a", spec).endswith("/v1")
    assert example_request(endpoint("chat", "team-a", spec), result) is None


def test_plan_prints_the_embeddings_endpoint_and_a_request_to_try(tmp_path):
    import io

    import yaml

    from gemma_operator.__main__ import main
    from tests.conftest import NODES

    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                  "metadata": {"name": "embed", "namespace": "rag"}, "spec": EMBED}))
    nodes = str(NODES / "gke-cpu-only.yaml")
    out = io.StringIO()
    assert main(["plan", "-f", str(cr), "--nodes", nodes], out, io.StringIO()) == 0
    assert "http://embed.rag.svc.cluster.local:8000/v1/embeddings" in out.getvalue()
    assert "curl -s http://embed.rag.svc.cluster.local:8000/v1/embeddings" in out.getvalue()
    out = io.StringIO()
    assert main(["plan", "-f", str(cr), "--nodes", nodes, "-o", "json"], out, io.StringIO()) == 0
    document = json.loads(out.getvalue())
    assert document["endpoint"].endswith("/v1/embeddings") and document["example"].startswith("curl ")
    assert document["selection"]["task"] == "embed"


@pytest.mark.parametrize(("fixture", "spec", "extra", "flag"), [
    ("gke-cpu-only", EMBED, "--pooling=cls", "--pooling"),
    ("gke-cpu-only", EMBED, "-ub", "-ub"),
    ("gke-l4", {**EMBED, "accelerator": "nvidia-l4"}, "--runner=generate", "--runner"),
    ("gke-l4", {**EMBED, "accelerator": "nvidia-l4"}, "--max-num-batched-tokens=512", "--max-num-batched-tokens"),
])  # fmt: skip
def test_extra_args_may_not_contradict_the_embedding_plan(catalog, fixture, spec, extra, flag):
    parsed = GemmaDeploymentSpec.model_validate({**spec, "extraArgs": [extra]})
    result = decide(catalog, spec, fixture)
    with pytest.raises(InvalidSpec) as info:
        render(result, "embed", "rag", parsed)
    assert info.value.field == "spec.extraArgs" and flag in str(info.value)


def test_a_chat_plan_still_takes_a_batch_size_in_extra_args(catalog):
    spec = {"extraArgs": ["--max-num-batched-tokens=512"]}
    parsed = GemmaDeploymentSpec.model_validate(spec)
    assert render(decide(catalog, spec, "gke-l4"), "chat", "team-a", parsed)


def test_plan_table_and_compare_show_the_embedding_columns(tmp_path):
    import io

    import yaml

    from gemma_operator.__main__ import main
    from tests.conftest import NODES

    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                  "metadata": {"name": "embed", "namespace": "rag"},
                                  "spec": {"model": {"task": "embed", "sizePolicy": "cheapest"}}}))  # fmt: skip
    nodes = str(NODES / "gke-l4.yaml")
    out = io.StringIO()
    assert main(["plan", "-f", str(cr), "--nodes", nodes, "-o", "table"], out, io.StringIO()) == 0
    text = out.getvalue()
    assert "1024 input tokens x 1: 0.0044 s a request alone" in text and "$0.001 per million input tokens" in text
    header = next(line for line in text.splitlines() if line.startswith("pool ") and "outcome" in line)
    assert header.split() == ["pool", "size", "quant", "latency", "s", "req/s", "in", "tok/s", "per", "pass", "replicas",
                              "$/M", "in", "tok", "outcome"]  # fmt: skip
    assert "lost: $0.1222 per million input tokens at full load, not $0.0010" in text
    out = io.StringIO()
    assert main(["plan", "-f", str(cr), "--nodes", nodes, "--compare", "cpu,nvidia-l4", "-o", "json"], out,
                io.StringIO()) == 0  # fmt: skip
    rows = json.loads(out.getvalue())["items"][0]["candidates"]
    assert [(r["pool"], r["outcome"]) for r in rows][1] == ("nvidia-l4-x1", "chosen")
    assert all("costPerMillionInputTokens" in r and "outputTokensPerSecond" not in r for r in rows)
