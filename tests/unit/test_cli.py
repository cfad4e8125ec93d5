"""`gemma-operator plan` and `crds`: the CLI contract (exit codes 0 / 2 / 3, output shapes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import yaml

from gemma_operator.__main__ import main
from tests.conftest import NODES, ROOT


def run(tmp_path, spec, nodes="gke-l4", *extra, name="chat", raw: str | None = None):
    cr = tmp_path / "cr.yaml"
    if raw is not None:
        cr.write_text(raw)
    else:
        doc = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "metadata": {"name": name}, "spec": spec}
        cr.write_text(yaml.safe_dump(doc))
    out, err = io.StringIO(), io.StringIO()
    code = main(["plan", "-f", str(cr), "--nodes", str(NODES / f"{nodes}.yaml"), *extra], out, err)
    return code, out.getvalue(), err.getvalue()


def test_table_is_the_default(tmp_path):
    code, out, err = run(tmp_path, {})
    assert code == 0, err
    assert "modelId             google/gemma-4-E2B-it" in out
    assert "Why:" in out and " 1. Family gemma4" in out
    assert "endpoint            http://chat.default.svc.cluster.local:8000/v1" in out


def test_json_contract(tmp_path):
    code, out, _ = run(tmp_path, {}, "gke-l4", "-o", "json", "--manifests")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"selection", "manifests"}
    assert doc["selection"]["runtime"] == "vllm" and doc["selection"]["reasons"]
    assert [m["kind"] for m in doc["manifests"]] == ["Deployment", "Service"]
    code, out, _ = run(tmp_path, {}, "gke-l4", "-o", "json")
    assert json.loads(out)["manifests"] == []


def test_yaml_output_and_table_manifests(tmp_path):
    code, out, _ = run(tmp_path, {}, "gke-cpu-only", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["selection"]["runtime"] == "llamacpp"
    code, out, _ = run(tmp_path, {}, "gke-cpu-only", "--manifests")
    assert code == 0 and "kind: Deployment" in out and "kind: Service" in out


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"replicas": -1}, "spec.replicas"),
        ({"replicas": "2"}, "spec.replicas"),
        ({"maxModelLen": 0}, "spec.maxModelLen"),
        ({"runtime": "tensorrt"}, "spec.runtime"),
        ({"quantization": "int3"}, "spec.quantization"),
        ({"model": {"tuning": "chat"}}, "spec.model.tuning"),
        ({"model": {"id": "google/gemma\nkind: Secret"}}, "spec.model.id"),
        ({"model": {"id": "not a repo"}}, "spec.model.id"),
        ({"model": {"famly": "gemma3"}}, "spec.model.famly"),
        ({"model": {"family": "gemma99"}}, "spec.model.family: unknown family"),
        ({"model": {"family": "gemma3", "size": "1b"}, "maxModelLen": 65536}, "spec.maxModelLen"),
        ({"extraArgs": ["--port=1"]}, "spec.extraArgs"),
        ({"image": "x" * 100_000}, "spec.image"),
        ({"extraArgs": ["y" * 100_000]}, "spec.extraArgs.0"),
        ({"nodeSelector": {"pool": "z" * 100_000}}, "spec.nodeSelector.pool"),
        ({"env": [{"name": "HF_TOKEN", "value": "hf_secret"}]}, "never a literal"),
        ({"extraArgs": ["--trust-remote-code"]}, "may not carry --trust-remote-code"),
        ({"extraArgs": ["--hf-token=abc"]}, "may not carry --hf-token"),
        ({"extraArgs": ["--model", "evil/model"]}, "spec.extraArgs: --model is set by the plan"),
        ({"extraArgs": ["--trust_remote_code"]}, "may not carry --trust_remote_code"),
        ({"extraArgs": ["--trust-remote"]}, "may not carry --trust-remote"),
        ({"extraArgs": ["--max_model_len=5"]}, "spec.extraArgs: --max-model-len (as --max_model_len) is set by the plan"),
        ({"env": [{"name": "HF_HOME", "value": "/x"}]}, "spec.env: HF_HOME is set by the operator"),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A"}]}, "env names must be unique"),
        ({"nodeSelector": {"k" * 100_000: "v"}}, "spec.nodeSelector"),
        ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory"),
        ({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "f" * 100_000}}}]}, "spec.env.0.valueFrom"),
    ],
)
def test_invalid_input_exits_2_naming_the_field(tmp_path, spec, words):
    code, out, err = run(tmp_path, spec)
    assert code == 2
    assert words in err
    assert out == ""


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("kind: [unclosed", "not valid YAML"),
        ("apiVersion: v1\nkind: ConfigMap\n", "no GemmaDeployment"),
        ("apiVersion: gemma.dev/v2\nkind: GemmaDeployment\n", "apiVersion must be gemma.dev/v1alpha1"),
    ],
)
def test_bad_files_exit_2(tmp_path, raw, words):
    code, _, err = run(tmp_path, {}, raw=raw)
    assert code == 2 and words in err


def test_missing_file_exits_2(tmp_path):
    err = io.StringIO()
    assert main(["plan", "-f", str(tmp_path / "nope.yaml"), "--nodes", str(NODES / "gke-l4.yaml")], io.StringIO(), err) == 2
    assert "No such file" in err.getvalue()


def test_no_fit_exits_3_with_what_was_needed(tmp_path):
    code, out, err = run(tmp_path, {"model": {"family": "gemma4", "size": "31b"}}, "gke-t4", "-o", "json")
    assert code == 3
    assert "Nothing fits gemma-4-31b-it" in err and "GiB per GPU" in err and "The cluster has:" in err
    assert json.loads(out)["selection"] is None


def test_no_fit_json_keeps_one_line_and_lists_suggestions(tmp_path):
    spec = {"model": {"family": "gemma3", "size": "27b"}, "quantization": "bf16"}
    code, out, err = run(tmp_path, spec, "gke-l4", "-o", "json")
    assert code == 3
    no_fit = json.loads(out)["noFit"]
    assert "\n" not in no_fit["message"] and "Nothing fits gemma-3-27b-it" in no_fit["message"]
    assert no_fit["suggestions"][0] == {
        "field": "spec.quantization", "value": "q4_0",
        "fits": "google/gemma-3-27b-it-qat-q4_0-gguf, llamacpp q4_0 on nvidia-l4-x1, 53504 tokens",
    }  # fmt: skip


def test_no_fit_table_shows_needed_has_and_would_fit(tmp_path):
    spec = {"model": {"family": "gemma3", "size": "27b"}, "quantization": "bf16"}
    code, out, err = run(tmp_path, spec, "gke-l4")
    assert code == 3 and out == ""
    sections = [line for line in err.splitlines() if line and not line.startswith(" ")]
    assert sections == ["no fit: Nothing fits gemma-3-27b-it.", "needed:", "the cluster has:", "would fit:"]
    needed, has, would = err.split("\n\n")[1:]
    assert "vllm bf16 needs 55.8 GiB per GPU" in needed
    assert "nvidia-l4-x1: 1 node(s) x 1 NVIDIA L4" in has
    assert "  - spec.quantization: q4_0 (google/gemma-3-27b-it-qat-q4_0-gguf" in would


def test_bad_name_exits_2(tmp_path):
    code, _, err = run(tmp_path, {}, name="Chat_Bot")
    assert code == 2 and "metadata.name" in err


def test_crds_prints_the_committed_crd():
    out = io.StringIO()
    assert main(["crds"], out, io.StringIO()) == 0
    assert out.getvalue() == (ROOT / "crds" / "gemma.dev_gemmadeployments.yaml").read_text()


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "gemma_operator", "plan", "-f", str(ROOT / "examples/01-quickstart/gemmadeployment.yaml"),
         "--nodes", str(NODES / "gke-tpu-v5e-2x2.yaml"), "-o", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["selection"]["accelerator"] == "tpu-v5e"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], ["--all-namespaces", "--log-format=json"]),
        (["--standalone"], ["--all-namespaces", "--log-format=json", "--standalone"]),
        (["-n", "team-a", "--log-format=plain"], ["-n", "team-a", "--log-format=plain"]),
        (["--liveness=http://0.0.0.0:8080/healthz", "-A"], ["--log-format=json", "--liveness=http://0.0.0.0:8080/healthz", "-A"]),
    ],
)
def test_run_passes_kopf_options_through(monkeypatch, options, expected):
    seen = []
    monkeypatch.setattr("kopf.cli.main", lambda args, standalone_mode: seen.append(args))
    assert main(["run", *options], io.StringIO(), io.StringIO()) == 0
    assert seen == [["run", "--module", "gemma_operator.handlers", *expected]]


def test_run_with_peering_gets_a_priority(monkeypatch):
    seen = []
    monkeypatch.setattr("kopf.cli.main", lambda args, standalone_mode: seen.append(args))
    main(["run", "--peering=gemma"], io.StringIO(), io.StringIO())
    assert any(a.startswith("--priority=") for a in seen[0])
