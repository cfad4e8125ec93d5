"""The loopback Hub (hub.py), driven by the runtimes' own downloaders, counting every byte.

- `hf download` from the vLLM venv (huggingface_hub, the vLLM image's downloader): fills an
  HF_HOME the way a loader Job would, fetches each file once, nothing on a warm cache, nothing at
  all offline; unknown repos and files fail with the Hub's own errors.
- llama-server started from the rendered args with the model source KEPT (--hf-repo/--hf-file),
  only the address changed, LLAMA_CACHE mapped to a scratch directory and MODEL_ENDPOINT at the
  Hub: the GGUF comes through the Hub into the rendered cache, and a restart on that cache
  fetches 0 bytes.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from tests.dataplane import hub, servers

pytestmark = pytest.mark.dataplane

HF_REPO = "google/gemma-3-1b-it"


def _hf(vllm_python: pathlib.Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(vllm_python.parent / "hf"), *args], capture_output=True, text=True, timeout=300,
                          env=servers.clean_env(env), stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture(scope="module")
def hf_hub(tiny_hf):
    repo = hub.HubRepo.from_dir(HF_REPO, tiny_hf)
    with hub.LoopbackHub([repo]) as loopback:
        yield loopback, repo


def test_hf_download_fetches_each_file_once_then_nothing_when_warm(vllm_python, hf_hub, tmp_path):
    loopback, repo = hf_hub
    loopback.reset_counts()
    env = {**servers.hub_env(loopback.endpoint), "HF_HOME": str(tmp_path / "hf")}
    cold = _hf(vllm_python, ["download", HF_REPO], env)
    assert cold.returncode == 0, cold.stderr[-3000:]
    snapshot = tmp_path / "hf" / "hub" / "models--google--gemma-3-1b-it" / "snapshots" / repo.sha
    assert str(snapshot) in cold.stdout, cold.stdout
    assert {p.name: p.read_bytes() for p in snapshot.iterdir()} == {n: f.data for n, f in repo.files.items()}
    assert loopback.files_fetched(HF_REPO) == {n: len(f.data) for n, f in repo.files.items()}

    loopback.reset_counts()
    warm = _hf(vllm_python, ["download", HF_REPO], env)
    assert warm.returncode == 0, warm.stderr[-3000:]
    assert loopback.fetched() == 0, loopback.files_fetched(HF_REPO)


def test_hf_download_offline_uses_the_cache_and_sends_nothing(vllm_python, hf_hub, tmp_path):
    loopback, _ = hf_hub
    env = {**servers.hub_env(loopback.endpoint), "HF_HOME": str(tmp_path / "hf")}
    loopback.reset_counts()
    empty = _hf(vllm_python, ["download", HF_REPO], {**env, "HF_HUB_OFFLINE": "1"})
    assert empty.returncode != 0 and loopback.requests == []
    assert _hf(vllm_python, ["download", HF_REPO], env).returncode == 0
    loopback.reset_counts()
    offline = _hf(vllm_python, ["download", HF_REPO], {**env, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0, offline.stderr[-3000:]
    assert loopback.requests == [] and loopback.fetched() == 0


def test_unknown_repos_and_files_fail_with_the_hubs_errors(vllm_python, hf_hub, tmp_path):
    loopback, _ = hf_hub
    # HF_DEBUG: the CLI prints the traceback, which names huggingface_hub's typed error.
    env = {**servers.hub_env(loopback.endpoint), "HF_HOME": str(tmp_path / "hf"), "HF_DEBUG": "1"}
    missing_repo = _hf(vllm_python, ["download", "google/no-such-model"], env)
    assert missing_repo.returncode != 0 and "RepositoryNotFoundError" in missing_repo.stderr, missing_repo.stderr
    missing_file = _hf(vllm_python, ["download", HF_REPO, "no-such-file.bin"], env)
    assert missing_file.returncode != 0 and "EntryNotFoundError" in missing_file.stderr, missing_file.stderr[-2000:]


def test_a_byte_range_is_served_as_a_206_and_counted(hf_hub):
    loopback, repo = hf_hub
    import http.client

    data = repo.files["model.safetensors"].data
    loopback.reset_counts()
    conn = http.client.HTTPConnection(hub.LOOPBACK, int(loopback.endpoint.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", f"/{HF_REPO}/resolve/main/model.safetensors", headers={"Range": "bytes=8-15"})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 206 and body == data[8:16]
    assert resp.headers["Content-Range"] == f"bytes 8-15/{len(data)}"
    assert loopback.files_fetched(HF_REPO) == {"model.safetensors": 8} and loopback.ranged(HF_REPO) == 8


# ---- llama.cpp's own downloader ----

LLAMA_FIXTURE, LLAMA_SPEC = "gke-cpu-only", {"model": {"family": "gemma3", "size": "1b"}}


def _llama(binary, container, cache_scratch, endpoint, log):
    port = servers.free_port()
    env = {**servers.local_env(container, cache_scratch), **servers.hub_env(endpoint)}
    return servers.LlamaServer(binary, servers.loopback_args(container["args"], port), port, log,
                               servers.clean_env(env), inherit_env=False)  # fmt: skip


def test_llama_server_downloads_the_gguf_through_the_hub_then_restarts_warm(llama_server_bin, tiny_gguf, tmp_path):
    _, plan = servers.planned(LLAMA_FIXTURE, LLAMA_SPEC)
    container = servers.rendered_container(LLAMA_FIXTURE, LLAMA_SPEC)
    args = container["args"]
    assert args[args.index("--hf-repo") + 1] == plan.model_id and args[args.index("--hf-file") + 1] == plan.model_file
    repo = hub.HubRepo(plan.model_id, {plan.model_file: hub.HubFile(plan.model_file, tiny_gguf.read_bytes())})
    size = tiny_gguf.stat().st_size
    scratch = tmp_path / "pod"
    scratch.mkdir()
    with hub.LoopbackHub([repo]) as loopback:
        cold = _llama(llama_server_bin, container, scratch, loopback.endpoint, tmp_path / "cold.log")
        with cold:
            status, body = cold.client.get("/v1/models")
            assert status == 200 and plan.served_model_name in [m["id"] for m in body["data"]], body
        assert loopback.files_fetched(plan.model_id) == {plan.model_file: size}
        cache = servers.cache_path(container, scratch)
        assert os.environ.get("LLAMA_CACHE") != str(cache)
        cached = cache / f"models--{plan.model_id.replace('/', '--')}" / "snapshots" / repo.sha / plan.model_file
        assert cached.read_bytes() == tiny_gguf.read_bytes()

        loopback.reset_counts()
        with _llama(llama_server_bin, container, scratch, loopback.endpoint, tmp_path / "warm.log") as warm:
            status, _ = warm.client.get("/health")
            assert status == 200
        assert loopback.fetched() == 0, loopback.files_fetched(plan.model_id)
        # It still asked the Hub which commit is current (metadata only), as the rendered pod would.
        assert any("/refs" in path for _, path, _ in loopback.requests), loopback.requests
