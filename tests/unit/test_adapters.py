"""spec.adapters (issue 19): the LoRA adapters' validation, ranks, memory, refusals, flags and rollout. Pure."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gemma_operator import adapters, rollout
from gemma_operator import cache as cache_mod
from gemma_operator.api.v1alpha1 import Adapter, GemmaDeploymentSpec
from gemma_operator.planner import InvalidSpec, NoFit, Plan
from gemma_operator.render import render
from gemma_operator.runtimes import CACHE_DIR
from tests.conftest import decide

BASE = {"model": {"family": "gemma3", "size": "1b"}}
SUPPORT = {"name": "support-bot", "repo": "acme/support-lora", "rank": 32, "gguf": "support.gguf"}
SQL = {"name": "sql-writer", "repo": "acme/sql-lora", "gguf": "sql.gguf"}


def planned(catalog, fixture: str, spec: dict) -> Plan | NoFit:
    return decide(catalog, spec, fixture)


def deployment(catalog, fixture: str, spec: dict) -> dict:
    parsed = GemmaDeploymentSpec.model_validate(spec)
    return next(o for o in render(planned(catalog, fixture, spec), "chat", "team-a", parsed) if o["kind"] == "Deployment")


@pytest.mark.parametrize("adapter, error", [
    ({"name": "a", "repo": "acme/lora"}, None),
    ({"name": "a", "bucket": "loras", "path": "team/a"}, None),
    ({"name": "a"}, "repo (with an optional revision), or from bucket and path"),
    ({"name": "a", "repo": "acme/lora", "bucket": "loras", "path": "a"}, "or from bucket and path"),
    ({"name": "a", "bucket": "loras", "path": "team/../../x"}, "may not climb out"),
    ({"name": "a b", "repo": "acme/lora"}, "name"),
    ({"name": "a", "repo": "acme/lora", "rank": 0}, "rank"),
    ({"name": "a", "repo": "acme/lora", "gguf": "a.safetensors"}, "gguf"),
])  # fmt: skip
def test_an_adapter_is_validated_naming_the_field(adapter, error):
    if error is None:
        GemmaDeploymentSpec.model_validate({"adapters": [adapter]})
        return
    with pytest.raises(ValidationError) as raised:
        GemmaDeploymentSpec.model_validate({"adapters": [adapter]})
    assert raised.value.errors()[0]["loc"][:2] == ("adapters", 0)
    assert error in str(raised.value)


def test_adapter_names_are_unique():
    with pytest.raises(ValidationError, match="adapter names must be unique; repeated: a"):
        GemmaDeploymentSpec.model_validate({"adapters": [{"name": "a", "repo": "x/y"}, {"name": "a", "repo": "x/z"}]})


@pytest.mark.parametrize("ranks, expected", [
    ([], 16), ([None], 16), ([8], 8), ([8, None], 16), ([17], 32), ([64, 32], 64), ([300], 320), ([512], 512), ([2], 8),
])  # fmt: skip
def test_planned_rank_is_the_largest_rounded_up_to_vllms_choices(ranks, expected):
    listed = [Adapter.model_validate({"name": f"a{i}", "repo": "x/y", **({"rank": r} if r else {})})
              for i, r in enumerate(ranks)]  # fmt: skip
    assert adapters.planned_rank(listed) == expected


def test_the_lora_width_derived_from_the_parameter_count_is_near_the_checkpoints(catalog):
    """Gemma 3 1B's config.json: intermediate_size 6912, hidden 1152, 26 layers, 4 heads x 256, 1 KV head."""
    size = catalog.families["gemma3"].sizes["1b"]
    exact = 26 * ((1152 + 1024) + 2 * (1152 + 256) + (1024 + 1152) + 3 * (1152 + 6912))
    assert adapters.params_per_rank(size) == pytest.approx(exact, rel=0.05)


def test_memory_vllm_counts_its_slots_and_llamacpp_each_adapter(catalog):
    size = catalog.families["gemma3"].sizes["1b"]
    listed = [Adapter.model_validate(SUPPORT), Adapter.model_validate(SQL)]
    per_rank_gib = adapters.params_per_rank(size) * 2 / 2**30
    assert adapters.memory_gib(size, "vllm", listed) == pytest.approx(2 * 32 * per_rank_gib)  # max-loras x max rank
    assert adapters.memory_gib(size, "llamacpp", listed) == pytest.approx((32 + 16) * per_rank_gib)
    assert adapters.memory_gib(size, "vllm", []) == 0


@pytest.mark.parametrize("fixture, runtime", [("gke-l4", "vllm"), ("gke-cpu-only", "llamacpp")])
def test_the_estimate_carries_the_adapters(catalog, fixture, runtime):
    bare = planned(catalog, fixture, BASE)
    with_adapters = planned(catalog, fixture, {**BASE, "adapters": [SUPPORT, SQL]})
    assert with_adapters.runtime == bare.runtime == runtime
    assert with_adapters.adapter_gib > 0
    assert with_adapters.estimated_memory_gib == pytest.approx(bare.estimated_memory_gib + with_adapters.adapter_gib)
    assert with_adapters.selection()["adapters"] == ["support-bot", "sql-writer"]
    assert "adapters" not in bare.selection()
    assert any(r.startswith("Adapters support-bot, sql-writer:") for r in with_adapters.reasons)


def test_vllm_args_serve_every_adapter_under_its_name(catalog):
    (server,) = deployment(catalog, "gke-l4", {**BASE, "adapters": [SUPPORT, SQL]})["spec"]["template"]["spec"]["containers"]
    args = server["args"]
    start = args.index("--enable-lora")
    assert args[start:] == ["--enable-lora", "--lora-modules", "support-bot=/models/adapters/support-bot",
                            "sql-writer=/models/adapters/sql-writer", "--max-loras", "2", "--max-lora-rank", "32"]  # fmt: skip


def test_the_download_lands_in_the_cache_volume_the_server_reads(catalog):
    assert adapters.ADAPTER_DIR.startswith(CACHE_DIR + "/")
    pod = deployment(catalog, "gke-l4", {**BASE, "adapters": [SUPPORT, SQL]})["spec"]["template"]["spec"]
    (loader,) = pod["initContainers"]
    assert loader["command"][:2] == ["python3", "-c"]
    assert loader["command"][3] == "google/gemma-3-1b-it"
    # A row each: index, name, source, the folder --lora-modules names, the plan's --max-lora-rank.
    assert loader["command"][4:] == [
        "0", "support-bot", "repo", "acme/support-lora", "", f"{adapters.ADAPTER_DIR}/support-bot", "32",
        "1", "sql-writer", "repo", "acme/sql-lora", "", f"{adapters.ADAPTER_DIR}/sql-writer", "32"]  # fmt: skip
    assert {"name": "models", "mountPath": CACHE_DIR} in loader["volumeMounts"]
    assert loader["image"] == pod["containers"][0]["image"]


def test_llamacpp_loads_the_ggufs_at_scale_zero(catalog):
    pod = deployment(catalog, "gke-cpu-only", {**BASE, "adapters": [SUPPORT, SQL]})["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--lora-scaled") + 1] == \
        "/models/adapters/support-bot/support.gguf:0,/models/adapters/sql-writer/sql.gguf:0"
    commands = [c["command"] for c in pod["initContainers"]]
    assert [c[:2] for c in commands] == [["sh", "-c"]] * 2
    assert [c[4:] for c in commands] == [
        ["acme/support-lora/resolve/main/support.gguf", "/models/adapters/support-bot/support.gguf", "support-bot"],
        ["acme/sql-lora/resolve/main/sql.gguf", "/models/adapters/sql-writer/sql.gguf", "sql-writer"]]  # fmt: skip
    token = deployment(catalog, "gke-cpu-only", {**BASE, "adapters": [SUPPORT], "hfTokenSecretRef": {"name": "hf"}})
    (curl,) = token["spec"]["template"]["spec"]["initContainers"]
    assert "HF_TOKEN" in [e["name"] for e in curl["env"]]
    # The token reaches curl on its stdin (-H @-, curl >= 7.55), never in an argv; no curl >= 8.3 option.
    script = curl["command"][2]
    assert "-H @-" in script and "--variable" not in script and "--expand" not in script
    assert not any("Bearer" in part for part in curl["command"][3:])


def test_an_adapter_without_a_gguf_refuses_llamacpp_with_a_reason(catalog):
    no_gguf = {k: v for k, v in SQL.items() if k != "gguf"}
    result = planned(catalog, "gke-cpu-only", {**BASE, "adapters": [SUPPORT, no_gguf]})
    assert isinstance(result, NoFit)
    assert "adapter sql-writer has none (set spec.adapters[1].gguf" in result.message
    # A GPU pool still serves it, on vLLM.
    assert planned(catalog, "gke-l4", {**BASE, "adapters": [no_gguf]}).runtime == "vllm"


def test_a_bucket_adapter_refuses_llamacpp(catalog):
    bucket = {"name": "b", "bucket": "loras", "path": "team/b", "gguf": "b.gguf"}
    result = planned(catalog, "gke-cpu-only", {**BASE, "adapters": [bucket]})
    assert isinstance(result, NoFit) and "spec.adapters[0].bucket" in result.message


@pytest.mark.parametrize("adapter, field, words", [
    ({**SQL, "baseModel": "google/gemma-3-4b-it"}, "spec.adapters[1].baseModel", "made for google/gemma-3-4b-it"),
    ({**SQL, "name": "gemma-3-1b-it"}, "spec.adapters[1].name", "the base model's served name"),
])  # fmt: skip
def test_an_adapter_for_another_base_is_invalid_naming_it(catalog, adapter, field, words):
    with pytest.raises(InvalidSpec) as raised:
        planned(catalog, "gke-l4", {**BASE, "adapters": [SUPPORT, adapter]})
    assert raised.value.field == field and words in str(raised.value)


def test_the_declared_base_matches_on_llamacpp_too(catalog):
    """llama.cpp serves the GGUF repo; the adapter names the safetensors base it was tuned on."""
    result = planned(catalog, "gke-cpu-only", {**BASE, "adapters": [{**SUPPORT, "baseModel": "google/gemma-3-1b-it"}]})
    assert result.model_id != "google/gemma-3-1b-it" and result.adapters


def test_adapter_flags_in_extra_args_are_refused(catalog):
    with pytest.raises(InvalidSpec, match="--max-lora-rank is set by the plan"):
        deployment(catalog, "gke-l4", {**BASE, "adapters": [SUPPORT], "extraArgs": ["--max-lora-rank", "64"]})
    # Without adapters, they stay the user's.
    deployment(catalog, "gke-l4", {**BASE, "extraArgs": ["--max-lora-rank", "64"]})


@pytest.mark.parametrize("before, after, names", [
    ([], [SUPPORT], "support-bot=/models/adapters/support-bot"),
    ([SUPPORT], [SUPPORT, SQL], "sql-writer=/models/adapters/sql-writer"),
    ([SUPPORT, SQL], [SUPPORT], '["sql-writer=/models/adapters/sql-writer", "--max-loras", "2"'),
])  # fmt: skip
def test_changing_the_adapters_rolls_out_naming_the_change(catalog, before, after, names):
    live = deployment(catalog, "gke-l4", {**BASE, "adapters": before})
    desired = deployment(catalog, "gke-l4", {**BASE, "adapters": after})
    reason = rollout.rollout_reason(live["spec"]["template"], desired["spec"]["template"])
    assert reason.startswith("spec.containers[vllm].args[")
    assert names in reason
    spec_before = GemmaDeploymentSpec.model_validate({**BASE, "adapters": before}).model_dump(by_alias=True)
    spec_after = GemmaDeploymentSpec.model_validate({**BASE, "adapters": after}).model_dump(by_alias=True)
    selection = planned(catalog, "gke-l4", BASE).selection()
    assert rollout.spec_hash(spec_before, selection) != rollout.spec_hash(spec_after, selection)


def test_llamacpp_init_containers_have_distinct_names(catalog):
    clash = [{"name": "Sql.Writer", "repo": "acme/a", "gguf": "a.gguf"}, {"name": "sql_writer", "repo": "acme/b", "gguf": "b.gguf"}]
    pod = deployment(catalog, "gke-cpu-only", {**BASE, "adapters": clash})["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["adapter-sql-writer-0", "adapter-sql-writer-1"]


# ------------------------------------------------------------------ a shared store (pvc, gcsfuse)
def rendered(catalog, fixture: str, spec: dict) -> dict[str, list[dict]]:
    parsed = GemmaDeploymentSpec.model_validate(spec)
    by_kind: dict[str, list[dict]] = {}
    for obj in render(planned(catalog, fixture, spec), "chat", "team-a", parsed):
        by_kind.setdefault(obj["kind"], []).append(obj)
    return by_kind


def adapter_jobs(objs: dict[str, list[dict]]) -> list[dict]:
    return [j for j in objs["Job"] if j["spec"]["template"]["spec"]["containers"][0]["name"] == "adapter"]


@pytest.mark.parametrize("fixture, cache, store, volume", [
    ("gke-l4", {"type": "pvc"}, "/models/huggingface/hub", "persistentVolumeClaim"),
    ("gke-l4", {"type": "gcsfuse", "bucket": "team-models"}, "/models/huggingface/hub", "csi"),
    ("gke-cpu-only", {"type": "pvc"}, "/models", "persistentVolumeClaim"),
    ("gke-cpu-only", {"type": "gcsfuse", "bucket": "team-models"}, "/models", "csi"),
])  # fmt: skip
def test_a_filled_cache_fills_each_adapter_once_by_a_job_and_the_pods_read_it(catalog, fixture, cache, store, volume):
    objs = rendered(catalog, fixture, {**BASE, "adapters": [SUPPORT, SQL], "cache": cache})
    (deployment,) = objs["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod  # nothing downloads in the model pods
    (server,) = pod["containers"]
    mount = next(m for m in server["volumeMounts"] if m["name"] == "model-cache")
    assert mount["mountPath"] == store and mount["readOnly"] is True
    runtime = "vllm" if fixture == "gke-l4" else "llamacpp"
    folders = [f"{store}/adapters/{adapters.store_key(Adapter.model_validate(a), runtime)}" for a in (SUPPORT, SQL)]
    jobs = adapter_jobs(objs)
    assert len(jobs) == 2 and len(objs["Job"]) == 3  # and the loader
    for job, folder in zip(jobs, folders, strict=True):
        job_pod = job["spec"]["template"]["spec"]
        (container,) = job_pod["containers"]
        assert {"name": "model-cache", "mountPath": store} in container["volumeMounts"]  # read-write
        store_volume = next(v for v in job_pod["volumes"] if v["name"] == "model-cache")
        assert volume in store_volume and store_volume[volume]["readOnly"] is False
        assert container["image"] == server["image"]
        assert any(part.startswith(folder) for part in container["command"])
    if runtime == "vllm":
        start = server["args"].index("--lora-modules")
        assert server["args"][start + 1:start + 3] == [f"support-bot={folders[0]}", f"sql-writer={folders[1]}"]
        # Checked against each adapter's own planned rank; a refusal fails the Job at once, by its rule.
        assert jobs[0]["spec"]["template"]["spec"]["containers"][0]["command"][4:] == [
            "", "acme/support-lora", "repo", "acme/support-lora", "", folders[0], "32"]  # fmt: skip
        rules = jobs[0]["spec"]["podFailurePolicy"]["rules"]
        assert [r["onExitCodes"]["values"] for r in rules] == [[adapters.EXIT_RANK], [adapters.EXIT_BASE]]
    else:
        scaled = server["args"][server["args"].index("--lora-scaled") + 1]
        assert scaled == f"{folders[0]}/support.gguf:0,{folders[1]}/sql.gguf:0"
        assert jobs[0]["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["sh", "-c"]
        assert "podFailurePolicy" not in jobs[0]["spec"]  # curl checks no adapter_config.json


def test_two_resources_on_one_store_key_adapters_by_what_they_are(catalog):
    """One claim (one checkpoint), two adapter lists: the same name for two repos stays apart, and two
    names for one repo share its Job and folder."""
    pvc = {"type": "pvc"}
    mine = rendered(catalog, "gke-l4", {**BASE, "cache": pvc, "adapters": [{"name": "bot", "repo": "acme/a-lora"}]})
    theirs = rendered(catalog, "gke-l4", {**BASE, "cache": pvc, "adapters": [{"name": "bot", "repo": "other/a-lora"},
                                                                             {"name": "alias", "repo": "acme/a-lora"}]})
    assert mine["PersistentVolumeClaim"][0]["metadata"]["name"] == theirs["PersistentVolumeClaim"][0]["metadata"]["name"]
    (my_job,) = adapter_jobs(mine)
    their_jobs = adapter_jobs(theirs)
    assert my_job["metadata"]["name"] != their_jobs[0]["metadata"]["name"]  # bot: two repos
    assert my_job == their_jobs[1]  # acme/a-lora under two names: one Job, one folder

    def modules(objs):
        args = objs["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
        return args[args.index("--lora-modules") + 1:args.index("--max-loras")]
    (bot,) = modules(mine)
    other_bot, alias = modules(theirs)
    assert bot.split("=")[1] != other_bot.split("=")[1] and bot.split("=")[1] == alias.split("=")[1]


def test_adding_an_adapter_adds_only_its_job(catalog):
    pvc = {"type": "pvc"}
    before = {j["metadata"]["name"]: j for j in rendered(catalog, "gke-l4", {**BASE, "cache": pvc, "adapters": [SQL]})["Job"]}
    after = {j["metadata"]["name"]: j for j in rendered(catalog, "gke-l4", {**BASE, "cache": pvc,
                                                                            "adapters": [SQL, SUPPORT]})["Job"]}  # fmt: skip
    assert set(before) < set(after) and len(after) == len(before) + 1
    assert all(after[name] == job for name, job in before.items())  # the planned rank rose to 32: SQL's Job is the same
    big = {**SUPPORT, "name": "big", "repo": "acme/big-lora", "rank": 512}  # a deadline of a larger download
    wider = {j["metadata"]["name"]: j for j in rendered(catalog, "gke-l4", {**BASE, "cache": pvc,
                                                                            "adapters": [SQL, SUPPORT, big]})["Job"]}
    assert all(wider[name] == job for name, job in after.items())


def test_the_claim_holds_the_adapters_beside_the_weights(catalog):
    bare = rendered(catalog, "gke-l4", {**BASE, "cache": {"type": "pvc"}})["PersistentVolumeClaim"][0]
    plan = planned(catalog, "gke-l4", {**BASE, "adapters": [SUPPORT, SQL]})
    assert plan.adapter_bytes > 0
    with_adapters = cache_mod.plan_cache(plan, GemmaDeploymentSpec.model_validate({"cache": {"type": "pvc"}}))
    assert with_adapters.size == f"{cache_mod.size_gib(plan.checkpoint_bytes + plan.adapter_bytes)}Gi"
    assert bare["spec"]["resources"]["requests"]["storage"] == f"{cache_mod.size_gib(plan.checkpoint_bytes)}Gi"
