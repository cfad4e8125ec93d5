"""The CRD is generated from the models: pinned, structural, and as strict as the models."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any, Iterator, get_args

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ValidationError

from gemma_operator.api.status import PRINTER_COLUMNS, GemmaDeploymentStatus
from gemma_operator.api.v1alpha1 import (
    QUANTITY,
    GemmaDeploymentSpec,
    Quantization,
    Runtime,
    SizePolicy,
    Tuning,
)
from gemma_operator.crd import SchemaError, crd, crd_yaml, model_schema

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "gemma.dev_gemmadeployments.yaml"

# What a structural schema node may carry (after our generator; Kubernetes allows more).
NODE_KEYS = {
    "description",
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-validations",
    "default",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "nullable",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
}


def version() -> dict[str, Any]:
    (only,) = crd()["spec"]["versions"]
    return only


def schema() -> dict[str, Any]:
    return version()["schema"]["openAPIV3Schema"]


def nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (`.spec.model.id`, `.spec.env[]`, `.spec.nodeSelector.*`)."""
    yield path or ".", node
    for name, child in node.get("properties", {}).items():
        yield from nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from nodes(node["additionalProperties"], f"{path}.*")


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in (node.get("properties") or {}).values():
        yield from _walk(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _walk(node[key])


def at(path: str) -> dict[str, Any]:
    node = schema()
    for name in path.split("."):
        node = node["items"] if name == "items" else node["properties"][name]
    return node


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """A Kubernetes schema node as plain JSON Schema, for the `jsonschema` library.

    Unknown fields become errors (the API server would prune them silently), so a typo
    in a sample fails here instead of vanishing.
    """
    out = {
        key: value
        for key, value in node.items()
        if key not in {"properties", "items", "additionalProperties", "nullable"} and not key.startswith("x-")
    }
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(exclusive) is True:
            out[exclusive] = out.pop(bound)
    if "properties" in node:
        out["properties"] = {name: to_json_schema(child) for name, child in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    return out


def prune_nulls(value: Any, node: dict[str, Any]) -> Any:
    """What the API server does before validating: drop nulls of fields that are not nullable."""
    if isinstance(value, dict) and "properties" in node:
        fields = node["properties"]
        return {
            name: prune_nulls(item, fields.get(name, {}))
            for name, item in value.items()
            if item is not None or fields.get(name, {}).get("nullable")
        }
    if isinstance(value, list) and "items" in node:
        return [prune_nulls(item, node["items"]) for item in value]
    return value


def errors(obj: Any, node: dict[str, Any] | None = None) -> dict[str, str]:
    """Validation errors by path (`spec.env.0.name`), as the API server would report them."""
    node = schema() if node is None else node
    validator = jsonschema.Draft202012Validator(to_json_schema(node))
    return {".".join(map(str, e.absolute_path)): e.message for e in validator.iter_errors(prune_nulls(obj, node))}


# --- the committed file -----------------------------------------------------------


def test_committed_crd_matches_models():
    assert CRD_FILE.read_text() == crd_yaml(), (
        f"{CRD_FILE.relative_to(ROOT)} is out of date with gemma_operator/api/v1alpha1.py: run `make crds`"
    )


def test_yaml_round_trips():
    assert yaml.safe_load(crd_yaml()) == crd()


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_make_crds_writes_the_same_bytes_in_any_interpreter(hash_seed):
    """`make crds` runs `gemma-operator crds` in a fresh interpreter. With another string-hash
    seed, any order that comes from a set or a hash would change, and the pinned file drift."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-m", "gemma_operator", "crds"], capture_output=True, text=True,
                          env=env, check=True)  # fmt: skip
    assert done.stdout == crd_yaml(), f"the CRD changed with PYTHONHASHSEED={hash_seed}"


def test_crd_is_a_valid_kubernetes_object():
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(crd(), kubernetes_validate.latest_version(), strict=True)


# --- names, version, subresources, columns -----------------------------------------


def test_names_and_scope():
    definition = crd()
    assert definition["metadata"]["name"] == "gemmadeployments.gemma.dev"
    assert definition["spec"]["group"] == "gemma.dev"
    assert definition["spec"]["scope"] == "Namespaced"
    names = definition["spec"]["names"]
    assert names["kind"] == "GemmaDeployment"
    assert (names["plural"], names["singular"]) == ("gemmadeployments", "gemmadeployment")
    assert names["shortNames"] == ["gd"]
    assert names["categories"] == ["gemma"]
    assert (version()["name"], version()["served"], version()["storage"]) == ("v1alpha1", True, True)


def test_subresources():
    assert version()["subresources"] == {
        "status": {},
        # labelSelectorPath: `kubectl get --subresource=scale` and an HPA aimed at the resource find the pods.
        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                  "labelSelectorPath": ".status.selector"},
    }


def test_printer_columns():
    columns = version()["additionalPrinterColumns"]
    shown = [c["name"] for c in columns if not c.get("priority")]
    assert shown == ["Phase", "Model", "Runtime", "Accelerator", "Ready", "Replicas", "Desired", "Endpoint", "Age"]
    # `kubectl get -o wide`: what keeps the model from serving, and how long it has been loading.
    assert [c["name"] for c in columns if c.get("priority") == 1] == ["Reason", "Loading"]
    loading = next(c for c in columns if c["name"] == "Loading")
    assert (loading["type"], loading["jsonPath"]) == ("date", ".status.loadingSince")
    assert columns == PRINTER_COLUMNS
    assert {c["name"]: c["type"] for c in columns}["Age"] == "date"


def _column(status: dict[str, Any], json_path: str) -> str:
    """The two JSONPath forms the columns use: `.status.a.b` and `.status.conditions[?(@.type=="X")].f`."""
    import re

    match = re.fullmatch(r'\.status\.conditions\[\?\(@\.type=="(\w+)"\)\]\.(\w+)', json_path)
    if match:
        return next(c[match[2]] for c in status["conditions"] if c["type"] == match[1])
    value: Any = status
    for key in json_path.removeprefix(".status.").split("."):
        value = value[key]
    return value


@pytest.mark.parametrize(
    ("kind", "phase", "reason"),
    [("NoFit", "NoFit", "NoFit"), ("Invalid", "Invalid", "InvalidSpec"), ("ApplyFailed", "Degraded", "ApplyFailed")],
)
def test_phase_and_wide_reason_columns_show_what_blocks(kind, phase, reason):
    from gemma_operator import status

    computed = status.compute(status.Outcome(kind, "why"), generation=1, wanted_replicas=1, previous=None,
                              now="2026-01-01T00:00:00Z")
    by_name = {c["name"]: c["jsonPath"] for c in version()["additionalPrinterColumns"]}
    assert _column(computed, by_name["Phase"]) == phase
    assert _column(computed, by_name["Reason"]) == reason


# --- structure ----------------------------------------------------------------------


def test_top_level_shape():
    top = schema()
    assert top["type"] == "object"
    assert list(top["properties"]) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert top["properties"]["metadata"] == {"type": "object"}
    for path in (".", ".spec", ".status"):
        assert dict(nodes(top))[path].get("description"), f"{path} has no description for kubectl explain"


@pytest.mark.parametrize("path, node", list(nodes(schema())), ids=[path for path, _ in nodes(schema())])
def test_node_is_structural(path, node):
    assert set(node) <= NODE_KEYS, f"{path}: unexpected keys {sorted(set(node) - NODE_KEYS)}"
    assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path}: no type"
    assert node.get("additionalProperties") is not False, f"{path}: additionalProperties: false"
    assert not ("properties" in node and "additionalProperties" in node), f"{path}: properties and additionalProperties"
    assert set(node.get("required", [])) <= set(node.get("properties", {})), f"{path}: requires unknown fields"
    if node.get("x-kubernetes-preserve-unknown-fields"):
        assert node.get("type") == "object", f"{path}: preserve-unknown-fields on a non-object"
    # Decision: no nullable anywhere; the API server prunes nulls of non-nullable fields.
    assert "nullable" not in node, f"{path}: nullable"
    if "default" in node:
        assert isinstance(node["default"], (str, int, float, bool)), f"{path}: non-scalar default"
        assert not errors(node["default"], node), f"{path}: default does not validate against its own schema"


def test_no_json_schema_leftovers_anywhere():
    text = crd_yaml()
    for word in ("$ref", "$defs", "anyOf", "allOf", "oneOf", "title:"):
        assert word not in text, word


def test_conditions_are_a_map_keyed_by_type():
    conditions = at("status.conditions")
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


@pytest.mark.parametrize(
    "path, literal",
    [
        ("spec.runtime", Runtime),
        ("spec.quantization", Quantization),
        ("spec.model.tuning", Tuning),
        ("spec.model.sizePolicy", SizePolicy),
    ],
)
def test_enums(path, literal):
    assert at(path)["enum"] == list(get_args(literal))


@pytest.mark.parametrize(
    "path, expected",
    [
        ("spec.replicas", {"type": "integer", "minimum": 0, "maximum": 1000, "default": 1}),
        ("spec.runtime", {"type": "string", "default": "auto"}),
        ("spec.service.port", {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8000}),
        ("spec.model.id", {"type": "string", "maxLength": 193}),
        ("spec.hfTokenSecretRef", {"type": "object", "required": ["name"]}),
        ("spec.env", {"type": "array", "maxItems": 64}),
        ("spec.nodeSelector", {"type": "object", "maxProperties": 32, "additionalProperties": {"type": "string", "maxLength": 63}}),
        ("spec.resources.requests", {"type": "object", "additionalProperties": {
                "x-kubernetes-int-or-string": True, "maxLength": 64, "pattern": QUANTITY}}),
            ("spec.env", {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
            ("spec.env.items.valueFrom.secretKeyRef.key", {"type": "string", "maxLength": 253}),
        ("status.selection.estimatedMemoryGiB", {"type": "number"}),
    ],
)
def test_field(path, expected):
    node = at(path)
    assert {key: node.get(key) for key in expected} == expected


def test_env_value_from_is_typed_and_bounded():
    value_from = at("spec.env.items.valueFrom")
    assert "x-kubernetes-preserve-unknown-fields" not in value_from, "unknown fields would be unbounded"
    assert sorted(value_from["properties"]) == ["configMapKeyRef", "fieldRef", "resourceFieldRef", "secretKeyRef"]
    strings = [n for n in _walk(value_from) if n.get("type") == "string"]
    assert strings and all("maxLength" in n for n in strings)


@pytest.mark.parametrize("path", ["spec.model", "spec.service", "spec.env", "spec.nodeSelector", "status.conditions"])
def test_no_object_or_list_defaults(path):
    assert "default" not in at(path)


def test_unsupported_union_fails_loudly():
    class Bad(BaseModel):
        value: int | list[str]

    with pytest.raises(SchemaError, match="not structural"):
        model_schema(Bad, "bad")


# --- samples: the CRD accepts what the models accept --------------------------------

# (case, spec, where the one error is; None when the spec is valid)
SPECS = [
    ("empty", {}, None),
    ("spelled-out", {"model": {"family": "gemma3", "size": "4b", "tuning": "it", "sizePolicy": "smallest"}}, None),
    ("largest-that-fits", {"model": {"sizePolicy": "largest"}}, None),
    ("explicit-id", {"model": {"id": "google/gemma-3-4b-it"}}, None),
    ("cpu-llamacpp", {"runtime": "llamacpp", "quantization": "q4_0", "accelerator": "cpu"}, None),
    ("gpu-vllm", {"runtime": "vllm", "quantization": "bf16", "accelerator": "nvidia-l4", "maxModelLen": 8192}, None),
    ("scaled-to-zero", {"replicas": 0}, None),
    ("max-replicas", {"replicas": 1000}, None),
    ("token-secret", {"hfTokenSecretRef": {"name": "hf-token"}}, None),
    ("token-secret-key", {"hfTokenSecretRef": {"name": "hf.token", "key": "HF_TOKEN"}}, None),
    ("env-value", {"env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]}, None),
    ("env-value-from", {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}, None),
    ("resources", {"resources": {"requests": {"cpu": 2, "memory": "8Gi"}, "limits": {"nvidia.com/gpu": 1}}}, None),
    ("node-selector", {"nodeSelector": {"cloud.google.com/gke-nodepool": "gpu"}}, None),
    ("tolerations", {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}, None),
    ("service", {"service": {"type": "LoadBalancer", "port": 80}}, None),
    ("extra-args", {"extraArgs": ["--enable-prefix-caching"]}, None),
    ("image", {"image": "vllm/vllm-openai:v0.9.0"}, None),
    ("null-is-unset", {"image": None, "maxModelLen": None, "model": {"id": None}}, None),
    ("negative-replicas", {"replicas": -1}, "spec.replicas"),
    ("too-many-replicas", {"replicas": 1001}, "spec.replicas"),
    ("replicas-as-string", {"replicas": "2"}, "spec.replicas"),
    ("huge-extra-arg", {"extraArgs": ["y" * 100_000]}, "spec.extraArgs.0"),
    ("huge-node-selector-value", {"nodeSelector": {"pool": "z" * 100_000}}, "spec.nodeSelector.pool"),
    ("unknown-runtime", {"runtime": "foo"}, "spec.runtime"),
    ("unknown-quantization", {"quantization": "q3_k"}, "spec.quantization"),
    ("unknown-tuning", {"model": {"tuning": "chat"}}, "spec.model.tuning"),
    ("unknown-size-policy", {"model": {"sizePolicy": "biggest"}}, "spec.model.sizePolicy"),
    ("id-with-space", {"model": {"id": "a b"}}, "spec.model.id"),
    ("id-without-owner", {"model": {"id": "gemma-3-4b-it"}}, "spec.model.id"),
    ("uppercase-family", {"model": {"family": "Gemma3"}}, "spec.model.family"),
    ("accelerator-with-space", {"accelerator": "NVIDIA L4"}, "spec.accelerator"),
    ("zero-context", {"maxModelLen": 0}, "spec.maxModelLen"),
    ("typo-top-level", {"replica": 2}, "spec"),
    ("typo-nested", {"model": {"famliy": "gemma3"}}, "spec.model"),
    ("secret-without-name", {"hfTokenSecretRef": {"key": "token"}}, "spec.hfTokenSecretRef"),
    ("secret-bad-name", {"hfTokenSecretRef": {"name": "Bad_Name"}}, "spec.hfTokenSecretRef.name"),
    ("env-without-name", {"env": [{"value": "x"}]}, "spec.env.0"),
    ("env-bad-name", {"env": [{"name": "A B"}]}, "spec.env.0.name"),
    ("too-many-args", {"extraArgs": ["--x"] * 65}, "spec.extraArgs"),
    ("arg-not-a-string", {"extraArgs": [1]}, "spec.extraArgs.0"),
    ("fractional-quantity", {"resources": {"requests": {"cpu": 1.5}}}, "spec.resources.requests.cpu"),
    ("node-selector-not-string", {"nodeSelector": {"pool": 1}}, "spec.nodeSelector.pool"),
    ("toleration-bad-operator", {"tolerations": [{"operator": "In"}]}, "spec.tolerations.0.operator"),
    ("service-port-zero", {"service": {"port": 0}}, "spec.service.port"),
    ("service-bad-type", {"service": {"type": "Ingress"}}, "spec.service.type"),
    ("image-with-space", {"image": "vllm openai"}, "spec.image"),
    ("huge-quantity", {"resources": {"requests": {"memory": "1" * 100_000}}}, "spec.resources.requests.memory"),
    ("not-a-quantity", {"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory"),
    ("huge-value-from", {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k" * 100_000}}}]},
     "spec.env.0.valueFrom.secretKeyRef.key"),
    ("huge-field-path", {"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "m" * 100_000}}}]},
     "spec.env.0.valueFrom.fieldRef.fieldPath"),
    ("value-from-unknown-source", {"env": [{"name": "X", "valueFrom": {"hostFileRef": {"path": "/etc/shadow"}}}]},
     "spec.env.0.valueFrom"),
]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        # The CRD declares env a list-map keyed by name: the API server refuses these as well.
        ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "env names must be unique; repeated: A"),
        ({"env": [{"name": "X", "valueFrom": {}}]}, "valueFrom needs exactly one"),
        ({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"},
                                              "secretKeyRef": {"name": "s", "key": "k"}}}]}, "valueFrom needs exactly one"),
        # Map keys: a CEL rule in the CRD (tests/unit/test_crd_cel.py), a key constraint here.
        ({"nodeSelector": {"k" * 100_000: "v"}}, "at most 317 characters"),
        ({"resources": {"requests": {"not a resource": "1"}}}, "should match pattern"),
    ],
)
def test_model_refuses_what_the_schema_alone_cannot(spec, message):
    with pytest.raises(ValidationError, match=message):
        GemmaDeploymentSpec.model_validate(spec)

SELECTION = {
    "modelId": "google/gemma-3-4b-it",
    "servedModelName": "gemma-3-4b-it",
    "family": "gemma3",
    "size": "4b",
    "tuning": "it",
    "quantization": "bf16",
    "dtype": "bfloat16",
    "runtime": "vllm",
    "image": "vllm/vllm-openai:v0.9.0",
    "accelerator": "nvidia-l4",
    "acceleratorCount": 1,
    "tensorParallelSize": 1,
    "maxModelLen": 32768,
    "estimatedMemoryGiB": 13.5,
    "pool": "gpu-l4",
    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "reasons": ["gemma3 is the latest core family."],
}
READY = {"type": "Ready", "status": "True", "reason": "Serving", "message": "1 of 1 replicas ready."}

# (case, status, where the one error is; None when the status is valid)
STATUSES = [
    ("empty", {}, None),
    ("planning", {"observedGeneration": 1, "phase": "Planning", "conditions": [{**READY, "status": "False"}]}, None),
    (
        "ready",
        {
            "observedGeneration": 2,
            "phase": "Ready",
            "conditions": [READY],
            "selection": SELECTION,
            "endpoint": "http://chat.default.svc.cluster.local:8000/v1",
            "replicas": 1,
            "readyReplicas": 1,
        },
        None,
    ),
    ("unknown-phase", {"phase": "Running"}, "status.phase"),
    ("condition-bad-status", {"conditions": [{**READY, "status": "Maybe"}]}, "status.conditions.0.status"),
    ("condition-without-reason", {"conditions": [{"type": "Ready", "status": "True"}]}, "status.conditions.0"),
    ("selection-without-model", {"selection": {**SELECTION, "modelId": None}}, "status.selection"),
    ("unknown-field", {"kopf": {"progress": {}}}, "status"),
]

def resource(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "metadata": {"name": "chat"}}
    if spec is not None:
        obj["spec"] = spec
    if status is not None:
        obj["status"] = status
    return obj


def model_accepts(model: type[BaseModel], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValidationError:
        return False
    return True


def test_converted_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(to_json_schema(schema()))


@pytest.mark.parametrize("name, spec, error_at", SPECS, ids=[case[0] for case in SPECS])
def test_crd_validates_spec(name, spec, error_at):
    found = errors(resource(spec=spec))
    assert list(found) == ([] if error_at is None else [error_at]), found


@pytest.mark.parametrize("name, spec, error_at", SPECS, ids=[case[0] for case in SPECS])
def test_model_agrees_on_spec(name, spec, error_at):
    assert model_accepts(GemmaDeploymentSpec, spec) == (error_at is None)


@pytest.mark.parametrize("name, status, error_at", STATUSES, ids=[case[0] for case in STATUSES])
def test_crd_validates_status(name, status, error_at):
    found = errors(resource(spec={}, status=status))
    assert list(found) == ([] if error_at is None else [error_at]), found


@pytest.mark.parametrize("name, status, error_at", STATUSES, ids=[case[0] for case in STATUSES])
def test_model_agrees_on_status(name, status, error_at):
    assert model_accepts(GemmaDeploymentStatus, status) == (error_at is None)


@pytest.mark.parametrize(
    "obj, valid",
    [
        (resource(), True),
        ({**resource(spec={}), "metadata": {"name": "chat", "labels": {"team": "ml"}}}, True),
        ({**resource(spec={}), "kind": 1}, False),
        ({**resource(), "spec": "gemma"}, False),
    ],
    ids=["no-spec", "metadata-is-open", "kind-not-string", "spec-not-object"],
)
def test_crd_validates_resource(obj, valid):
    assert (not errors(obj)) == valid


def test_every_spec_field_is_bounded():
    """A 100 KB string (or a million items) fits nowhere in a spec: every string has a maxLength
    (or an enum), every list a maxItems, every map a maxProperties and a rule bounding its keys."""
    unbounded = []

    def walk(node: dict[str, Any], where: str) -> None:
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(f"{where}: string without maxLength")
        if node.get("x-kubernetes-int-or-string") and "maxLength" not in node:
            unbounded.append(f"{where}: int-or-string without maxLength")
        if kind == "array":
            if "maxItems" not in node:
                unbounded.append(f"{where}: list without maxItems")
            walk(node["items"], f"{where}[]")
        if node.get("x-kubernetes-preserve-unknown-fields"):
            unbounded.append(f"{where}: unknown fields kept")
        if isinstance(node.get("additionalProperties"), dict):
            rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
            if "maxProperties" not in node or not any(r.startswith("self.all(k, size(k) <= ") for r in rules):
                unbounded.append(f"{where}: map without maxProperties or a key-length rule")
            walk(node["additionalProperties"], f"{where}.*")
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{where}.{name}")

    walk(at("spec"), "spec")
    assert not unbounded, unbounded
