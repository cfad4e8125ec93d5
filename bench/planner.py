"""Planner benchmark: one GemmaDeployment against 1,000 nodes (goal: under 50 ms per plan).

Times the whole pure path a reconcile runs (nodes -> pools -> plan -> render) and each step,
over repeated runs, and prints figures. Not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import statistics
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from gemma_operator import catalog as catalog_mod  # noqa: E402
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec  # noqa: E402
from gemma_operator.inventory import pools  # noqa: E402
from gemma_operator.planner import plan  # noqa: E402
from gemma_operator.render import render  # noqa: E402


def cluster(count: int) -> list[dict]:
    """`count` nodes cycling through every fixture's nodes, each renamed."""
    templates = []
    for path in sorted((ROOT / "tests" / "fixtures" / "nodes").glob("*.yaml")):
        templates += yaml.safe_load(path.read_text())["items"]
    nodes = []
    for i in range(count):
        node = copy.deepcopy(templates[i % len(templates)])
        node["metadata"]["name"] = f"node-{i:05d}"
        nodes.append(node)
    return nodes


def timed(fn, runs: int) -> tuple[list[float], object]:
    samples, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    start = time.perf_counter()
    cat = catalog_mod.load()
    load_ms = (time.perf_counter() - start) * 1000
    nodes = cluster(args.nodes)
    specs = {
        "default": GemmaDeploymentSpec(),
        "largest": GemmaDeploymentSpec.model_validate({"model": {"sizePolicy": "largest"}}),
        "gemma3-27b": GemmaDeploymentSpec.model_validate({"model": {"family": "gemma3", "size": "27b"}}),
    }
    inventory = pools(nodes, cat)
    print(f"catalog load (once per process): {load_ms:.1f} ms")
    print(f"{args.nodes} nodes -> {len(inventory.pools)} pools; {args.runs} runs each\n")
    print(f"{'step':<34}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    inv_samples, _ = timed(lambda: pools(nodes, cat), args.runs)
    rows = [("inventory.pools (1000 nodes)", inv_samples)]
    for name, spec in specs.items():
        plan_samples, result = timed(lambda spec=spec: plan(spec, inventory, cat), args.runs)
        rows.append((f"planner.plan [{name}]", plan_samples))
        render_samples, _ = timed(lambda spec=spec, result=result: render(result, "chat", "default", spec), args.runs)
        rows.append((f"render [{name}]", render_samples))
        total, _ = timed(lambda spec=spec: render(plan(spec, pools(nodes, cat), cat), "chat", "default", spec), args.runs)
        rows.append((f"whole path [{name}]", total))
    for name, samples in rows:
        q = statistics.quantiles(samples, n=20)
        print(f"{name:<34}{statistics.median(samples):>10.2f}{q[18]:>10.2f}{max(samples):>10.2f}")


if __name__ == "__main__":
    main()
