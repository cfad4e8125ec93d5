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
    "02-helm-gke/gemma-l4.yaml": "gke-l4",
    "02-helm-gke/gemma-tpu-v5e.yaml": "gke-tpu-v5e-2x2",
    "03-argocd/gemmadeployments/chat.yaml": "gke-l4",
    "03-argocd/gemmadeployments/code.yaml": "gke-l4",
    "04-cpu-llamacpp/gemmadeployment.yaml": "gke-cpu-only",
    "05-tpu-v5e/gemmadeployment.yaml": "gke-tpu-v5e-2x2",
    "06-gated-model-hf-token/gemmadeployment.yaml": "gke-l4",
}


def name(path: pathlib.Path) -> str:
    return path.relative_to(EXAMPLES).as_posix()


def is_values(path: pathlib.Path) -> bool:
    return path.name.endswith("-values.yaml")


DOCS = [
    (name(path), index, doc)
    for path in FILES
    if not is_values(path)
    for index, doc in enumerate(yaml.safe_load_all(path.read_text()))
    if doc is not None
]
GEMMAS = [(file, doc) for file, _, doc in DOCS if doc.get("kind") == KIND]
APPLICATIONS = [(file, doc) for file, _, doc in DOCS if doc.get("apiVersion") == "argoproj.io/v1alpha1"]
OTHERS = [(file, doc) for file, _, doc in DOCS if (file, doc) not in GEMMAS + APPLICATIONS]


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
    done = subprocess.run(
        [sys.executable, "-m", "gemma_operator", "plan", "-f", str(EXAMPLES / file),
         "--nodes", str(NODES / f"{fixture}.yaml"), "-o", "json"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    selection = json.loads(done.stdout)["selection"]
    spec = yaml.safe_load((EXAMPLES / file).read_text())["spec"] or {}
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
    """None today (Secrets are made with kubectl); any Kubernetes object added later is checked here."""
    for file, doc in OTHERS:
        try:
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            pytest.fail(f"{file}: {doc.get('kind')}: {getattr(exc, 'message', exc)}")
