"""bench/reconcile.py still runs end to end (N=20). Nothing here looks at a timing."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_reconcile_benchmark_runs_both_operators(tmp_path: pathlib.Path) -> None:
    figures = tmp_path / "figures.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "reconcile.py"), "--n", "20", "--threads", "4", "--probe", "2",
         "--idle", "1", "--restart-wait", "1", "--quiet", "1", "--timeout", "120",
         "--workdir", str(tmp_path / "work"), "--json", str(figures)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("baseline ") for line in lines), result.stdout
    assert any(line.startswith("gemma ") for line in lines), result.stdout
    assert any(line.startswith("ratio ") for line in lines), result.stdout
    # The goals line: each figure over the floor, and the verdict.
    goals = [line for line in lines if line.startswith("  gemma: 1by1 p50 ")]
    assert len(goals) == 1 and "req/CR" in goals[0] and ("goals met" in goals[0] or "goals missed" in goals[0]), goals
    rows = {row["name"]: row for row in json.loads(figures.read_text())}
    assert set(rows) == {"baseline", "gemma"}
    for row in rows.values():
        assert row["deployments"] == 20  # every resource got its Deployment: the run measured something
        if row["server"] == "emulator":  # envtest (KUBEBUILDER_ASSETS set) counts no requests
            assert row["load_requests"]  # the server counted the operator's requests
            # ... and the CPU it spent on them, under the same verb and resource
            assert set(row["load_request_cpu_s"]["operator"]) <= set(row["load_requests"])
