"""Every YAML under examples/ is valid: GemmaDeployments against the CRD and the models (and they plan),
Helm values against the chart's schema, Argo CD Applications minimally, everything else against Kubernetes."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from .chart_files import CHART, ROOT, merge, values as chart_values
from gemma_operator.api.v1alpha1 import API_VERSION, KIND, GemmaDeploymentSpec
from ..unit.test_crd import to_json_schema

EXAMPLES = ROOT / "examples"
FILES = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml"))
CRD = yaml.safe_load((ROOT / "crds" / "gemma.dev_gemmadeployments.yaml").read_text())
NODES = ROOT / "tests" / "fixtures" / "nodes"

# Which node fixture each example GemmaDeployment is planned against.
PLAN_ON = {
    "01-quickstart/gemmadeployment.yaml": "gke-l4",
    # 02's GPU and TPU pools scale from zero: only the system node exists, plus the declared pools.
    "02-helm-gke/gemma-l4.yaml": "gke-l4-at-zero",
    "02-helm-gke/gemma-tpu-v5e.yaml": "gke-l4-at-zero",
    "03-argocd/gemmadeployments/chat.yaml": "gke-l4",
    "03-argocd/gemmadeployments/code.yaml": "gke-l4",
    "04-cpu-llamacpp/gemmadeployment.yaml": "gke-cpu-only",
    "05-tpu-v5e/gemmadeployment.yaml": "gke-tpu-v5e-2x2",
    "06-gated-model-hf-token/gemmadeployment.yaml": "gke-l4",
    "08-autoscaling/gemmadeployment.yaml": "gke-l4",
    "07-node-auto-provisioning/gemmadeployment.yaml": "gke-l4-at-zero",
    "09-model-cache/pvc.yaml": "gke-h100x8",
    "09-model-cache/gcsfuse.yaml": "gke-h100x8",
    "12-inference-gateway/gemmadeployment.yaml": "gke-l4",
    "13-objective-cheapest/gemmadeployment.yaml": "gke-l4",
    "10-embeddings/gemmadeployment.yaml": "gke-l4",
    "14-lora-adapters/gemmadeployment.yaml": "gke-l4",
    "11-vision/gemmadeployment.yaml": "gke-cpu-only",
    "11-vision/chat-template.yaml": "gke-l4",
}
# The capacity file each example folder declares (plan --capacity), if any.
CAPACITY = {"02-helm-gke": "02-helm-gke/capacity.yaml", "07-node-auto-provisioning": "07-node-auto-provisioning/capacity.yaml",
            "13-objective-cheapest": "13-objective-cheapest/capacity.yaml"}
COMPUTE_CLASS = ("cloud.google.com/v1", "ComputeClass")  # GKE's CRD: checked by hand below


def name(path: pathlib.Path) -> str:
    return path.relative_to(EXAMPLES).as_posix()


def is_values(path: pathlib.Path) -> bool:
    return path.name.endswith("-values.yaml")


def is_capacity(path: pathlib.Path) -> bool:
    return path.name == "capacity.yaml"


def plan_command(file: str, *extra: str) -> list[str]:
    """`gemma-operator plan` of an example, on its fixture and with its folder's capacity file."""
    command = [sys.executable, "-m", "gemma_operator", "plan", "-f", str(EXAMPLES / file),
               "--nodes", str(NODES / f"{PLAN_ON[file]}.yaml"), "-o", "json", *extra]  # fmt: skip
    capacity = CAPACITY.get(file.split("/")[0])
    return command + (["--capacity", str(EXAMPLES / capacity)] if capacity else [])


DOCS = [
    (name(path), index, doc)
    for path in FILES
    if not is_values(path) and not is_capacity(path)
    for index, doc in enumerate(yaml.safe_load_all(path.read_text()))
    if doc is not None
]
GEMMAS = [(file, doc) for file, _, doc in DOCS if doc.get("kind") == KIND]
APPLICATIONS = [(file, doc) for file, _, doc in DOCS if doc.get("apiVersion") == "argoproj.io/v1alpha1"]
CLASSES = [(file, doc) for file, _, doc in DOCS if (doc.get("apiVersion"), doc.get("kind")) == COMPUTE_CLASS]
OTHERS = [(file, doc) for file, _, doc in DOCS if (file, doc) not in GEMMAS + APPLICATIONS + CLASSES]


def test_every_scenario_folder_has_a_readme():
    folders = [p for p in EXAMPLES.iterdir() if p.is_dir()]
    assert len(folders) >= 6
    for folder in folders:
        assert (folder / "README.md").is_file(), f"{folder.name} has no README.md"


def test_no_secret_is_committed():
    for file, _, doc in DOCS:
        assert doc.get("kind") != "Secret", f"{file}: create Secrets with kubectl, never commit them"


# --- GemmaDeployments ------------------------------------------------------------------


@pytest.mark.parametrize("file, doc", GEMMAS, ids=[f for f, _ in GEMMAS])
def test_gemmadeployment_matches_the_crd(file, doc):
    (version,) = CRD["spec"]["versions"]
    validator = jsonschema.Draft202012Validator(to_json_schema(version["schema"]["openAPIV3Schema"]))
    problems = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    assert problems == []
    assert doc["apiVersion"] == API_VERSION
    assert set(doc["metadata"]) <= {"name", "namespace", "labels", "annotations"}


@pytest.mark.parametrize("file, doc", GEMMAS, ids=[f for f, _ in GEMMAS])
def test_gemmadeployment_matches_the_model(file, doc):
    GemmaDeploymentSpec.model_validate(doc.get("spec") or {})


def test_every_gemmadeployment_is_planned():
    assert sorted(PLAN_ON) == sorted(file for file, _ in GEMMAS)


@pytest.mark.parametrize("file, fixture", sorted(PLAN_ON.items()))
def test_gemmadeployment_plans(file, fixture):
    done = subprocess.run(plan_command(file), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    selection = json.loads(done.stdout)["selection"]
    (doc,) = [d for d in yaml.safe_load_all((EXAMPLES / file).read_text()) if d and d.get("kind") == KIND]
    spec = doc["spec"] or {}
    for field in ("accelerator", "runtime", "quantization"):
        if spec.get(field, "auto") != "auto":
            assert selection[field] == spec[field], field
    if "id" in spec.get("model", {}):
        assert selection["modelId"] == spec["model"]["id"]


# --- Argo CD Applications (a CRD kubernetes-validate does not know) ---------------------


@pytest.mark.parametrize("file, doc", APPLICATIONS, ids=[f for f, _ in APPLICATIONS])
def test_argocd_application(file, doc):
    assert doc["kind"] == "Application"
    assert doc["metadata"]["name"] and doc["metadata"]["namespace"] == "argocd"
    spec = doc["spec"]
    assert set(spec) <= {"project", "source", "sources", "destination", "syncPolicy", "ignoreDifferences",
                         "info", "revisionHistoryLimit"}
    assert spec["project"] and spec["destination"]["namespace"]
    assert {"server", "name"} & set(spec["destination"])
    source = spec["source"]
    assert {"repoURL", "targetRevision", "path"} <= set(source)
    assert (ROOT / source["path"]).is_dir(), f"{source['path']} is not a folder of this repository"
    assert set(spec["syncPolicy"].get("syncOptions", [])) <= {
        "CreateNamespace=true", "ServerSideApply=true", "SkipDryRunOnMissingResource=true", "PruneLast=true"
    }
    if "helm" in source:
        assert (ROOT / source["path"]) == CHART
        merged = chart_values(*(CHART / path for path in source["helm"].get("valueFiles", [])))
        merged = merge(merged, source["helm"].get("valuesObject", {}))
        schema = json.loads((CHART / "values.schema.json").read_text())
        jsonschema.Draft7Validator(schema).validate(merged)


def test_argocd_folder_application_points_at_gemmadeployments():
    (folder,) = [doc for _, doc in APPLICATIONS if "helm" not in doc["spec"]["source"]]
    path = ROOT / folder["spec"]["source"]["path"]
    kinds = {doc["kind"] for p in path.glob("*.yaml") for doc in yaml.safe_load_all(p.read_text()) if doc}
    assert kinds == {KIND}


# --- Helm values files (examples/**/*-values.yaml) --------------------------------------


@pytest.mark.parametrize("path", [p for p in FILES if is_values(p)], ids=lambda p: name(p))
def test_values_file_matches_the_chart_schema(path):
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(chart_values(path))


# --- everything else: real Kubernetes schemas -------------------------------------------


def test_other_objects_are_valid_kubernetes():
    """Namespaces and a Gateway (against Gateway API's published CRD); Secrets are made with kubectl."""
    for file, doc in OTHERS:
        if doc.get("apiVersion") == "gateway.networking.k8s.io/v1":  # a third-party kind: its published CRD
            import yaml as yaml_mod

            from tests.integration.kubeapi import schema as structural
            from tests.unit.test_scaling import THIRD_PARTY_CRDS

            path = THIRD_PARTY_CRDS / f"gateway.networking.k8s.io_{doc['kind'].lower()}s.yaml"
            if not path.exists():
                pytest.skip(f"{path} is missing (the third-party CRDs live in ../shared/crds)")
            (served,) = [v for v in yaml_mod.safe_load(path.read_text())["spec"]["versions"] if v["name"] == "v1"]
            assert structural.validate(served["schema"]["openAPIV3Schema"], doc) == [], file
            continue
        try:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            pytest.fail(f"{file}: {doc.get('kind')}: {getattr(exc, 'message', exc)}")


# --- the README paths (issue 15 items 12-14) ---------------------------------------------

READMES = [ROOT / "README.md", *sorted(EXAMPLES.glob("*/README.md"))]
PSS = "pod-security.kubernetes.io/enforce"


def shell_commands(readme: pathlib.Path) -> list[str]:
    """The commands of a README's ```sh blocks, continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in readme.read_text().split("```sh\n")[1:]:
        text = block.split("```", 1)[0].replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    return commands


def _option(command: str, *names: str, default: str | None = None) -> str | None:
    words = command.split()
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                return words[i + 1].strip("'\"")
            if word.startswith(name + "="):
                return word.split("=", 1)[1].strip("'\"")
    return default


def test_helm_install_says_the_image_must_be_built_first():
    """The chart's default image is published nowhere: every `helm install` line sets one, next to the build step."""
    for readme in READMES:
        text = readme.read_text()
        for command in shell_commands(readme):
            if command.startswith("helm install"):
                assert "image.repository=" in command, f"{readme.name}: {command}"
        for index in [i for i in range(len(text)) if text.startswith("helm install gemma-operator", i)]:
            nearby = text[max(0, index - 1200): index + 400]
            assert "images/operator" in nearby or "#2-the-operator-image" in nearby, readme
            assert "docker push" in nearby or "operator image" in nearby, readme
    top = (ROOT / "README.md").read_text()
    default = chart_values()["image"]["repository"]
    assert default in top and "not published" in top


def _pod_security_level(file: str, doc: dict[str, Any]) -> str:
    """The Pod Security level the example's model pods meet, wherever `auto` may place them."""
    spec = doc.get("spec") or {}
    if spec.get("accelerator", "auto") == "auto":
        return "baseline"  # auto may choose a TPU pool, whose vLLM image runs as root
    done = subprocess.run(plan_command(file, "--manifests"), capture_output=True, text=True, cwd=ROOT, check=True)
    pod = json.loads(done.stdout)["manifests"][0]["spec"]["template"]["spec"]
    containers = pod["containers"]
    restricted = (
        pod["securityContext"].get("runAsNonRoot") is True
        and pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault"
        and all(c["securityContext"]["allowPrivilegeEscalation"] is False for c in containers)
        and all(c["securityContext"]["capabilities"]["drop"] == ["ALL"] for c in containers)
    )
    return "restricted" if restricted else "baseline"


def test_example_namespaces_carry_the_pod_security_level_their_pods_meet():
    namespaces = {(file.split("/")[0], doc["metadata"]["name"]): doc for file, _, doc in DOCS if doc.get("kind") == "Namespace"}
    levels: dict[tuple[str, str], set[str]] = {}
    for file, doc in GEMMAS:
        key = (file.split("/")[0], doc["metadata"].get("namespace", "default"))
        assert key[1] != "default", f"{file}: use the example's own namespace, not default"
        levels.setdefault(key, set()).add(_pod_security_level(file, doc))
    for key, found in levels.items():
        assert key in namespaces, f"{key[0]}: no Namespace {key[1]} with a Pod Security label"
        expected = "baseline" if "baseline" in found else "restricted"
        assert namespaces[key]["metadata"]["labels"][PSS] == expected, key
    assert {"restricted", "baseline"} <= {label for found in levels.values() for label in found}


def test_argocd_creates_the_models_namespace_with_its_label():
    (models,) = [doc for _, doc in APPLICATIONS if "helm" not in doc["spec"]["source"]]
    labels = models["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
    namespace = models["spec"]["destination"]["namespace"]
    doc = next(d for f, _, d in DOCS if f.startswith("03-argocd/") and d.get("kind") == "Namespace"
               and d["metadata"]["name"] == namespace)
    assert labels[PSS] == doc["metadata"]["labels"][PSS]


def test_the_token_secret_exists_before_the_resource_that_names_it():
    """Create the Secret, then apply a manifest that already references it: no `kubectl patch` afterwards."""
    for readme in READMES:
        commands = shell_commands(readme)
        assert not any(c.startswith("kubectl patch") and "hfTokenSecretRef" in c for c in commands), readme
        secrets: set[tuple[str, str]] = set()
        for command in commands:
            if command.startswith("kubectl create secret generic"):
                secret = command.split()[4]
                secrets.add((_option(command, "--namespace", "-n", default="default"), secret))
            if command.startswith("kubectl apply"):
                for path in [w for w in command.split() if w.endswith(".yaml") and (ROOT / w).is_file()]:
                    for doc in yaml.safe_load_all((ROOT / path).read_text()):
                        ref = ((doc or {}).get("spec") or {}).get("hfTokenSecretRef") if (doc or {}).get("kind") == KIND else None
                        if ref:
                            where = (doc["metadata"].get("namespace", "default"), ref["name"])
                            assert where in secrets, f"{readme.relative_to(ROOT)}: {path} needs Secret {where} first"


def test_quickstart_and_cpu_example_reference_the_token():
    for file in ("01-quickstart/gemmadeployment.yaml", "04-cpu-llamacpp/gemmadeployment.yaml"):
        doc = yaml.safe_load((EXAMPLES / file).read_text())
        assert doc["spec"]["hfTokenSecretRef"]["name"] == "hf-token", file


# --- declared capacity (issue 12): pools at zero nodes, node auto-provisioning ------------

AT_ZERO = NODES / "gke-l4-at-zero.yaml"
L4 = "cloud.google.com/gke-accelerator"


def test_the_at_zero_fixture_is_gke_l4_without_its_l4_node():
    full = yaml.safe_load((NODES / "gke-l4.yaml").read_text())["items"]
    assert yaml.safe_load(AT_ZERO.read_text())["items"] == [n for n in full if L4 not in n["metadata"]["labels"]]


@pytest.mark.parametrize("folder", sorted(CAPACITY))
def test_capacity_files_are_valid_and_match_the_chart_values(folder):
    from gemma_operator import capacity, catalog

    text = (EXAMPLES / CAPACITY[folder]).read_text()
    assert capacity.parse_text(text, catalog.load())
    (values,) = [p for p in (EXAMPLES / folder).glob("*-values.yaml")]
    assert chart_values(values)["capacity"]["pools"] == yaml.safe_load(text)["pools"]


def _plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gemma_operator", "plan", *args, "-o", "json", "--manifests"],
                          capture_output=True, text=True, cwd=ROOT)  # fmt: skip


def _pod_asks_for_an_l4(document: dict) -> None:
    pod = document["manifests"][0]["spec"]["template"]["spec"]
    assert pod["nodeSelector"][L4] == "nvidia-l4"
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"} in pod["tolerations"]


def test_newcomer_spec_empty_with_the_example_capacity_scales_up_the_l4(tmp_path):
    """Issue 12, first repro: gke-l4 without its L4 node, `spec: {}`: was llama.cpp on the system pool."""
    resource = tmp_path / "chat.yaml"
    resource.write_text("apiVersion: gemma.dev/v1alpha1\nkind: GemmaDeployment\nmetadata: {name: chat}\nspec: {}\n")
    done = _plan("-f", str(resource), "--nodes", str(AT_ZERO), "--capacity", str(EXAMPLES / CAPACITY["02-helm-gke"]))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    selection = document["selection"]
    assert (selection["accelerator"], selection["pool"], selection["capacity"]) == ("nvidia-l4", "l4", "scale-up")
    _pod_asks_for_an_l4(document)


def test_newcomer_gemma_l4_without_an_l4_node_plans_on_the_standard_shape():
    """Issue 12, second repro: examples/02-helm-gke/gemma-l4.yaml with no L4 node: was exit 3 (NoFit)."""
    done = _plan("-f", str(EXAMPLES / "02-helm-gke/gemma-l4.yaml"), "--nodes", str(AT_ZERO))
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    selection = document["selection"]
    assert (selection["accelerator"], selection["pool"], selection["capacity"]) == (
        "nvidia-l4", "nvidia-l4-g2-standard-4", "scale-up")
    _pod_asks_for_an_l4(document)


@pytest.mark.parametrize(("file", "pool"), [("02-helm-gke/gemma-l4.yaml", "l4"), ("02-helm-gke/gemma-tpu-v5e.yaml", "tpu-v5e-2x2"),
                                            ("07-node-auto-provisioning/gemmadeployment.yaml", "gemma-l4")])  # fmt: skip
def test_examples_at_zero_nodes_plan_a_scale_up_of_their_declared_pool(file, pool):
    done = subprocess.run(plan_command(file, "--manifests"), capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert (document["selection"]["pool"], document["selection"]["capacity"]) == (pool, "scale-up")
    assert any(pool in r and r.startswith("Capacity scale-up") for r in document["selection"]["reasons"])


@pytest.mark.parametrize("file, doc", CLASSES, ids=[f for f, _ in CLASSES])
def test_compute_class_matches_its_declared_pool(file, doc):
    """GKE's ComputeClass (a CRD kubernetes-validate does not know): its GPU priorities are the shape
    the capacity entry that selects it declares."""
    assert set(doc["spec"]) <= {"priorities", "nodePoolAutoCreation", "whenUnsatisfiable", "activeMigration",
                                "autoscalingPolicy", "priorityDefaults"}  # fmt: skip
    assert doc["spec"]["nodePoolAutoCreation"]["enabled"] is True
    assert doc["spec"]["whenUnsatisfiable"] in ("DoNotScaleUp", "ScaleUpAnyway")
    pools = yaml.safe_load((EXAMPLES / CAPACITY[file.split("/")[0]]).read_text())["pools"]
    (pool,) = [p for p in pools if p.get("nodeSelector", {}).get("cloud.google.com/compute-class") == doc["metadata"]["name"]]
    for priority in doc["spec"]["priorities"]:
        assert set(priority) <= {"machineType", "machineFamily", "spot", "gpu", "tpu", "minCores", "minMemoryGb", "storage"}
        assert priority["machineType"] == pool["machineType"]
        assert (priority["gpu"]["type"], priority["gpu"]["count"]) == (pool["accelerator"], pool["acceleratorCount"])
