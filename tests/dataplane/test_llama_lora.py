"""llama.cpp loads LoRA adapters as gemma-operator renders them (issue 19): the CPU plan for Gemma 3 1B on
gke-cpu-only with two adapters, run on the catalog's llama-server release.

The rendered args are kept except the model source and the address (test_llama_server.py's swap) and
/models, mapped to a scratch directory. Two tiny random LoRA GGUFs (tinylora.write_gguf, written as
convert_lora_to_gguf.py writes them) are served by the loopback Hub, and the init containers' own
download (`sh -c` + curl, as rendered) fetches them, with this machine's curl (7.88: older than the 8.3
that --variable needs, newer than the 7.55 that -H @- needs); with a token too, which reaches curl on
its stdin. The shared store's adapter Jobs (cache.type pvc) run the same download into the store.
"""

from __future__ import annotations

import pathlib

import pytest

import subprocess
from gemma_operator.runtimes import CACHE_DIR
from tests.dataplane import hub, servers, tinylora

pytestmark = pytest.mark.dataplane

SPEC = {
    "model": {"family": "gemma3", "size": "1b"},
    "adapters": [
        {"name": "support-bot", "repo": "acme/tiny-support-lora", "rank": 8, "gguf": "support-f32.gguf"},
        {"name": "sql-writer", "repo": "acme/tiny-sql-lora", "rank": 8, "gguf": "gguf/sql-f32.gguf"},
    ],
}


TOKEN = "hf_loopbacktoken"


@pytest.fixture(scope="module")
def lora_repos(tmp_path_factory) -> list[hub.HubRepo]:
    """Each adapter's repo, its GGUF where spec.adapters[].gguf says."""
    repos = []
    for i, adapter in enumerate(SPEC["adapters"]):
        folder = tmp_path_factory.mktemp(f"repo-{adapter['name']}")
        target = folder / adapter["gguf"]
        target.parent.mkdir(parents=True, exist_ok=True)
        tinylora.write_gguf(target, rank=8, seed=i + 1)
        repos.append(hub.HubRepo.from_dir(adapter["repo"], folder))
    return repos


def local(path: str, models: pathlib.Path) -> str:
    return path.replace(f"{CACHE_DIR}/", f"{models}/") if path.startswith(f"{CACHE_DIR}/") else path


def download(command: list[str], models: pathlib.Path, endpoint: str, token: str | None = None) -> subprocess.CompletedProcess:
    """One rendered curl download, /models moved to `models`; HF_TOKEN in its env (as the Secret puts it)."""
    assert command[:2] == ["sh", "-c"], command
    env = servers.clean_env({**servers.hub_env(endpoint), **({"HF_TOKEN": token} if token else {})})  # no caller's token
    return subprocess.run([*command[:4], *(local(a, models) for a in command[4:])], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def lora_files(args: list[str], models: pathlib.Path) -> list[pathlib.Path]:
    """The files --lora-scaled names, moved as the download's."""
    scaled = args[args.index("--lora-scaled") + 1].split(",")
    return [pathlib.Path(local(item.rsplit(":", 1)[0], models)) for item in scaled]


@pytest.fixture(scope="module")
def server(llama_server_bin, tiny_gguf, lora_repos, tmp_path_factory):
    pod = servers.rendered_pod("gke-cpu-only", SPEC)
    (container,) = pod["containers"]
    scratch = tmp_path_factory.mktemp("llama-lora")
    env = servers.local_env(container, scratch)
    local_models = scratch / "models"
    port = servers.free_port()
    args = [local(a, local_models) for a in servers.local_llama_args(container["args"], tiny_gguf, port)]
    with hub.LoopbackHub(lora_repos) as loopback:  # each init container's own download, as rendered
        runs = [download(loader["command"], local_models, loopback.endpoint) for loader in pod["initContainers"]]
    for run in runs:
        assert run.returncode == 0, run.stderr
    srv = servers.LlamaServer(llama_server_bin, args, port, scratch / "server.log", env)
    try:
        srv.start()
        srv.pod = pod  # type: ignore[attr-defined]
        srv.models = local_models  # type: ignore[attr-defined]
        srv.downloads = runs  # type: ignore[attr-defined]
        yield srv
    finally:
        srv.stop()


def test_the_init_containers_download_each_gguf_where_lora_points(server, lora_repos):
    files = lora_files(server.pod["containers"][0]["args"], server.models)
    for path, repo, adapter in zip(files, lora_repos, SPEC["adapters"], strict=True):
        assert path.read_bytes() == repo.files[adapter["gguf"]].data, path
    assert [r.stdout.split(":")[0] for r in server.downloads] == ["adapter support-bot", "adapter sql-writer"]


def test_with_a_token_the_download_sends_it_and_without_it_the_hub_refuses(lora_repos, tmp_path):
    pod = servers.rendered_pod("gke-cpu-only", {**SPEC, "hfTokenSecretRef": {"name": "hf"}})
    first = pod["initContainers"][0]
    assert "HF_TOKEN" in [e["name"] for e in first["env"]] and not any(TOKEN in part for part in first["command"])
    with hub.LoopbackHub(lora_repos, token=TOKEN) as gated:
        refused = download(first["command"], tmp_path / "without", gated.endpoint)
        assert refused.returncode == 22 and "401" in refused.stderr  # curl --fail on the Hub's 401
        assert gated.authorized == [False]
        done = download(first["command"], tmp_path / "with", gated.endpoint, TOKEN)
        assert done.returncode == 0, done.stderr
        assert gated.authorized == [False, True]
    (path, _) = lora_files(pod["containers"][0]["args"], tmp_path / "with")
    assert path.read_bytes() == lora_repos[0].files[SPEC["adapters"][0]["gguf"]].data


def test_a_shared_stores_adapter_jobs_download_where_lora_points(lora_repos, tmp_path):
    """cache.type pvc: one Job per adapter writes into the claim (mounted at /models), which the model pods
    mount read-only; --lora-scaled names the files there."""
    objs = servers.rendered_objects("gke-cpu-only", {**SPEC, "cache": {"type": "pvc"}})
    jobs = [o for o in objs if o["kind"] == "Job" and o["spec"]["template"]["spec"]["containers"][0]["name"] == "adapter"]
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    store = tmp_path / "claim"
    with hub.LoopbackHub(lora_repos) as loopback:
        runs = [download(j["spec"]["template"]["spec"]["containers"][0]["command"], store, loopback.endpoint) for j in jobs]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr for r in runs]
    files = lora_files(deployment["spec"]["template"]["spec"]["containers"][0]["args"], store)
    assert all(str(f).startswith(f"{store}/adapters/") for f in files)
    for path, repo, adapter in zip(files, lora_repos, SPEC["adapters"], strict=True):
        assert path.read_bytes() == repo.files[adapter["gguf"]].data


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
