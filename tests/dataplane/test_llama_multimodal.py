"""Images and chat templates on llama-server (issue 18, parts 2 and 5), run for real.

- The projector: the rendered image flags (--hf-repo/--hf-file kept, --mmproj-auto) make llama-server's
  own downloader fetch the catalog's projector file from the checkpoint's repo on the loopback Hub,
  into LLAMA_CACHE beside the weights, and load it from there; the rendered text-only flags
  (--no-mmproj) fetch only the weights. The projector served here is not a real CLIP GGUF (no tiny
  one is written: see the note on PROJECTOR_BYTES), so the image server stops at loading it; what is
  checked is what it fetched, where it put it and what it tried to load.
- The chat template: a spec.chatTemplate override, inline (one argument) and from a ConfigMap
  (the mounted file), served by llama-server from the rendered args: the prompt of a chat request
  carries the override's markers, and a real /v1/chat/completions answers through it.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.dataplane import hub, servers

pytestmark = pytest.mark.dataplane

CPU = "gke-cpu-only"
IMAGE_SPEC = {"model": {"family": "gemma3", "size": "4b", "inputs": ["image"]}}
TEXT_SPEC = {"model": {"family": "gemma3", "size": "4b"}}
# Not a CLIP GGUF: writing a tiny Gemma 3 projector (SigLIP tower + mm.input_projection, with the
# clip.* metadata llama.cpp's mtmd checks) with the gguf package was not attempted in this change.
PROJECTOR_BYTES = b"GGUF-not-a-real-projector"
MARKED = ("{{ bos_token }}{% for m in messages %}[[{{ m.role }}]]{{ m.content }}[[/turn]]\n{% endfor %}"
          "{% if add_generation_prompt %}[[model]]{% endif %}")  # fmt: skip


def _repo(container: dict, tiny_gguf, projector: str | None) -> hub.HubRepo:
    args = container["args"]
    repo_id, model_file = args[args.index("--hf-repo") + 1], args[args.index("--hf-file") + 1]
    files = {model_file: hub.HubFile(model_file, tiny_gguf.read_bytes())}
    if projector:
        files[projector] = hub.HubFile(projector, PROJECTOR_BYTES)
    return hub.HubRepo(repo_id, files)


def test_image_flags_fetch_the_catalogs_projector_into_the_cache_and_load_it(llama_server_bin, tiny_gguf, tmp_path):
    _, plan = servers.planned(CPU, IMAGE_SPEC)
    container = servers.rendered_container(CPU, IMAGE_SPEC)
    assert "--mmproj-auto" in container["args"] and plan.projector_file == "mmproj-model-f16-4B.gguf"
    repo = _repo(container, tiny_gguf, plan.projector_file)
    with hub.LoopbackHub([repo]) as loopback:
        env = servers.clean_env({**servers.local_env(container, tmp_path), **servers.hub_env(loopback.endpoint)})
        argv = [str(llama_server_bin), *servers.loopback_args(container["args"], servers.free_port())]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        fetched = loopback.files_fetched(plan.model_id)
    log = proc.stdout + proc.stderr
    assert fetched == {plan.model_file: tiny_gguf.stat().st_size, plan.projector_file: len(PROJECTOR_BYTES)}, fetched
    cached = servers.cache_path(container, tmp_path) / f"models--{plan.model_id.replace('/', '--')}" / "snapshots" / repo.sha
    assert (cached / plan.projector_file).read_bytes() == PROJECTOR_BYTES
    # It loads the projector from the cache (and, this one being no CLIP model, stops there).
    assert f"failed to load CLIP model from {cached / plan.projector_file}" in log, log[-3000:]
    assert proc.returncode != 0


def test_text_only_flags_fetch_no_projector(llama_server_bin, tiny_gguf, tmp_path):
    _, plan = servers.planned(CPU, TEXT_SPEC)
    container = servers.rendered_container(CPU, TEXT_SPEC)
    assert "--no-mmproj" in container["args"] and plan.projector_file is None
    projector = "mmproj-model-f16-4B.gguf"  # published in the same repo; a text-only server leaves it
    with hub.LoopbackHub([_repo(container, tiny_gguf, projector)]) as loopback:
        env = servers.clean_env({**servers.local_env(container, tmp_path), **servers.hub_env(loopback.endpoint)})
        port = servers.free_port()
        with servers.LlamaServer(llama_server_bin, servers.loopback_args(container["args"], port), port,
                                 tmp_path / "server.log", env, inherit_env=False) as server:  # fmt: skip
            status, body = server.client.post("/apply-template", {"messages": [{"role": "user", "content": "Hi"}]})
            assert status == 200 and "<start_of_turn>user\nHi<end_of_turn>" in body["prompt"], body
        assert projector not in loopback.files_fetched(plan.model_id), loopback.files_fetched(plan.model_id)


@pytest.mark.parametrize("source", ["inline", "configMapRef"])
def test_a_chat_template_override_is_the_prompt_llama_server_builds(llama_server_bin, tiny_gguf, tmp_path, source):
    spec = {"model": {"family": "gemma3", "size": "1b"},
            "chatTemplate": {"inline": MARKED} if source == "inline" else {"configMapRef": {"name": "tpl", "key": "t"}}}
    container = servers.rendered_container(CPU, spec)
    port = servers.free_port()
    args = servers.local_llama_args(container["args"], tiny_gguf, port)
    env = servers.local_env(container, tmp_path)  # makes tmp_path/<volume> for each mount
    if source == "configMapRef":
        # The kubelet's ConfigMap volume: the one key, as the file the rendered flag names.
        path = args[args.index("--chat-template-file") + 1]
        local = tmp_path / "chat-template" / path.rsplit("/", 1)[1]
        local.write_text(MARKED)
        args[args.index("--chat-template-file") + 1] = str(local)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    with servers.LlamaServer(llama_server_bin, args, port, tmp_path / "server.log", env) as server:
        status, body = server.client.post("/apply-template", {"messages": messages})
        assert status == 200, body
        assert body["prompt"].endswith("[[system]]Be brief.[[/turn]]\n[[user]]Say hi[[/turn]]\n[[model]]"), body
        assert "<start_of_turn>" not in body["prompt"]
        status, tokens = server.client.post("/tokenize", {"content": body["prompt"], "parse_special": True,
                                                          "add_special": True})  # fmt: skip
        assert status == 200, tokens
        status, chat = server.client.post("/v1/chat/completions", {
            "model": args[args.index("--alias") + 1], "messages": messages, "max_tokens": 4, "temperature": 0})  # fmt: skip
        assert status == 200, chat
        # The served request's prompt is that text: as many tokens as it tokenizes to.
        assert chat["usage"]["prompt_tokens"] == len(tokens["tokens"]), (chat["usage"], len(tokens["tokens"]))
