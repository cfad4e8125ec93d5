"""Measured CPU figure on this machine: llama-server decode and prompt speed for Gemma 3 1B's shapes.

`make bench-cpu-measure` (or .venv/bin/python bench/cpu_measure.py). A benchmark, not a test:

1. this machine's vCPUs, CPU model (/proc/cpuinfo) and memory bandwidth (a numpy copy of a 1 GiB
   array, best of N, counting the bytes read and written, as STREAM's "copy" does; `sysbench memory`
   too when installed, for the record);
2. a random-weight GGUF with Gemma 3 1B's real architecture at q4_0 (bench/cpu_gguf.py);
3. llama-server b11434 (scripts/llama_server.sh) started with the args gemma-operator renders for
   Gemma 3 1B on a CPU node of this machine's shape (its vCPUs and memory), with only the model
   source (`-m` the file) and the address (loopback) swapped;
4. /completion with a prompt of random token ids and a fixed number of output tokens
   (`ignore_eos`, `n_predict`, no prompt cache, greedy), streamed: the server's own timings give
   prompt tokens/s and decode tokens/s. The server's CPU time is read from /proc at the start, at
   the first streamed token and at the end, so a run on a busy machine shows, per phase, what share
   of a CPU it got and its speed per CPU-second used.

The result goes to bench/measured_cpu.yaml, which bench/predict.py reads ("measured here" rows).
Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import pathlib
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "operator"))

import cpu_gguf  # noqa: E402

from gemma_operator import catalog as catalog_module  # noqa: E402
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec  # noqa: E402
from gemma_operator.inventory import pools  # noqa: E402
from gemma_operator.planner import NoFit, plan  # noqa: E402
from gemma_operator.render import render  # noqa: E402
from tests.dataplane import servers  # noqa: E402

OUT = ROOT / "bench" / "measured_cpu.yaml"
SPEC = {"model": {"family": "gemma3", "size": "1b"}}


def cpu_model() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "fma", "f16c")))
    return []


def memory_kib() -> int:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    raise RuntimeError("no MemTotal in /proc/meminfo")


def loadavg() -> list[float]:
    return [float(x) for x in pathlib.Path("/proc/loadavg").read_text().split()[:3]]


def copy_bandwidth_gbps(gib: float = 1.0, repeats: int = 10) -> float:
    """Best of `repeats` numpy copies of a `gib` GiB array: (read + written bytes) / seconds, GB/s."""
    a = np.ones(int(gib * 2**30) // 8)
    b = np.empty_like(a)
    np.copyto(b, a)  # touch the pages first
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def sysbench_read_gbps(threads: int) -> float | None:
    """`sysbench memory` reading a 1 GiB block per thread (a smaller block stays in cache), GB/s."""
    if shutil.which("sysbench") is None:
        return None
    out = subprocess.run(["sysbench", "memory", "--memory-block-size=1G", "--memory-total-size=20G",
                          "--memory-oper=read", f"--threads={threads}", "run"],
                         capture_output=True, text=True, timeout=300, check=True).stdout  # fmt: skip
    for line in out.splitlines():
        if "MiB/sec" in line:  # "20480.00 MiB transferred (5206.88 MiB/sec)"
            return float(line.split("(")[1].split()[0]) * 2**20 / 1e9
    return None


def this_node(vcpus: int) -> dict:
    """A CPU node of this machine's shape, as `kubectl get nodes` would show it (no instance-type label:
    the operator plans it at its default CPU family)."""
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "this-machine", "labels": {"kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                                                         "kubernetes.io/hostname": "this-machine"}},
        "status": {"capacity": {"cpu": str(vcpus), "memory": f"{memory_kib()}Ki", "pods": "110"},
                   "allocatable": {"cpu": str(vcpus), "memory": f"{memory_kib()}Ki", "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }  # fmt: skip


def rendered_container(vcpus: int) -> dict:
    cat = catalog_module.load()
    parsed = GemmaDeploymentSpec.model_validate(SPEC)
    result = plan(parsed, pools([this_node(vcpus)], cat), cat)
    if isinstance(result, NoFit):
        raise SystemExit(f"no fit on this machine's shape: {result.message}")
    (deployment,) = [o for o in render(result, "measure", "default", parsed) if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def stream_completion(port: int, body: dict, pid: int) -> dict:
    """Stream /completion; the server's CPU seconds and the wall time at the start, at the first token and
    at the end split the request into its prompt and decode phases. Returns the final event's timings
    with those figures added."""
    conn = http.client.HTTPConnection(servers.LOOPBACK, port, timeout=3600)
    cpu0, wall0 = cpu_seconds(pid), time.monotonic()
    first = None
    final = None
    try:
        conn.request("POST", "/completion", body=json.dumps({**body, "stream": True}),
                     headers={"Content-Type": "application/json"})  # fmt: skip
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            event = json.loads(line[len("data: "):])
            if first is None:
                first = (cpu_seconds(pid), time.monotonic())
            if event.get("stop"):
                final = event
                break
    finally:
        conn.close()
    cpu1, wall1 = cpu_seconds(pid), time.monotonic()
    assert final is not None and first is not None, "the stream ended without a final event"
    return {**final["timings"], "cpu": (cpu0, first[0], cpu1), "wall": (wall0, first[1], wall1)}


def with_threads(args: list[str], threads: int | None) -> list[str]:
    if threads is None:
        return args
    out = list(args)
    out[out.index("--threads") + 1] = str(threads)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--output-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="override the rendered --threads (default: what the operator renders for this machine)")
    p.add_argument("--out", type=pathlib.Path, default=OUT)
    a = p.parse_args(argv)

    vcpus = len(os.sched_getaffinity(0))
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = loadavg()
    copy = copy_bandwidth_gbps()
    sysbench = {t: sysbench_read_gbps(t) for t in sorted({1, vcpus})}
    print(f"{cpu_model()}, {vcpus} vCPUs; numpy copy {copy:.1f} GB/s; sysbench read {sysbench}; load {load_before}")

    container = rendered_container(vcpus)
    rendered = container["args"]
    binary = servers.llama_server_binary()
    cat = catalog_module.load()
    size = cat.families["gemma3"].sizes["1b"]
    shapes = cpu_gguf.Shapes.of(size, cpu_gguf.GEMMA3_1B_INTERMEDIATE)
    rng = random.Random(0)
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        scratch = pathlib.Path(tmp)
        model = cpu_gguf.write(scratch / "gemma-3-1b-random-q4_0.gguf", shapes)
        port = servers.free_port()
        args = with_threads(servers.local_llama_args(rendered, model, port), a.threads)
        print(f"rendered: {' '.join(rendered)}\nrun:      {binary} {' '.join(args)}")
        env = servers.local_env(container, scratch)
        with servers.running(binary, args, port, scratch / "server.log", env) as srv:
            for i in range(a.runs):
                prompt = [cpu_gguf.tinygemma.BOS] + [rng.randrange(400, shapes.vocab) for _ in range(a.prompt_tokens - 1)]
                body = {"prompt": prompt, "n_predict": a.output_tokens, "ignore_eos": True, "cache_prompt": False,
                        "temperature": 0}  # fmt: skip
                t = stream_completion(port, body, srv.proc.pid)
                assert t["predicted_n"] == a.output_tokens and t["prompt_n"] == a.prompt_tokens, t
                (c0, c1, c2), (w0, w1, w2) = t["cpu"], t["wall"]
                run = {
                    "prompt_tokens_per_second": round(t["prompt_per_second"], 2),
                    "decode_tokens_per_second": round(t["predicted_per_second"], 3),
                    "wall_seconds": round(w2 - w0, 2),
                    "server_cpu_seconds": round(c2 - c0, 2),
                    # Per phase (split at the first streamed token): the share of a CPU the server got, and
                    # the speed per CPU-second it used (what one uncontended thread would approach).
                    "prompt_cpu_share": round((c1 - c0) / (w1 - w0), 2),
                    "decode_cpu_share": round((c2 - c1) / (w2 - w1), 2),
                    "prompt_tokens_per_cpu_second": round(a.prompt_tokens / (c1 - c0), 2),
                    "decode_tokens_per_cpu_second": round((a.output_tokens - 1) / (c2 - c1), 3),
                    "loadavg_after": loadavg(),
                }
                print(f"run {i + 1}: {run}")
                runs.append(run)
        version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stderr.strip().splitlines()
    threads = int(args[args.index("--threads") + 1])
    best = max(runs, key=lambda r: r["decode_tokens_per_second"])
    result = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "vcpus": vcpus,
                    "memory_gib": round(memory_kib() / 2**20, 1), "loadavg_before": load_before},
        "memory_bandwidth": {
            "copy_gbps": round(copy, 1),
            "copy_method": "numpy.copyto of a 1 GiB float64 array, best of 10, (read + written bytes) / s",
            "sysbench_read_gbps": {t: (round(v, 1) if v else None) for t, v in sysbench.items()},
        },
        "server": {"binary": str(binary), "version": version[-2:] if version else [], "rendered_args": rendered,
                   "args": args, "threads": threads, "threads_rendered": a.threads is None},
        "model": {"architecture": "gemma3/1b (catalog)", "intermediate_size": shapes.intermediate,
                  "quantization": "q4_0", "weights": shapes.weights(), "quantized_bytes": shapes.q4_0_bytes(),
                  "values": "random"},
        "workload": {"prompt_tokens": a.prompt_tokens, "output_tokens": a.output_tokens, "concurrency": 1,
                     "sampling": "greedy (temperature 0), ignore_eos, cache_prompt false"},
        "runs": runs,
        "best": {"decode_tokens_per_second": best["decode_tokens_per_second"],
                 "prompt_tokens_per_second": max(r["prompt_tokens_per_second"] for r in runs),
                 "decode_tokens_per_cpu_second": max(r["decode_tokens_per_cpu_second"] for r in runs),
                 "prompt_tokens_per_cpu_second": max(r["prompt_tokens_per_cpu_second"] for r in runs)},
        "command": "make bench-cpu-measure" + (f" CPU_MEASURE_ARGS=\"{' '.join(argv or sys.argv[1:])}\"" if (argv or sys.argv[1:]) else ""),
    }  # fmt: skip
    existing = yaml.safe_load(a.out.read_text()) if a.out.exists() else None
    measurements = [m for m in (existing or {}).get("measurements", []) if m["server"]["threads"] != threads]
    measurements.append(result)
    header = ("# Written by bench/cpu_measure.py (make bench-cpu-measure); read by bench/predict.py. One entry per\n"
              "# llama-server --threads; a new run replaces the entry of its thread count.\n")  # fmt: skip
    a.out.write_text(header + yaml.safe_dump({"measurements": measurements}, sort_keys=False, width=120))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
