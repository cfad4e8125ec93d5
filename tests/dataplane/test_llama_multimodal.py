"""Images and chat templates on llama-server (issue 18, parts 2, 4 and 5), run for real.

- The projector: the rendered image flags (--hf-repo/--hf-file kept, --mmproj-auto) make llama-server's
  own downloader fetch the catalog's projector file from the checkpoint's repo on the loopback Hub,
  into LLAMA_CACHE beside the weights, and load it from there; the rendered text-only flags
  (--no-mmproj) fetch only the weights. The projector served is a real, tiny Gemma 3 one
  (tests/dataplane/tinyprojector.py: a SigLIP tower and Gemma 3's projection to the tiny text
  model's width, random weights), so the image server starts and answers a /v1/chat/completions
  request whose user message carries a PNG the test makes: the prompt it built holds the image's
  tokens, and what the model computes depends on the image.
- The chat template: a spec.chatTemplate override, inline (one argument) and from a ConfigMap
  (the mounted file), served by llama-server from the rendered args: the prompt of a chat request
  carries the override's markers, and a real /v1/chat/completions answers through it.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable

import pytest

from tests.dataplane import hub, servers, tinyprojector

pytestmark = pytest.mark.dataplane

CPU = "gke-cpu-only"
IMAGE_SPEC = {"model": {"family": "gemma3", "size": "4b", "inputs": ["image"]}}
TEXT_SPEC = {"model": {"family": "gemma3", "size": "4b"}}
# What llama.cpp's mtmd puts around a Gemma 3 image in the prompt (tools/mtmd/mtmd.cpp, b11434).
# The tiny vocabulary has no such tokens, so they are tokenized as text.
IMAGE_BEGIN, IMAGE_END = "<start_of_image>", "<end_of_image>"
MARKED = ("{{ bos_token }}{% for m in messages %}[[{{ m.role }}]]{{ m.content }}[[/turn]]\n{% endfor %}"
          "{% if add_generation_prompt %}[[model]]{% endif %}")  # fmt: skip


@pytest.fixture(scope="module")
def projector_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tinyprojector.write(tmp_path_factory.mktemp("mmproj") / "mmproj.gguf").read_bytes()


def png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """An 8-bit RGB PNG: the signature, IHDR, one zlib IDAT of unfiltered rows, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def _repo(container: dict, tiny_gguf, projector: str | None, projector_bytes: bytes) -> hub.HubRepo:
    args = container["args"]
    repo_id, model_file = args[args.index("--hf-repo") + 1], args[args.index("--hf-file") + 1]
    files = {model_file: hub.HubFile(model_file, tiny_gguf.read_bytes())}
    if projector:
        files[projector] = hub.HubFile(projector, projector_bytes)
    return hub.HubRepo(repo_id, files)


def test_image_flags_fetch_the_catalogs_projector_and_answer_a_chat_request_with_an_image(
        llama_server_bin, tiny_gguf, projector_bytes, tmp_path):  # fmt: skip
    _, plan = servers.planned(CPU, IMAGE_SPEC)
    container = servers.rendered_container(CPU, IMAGE_SPEC)
    assert "--mmproj-auto" in container["args"] and plan.projector_file == "mmproj-model-f16-4B.gguf"
    repo = _repo(container, tiny_gguf, plan.projector_file, projector_bytes)
    args = container["args"]
    alias = args[args.index("--alias") + 1]
    text = "What is this?"
    gradient = data_url(png(40, 30, lambda x, y: (x * 6, y * 8, 128)))

    def chat(server: servers.LlamaServer, image: str | None) -> dict:
        content = [{"type": "text", "text": text}]
        if image:
            content.append({"type": "image_url", "image_url": {"url": image}})
        status, body = server.client.post("/v1/chat/completions", {
            "model": alias, "messages": [{"role": "user", "content": content}], "max_tokens": 2,
            "temperature": 0, "logprobs": True, "top_logprobs": 1, "cache_prompt": False})  # fmt: skip
        assert status == 200 and body["choices"][0]["message"]["role"] == "assistant", body
        return body

    def tokens(server: servers.LlamaServer, content: str) -> int:
        status, body = server.client.post("/tokenize", {"content": content, "add_special": False,
                                                        "parse_special": True})  # fmt: skip
        assert status == 200, body
        return len(body["tokens"])

    with hub.LoopbackHub([repo]) as loopback:
        env = servers.clean_env({**servers.local_env(container, tmp_path), **servers.hub_env(loopback.endpoint)})
        port = servers.free_port()
        with servers.LlamaServer(llama_server_bin, servers.loopback_args(args, port), port,
                                 tmp_path / "server.log", env, inherit_env=False) as server:  # fmt: skip
            fetched = loopback.files_fetched(plan.model_id)
            status, props = server.client.get("/props")
            assert status == 200 and props["modalities"]["vision"] is True, props
            with_image, without = chat(server, gradient), chat(server, None)
            # The prompt the server built holds the image: its tokens, between the markers mtmd adds.
            markers = tokens(server, text + IMAGE_BEGIN) - tokens(server, text) + tokens(server, IMAGE_END)
            added = with_image["usage"]["prompt_tokens"] - without["usage"]["prompt_tokens"]
            assert added == markers + tinyprojector.IMAGE_TOKENS, (with_image["usage"], without["usage"], markers)
            # And the image is encoded into what the model reads: another image, another distribution.
            black = chat(server, data_url(png(40, 30, lambda x, y: (0, 0, 0))))
            first = [b["choices"][0]["logprobs"]["content"][0]["logprob"] for b in (with_image, black)]
            assert first[0] != first[1], first
            log = server.log(tail=100_000)
    assert fetched == {plan.model_file: tiny_gguf.stat().st_size, plan.projector_file: len(projector_bytes)}, fetched
    cached = servers.cache_path(container, tmp_path) / f"models--{plan.model_id.replace('/', '--')}" / "snapshots" / repo.sha
    assert (cached / plan.projector_file).read_bytes() == projector_bytes
    # It loaded the projector from the cache.
    assert f"loaded multimodal model, '{cached / plan.projector_file}'" in log, log[-3000:]


def test_text_only_flags_fetch_no_projector(llama_server_bin, tiny_gguf, projector_bytes, tmp_path):
    _, plan = servers.planned(CPU, TEXT_SPEC)
    container = servers.rendered_container(CPU, TEXT_SPEC)
    assert "--no-mmproj" in container["args"] and plan.projector_file is None
    projector = "mmproj-model-f16-4B.gguf"  # published in the same repo; a text-only server leaves it
    with hub.LoopbackHub([_repo(container, tiny_gguf, projector, projector_bytes)]) as loopback:
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
