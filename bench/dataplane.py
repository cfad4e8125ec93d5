"""Data-plane benchmark: the rendered llama.cpp server on a tiny random Gemma 3 GGUF.

Cold start (process start -> /health 200) and chat latency (p50/p95 over N sequential
/v1/chat/completions requests) for the llama-server container args gemma-operator renders
for a node fixture, run with only the model source and address swapped (as in
tests/dataplane). The model is tiny (2 layers, 512 tokens), so these figures are a floor for
the server's own overhead (HTTP, templating, tokenizing, scheduling), not a model benchmark.
Loopback only; the request loop is bounded; the server is always stopped. Prints figures and
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "operator"))

from tests.dataplane import servers, tinygemma  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="gke-cpu-only", help="node fixture (tests/fixtures/nodes/NAME.yaml)")
    p.add_argument("--family", default="gemma3")
    p.add_argument("--size", default="1b")
    p.add_argument("--requests", type=int, default=100, help="chat requests (sequential)")
    p.add_argument("--cold-starts", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=16)
    a = p.parse_args(argv)

    binary = servers.llama_server_binary()
    spec = {"model": {"family": a.family, "size": a.size}}
    container = servers.rendered_container(a.nodes, spec)
    alias = container["args"][container["args"].index("--alias") + 1]

    with tempfile.TemporaryDirectory(prefix="bench-dataplane-") as tmp:
        scratch = pathlib.Path(tmp)
        model = tinygemma.write(scratch / "tiny-gemma-3.gguf")
        env = servers.local_env(container, scratch)
        print(f"llama-server: {binary}")
        print(f"rendered for {a.nodes} {spec}: {' '.join(container['args'])}")
        threads = container["args"][container["args"].index("--threads") + 1] if "--threads" in container["args"] else None
        if threads and int(threads) > (os.cpu_count() or 1):
            print(f"note: the rendered --threads {threads} (sized for the fixture's nodes) exceeds this machine's "
                  f"{os.cpu_count()} cores: llama.cpp's spinning worker threads then dominate the latency")  # fmt: skip

        starts = []
        for i in range(a.cold_starts):
            port = servers.free_port()
            srv = servers.LlamaServer(binary, servers.local_llama_args(container["args"], model, port), port,
                                      scratch / f"cold-{i}.log", env)  # fmt: skip
            try:
                starts.append(srv.start(timeout_s=120))
            finally:
                srv.stop()

        port = servers.free_port()
        args = servers.local_llama_args(container["args"], model, port)
        latencies, streams, tokens = [], [], 0
        with servers.running(binary, args, port, scratch / "chat.log", env) as srv:
            body = {
                "model": alias,
                "messages": [{"role": "user", "content": "Say hello to the Gemma operator"}],
                "max_tokens": a.max_tokens,
                "temperature": 0,
            }
            srv.client.post("/v1/chat/completions", body)  # warm-up, not counted
            for i in range(a.requests):
                body["messages"][0]["content"] = f"Say hello to the Gemma operator, request {i}"
                t0 = time.perf_counter()
                status, reply = srv.client.post("/v1/chat/completions", body)
                latencies.append(time.perf_counter() - t0)
                assert status == 200, reply
                tokens += reply["usage"]["completion_tokens"]
            for i in range(min(a.requests, 20)):
                body["messages"][0]["content"] = f"Stream a hello, request {i}"
                t0 = time.perf_counter()
                events = srv.client.stream("/v1/chat/completions", {**body, "stream": True}, max_events=a.max_tokens + 8)
                streams.append(time.perf_counter() - t0)
                assert events and events[-1] == "[DONE]", events

    print(f"\ncold start to healthy ({a.cold_starts} starts): "
          f"p50 {ms(statistics.median(starts))}  min {ms(min(starts))}  max {ms(max(starts))}")  # fmt: skip
    print(f"chat completion, {a.requests} sequential requests, max_tokens {a.max_tokens}:")
    print(f"  p50 {ms(percentile(latencies, 0.50))}")
    print(f"  p95 {ms(percentile(latencies, 0.95))}")
    print(f"  mean {ms(statistics.fmean(latencies))}  max {ms(max(latencies))}  "
          f"({tokens / a.requests:.1f} completion tokens per request)")  # fmt: skip
    print(f"streamed chat, {len(streams)} requests, until [DONE]: p50 {ms(percentile(streams, 0.5))}  "
          f"p95 {ms(percentile(streams, 0.95))}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
