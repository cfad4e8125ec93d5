"""vLLM really serves what gemma-operator renders: the GPU plan's command line, run on vLLM's CPU build.

One server per session (conftest.vllm_run): the Deployment's container rendered for Gemma 3 1B
on the L4 fixture, started as `vllm serve` + the rendered args with only the address changed
(loopback, a free port), the rendered env with its cache path (HF_HOME under the `models`
volume) mapped to a scratch directory, VLLM_CPU_KVCACHE_SPACE (servers.VLLM_CPU_ENV says why)
and the loopback Hub as HF_ENDPOINT. The model id is the plan's own (google/gemma-3-1b-it),
served by the loopback Hub from a tiny random-weight Gemma 3 checkpoint (tinygemma_hf.py),
so vLLM's own download code fetches it. Nothing reaches the internet.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from gemma_operator.inventory import quantity
from tests.dataplane import servers, tinygemma, tinygemma_hf
from tests.dataplane.conftest import VLLM_FIXTURE, VLLM_SPEC

pytestmark = pytest.mark.dataplane

USER_TURN = "<start_of_turn>user\n"
MODEL_TURN = "<start_of_turn>model\n"
END_TURN = "<end_of_turn>\n"


def _served(run) -> str:
    return run.plan.served_model_name


def _tokenize_text(run, text: str) -> list[int]:
    """Token ids of `text` as written (special tokens in it parsed, nothing added)."""
    status, body = run.server.client.post(
        "/tokenize", {"model": _served(run), "prompt": text, "add_special_tokens": False}
    )
    assert status == 200, body
    return body["tokens"]


def test_the_command_line_is_the_rendered_one_with_only_the_address_changed(vllm_run):
    rendered = vllm_run.container
    assert rendered["command"] == ["vllm", "serve"]
    ran = vllm_run.server.argv
    assert ran[1] == str(servers.VLLM_SERVE) and ran[2] == "serve", ran
    args = rendered["args"]
    changed = [(a, b) for a, b in zip(args, ran[3:], strict=True) if a != b]
    port = str(vllm_run.server.port)
    assert changed == [("0.0.0.0", servers.LOOPBACK), ("8000", port)], changed
    # The plan's model, name, dtype, length, parallelism and memory share are all passed as rendered.
    for flag in ("--served-model-name", "--dtype", "--max-model-len", "--tensor-parallel-size",
                 "--gpu-memory-utilization"):  # fmt: skip
        assert flag in ran, (flag, ran)
    assert ran[3] == vllm_run.plan.model_id == "google/gemma-3-1b-it"


def test_the_environment_is_the_rendered_one_plus_the_cpu_kv_cache_and_the_hub(vllm_run):
    env = vllm_run.env
    rendered = servers.local_env(vllm_run.container, vllm_run.scratch)  # paths under volumes mapped
    assert {"HOME", "HF_HOME", "VLLM_NO_USAGE_STATS"} <= set(rendered), rendered
    assert {k: env[k] for k in rendered} == rendered
    # HF_HOME keeps its place under the cache volume: /models/huggingface -> <cache>/huggingface.
    assert pathlib.Path(env["HF_HOME"]).is_relative_to(vllm_run.cache)
    # Beyond the rendered variables and the test process's own (minus the Hub/cache ones), only these.
    ours = {**servers.VLLM_CPU_ENV, **servers.hub_env(vllm_run.hub.endpoint)}
    assert {k: env[k] for k in ours} == ours
    assert set(env) - set(rendered) - set(os.environ) <= set(ours), set(env) - set(rendered) - set(os.environ)
    assert "HF_HUB_OFFLINE" not in env  # online, as the rendered emptyDir pod starts


def test_models_lists_the_plans_served_name_and_max_model_len(vllm_run):
    status, body = vllm_run.server.client.get("/v1/models")
    assert status == 200, body
    (model,) = body["data"]
    assert model["id"] == _served(vllm_run) == "gemma-3-1b-it"
    assert model["root"] == vllm_run.plan.model_id
    # The checkpoint allows 131072: 32768 can only come from the rendered --max-model-len.
    assert model["max_model_len"] == vllm_run.plan.max_model_len == 32768
    assert tinygemma_hf.MAX_POSITION_EMBEDDINGS > vllm_run.plan.max_model_len


def test_a_prompt_longer_than_max_model_len_is_refused(vllm_run):
    limit = vllm_run.plan.max_model_len
    text = "a" * (limit + 16)
    assert len(_tokenize_text(vllm_run, text)) > limit
    body = {"model": _served(vllm_run), "messages": [{"role": "user", "content": text}], "max_tokens": 1}
    status, reply = vllm_run.server.client.post("/v1/chat/completions", body)
    assert status == 400, reply
    assert str(limit) in reply["error"]["message"], reply


def test_chat_completion_answers_with_gemmas_chat_template_applied(vllm_run):
    """The prompt the engine ran (prompt_logprobs: one entry per prompt token) is Gemma's turn format."""
    body = {
        "model": _served(vllm_run),
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4,
        "temperature": 0,
        "prompt_logprobs": 0,
    }
    status, reply = vllm_run.server.client.post("/v1/chat/completions", body)
    assert status == 200, reply
    assert reply["model"] == _served(vllm_run)
    (choice,) = reply["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length"), choice
    # The first prompt token has no logprob (None); each other entry is keyed by its token id.
    entries = reply["prompt_logprobs"]
    assert entries[0] is None
    ran = [int(next(iter(e))) for e in entries[1:]]
    expected = _tokenize_text(vllm_run, f"<bos>{USER_TURN}Hello{END_TURN}{MODEL_TURN}")
    assert expected[0] == tinygemma.BOS and expected.count(tinygemma.START_OF_TURN) == 2
    assert ran == expected[1:], (ran, expected)
    assert reply["usage"]["prompt_tokens"] == len(expected)


def test_the_template_folds_the_system_turn_and_names_the_assistant_model(vllm_run):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ]
    status, body = vllm_run.server.client.post(
        "/tokenize", {"model": _served(vllm_run), "messages": messages, "add_generation_prompt": True}
    )
    assert status == 200, body
    expected = (f"<bos>{USER_TURN}Be brief.\n\nHi{END_TURN}{MODEL_TURN}Hello.{END_TURN}"
                f"{USER_TURN}Again{END_TURN}{MODEL_TURN}")  # fmt: skip
    assert body["tokens"] == _tokenize_text(vllm_run, expected)


def test_the_weights_came_through_the_loopback_hub_into_the_rendered_cache(vllm_run):
    repo = vllm_run.repo
    hf_home = pathlib.Path(vllm_run.env["HF_HOME"])
    assert hf_home.is_relative_to(vllm_run.cache)  # the rendered HF_HOME is on the cache volume
    snapshot = hf_home / "hub" / "models--google--gemma-3-1b-it" / "snapshots" / repo.sha
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (snapshot / name).read_bytes() == repo.files[name].data, name
    fetched = vllm_run.hub.files_fetched(repo.repo_id)
    weights = len(repo.files["model.safetensors"].data)
    assert fetched["model.safetensors"] >= weights > 0, fetched
    # Nothing went to the image's HOME cache instead of the volume.
    home = vllm_run.env["HOME"]
    assert not list(pathlib.Path(home).glob("**/models--*")), home


def test_metrics_expose_the_queue_and_the_kv_cache(vllm_run):
    status, text = vllm_run.server.client.get("/metrics")
    assert status == 200
    assert "vllm:num_requests_waiting" in text and "vllm:kv_cache_usage_perc" in text


def test_metrics_expose_the_signals_the_autoscalers_use(vllm_run):
    """Every vLLM name an HPA or ScaledObject of gemma-operator follows (scaling.SIGNALS) is a
    series of the running server's /metrics."""
    from gemma_operator import scaling

    status, text = vllm_run.server.client.get("/metrics")
    assert status == 200
    exposed = {line.split()[0].split("{")[0] for line in text.splitlines() if line and not line.startswith("#")}
    used = {name for (runtime, _), name in scaling.SIGNALS.items() if runtime == "vllm"}
    assert used == {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"}
    assert used <= exposed, sorted(n for n in exposed if n.startswith("vllm:"))


def _bytes_under(path: pathlib.Path) -> int:
    """`du -sb`: the apparent size of everything under `path`."""
    done = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, timeout=60, check=True)
    return int(done.stdout.split()[0])


def test_the_disk_backed_empty_dirs_stay_under_their_rendered_size_limits(vllm_run):
    """After requests, what this vLLM CPU serve wrote into each disk-backed emptyDir of the rendered pod
    (mapped to scratch/<volume> by servers.local_env) is under the volume's rendered sizeLimit. The
    figures are printed (-s) for the comment beside runtimes.HOME_SIZE."""
    body = {"model": _served(vllm_run), "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
    status, reply = vllm_run.server.client.post("/v1/chat/completions", body)
    assert status == 200, reply
    volumes = servers.rendered_pod(VLLM_FIXTURE, VLLM_SPEC)["volumes"]
    disk = [v for v in volumes if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory"]
    assert {v["name"] for v in disk} >= {"home", "models"}, volumes
    assert pathlib.Path(vllm_run.env["HOME"]) == vllm_run.scratch / "home"
    used = {v["name"]: _bytes_under(vllm_run.scratch / v["name"]) for v in disk}
    limits = {v["name"]: v["emptyDir"].get("sizeLimit") for v in disk}
    print("\nvLLM CPU serve, bytes written per disk-backed emptyDir (sizeLimit):",
          ", ".join(f"{name} {used[name]:,} ({limits[name]})" for name in used))  # fmt: skip
    home = vllm_run.scratch / "home"
    for depth in ("*/*", "*/*/*"):
        print("  under HOME:", ", ".join(f"{p.relative_to(home)} {_bytes_under(p):,}" for p in sorted(home.glob(depth))))
    for name, limit in limits.items():
        assert limit, f"emptyDir {name} has no sizeLimit: {volumes}"
        assert used[name] < quantity(limit), (name, used[name], limit)
