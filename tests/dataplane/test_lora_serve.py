"""vLLM serves LoRA adapters as gemma-operator renders them (issue 19): the GPU plan's pod for Gemma 3 1B
on the L4 fixture with two adapters, run on vLLM's CPU build.

The init container's own download (its command, run by the vLLM venv's python with /models mapped to a
scratch directory) fetches two tiny random PEFT LoRAs (tinylora.py) from the loopback Hub, as it would
from the Hub, and checks their adapter_config.json; then `vllm serve` + the rendered args (the address
changed to loopback, /models mapped the same way) serves the tiny Gemma 3 with both. Nothing reaches
the internet.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from gemma_operator import adapters, cache
from gemma_operator.runtimes import CACHE_DIR
from tests.dataplane import epp, hub, servers, tinylora
from tests.dataplane.conftest import VLLM_FIXTURE, VLLM_SPEC, VLLM_START_TIMEOUT_S

pytestmark = pytest.mark.dataplane

BASE_ID = "google/gemma-3-1b-it"
ADAPTERS = [
    {"name": "support-bot", "repo": "acme/tiny-support-lora", "rank": 8, "baseModel": BASE_ID},
    {"name": "sql-writer", "repo": "acme/tiny-sql-lora"},  # rank unknown: vLLM's default 16 planned
]
SPEC: dict[str, Any] = {**VLLM_SPEC, "adapters": ADAPTERS}


def _local(value: str, scratch: pathlib.Path) -> str:
    """A rendered path under the models volume, moved where local_env moves it (scratch/models)."""
    return value.replace(f"{CACHE_DIR}/", f"{scratch / 'models'}/") if f"{CACHE_DIR}/" in value else value


@dataclass
class LoraRun:
    server: servers.LlamaServer
    pod: dict[str, Any]
    scratch: pathlib.Path
    download: subprocess.CompletedProcess


def _download(loader: dict[str, Any], python: pathlib.Path, scratch: pathlib.Path, hub_endpoint: str,
              command: list[str] | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    command = command or loader["command"]
    assert command[:2] == ["python3", "-c"], command
    env = servers.clean_env({**servers.local_env(loader, scratch), **servers.hub_env(hub_endpoint)})
    return subprocess.run([str(python), *command[1:3], *(_local(a, scratch) if a.startswith("/") else a for a in command[3:])],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def lora_run(vllm_python, tiny_hf, tmp_path_factory):
    _, plan = servers.planned(VLLM_FIXTURE, SPEC)
    assert plan.runtime == "vllm" and plan.model_id == BASE_ID, plan
    pod = servers.rendered_pod(VLLM_FIXTURE, SPEC)
    (container,) = pod["containers"]
    (loader,) = pod["initContainers"]
    written = tmp_path_factory.mktemp("loras")
    repos = [hub.HubRepo.from_dir(BASE_ID, tiny_hf)]
    for i, adapter in enumerate(ADAPTERS):
        folder = tinylora.write(written / adapter["name"], vllm_python, base=BASE_ID, rank=8, seed=i + 1)
        repos.append(hub.HubRepo.from_dir(adapter["repo"], folder))
    scratch = tmp_path_factory.mktemp("vllm-lora")
    rendered_env = servers.local_env(container, scratch)
    port = servers.free_port()
    with hub.LoopbackHub(repos) as loopback:
        download = _download(loader, vllm_python, scratch, loopback.endpoint)
        assert download.returncode == 0, download.stderr[-4000:]
        local = {**container, "args": [_local(a, scratch) for a in container["args"]]}
        srv = servers.vllm_server(vllm_python, local, port, scratch / "vllm.log", rendered_env, loopback.endpoint)
        try:
            srv.start(timeout_s=VLLM_START_TIMEOUT_S)
            yield LoraRun(srv, pod, scratch, download)
        finally:
            srv.stop()


def test_the_init_container_downloads_each_adapter_into_the_cache(lora_run):
    for adapter in ADAPTERS:
        folder = lora_run.scratch / "models" / "adapters" / adapter["name"]
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["r"] == 8 and config["base_model_name_or_path"] == BASE_ID
        assert (folder / "adapter_model.safetensors").stat().st_size > 0
        assert f"adapter {adapter['name']}: rank 8, base {BASE_ID}" in lora_run.download.stdout


def test_the_server_runs_the_rendered_lora_flags(lora_run):
    ran = lora_run.server.argv
    assert ran[ran.index("--max-loras") + 1] == "2" and ran[ran.index("--max-lora-rank") + 1] == "16"
    assert "--enable-lora" in ran


def test_models_lists_the_base_and_both_adapters(lora_run):
    status, body = lora_run.server.client.get("/v1/models")
    assert status == 200, body
    ids = {m["id"]: m for m in body["data"]}
    assert set(ids) == {"gemma-3-1b-it", "support-bot", "sql-writer"}, ids
    assert ids["support-bot"]["parent"] == "gemma-3-1b-it"


@pytest.mark.parametrize("model", ["support-bot", "sql-writer", "gemma-3-1b-it"])
def test_a_chat_request_to_each_name_answers(lora_run, model):
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4, "temperature": 0}
    status, reply = lora_run.server.client.post("/v1/chat/completions", body)
    assert status == 200, reply
    assert reply["model"] == model
    (choice,) = reply["choices"]
    assert isinstance(choice["message"]["content"], str) and reply["usage"]["completion_tokens"] >= 1


def test_the_download_refuses_a_rank_above_the_plan(lora_run, vllm_python, tmp_path):
    """Rendered for max rank 16; told 4, the same command stops naming the adapter and the field to set."""
    (loader,) = lora_run.pod["initContainers"]
    command = list(loader["command"])
    assert command[4:6] == ["0", "support-bot"] and command[10] == "16"  # a row: index, name, ..., max rank
    command[10] = "4"
    repos = [hub.HubRepo.from_dir(ADAPTERS[0]["repo"], lora_run.scratch / "models" / "adapters" / "support-bot")]
    with hub.LoopbackHub(repos) as loopback:
        done = _download(loader, vllm_python, tmp_path, loopback.endpoint, command)
    assert done.returncode == adapters.EXIT_RANK
    assert "adapter support-bot: rank 8 is above the planned --max-lora-rank 4: set spec.adapters[0].rank: 8" in done.stderr


def _store_run(job: dict[str, Any], python: pathlib.Path, store: pathlib.Path, hub_endpoint: str) -> subprocess.CompletedProcess:
    """An adapter Job's command, the store (mounted at the hub cache) moved to `store`."""
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:2] == ["python3", "-c"], command
    env = servers.clean_env({**servers.hub_env(hub_endpoint), "HF_HOME": str(store.parent / "hf-home")})
    moved = [a.replace(f"{cache.HUB_DIR['vllm']}/", f"{store}/") for a in command[3:]]
    return subprocess.run([str(python), *command[1:3], *moved], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def lora_hub_repos(vllm_python, tmp_path_factory) -> list[hub.HubRepo]:
    written = tmp_path_factory.mktemp("store-loras")
    return [hub.HubRepo.from_dir(a["repo"], tinylora.write(written / a["name"], vllm_python, base=BASE_ID, rank=8, seed=i + 1))
            for i, a in enumerate(ADAPTERS)]  # fmt: skip


def _jobs_and_args(spec: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    objs = servers.rendered_objects(VLLM_FIXTURE, spec)
    jobs = [o for o in objs if o["kind"] == "Job" and o["spec"]["template"]["spec"]["containers"][0]["name"] == "adapter"]
    (deployment,) = [o for o in objs if o["kind"] == "Deployment"]
    return jobs, deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_a_shared_stores_adapter_jobs_download_where_lora_modules_points(vllm_python, lora_hub_repos, tmp_path):
    """cache.type pvc: one Job per adapter fills the claim's adapters/KEY; the pods read it at --lora-modules."""
    jobs, args = _jobs_and_args({**SPEC, "cache": {"type": "pvc"}})
    store = tmp_path / "claim"
    with hub.LoopbackHub(lora_hub_repos) as loopback:
        runs = [_store_run(job, vllm_python, store, loopback.endpoint) for job in jobs]
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-2000:] for r in runs]
    modules = args[args.index("--lora-modules") + 1:args.index("--max-loras")]
    for module, adapter in zip(modules, ADAPTERS, strict=True):
        name, folder = module.split("=", 1)
        local = pathlib.Path(folder.replace(f"{cache.HUB_DIR['vllm']}/", f"{store}/"))
        assert name == adapter["name"] and local.parent == store / "adapters"
        assert json.loads((local / "adapter_config.json").read_text())["r"] == 8
        assert (local / "adapter_model.safetensors").stat().st_size > 0


def test_a_shared_stores_adapter_job_refuses_a_rank_above_its_own_with_its_exit_code(vllm_python, lora_hub_repos,
                                                                                     tmp_path):  # fmt: skip
    """Declared rank 1 (planned 1): the adapter's r 8 is refused with EXIT_RANK, the code the Job's
    podFailurePolicy fails it at once on; the Job names the repo (several resources may share it)."""
    jobs, _ = _jobs_and_args({**SPEC, "cache": {"type": "pvc"}, "adapters": [{**ADAPTERS[0], "rank": 1}]})
    (job,) = jobs
    with hub.LoopbackHub(lora_hub_repos[:1]) as loopback:
        done = _store_run(job, vllm_python, tmp_path / "claim", loopback.endpoint)
    assert done.returncode == adapters.EXIT_RANK
    assert [adapters.EXIT_RANK] in [r["onExitCodes"]["values"] for r in job["spec"]["podFailurePolicy"]["rules"]]
    assert ("adapter acme/tiny-support-lora: rank 8 is above the planned --max-lora-rank 1: set rank: 8 on the "
            "spec.adapters entry for acme/tiny-support-lora") in done.stderr


def test_the_pickers_metrics_are_on_the_servers_metrics_as_it_reads_them(lora_run):
    """The same plan with spec.gateway: its model Deployment is the one this server runs, and every
    metric its endpoint picker is configured to read is on this server's /metrics in the form the
    picker parses (tests/dataplane/epp.py), the LoRA info naming each adapter after a request to it."""
    objects = epp.rendered(VLLM_FIXTURE, SPEC)
    (container,) = objects[("Deployment", "chat")]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == lora_run.pod["containers"][0]["args"]
    specs = epp.metric_specs(objects)
    assert all(specs.values()), specs  # vLLM feeds every signal
    for adapter in ADAPTERS:
        body = {"model": adapter["name"], "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
        status, reply = lora_run.server.client.post("/v1/chat/completions", body)
        assert status == 200, reply
    status, text = lora_run.server.client.get("/metrics")
    assert status == 200, text
    families = epp.parse(text)
    quoted = {key: epp.sample_lines(text, spec) for key, spec in specs.items()}
    summary = "\n".join(f"{key} = {specs[key]}:\n  " + "\n  ".join(lines) for key, lines in quoted.items())
    print(f"\nvLLM /metrics, as the picker reads it:\n{summary}")
    for key in ("queuedRequestsSpec", "runningRequestsSpec", "kvUsageSpec"):
        labels, value = epp.read_gauge(families, specs[key])
        assert value >= 0 and labels.get("model_name") == "gemma-3-1b-it", (key, labels, summary)
    block_size, blocks, _ = epp.read_cache_info(families, specs["cacheInfoSpec"])
    assert block_size > 0 and blocks > 0, summary
    latest, every = epp.read_lora(families, specs["loraSpec"])
    ran = container["args"]
    assert {info.max_lora for info in every} == {int(ran[ran.index("--max-loras") + 1])}, summary
    seen = set().union(*(info.running | info.waiting for info in every))
    assert seen == {a["name"] for a in ADAPTERS}, summary
    print(f"the picker's pick (largest value), idle: running {sorted(latest.running)}, waiting "
          f"{sorted(latest.waiting)}, max_lora {latest.max_lora}")  # fmt: skip
    # While a request to an adapter streams, the picker's pick names it: the pod has it loaded.
    with servers.streaming(lora_run.server.port, {"model": "sql-writer", "messages": [{"role": "user", "content": "Hi"}],
                                           "max_tokens": 512, "ignore_eos": True, "stream": True}):  # fmt: skip
        status, text = lora_run.server.client.get("/metrics")
    assert status == 200, text
    busy_families = epp.parse(text)
    busy, _ = epp.read_lora(busy_families, specs["loraSpec"])
    _, running = epp.read_gauge(busy_families, specs["runningRequestsSpec"])
    assert running == 1, "\n".join(epp.sample_lines(text, specs["runningRequestsSpec"]))
    print(f"the picker's pick while sql-writer streams: running {sorted(busy.running)}, waiting "
          f"{sorted(busy.waiting)}: {busy.labels}")  # fmt: skip
    assert "sql-writer" in busy.running | busy.waiting, "\n".join(epp.sample_lines(text, specs["loraSpec"]))

