"""Cold and warm starts of the rendered model servers: bytes fetched from the Hub, seconds to healthy.

For each runtime, the container gemma-operator renders is started twice on the same cache:
- llama.cpp: gke-cpu-only, Gemma 3 1B (llama-server, --hf-repo/--hf-file kept, MODEL_ENDPOINT at
  the loopback Hub, LLAMA_CACHE mapped to a scratch directory), the tiny GGUF as the Hub's file;
- vLLM: gke-l4, Gemma 3 1B (`vllm serve`, HF_ENDPOINT at the loopback Hub, HF_HOME mapped, plus
  VLLM_CPU_KVCACHE_SPACE on this CPU build), the tiny HF checkpoint as the Hub's repo;
first on an empty cache (cold), then on the cache the first run left (warm, online, as a restarted
pod with the same volume), and for vLLM once more with HF_HUB_OFFLINE=1 (a filled cache mounted
read-only and started offline). The loopback Hub (tests/dataplane/hub.py) counts every byte it
sends: files (resolve bodies, including ranged reads) and API JSON apart.

Then the same arithmetic (seconds = bytes / throughput) for Gemma 4 31B in bf16, with the bytes
from the catalog (params x 2) and the published throughputs in bench/storage_throughput.yaml.

The models are tiny, so the measured seconds are the servers' own start-up floor on this machine,
not a download time. Asserted (bytes, never time): no warm start downloads a file again, and the
warm starts that must fetch nothing (llama.cpp's; vLLM's offline one) fetch 0 bytes. vLLM online
on a warm cache still reads each safetensors header over HTTP (a ranged GET): shown, not hidden.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from gemma_operator import catalog as catalog_mod  # noqa: E402
from gemma_operator.runtimes import STARTUP_S_PER_WEIGHT_GIB  # noqa: E402
from gemma_operator.sizing import BYTES_PER_WEIGHT  # noqa: E402
from tests.dataplane import hub, servers, tinygemma, tinygemma_hf  # noqa: E402

FIGURES = ROOT / "bench" / "storage_throughput.yaml"
MIB = 2**20
GIB = 2**30
LLAMA = ("gke-cpu-only", {"model": {"family": "gemma3", "size": "1b"}})
VLLM = ("gke-l4", {"model": {"family": "gemma3", "size": "1b"}})
PREDICT = ("gemma4", "31b", "bf16")


@dataclass
class Row:
    runtime: str
    run: str
    files: int
    file_bytes: int
    ranged_bytes: int
    api_requests: int
    seconds: float
    must_fetch_nothing: bool


@dataclass
class Figure:
    name: str
    mib_per_s: float
    source: str
    note: str = ""
    unverified: str = ""


def load_figures(path: pathlib.Path = FIGURES) -> list[Figure]:
    """The published throughputs, each with an https source and a positive rate."""
    figures = [Figure(**f) for f in yaml.safe_load(path.read_text())["figures"]]
    for f in figures:
        if not f.source.startswith("https://") or f.mib_per_s <= 0:
            raise ValueError(f"{path}: {f.name!r} needs an https source and a positive mib_per_s")
    return figures


def seconds_to_read(n_bytes: float, mib_per_s: float) -> float:
    return n_bytes / (mib_per_s * MIB)


def checkpoint_bytes(family: str, size: str, quantization: str) -> float:
    """Bytes of the safetensors checkpoint: the catalog's parameter count x bytes per weight."""
    model = catalog_mod.load().families[family].sizes[size]
    return model.params_b * 1e9 * BYTES_PER_WEIGHT[quantization]


def _start(server: servers.LlamaServer, loopback: hub.LoopbackHub, runtime: str, run: str, timeout: float,
           must_fetch_nothing: bool) -> Row:  # fmt: skip
    loopback.reset_counts()
    try:
        seconds = server.start(timeout_s=timeout)
    finally:
        server.stop()
    fetched = {path: n for (_, path), n in loopback.file_bytes.items() if n}
    api = sum(1 for _, path, _ in loopback.requests if path.startswith("/api/"))
    return Row(runtime, run, len(fetched), sum(fetched.values()), loopback.ranged(), api, seconds, must_fetch_nothing)


def llamacpp_rows(scratch: pathlib.Path, timeout: float) -> list[Row]:
    binary = servers.llama_server_binary()
    fixture, spec = LLAMA
    _, plan = servers.planned(fixture, spec)
    container = servers.rendered_container(fixture, spec)
    gguf = tinygemma.write(scratch / "tiny-gemma-3.gguf")
    repo = hub.HubRepo(plan.model_id, {plan.model_file: hub.HubFile(plan.model_file, gguf.read_bytes())})
    pod = scratch / "llamacpp-pod"
    pod.mkdir()
    rows = []
    with hub.LoopbackHub([repo]) as loopback:
        for run in ("cold", "warm"):
            port = servers.free_port()
            env = servers.clean_env({**servers.local_env(container, pod), **servers.hub_env(loopback.endpoint)})
            srv = servers.LlamaServer(binary, servers.loopback_args(container["args"], port), port,
                                      scratch / f"llamacpp-{run}.log", env, inherit_env=False)  # fmt: skip
            rows.append(_start(srv, loopback, "llama.cpp", run, timeout, must_fetch_nothing=run == "warm"))
    return rows


def vllm_rows(scratch: pathlib.Path, timeout: float, offline: bool) -> list[Row]:
    python = servers.vllm_python()
    fixture, spec = VLLM
    _, plan = servers.planned(fixture, spec)
    container = servers.rendered_container(fixture, spec)
    repo = hub.HubRepo.from_dir(plan.model_id, tinygemma_hf.write(scratch / "tiny-gemma-3-hf", python))
    pod = scratch / "vllm-pod"
    pod.mkdir()
    # Online on a warm cache, vLLM still reads the first 100,001 bytes of each safetensors file over
    # HTTP (huggingface_hub's get_safetensors_metadata, for the dtype and architecture), so a warm
    # start that must fetch nothing is the offline one: the cache mounted and HF_HUB_OFFLINE=1.
    runs: list[tuple[str, dict[str, str], bool]] = [("cold", {}, False), ("warm", {}, False)]
    if offline:
        runs.append(("warm, HF_HUB_OFFLINE=1", {"HF_HUB_OFFLINE": "1"}, True))
    rows = []
    with hub.LoopbackHub([repo]) as loopback:
        for run, extra, must_fetch_nothing in runs:
            # The data-plane tests' own runner: one place turns the rendered container into a local vLLM.
            srv = servers.vllm_server(python, container, servers.free_port(), scratch / f"vllm-{run[:4]}.log",
                                      servers.local_env(container, pod), loopback.endpoint, extra)  # fmt: skip
            rows.append(_start(srv, loopback, "vLLM", run, timeout, must_fetch_nothing))
    return rows


def predictions(figures: list[Figure], n_bytes: float) -> list[tuple[str, float, float, str]]:
    """(name, MiB/s, seconds, source) for each figure, and the operator's own start-up budget rate."""
    budget_mib_per_s = GIB / STARTUP_S_PER_WEIGHT_GIB / MIB
    rows = [(f.name, f.mib_per_s, seconds_to_read(n_bytes, f.mib_per_s), f.source) for f in figures]
    rows.append(("gemma-operator's start-up budget (runtimes.STARTUP_S_PER_WEIGHT_GIB = 20 s/GiB)",
                 budget_mib_per_s, seconds_to_read(n_bytes, budget_mib_per_s),
                 "operator/gemma_operator/runtimes/__init__.py"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runtimes", default="llamacpp,vllm", help="comma-separated: llamacpp, vllm")
    p.add_argument("--no-offline", action="store_true", help="skip the third, offline vLLM start")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to healthy before giving up")
    a = p.parse_args(argv)
    chosen = set(a.runtimes.split(","))

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
        scratch = pathlib.Path(tmp)
        if "llamacpp" in chosen:
            rows += llamacpp_rows(scratch, a.timeout)
        if "vllm" in chosen:
            rows += vllm_rows(scratch, a.timeout, offline=not a.no_offline)

    print("\nMeasured (tiny checkpoints, loopback Hub, this machine):\n")
    print("| runtime | run | files fetched | bytes fetched from the Hub | of which byte ranges | Hub API requests "
          "| seconds to healthy |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.runtime} | {r.run} | {r.files} | {r.file_bytes:,} | {r.ranged_bytes:,} | {r.api_requests} "
              f"| {r.seconds:.1f} |")  # fmt: skip

    family, size, quant = PREDICT
    n_bytes = checkpoint_bytes(family, size, quant)
    print(f"\nPredicted read time for {family} {size} {quant}: {n_bytes / 1e9:.1f} GB "
          f"(catalog params_b x {BYTES_PER_WEIGHT[quant]:g} bytes), seconds = bytes / throughput:\n")  # fmt: skip
    print("| storage | MiB/s | seconds | source |")
    print("|---|---|---|---|")
    for name, rate, seconds, source in predictions(load_figures(), n_bytes):
        print(f"| {name} | {rate:,.1f} | {seconds:,.1f} | {source} |" if seconds >= 1 else
              f"| {name} | {rate:,.1f} | {seconds:.2f} | {source} |")  # fmt: skip
    for f in load_figures():
        print(f"- {f.name}: {f.note}" + (f" (unverified: {f.unverified})" if f.unverified else ""))

    # Bytes, never time: a warm start re-downloads no file; the ones that must fetch nothing fetch 0 bytes.
    failures = [r for r in rows if r.run != "cold" and (r.file_bytes - r.ranged_bytes or
                                                         (r.must_fetch_nothing and r.file_bytes))]  # fmt: skip
    if failures:
        print(f"\nFAIL: a warm start fetched from the Hub: {failures}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
