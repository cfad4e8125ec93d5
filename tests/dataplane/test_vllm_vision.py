"""An image in a chat request, served by vLLM from the rendered command line (issue 18, part 4).

The plan for `spec: {model: {family: gemma3, size: 4b, inputs: [image]}}` on the L4 fixture renders
`vllm serve google/gemma-3-4b-it ... --limit-mm-per-prompt {"image":1}`. That command line runs
here (the address changed only), against the loopback Hub serving a tiny random-weight Gemma 3
image-text checkpoint under the plan's repo id (tinygemma_vision_hf.py: a SigLIP tower, 4 soft
tokens per image). A chat request with a text part and a PNG made here as a data URL is answered;
the prompt the engine ran (its prompt_logprobs' token ids) holds the image tokens where Gemma 3's
processor puts them, and two different images change how the tokens after them are scored (the
SigLIP tower and projector ran); two images against the rendered limit of one are refused (400).

The image processor, on this CPU venv and on a GPU image: the checkpoint's preprocessor_config.json
names `Gemma3ImageProcessor`, as Google's does. transformers 5.19's AutoImageProcessor resolves
that name to a backend at load (no `backend` argument from vLLM; `_resolve_backend` in
models/auto/image_processing_auto.py): `Gemma3ImageProcessor` (the torchvision backend) when
torchvision imports, else `Gemma3ImageProcessorPil`. The vllm/vllm-openai image has torchvision,
so there it is the torchvision class (the same resize, rescale and normalize, on tensors); this
venv has none (scripts/vllm_venv.sh), so it is the PIL class, for this checkpoint as for a real
one: nothing in the checkpoint picks it. What the checkpoint cannot change: vLLM 0.32's
gemma3_mm.py imports the torchvision module by path for a type annotation and fails without
torchvision, so the server runs with vllm_cpu_site/ on PYTHONPATH, whose sitecustomize points
that one module name at the PIL class when torchvision is absent (it says why, and does nothing
where torchvision exists). Everything else is the rendered command line and VLLM_CPU_ENV.
"""

from __future__ import annotations

import base64
import json
import pathlib
import struct
import zlib

import pytest

from tests.dataplane import hub, servers, tinygemma_vision_hf

pytestmark = pytest.mark.dataplane

FIXTURE = "gke-l4"
SPEC = {"model": {"family": "gemma3", "size": "4b", "inputs": ["image"]}}
CPU_SITE = pathlib.Path(__file__).resolve().parent / "vllm_cpu_site"
QUESTION = "What is it?"


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour 8-bit RGB PNG, written by hand (signature, IHDR, one IDAT, IEND)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))  # filter 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def image_sequence() -> str:
    """What Gemma 3's processor turns the template's <start_of_image> into (Gemma3Processor's
    full_image_sequence): the begin marker, one soft token per pooled patch, the end marker."""
    tokens = tinygemma_vision_hf.IMAGE_TOKENS
    soft = tokens["image"] * tinygemma_vision_hf.MM_TOKENS_PER_IMAGE
    return f"\n\n{tokens['boi']}{soft}{tokens['eoi']}\n\n"


def tokenize(srv: servers.LlamaServer, model: str, text: str) -> list[int]:
    status, reply = srv.client.post("/tokenize", {"model": model, "prompt": text, "add_special_tokens": False})
    assert status == 200, reply
    return reply["tokens"]


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def chat(model: str, images: list[bytes], **extra) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": data_url(i)}} for i in images]
    content = [*parts, {"type": "text", "text": QUESTION}]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2, "temperature": 0,
            **extra}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_vision_hf(vllm_python, tmp_path_factory) -> pathlib.Path:
    return tinygemma_vision_hf.write(tmp_path_factory.mktemp("hf-vision") / "tiny-gemma-3-vision", vllm_python)


@pytest.fixture(scope="module")
def served(vllm_python, tiny_vision_hf, tmp_path_factory):
    _, plan = servers.planned(FIXTURE, SPEC)
    assert plan.runtime == "vllm", plan
    container = servers.rendered_container(FIXTURE, SPEC)
    scratch = tmp_path_factory.mktemp("vllm-vision")
    port = servers.free_port()
    with hub.LoopbackHub([hub.HubRepo.from_dir(plan.model_id, tiny_vision_hf)]) as loopback:
        srv = servers.vllm_server(vllm_python, container, port, scratch / "vllm.log",
                                  servers.local_env(container, scratch), loopback.endpoint,
                                  extra={"PYTHONPATH": str(CPU_SITE)})  # fmt: skip
        try:
            srv.start(timeout_s=600.0)
            yield srv, plan, container, loopback
        finally:
            srv.stop()


def test_the_rendered_command_line_limits_images_to_one(served):
    _, plan, container, loopback = served
    args = container["args"]
    assert args[0] == plan.model_id == "google/gemma-3-4b-it", args
    assert json.loads(args[args.index("--limit-mm-per-prompt") + 1]) == {"image": 1}, args
    fetched = loopback.files_fetched(plan.model_id)
    assert {"model.safetensors", "preprocessor_config.json", "processor_config.json"} <= set(fetched), fetched


def test_a_chat_request_with_an_image_is_answered_and_the_prompt_holds_the_image_tokens(served):
    srv, plan, _, _ = served
    model = plan.served_model_name
    status, reply = srv.client.post("/v1/chat/completions", chat(model, [png(40, 30, (200, 30, 30))],
                                                                  prompt_logprobs=0))  # fmt: skip
    assert status == 200, reply
    assert reply["choices"][0]["message"]["role"] == "assistant", reply
    ran = [int(next(iter(e))) for e in reply["prompt_logprobs"][1:]]  # the first prompt token has none
    expected = tokenize(srv, model, f"<bos><start_of_turn>user\n{image_sequence()}{QUESTION}<end_of_turn>\n"
                                     "<start_of_turn>model\n")  # fmt: skip
    assert ran == expected[1:], (ran, expected)
    ids = tinygemma_vision_hf.image_ids()
    start = ran.index(ids["boi"])
    soft = [ids["image"]] * tinygemma_vision_hf.MM_TOKENS_PER_IMAGE
    assert ran[start + 1 : start + 2 + len(soft)] == [*soft, ids["eoi"]], ran
    assert reply["usage"]["prompt_tokens"] == len(expected), (reply["usage"], expected)


def test_the_image_adds_its_tokens_to_the_prompt(served):
    srv, plan, _, _ = served
    model = plan.served_model_name
    status, with_image = srv.client.post("/v1/chat/completions", chat(model, [png(16, 64, (10, 200, 90))]))
    assert status == 200, with_image
    status, text_only = srv.client.post("/v1/chat/completions", chat(model, []))
    assert status == 200, text_only
    added = with_image["usage"]["prompt_tokens"] - text_only["usage"]["prompt_tokens"]
    sequence = tokenize(srv, model, image_sequence())
    assert added == len(sequence) >= tinygemma_vision_hf.MM_TOKENS_PER_IMAGE + 2, (added, sequence)

def test_two_images_over_the_rendered_limit_are_refused(served):
    srv, plan, _, _ = served
    body = chat(plan.served_model_name, [png(8, 8, (0, 0, 0)), png(8, 8, (255, 255, 255))])
    status, reply = srv.client.post("/v1/chat/completions", body)
    assert status == 400, reply
    assert "At most 1 image(s) may be provided in one prompt." in reply["error"]["message"], reply


def test_the_vision_tower_output_reaches_the_language_model(served):
    """Two images, the same text: the prompt tokens after the image are scored differently, so the
    soft tokens carry what the SigLIP tower and the projector made of each image (not placeholders)."""
    srv, plan, _, _ = served
    scored = []
    for rgb in ((255, 0, 0), (0, 0, 255)):
        status, reply = srv.client.post("/v1/chat/completions", chat(plan.served_model_name, [png(56, 56, rgb)],
                                                                      prompt_logprobs=0))  # fmt: skip
        assert status == 200, reply
        scored.append([next(iter(e.items())) for e in reply["prompt_logprobs"][1:]])
    red, blue = scored
    assert [t for t, _ in red] == [t for t, _ in blue], (red, blue)
    eoi = [t for t, _ in red].index(str(tinygemma_vision_hf.image_ids()["eoi"]))
    before = [lp["logprob"] for _, lp in red[:eoi - tinygemma_vision_hf.MM_TOKENS_PER_IMAGE]]
    assert before == [lp["logprob"] for _, lp in blue[:eoi - tinygemma_vision_hf.MM_TOKENS_PER_IMAGE]]
    after = [(r[1]["logprob"], b[1]["logprob"]) for r, b in zip(red[eoi:], blue[eoi:])]
    assert any(r != b for r, b in after), after
