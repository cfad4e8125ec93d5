"""spec.objective and sizePolicy cheapest (issue 21, items 3 and 4): the planner keeps only plans
predicted to meet the objective, cheapest picks the lowest cost per million output tokens, a plan
that cannot meet it is a NoFit with the best prediction and the nearest change, and every selection
carries its prediction."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemma_operator import performance
from gemma_operator.api.status import Selection
from gemma_operator.planner import NoFit, Plan, replans
from tests.conftest import decide

FIXTURES = sorted(p.stem for p in (Path(__file__).parents[1] / "fixtures" / "nodes").glob("*.yaml"))
CHAT = {"promptTokens": 1024, "outputTokens": 256, "concurrency": 8}


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_fixture_plan_shows_a_prediction_for_the_default_workload(catalog, fixture):
    result = decide(catalog, {}, fixture)
    if isinstance(result, NoFit):
        pytest.skip(f"{fixture}: no plan by default ({result.needed})")
    predicted = result.selection()["predicted"]
    default = performance.DEFAULT_WORKLOAD
    assert predicted["workload"] == {"promptTokens": default.prompt_tokens, "outputTokens": default.output_tokens,
                                     "concurrency": default.concurrency}  # fmt: skip
    assert predicted["ttftSeconds"] > 0 and predicted["outputTokensPerSecondPerUser"] > 0
    assert predicted["maxConcurrency"] >= 1 and predicted["replicas"] == 1
    Selection.model_validate(result.selection())  # the status schema takes it


def test_without_an_objective_the_choice_is_unchanged(catalog):
    # The prediction is added; nothing else of the selection moves (the CLI and goldens pin the rest).
    result = decide(catalog, {}, "gke-l4", "gke-h100x8")
    assert (result.size, result.pool.name) == ("e2b", "nvidia-h100-80gb-x8")
    assert not any(r.startswith(("Objective", "Cost")) for r in result.reasons)


def test_a_prediction_alone_never_replans(catalog):
    result = decide(catalog, {}, "gke-l4")
    old = {k: v for k, v in result.selection().items() if k != "predicted"}  # a status written before issue 21
    assert not replans(old, result.selection())


def test_the_objective_keeps_only_plans_predicted_to_meet_it(catalog):
    # Smallest first: E2B bf16 on the L4 predicts 300 GB/s x 0.75 / 4.6 GB = ~48 tokens/s per user, short
    # of 100; the A100 80GB (2039 GB/s) predicts ~330, so the plan moves there.
    plain = decide(catalog, {}, "gke-l4", "gke-a100-80gb")
    assert plain.pool.name == "nvidia-l4-x1"
    fast = decide(catalog, {"objective": {**CHAT, "outputTokensPerSecond": 100}}, "gke-l4", "gke-a100-80gb")
    assert fast.pool.name == "nvidia-a100-80gb-x1"
    assert fast.predicted["outputTokensPerSecondPerUser"] >= 100
    (objective,) = [r for r in fast.reasons if r.startswith("Objective")]
    assert "output tokens/s per user >= 100" in objective and ": met (" in objective


def test_cheapest_picks_another_pool_than_smallest_and_says_why_in_numbers(catalog):
    # Both pools serve Gemma 4 E2B bf16. smallest takes the planner's ranking (H100: newer, faster);
    # cheapest compares cost per million output tokens for 8 users of 1024 + 256 tokens:
    #   one H100 of an a3-highgpu-8g: $88.2539 / 8 = $11.03/h for ~4,300 tokens/s -> ~$0.72
    #   one L4 on a g2-standard-8:    $0.8536/h for ~380 tokens/s               -> ~$0.62
    smallest = decide(catalog, {"objective": CHAT}, "gke-l4", "gke-h100x8")
    cheapest = decide(catalog, {"objective": CHAT, "model": {"sizePolicy": "cheapest"}}, "gke-l4", "gke-h100x8")
    assert smallest.pool.name == "nvidia-h100-80gb-x8"
    assert cheapest.pool.name == "nvidia-l4-x1"
    assert cheapest.predicted["costPerMillionTokens"] < smallest.predicted["costPerMillionTokens"]
    (cost,) = [r for r in cheapest.reasons if r.startswith("Cost")]
    assert f"${cheapest.predicted['costPerMillionTokens']:.2f}" in cost
    assert f"e2b bf16 on nvidia-h100-80gb-x8 ${smallest.predicted['costPerMillionTokens']:.2f}" in cost
    assert any("sizePolicy cheapest" in r for r in cheapest.reasons if r.startswith("Size"))


def test_cheapest_counts_the_replicas_the_concurrency_needs(catalog):
    # Every replica is a whole node's price: when one replica holds fewer sequences than asked, the
    # cost counts ceil(concurrency / maxConcurrency) of them. Gemma 4 E2B q4_0 on a CPU node runs 4
    # llama.cpp slots: 8 users need 2 replicas.
    result = decide(catalog, {"objective": CHAT, "model": {"sizePolicy": "cheapest"}}, "gke-cpu-only")
    predicted = result.predicted
    assert (predicted["maxConcurrency"], predicted["replicas"]) == (performance.LLAMACPP_SLOTS, 2)
    price, per_second = predicted["pricePerHour"], predicted["outputTokensPerSecond"]
    assert predicted["costPerMillionTokens"] == pytest.approx(price * 2 / (per_second * 3600) * 1e6, rel=1e-3)
    assert any(r.startswith("Replicas: the objective's 8 concurrent requests need 2 replicas") for r in result.reasons)


def test_an_objective_no_plan_meets_is_a_no_fit_with_the_best_prediction_and_the_nearest_change(catalog):
    result = decide(catalog, {"objective": {**CHAT, "outputTokensPerSecond": 500}}, "gke-cpu-only")
    assert isinstance(result, NoFit)
    assert result.needed.startswith("No plan is predicted to meet the objective")
    assert "Best: e2b q4_0 on cpu-" in result.needed
    assert any("output tokens/s per user < 500" in d for d in result.details)
    (change,) = [s for s in result.suggestions if s.field == "spec.objective.outputTokensPerSecond"]
    assert 0 < float(change.value) < 500


def test_a_ttft_target_out_of_reach_suggests_the_predicted_one(catalog):
    result = decide(catalog, {"objective": {**CHAT, "ttftSeconds": 0.001}}, "gke-l4")
    assert isinstance(result, NoFit)
    (change,) = [s for s in result.suggestions if s.field == "spec.objective.ttftSeconds"]
    assert float(change.value) > 0.001
    # ...and that target is met.
    met = decide(catalog, {"objective": {**CHAT, "ttftSeconds": float(change.value)}}, "gke-l4")
    assert isinstance(met, Plan)


def test_a_sequence_longer_than_the_planned_context_misses(catalog):
    result = decide(catalog, {"maxModelLen": 1024, "objective": CHAT}, "gke-l4")
    assert isinstance(result, NoFit)
    assert any("context of 1024 tokens is shorter than 1280" in d for d in result.details)


# -- the CLI: plan -o table and plan --compare ------------------------------------------------------


def _cli(tmp_path, spec: dict, nodes: str, *extra: str) -> tuple[int, str, str]:
    import io

    import yaml

    from gemma_operator.__main__ import main
    from tests.conftest import NODES

    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                  "metadata": {"name": "chat"}, "spec": spec}))  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    code = main(["plan", "-f", str(cr), "--nodes", str(NODES / f"{nodes}.yaml"), *extra], out, err)
    return code, out.getvalue(), err.getvalue()


def test_plan_table_lists_every_candidate_pool_with_its_prediction_and_why_it_lost(tmp_path):
    code, out, err = _cli(tmp_path, {}, "gke-l4")  # an L4 node and a CPU node
    assert code == 0, err
    assert "predicted           1024 + 256 tokens x 1: TTFT" in out
    candidates = out.split("Candidates (each pool planned alone")[1].splitlines()[1:]
    assert candidates[0].split()[:3] == ["pool", "size", "quant"]
    rows = {line.split()[0]: line for line in candidates[1:] if line.strip()}
    assert set(rows) == {"nvidia-l4-x1", "cpu-e2-standard-4"}
    assert rows["nvidia-l4-x1"].endswith("chosen")
    assert rows["cpu-e2-standard-4"].endswith("lost: a CPU pool; accelerators come first")


def test_plan_compare_names_pools_including_capacity_shapes(tmp_path):
    import json

    capacity = tmp_path / "capacity.yaml"
    capacity.write_text(
        "pools:\n"
        "  - {name: a100-spot, accelerator: nvidia-tesla-a100, acceleratorCount: 1, machineType: a2-highgpu-1g, maxNodes: 2, spot: true}\n"
        "  - {name: v5e, accelerator: tpu-v5e, acceleratorCount: 4, machineType: ct5lp-hightpu-4t, tpuTopology: 2x2, maxNodes: 1}\n"
    )
    spec = {"objective": CHAT}
    code, out, err = _cli(tmp_path, spec, "gke-l4", "--capacity", str(capacity), "--compare", "nvidia-l4,a100-spot,tpu-v5e", "-o", "json")
    assert code == 0, err
    (item,) = json.loads(out)["items"]
    rows = {row["pool"]: row for row in item["candidates"]}
    assert set(rows) == {"nvidia-l4-x1", "a100-spot", "v5e"}
    # The Spot A100 is priced at Spot: a2-highgpu-1g's $1.1020 an hour, not $3.6734.
    assert rows["a100-spot"]["pricePerHour"] == pytest.approx(1.102)
    assert rows["v5e"]["pricePerHour"] == pytest.approx(4.80)
    assert all(row["outputTokensPerSecondPerUser"] > 0 for row in rows.values())
    code, out, _ = _cli(tmp_path, spec, "gke-l4", "--capacity", str(capacity), "--compare", "a100-spot")
    assert code == 0 and out.splitlines()[1].startswith("a100-spot")


def test_plan_compare_of_no_such_pool_says_so(tmp_path):
    code, out, _ = _cli(tmp_path, {}, "gke-l4", "--compare", "tpu-v6e")
    assert code == 3 and "no pool of those names" in out


def test_a_new_prediction_or_objective_alone_rolls_nothing_out(catalog):
    from gemma_operator import rollout

    result = decide(catalog, {}, "gke-l4")
    selection = result.selection()
    before = {k: v for k, v in selection.items() if k != "predicted"}
    assert rollout.spec_hash({}, selection) == rollout.spec_hash({}, before)
    # An objective the same plan meets does not re-render the pods either.
    assert rollout.spec_hash({"objective": CHAT}, selection) == rollout.spec_hash({}, selection)
