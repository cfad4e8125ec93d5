"""Embedding servers as gemma-operator renders them (spec.model.task embed), run for real on a tiny
random-weight EmbeddingGemma-architecture model (tinyembedding.py):

- llama-server: the CPU plan's container args, with only the model source (a local GGUF) and the
  address swapped, serves /v1/embeddings: one 768-dimensional, normalised vector per input.
- vLLM (CPU build): the L4 plan's command line (`--runner pooling`, the planned batch, the
  Matryoshka sizes) with only the address changed, the model fetched by vLLM's own download code
  from the loopback Hub under the plan's own id (google/embeddinggemma-300m); /v1/embeddings
  returns vectors of the configured size, and a request's `dimensions` cuts them to a Matryoshka size.

Loopback only; every server is always killed.
"""

from __future__ import annotations

import math

import pytest

from tests.dataplane import hub, servers, tinyembedding

pytestmark = pytest.mark.dataplane

CPU = ("gke-cpu-only", {"model": {"task": "embed"}})
GPU = ("gke-l4", {"model": {"task": "embed"}, "accelerator": "nvidia-l4"})
INPUTS = ["task: search result | query: Hello world", "title: none | text: Gemma is a chat model"]
VLLM_START_TIMEOUT_S = 600.0


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def _embed(server, model: str, inputs: list[str], **extra) -> list[list[float]]:
    status, body = server.client.post("/v1/embeddings", {"model": model, "input": inputs, **extra})
    assert status == 200, body
    assert body["model"] == model
    data = sorted(body["data"], key=lambda d: d["index"])
    assert [d["index"] for d in data] == list(range(len(inputs)))
    return [d["embedding"] for d in data]


@pytest.fixture(scope="module")
def llama_embed(llama_server_bin, tmp_path_factory):
    fixture, spec = CPU
    _, plan = servers.planned(fixture, spec)
    assert (plan.runtime, plan.task) == ("llamacpp", "embed"), plan
    container = servers.rendered_container(fixture, spec, name="embed")
    scratch = tmp_path_factory.mktemp("llama-embed")
    gguf = tinyembedding.write_gguf(scratch / "tiny-embeddinggemma.gguf")
    port = servers.free_port()
    args = servers.local_llama_args(container["args"], gguf, port)
    srv = servers.LlamaServer(llama_server_bin, args, port, scratch / "server.log", servers.local_env(container, scratch))
    try:
        srv.start()
        srv.rendered, srv.plan = container, plan  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()


def test_llama_server_runs_the_rendered_embedding_flags(llama_embed):
    rendered, ran = llama_embed.rendered["args"], llama_embed.argv[1:]
    for flags in (["--embeddings"], ["--pooling", "mean"], ["--batch-size", "2048"], ["--ubatch-size", "2048"],
                  ["--ctx-size", "2048"]):  # fmt: skip
        i = rendered.index(flags[0])
        assert rendered[i:i + len(flags)] == flags, rendered
        j = ran.index(flags[0])
        assert ran[j:j + len(flags)] == flags, ran
    assert "--jinja" not in ran


def test_llama_server_returns_one_normalised_vector_per_input_of_the_models_size(llama_embed):
    served = llama_embed.plan.served_model_name
    assert served == "embeddinggemma-300m"
    vectors = _embed(llama_embed, served, INPUTS)
    full = llama_embed.plan.embedding_dimensions[0]
    assert full == tinyembedding.OUTPUT_DIM == 768
    assert [len(v) for v in vectors] == [full, full]
    assert all(abs(_norm(v) - 1.0) < 1e-3 for v in vectors)  # EmbeddingGemma's vectors are L2-normalised
    assert vectors[0] != vectors[1]


def _tokens(server, text: str) -> int:
    status, body = server.client.post("/tokenize", {"content": text})
    assert status == 200, body
    return len(body["tokens"])


def test_llama_server_takes_an_input_as_long_as_the_planned_context(llama_embed):
    # The micro-batch (--ubatch-size) holds a whole input: a non-causal model cannot split one.
    served, context = llama_embed.plan.served_model_name, llama_embed.plan.max_model_len
    long_input = " ".join(["hello world"] * 120)
    assert context // 2 < _tokens(llama_embed, long_input) < context - 8
    (vector,) = _embed(llama_embed, served, [long_input])
    assert len(vector) == 768
    too_long = " ".join(["hello world"] * 400)
    assert _tokens(llama_embed, too_long) > context
    status, body = llama_embed.client.post("/v1/embeddings", {"model": served, "input": [too_long]})
    assert status != 200 and "too large" in str(body), body


@pytest.fixture(scope="module")
def vllm_embed(vllm_python, tmp_path_factory):
    fixture, spec = GPU
    _, plan = servers.planned(fixture, spec)
    assert (plan.runtime, plan.task) == ("vllm", "embed"), plan
    container = servers.rendered_container(fixture, spec, name="embed")
    scratch = tmp_path_factory.mktemp("vllm-embed")
    checkpoint = tinyembedding.write_hf(scratch / "tiny-embeddinggemma", vllm_python)
    repo = hub.HubRepo.from_dir(plan.model_id, checkpoint)
    rendered_env = servers.local_env(container, scratch)
    port = servers.free_port()
    with hub.LoopbackHub([repo]) as loopback:
        srv = servers.vllm_server(vllm_python, container, port, scratch / "vllm.log", rendered_env, loopback.endpoint)
        try:
            srv.start(timeout_s=VLLM_START_TIMEOUT_S)
            srv.rendered, srv.plan, srv.hub = container, plan, loopback  # type: ignore[attr-defined]
            yield srv
        finally:
            srv.stop()


def test_vllm_runs_the_rendered_command_line_with_only_the_address_changed(vllm_embed):
    args, ran = vllm_embed.rendered["args"], vllm_embed.argv
    changed = [(a, b) for a, b in zip(args, ran[3:], strict=True) if a != b]
    assert changed == [("0.0.0.0", servers.LOOPBACK), ("8000", str(vllm_embed.port))], changed
    assert ran[3] == vllm_embed.plan.model_id == "google/embeddinggemma-300m"
    i = ran.index("--runner")
    assert ran[i + 1] == "pooling"


def test_vllm_fetched_the_checkpoint_and_its_sentence_transformers_modules_from_the_hub(vllm_embed):
    fetched = {path for (repo, path) in vllm_embed.hub.file_bytes if repo == vllm_embed.plan.model_id}
    assert {"config.json", "model.safetensors", "modules.json", "1_Pooling/config.json",
            "2_Dense/model.safetensors", "3_Dense/model.safetensors"} <= fetched, sorted(fetched)  # fmt: skip


def test_vllm_serves_the_planned_name_and_length(vllm_embed):
    status, body = vllm_embed.client.get("/v1/models")
    assert status == 200, body
    (model,) = body["data"]
    assert model["id"] == vllm_embed.plan.served_model_name == "embeddinggemma-300m"
    assert model["max_model_len"] == vllm_embed.plan.max_model_len == 2048


def test_vllm_returns_vectors_of_the_configured_size_and_matryoshka_cuts(vllm_embed):
    served = vllm_embed.plan.served_model_name
    vectors = _embed(vllm_embed, served, INPUTS)
    full, *smaller = vllm_embed.plan.embedding_dimensions
    assert [len(v) for v in vectors] == [full, full] == [768, 768]
    assert all(abs(_norm(v) - 1.0) < 1e-2 for v in vectors)  # the Normalize module
    assert vectors[0] != vectors[1]
    for size in smaller:  # --hf-overrides matryoshka_dimensions: the request's `dimensions`
        (cut,) = _embed(vllm_embed, served, INPUTS[:1], dimensions=size)
        assert len(cut) == size
    status, body = vllm_embed.client.post("/v1/embeddings", {"model": served, "input": INPUTS[:1], "dimensions": 300})
    assert status == 400, body  # not one of the model's Matryoshka sizes
