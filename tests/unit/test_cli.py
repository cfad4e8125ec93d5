"""`gemma-operator plan` and `crds`: the CLI contract (exit codes 0 / 2 / 3, output shapes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gemma_operator.__main__ import main
from tests.conftest import NODES, ROOT


def run(tmp_path, spec, nodes="gke-l4", *extra, name="chat", raw: str | None = None):
    """`plan_file` of a GemmaDeployment with `spec` (or of the `raw` text)."""
    cr = tmp_path / "cr.yaml"
    if raw is not None:
        cr.write_text(raw)
    else:
        doc = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "metadata": {"name": name}, "spec": spec}
        cr.write_text(yaml.safe_dump(doc))
    return plan_file(cr, nodes, *extra)


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
    assert {"selection", "manifests"} <= set(doc)
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
        ({"extraArgs": ["y" * 100_000]}, "spec.extraArgs[0]"),
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
        ({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "f" * 100_000}}}]}, "spec.env[0].valueFrom"),
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
        ("apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: Secret\n", "found ConfigMap, Secret"),
        ("", "is empty"),
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
    assert sections[:4] == ["no fit: Nothing fits gemma-3-27b-it.", "needed:", "the cluster has:", "would fit:"]
    assert sections[4:] == [f"(nodes: 2 from {NODES / 'gke-l4.yaml'})"]  # which nodes it was judged on
    needed, has, would = err.split("\n\n")[1:]
    assert "vllm bf16 needs 55.0 GiB per GPU" in needed  # text only: no SigLIP (0.417B)
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
    monkeypatch.setattr("gemma_operator.clusterread.credentials_problem", lambda env: None)
    seen = []
    monkeypatch.setattr("kopf.cli.main", lambda args, standalone_mode: seen.append(args))
    assert main(["run", *options], io.StringIO(), io.StringIO()) == 0
    assert seen == [["run", "--module", "gemma_operator.handlers", *expected]]


def test_run_with_peering_gets_a_priority(monkeypatch):
    monkeypatch.setattr("gemma_operator.clusterread.credentials_problem", lambda env: None)
    seen = []
    monkeypatch.setattr("kopf.cli.main", lambda args, standalone_mode: seen.append(args))
    main(["run", "--peering=gemma"], io.StringIO(), io.StringIO())
    assert any(a.startswith("--priority=") for a in seen[0])


# --- issue 15: the first ten minutes --------------------------------------------------------


def test_json_and_yaml_carry_the_endpoint(tmp_path):
    code, out, _ = run(tmp_path, {}, "gke-l4", "-o", "json")
    assert code == 0 and json.loads(out)["endpoint"] == "http://chat.default.svc.cluster.local:8000/v1"
    code, out, _ = run(tmp_path, {"service": {"port": 9000}}, "gke-l4", "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)["endpoint"] == "http://chat.default.svc.cluster.local:9000/v1"


def test_outputs_name_the_node_source(tmp_path):
    code, out, _ = run(tmp_path, {}, "gke-l4", "-o", "json")
    count = len(yaml.safe_load((NODES / "gke-l4.yaml").read_text())["items"])
    assert json.loads(out)["nodes"] == {"file": str(NODES / "gke-l4.yaml"), "count": count}
    code, out, _ = run(tmp_path, {})
    assert "gke-l4.yaml" in out and "nodes " in out


def test_file_dash_reads_standard_input(tmp_path, monkeypatch):
    cr = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "metadata": {"name": "piped"}, "spec": {}}
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(cr)))
    out, err = io.StringIO(), io.StringIO()
    code = main(["plan", "-f", "-", "--nodes", str(NODES / "gke-l4.yaml"), "-o", "json"], out, err)
    assert code == 0, err.getvalue()
    assert json.loads(out.getvalue())["endpoint"].startswith("http://piped.")


def test_nodes_dash_reads_standard_input(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO((NODES / "gke-cpu-only.yaml").read_text()))
    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                  "metadata": {"name": "x"}, "spec": {}}))
    out, err = io.StringIO(), io.StringIO()
    assert main(["plan", "-f", str(cr), "--nodes", "-", "-o", "json"], out, err) == 0, err.getvalue()
    assert json.loads(out.getvalue())["selection"]["runtime"] == "llamacpp"


def test_both_inputs_from_standard_input_exit_2(monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    err = io.StringIO()
    assert main(["plan", "-f", "-", "--nodes", "-"], io.StringIO(), err) == 2
    assert "standard input" in err.getvalue()


def test_version_prints_the_version_and_image_pins(catalog):
    done = subprocess.run([sys.executable, "-m", "gemma_operator", "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "gemma-operator 0.1.0" in done.stdout
    for image in catalog.images.values():
        assert image.ref in done.stdout


def test_output_option_has_help_and_shows_its_default():
    done = subprocess.run([sys.executable, "-m", "gemma_operator", "plan", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    option = done.stdout[done.stdout.index("--output {json,yaml,table}"):]
    assert "default: table" in " ".join(option.split()[:12])


@pytest.mark.parametrize(
    ("nodes_text", "words"),
    [
        ("", ["nodes.yaml", "is empty", "kubectl get nodes"]),
        ("apiVersion: v1\nkind: List\nitems: []\n", ["nodes.yaml", "a List with no items"]),
        ("apiVersion: v1\nkind: NodeList\nitems: []\n", ["nodes.yaml", "a NodeList with no items"]),
        ("# only a comment\n---\n", ["nodes.yaml", "is empty"]),
    ],
)
def test_empty_node_list_exits_2_not_3(tmp_path, nodes_text, words):
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(nodes_text)
    code, _, err = run(tmp_path, {}, nodes, name="x")
    assert code == 2
    for word in words:
        assert word in err


@pytest.mark.parametrize(
    ("nodes_text", "found"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n", "found ConfigMap"),
        ("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Node, metadata: {name: n}}\n"
         "- {apiVersion: v1, kind: Pod, metadata: {name: p}}\n", "found Node, Pod"),
    ],
)
def test_nodes_file_of_other_kinds_names_what_it_found(tmp_path, nodes_text, found):
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(nodes_text)
    code, _, err = run(tmp_path, {}, nodes, name="x")
    assert code == 2
    assert "items must be Nodes" in err and found in err


def test_a_file_of_other_kinds_says_what_it_found(tmp_path):
    code, _, err = run(tmp_path, {}, raw="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n"
                                         "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n")
    assert code == 2
    assert "no GemmaDeployment" in err and "ConfigMap" in err and "Deployment" in err


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"modle": {}}, ["unknown field spec.modle", "did you mean spec.model?"]),
        ({"model": {"famly": "gemma3"}}, ["unknown field spec.model.famly", "did you mean spec.model.family?"]),
        ({"maxModelLength": 4096}, ["unknown field spec.maxModelLength", "did you mean spec.maxModelLen?"]),
        ({"env": [{"name": "HF_TOKEN", "value": "x"}]}, ["spec.env[0]:", "HF_TOKEN is never a literal"]),
        ({"env": [{"name": "X", "valueFrom": {}}]}, ["spec.env[0].valueFrom:", "exactly one of"]),
        ({"extraArgs": ["--trust-remote-code"]}, ["spec.extraArgs[0]:", "--trust-remote-code"]),
        ({"extraArgs": ["--port=1", "--hf-token=x"]}, ["spec.extraArgs[1]:", "--hf-token"]),
        ({"env": [{"name": "A", "value": "1"}, {"name": "A"}]}, ["spec.env:", "unique", "A"]),
    ],
)
def test_validation_messages_in_plain_words(tmp_path, spec, words):
    code, _, err = run(tmp_path, spec)
    assert code == 2
    for word in words:
        assert word in err
    assert "Value error" not in err and "Extra inputs" not in err and "spec:" not in err


def test_a_huge_key_is_not_echoed_whole(tmp_path):
    code, _, err = run(tmp_path, {"nodeSelector": {"k" * 100_000: "v"}})
    assert code == 2 and "spec.nodeSelector" in err and len(err) < 2_000


def _no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("gemma_operator.clusterread.SERVICE_ACCOUNT_TOKEN", str(tmp_path / "no-token"))


def test_run_without_credentials_says_where_it_looked(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    called = []
    monkeypatch.setattr("kopf.cli.main", lambda *a, **k: called.append(a))
    err = io.StringIO()
    assert main(["run"], io.StringIO(), err) == 1
    message = err.getvalue()
    assert message.count("\n") == 1 and called == []
    assert "No cluster credentials" in message
    assert str(tmp_path / "no-token") in message and "KUBECONFIG" in message and "~/.kube/config" in message


def test_run_with_a_missing_kubeconfig_path_names_it(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "gone.yaml"))
    monkeypatch.setattr("kopf.cli.main", lambda *a, **k: pytest.fail("kopf must not start"))
    err = io.StringIO()
    assert main(["run"], io.StringIO(), err) == 1
    assert "gone.yaml" in err.getvalue()


def test_run_with_a_kubeconfig_hands_over_to_kopf(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\nkind: Config\n")
    seen = []
    monkeypatch.setattr("kopf.cli.main", lambda args, standalone_mode: seen.append(args))
    assert main(["run"], io.StringIO(), io.StringIO()) == 0 and seen


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("err", "options", "expected"),
    [
        (Terminal(), [], "--log-format=plain"),
        (io.StringIO(), [], "--log-format=json"),
        (Terminal(), ["--log-format=json"], "--log-format=json"),
        (io.StringIO(), ["--log-format", "plain"], "plain"),
    ],
    ids=["tty-plain", "pipe-json", "tty-forced-json", "pipe-forced-plain"],
)
def test_logs_are_text_on_a_terminal_and_json_otherwise(monkeypatch, err, options, expected):
    seen = []
    monkeypatch.setattr("kopf.cli.main", lambda args, standalone_mode: seen.append(args))
    monkeypatch.setattr("gemma_operator.clusterread.credentials_problem", lambda env: None)
    assert main(["run", *options], io.StringIO(), err) == 0
    formats = [a for a in seen[0] if a.startswith("--log-format") or a in ("plain", "json")]
    assert expected in formats and len([a for a in seen[0] if a.startswith("--log-format")]) == 1


def test_plan_without_nodes_or_kubeconfig_says_what_to_do(monkeypatch, tmp_path):
    _no_credentials(monkeypatch, tmp_path)
    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                  "metadata": {"name": "x"}, "spec": {}}))
    err = io.StringIO()
    assert main(["plan", "-f", str(cr)], io.StringIO(), err) == 1
    assert "~/.kube/config" in err.getvalue() and "--nodes" in err.getvalue()


def test_plan_with_an_unknown_context_lists_the_contexts(tmp_path):
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "prod",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "prod", "context": {"cluster": "c", "user": "u"}},
                     {"name": "staging", "context": {"cluster": "c", "user": "u"}}],
    }))
    cr = tmp_path / "cr.yaml"
    cr.write_text(yaml.safe_dump({"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
                                  "metadata": {"name": "x"}, "spec": {}}))
    err = io.StringIO()
    assert main(["plan", "-f", str(cr), "--kubeconfig", str(config), "--context", "dev"], io.StringIO(), err) == 1
    assert "'dev'" in err.getvalue() and "prod, staging" in err.getvalue()


# --- issue 11 item 8: a file with several GemmaDeployments ----------------------------------


def _several(tmp_path, *specs, names=None):
    names = names or [f"m{i}" for i in range(len(specs))]
    docs = [{"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "metadata": {"name": n, "namespace": "team"},
             "spec": s} for n, s in zip(names, specs)]
    cr = tmp_path / "several.yaml"
    cr.write_text(yaml.safe_dump_all(docs))
    return cr


def plan_file(cr, nodes: str | Path = "gke-l4", *extra):
    """`gemma-operator plan -f cr` on a node fixture (its name) or a nodes file (a Path): (exit code, stdout, stderr)."""
    nodes_file = nodes if isinstance(nodes, Path) else NODES / f"{nodes}.yaml"
    out, err = io.StringIO(), io.StringIO()
    code = main(["plan", "-f", str(cr), "--nodes", str(nodes_file), *extra], out, err)
    return code, out.getvalue(), err.getvalue()


def test_every_gemmadeployment_in_a_file_is_planned(tmp_path):
    cr = _several(tmp_path, {}, {"model": {"family": "gemma3", "size": "1b"}}, names=["chat", "small"])
    code, out, err = plan_file(cr, "gke-l4", "-o", "json", "--manifests")
    assert code == 0, err
    doc = json.loads(out)
    assert [(i["name"], i["namespace"]) for i in doc["items"]] == [("chat", "team"), ("small", "team")]
    assert doc["items"][1]["selection"]["modelId"] == "google/gemma-3-1b-it"
    assert doc["items"][0]["endpoint"] == "http://chat.team.svc.cluster.local:8000/v1"
    assert [m["metadata"]["name"] for m in doc["items"][1]["manifests"]] == ["small", "small"]


def test_several_in_a_table_get_one_block_each(tmp_path):
    cr = _several(tmp_path, {}, {"model": {"family": "gemma3", "size": "1b"}}, names=["chat", "small"])
    code, out, _ = plan_file(cr)
    assert code == 0
    assert "team/chat" in out and "team/small" in out
    assert out.count("Why:") == 2 and out.index("team/chat") < out.index("team/small")


def test_the_worst_exit_code_wins(tmp_path):
    nofit = {"model": {"family": "gemma4", "size": "31b"}}
    cr = _several(tmp_path, {}, nofit, names=["fits", "toolarge"])
    code, out, err = plan_file(cr, "gke-t4", "-o", "json")
    assert code == 3
    items = {i["name"]: i for i in json.loads(out)["items"]}
    assert items["fits"]["selection"] and items["toolarge"]["selection"] is None
    assert "Nothing fits" in items["toolarge"]["noFit"]["message"] and "team/toolarge" in err
    cr = _several(tmp_path, {}, nofit, {"replicas": -1}, names=["fits", "toolarge", "broken"])
    code, out, err = plan_file(cr, "gke-t4", "-o", "json")
    assert code == 2
    items = {i["name"]: i for i in json.loads(out)["items"]}
    assert "spec.replicas" in items["broken"]["invalid"]["message"] and "team/broken" in err
    assert items["fits"]["selection"]


def test_one_document_keeps_the_contract_shape(tmp_path):
    cr = _several(tmp_path, {})
    code, out, _ = plan_file(cr, "gke-l4", "-o", "json")
    assert code == 0 and "items" not in json.loads(out) and json.loads(out)["selection"]


def test_no_fit_names_the_nodes_it_was_judged_on(tmp_path):
    code, out, err = run(tmp_path, {"model": {"family": "gemma4", "size": "31b"}}, "gke-t4")
    assert code == 3 and out == ""
    assert "Nothing fits" in err and "gke-t4.yaml" in err


AUTOSCALED = {"replicas": 2, "autoscaling": {"minReplicas": 2, "maxReplicas": 4, "metric": "queue", "target": 4}}


@pytest.mark.parametrize(("nodes", "extra", "collector"), [
    ("gke-l4", (), "PodMonitoring"),  # GKE's nodes: Managed Service for Prometheus
    ("gfd-a10g", (), "ServiceMonitor"),  # elsewhere: a Prometheus Operator
    ("gke-l4", ("--collector", "ServiceMonitor"), "ServiceMonitor"),
])  # fmt: skip
def test_plan_manifests_render_every_object_of_an_autoscaled_model(tmp_path, nodes, extra, collector):
    code, out, err = run(tmp_path, AUTOSCALED, nodes, "-o", "json", "--manifests", *extra)
    assert code == 0, err
    manifests = json.loads(out)["manifests"]
    assert [m["kind"] for m in manifests] == ["Deployment", "Service", "PodDisruptionBudget", collector,
                                              "HorizontalPodAutoscaler"]  # fmt: skip
    assert "replicas" not in manifests[0]["spec"]


def test_a_signal_the_engine_lacks_exits_2_naming_the_field(tmp_path):
    spec = {"autoscaling": {"minReplicas": 1, "maxReplicas": 2, "metric": "kvCache", "target": 80}}
    code, _, err = run(tmp_path, spec, "gke-cpu-only")
    assert code == 2
    assert "spec.autoscaling.metric: kvCache is not a signal llamacpp exposes; use queue" in err
def test_plan_warns_on_stderr_when_a_gated_checkpoint_has_no_token(tmp_path):
    code, out, err = run(tmp_path, {"model": {"family": "gemma3"}}, "gke-l4", "-o", "json")
    assert code == 0 and json.loads(out)["selection"]["modelId"] == "google/gemma-3-270m-it"
    assert "warning: google/gemma-3-270m-it is gated on the Hugging Face Hub" in err
    code, _, err = run(tmp_path, {"model": {"family": "gemma3"}, "hfTokenSecretRef": {"name": "hf"}}, "gke-l4")
    assert code == 0 and "warning" not in err
