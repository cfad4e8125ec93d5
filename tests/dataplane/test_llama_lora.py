"""llama.cpp loads LoRA adapters as gemma-operator renders them (issue 19): the CPU plan for Gemma 3 1B on
gke-cpu-only with two adapters, run on the catalog's llama-server release.

The rendered args are kept except the model source and the address (test_llama_server.py's swap) and
/models, mapped to a scratch directory where two tiny random LoRA GGUFs (tinylora.write_gguf, written
as convert_lora_to_gguf.py writes them) stand where the init containers' curl would put them. The curl
download itself is not run here (this machine's curl predates --variable).
"""

from __future__ import annotations

import pathlib

import pytest

from gemma_operator.runtimes import CACHE_DIR
from tests.dataplane import servers, tinylora

pytestmark = pytest.mark.dataplane

SPEC = {
    "model": {"family": "gemma3", "size": "1b"},
    "adapters": [
        {"name": "support-bot", "repo": "acme/tiny-support-lora", "rank": 8, "gguf": "support-f32.gguf"},
        {"name": "sql-writer", "repo": "acme/tiny-sql-lora", "rank": 8, "gguf": "gguf/sql-f32.gguf"},
    ],
}


@pytest.fixture(scope="module")
def server(llama_server_bin, tiny_gguf, tmp_path_factory):
    pod = servers.rendered_pod("gke-cpu-only", SPEC)
    (container,) = pod["containers"]
    scratch = tmp_path_factory.mktemp("llama-lora")
    env = servers.local_env(container, scratch)
    local_models = scratch / "models"
    port = servers.free_port()
    args = [a.replace(f"{CACHE_DIR}/", f"{local_models}/") for a in servers.local_llama_args(container["args"], tiny_gguf, port)]
    # Where each init container's curl writes (its --output), moved the same way.
    for i, loader in enumerate(pod["initContainers"]):
        target = pathlib.Path(loader["command"][-1].replace(f"{CACHE_DIR}/", f"{local_models}/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        tinylora.write_gguf(target, rank=8, seed=i + 1)
    srv = servers.LlamaServer(llama_server_bin, args, port, scratch / "server.log", env)
    try:
        srv.start()
        srv.pod = pod  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()


def test_the_rendered_lora_flags_are_run(server):
    ran = server.argv
    scaled = ran[ran.index("--lora-scaled") + 1].split(",")
    assert [pathlib.Path(p).name for p in scaled] == ["support-f32.gguf:0", "sql-f32.gguf:0"]


def test_both_adapters_are_loaded_unapplied(server):
    status, body = server.client.get("/lora-adapters")
    assert status == 200, body
    assert [(a["id"], pathlib.Path(a["path"]).name, a["scale"]) for a in body] == [
        (0, "support-f32.gguf", 0.0), (1, "sql-f32.gguf", 0.0)]  # fmt: skip


@pytest.mark.parametrize("lora", [[{"id": 0, "scale": 1.0}], [{"id": 1, "scale": 1.0}], []])
def test_a_request_picks_an_adapter_and_answers(server, lora):
    body = {"model": "gemma-3-1b-it", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4,
            "temperature": 0, "lora": lora}  # fmt: skip
    status, reply = server.client.post("/v1/chat/completions", body)
    assert status == 200, reply
    (choice,) = reply["choices"]
    assert isinstance(choice["message"]["content"], str) and reply["usage"]["completion_tokens"] >= 1


def _first_logprob(server, lora: list) -> float:
    body = {"model": "gemma-3-1b-it", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1,
            "temperature": 0, "logprobs": True, "lora": lora}  # fmt: skip
    status, reply = server.client.post("/v1/chat/completions", body)
    assert status == 200, reply
    return reply["choices"][0]["logprobs"]["content"][0]["logprob"]


def test_the_adapter_changes_what_the_model_computes_and_the_default_is_the_base(server):
    base = _first_logprob(server, [])
    assert _first_logprob(server, [{"id": 0, "scale": 0.0}, {"id": 1, "scale": 0.0}]) == base
    assert _first_logprob(server, [{"id": 0, "scale": 1.0}]) != base
