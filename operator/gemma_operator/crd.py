"""The GemmaDeployment CustomResourceDefinition, generated from the pydantic models.

Pydantic emits JSON Schema (2020-12): `$ref`s into `$defs`, `anyOf` for optional and
union types, `title`s, and `additionalProperties: false` for `extra="forbid"`. Kubernetes
wants a *structural* OpenAPI v3 schema: every node typed, no references, no unions
except int-or-string. `_structural` rewrites one into the other and refuses anything it
does not understand, so a model change that cannot be expressed fails loudly here
instead of producing a CRD the API server rejects.

Decisions:
- `X | None` becomes plain `X`, without `nullable`. None means "not set" in the models,
  and the API server prunes explicit nulls of non-nullable fields, so `image: null`
  behaves like leaving `image` out and no nulls are ever stored.
- Only scalar defaults are kept. Object and list defaults (`default_factory`) stay in
  the models, so the API server does not write a whole sub-tree into every object.
"""

from __future__ import annotations

import json

from typing import Any

import yaml

from gemma_operator.api.status import PRINTER_COLUMNS, GemmaDeploymentStatus
from gemma_operator.api.v1alpha1 import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    GemmaDeploymentSpec,
)

CATEGORIES = ["gemma"]

DESCRIPTION = (
    "GemmaDeployment serves a Gemma model behind an OpenAI-compatible API. The operator "
    "reads the cluster's nodes, picks the model variant, quantization, runtime and "
    "accelerator that fit, and runs it as a Deployment and a Service."
)
SPEC_DESCRIPTION = (
    "What to serve. Every field is optional: auto values are resolved by the operator "
    "and the result is reported in status.selection."
)
STATUS_DESCRIPTION = (
    "What the operator chose and observed: the selection and why, kstatus conditions "
    "(Ready, Progressing, Stalled), the endpoint and replica counts."
)

# JSON Schema keywords copied as they are; Kubernetes accepts them on typed nodes.
_VALUE_KEYWORDS = (
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
    "x-kubernetes-validations",  # CEL rules, for what the schema alone cannot say
)
# Keywords consumed by the rewrite, or dropped on purpose.
_HANDLED_KEYWORDS = {
    "$ref",
    "$defs",
    "anyOf",
    "allOf",
    "const",
    "type",
    "title",
    "description",
    "default",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "propertyNames",  # with patternProperties, becomes a CEL rule: structural schemas can't constrain keys
    "patternProperties",
}
_SCALARS = (str, int, float, bool)


class SchemaError(ValueError):
    """A pydantic schema construct that has no structural Kubernetes equivalent."""


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Flattens `$ref`, single-member `allOf` and `anyOf` into one node.

    Keys on the node itself (description, default) win over the referenced ones:
    they describe the field, the referenced schema describes the type.
    """
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").removeprefix("#/$defs/")
        return _resolve({**defs[name], **node}, defs)
    if "allOf" in node:
        members = node.pop("allOf")
        if len(members) != 1:
            raise SchemaError(f"allOf with {len(members)} members is not structural")
        return _resolve({**_resolve(members[0], defs), **node}, defs)
    if "anyOf" in node:
        members = [_resolve(m, defs) for m in node.pop("anyOf")]
        members = [m for m in members if m.get("type") != "null"]
        if len(members) == 1:
            return _resolve({**members[0], **node}, defs)
        types = sorted(m.get("type") for m in members)
        if types == ["integer", "string"] and all(len(m) == 1 for m in members if m.get("type") == "integer"):
            # int-or-string; the string's own bounds (maxLength, pattern) stay on the node.
            string = next(m for m in members if m.get("type") == "string")
            return {**{k: v for k, v in string.items() if k != "type"}, **node, "x-kubernetes-int-or-string": True}
        raise SchemaError(f"anyOf {members!r} is not structural (only X | None and int | str are)")
    return node


def _key_rule(names: dict[str, Any], where: str) -> dict[str, str]:
    """A map's key constraints (pydantic's propertyNames) as a CEL rule over the keys."""
    unknown = set(names) - {"type", "maxLength", "pattern"}
    if unknown or "maxLength" not in names:
        raise SchemaError(f"{where}: map keys need a maxLength (and only maxLength/pattern), got {names}")
    checks = [f"size(k) <= {names['maxLength']}"]
    message = f"keys are at most {names['maxLength']} characters"
    if "pattern" in names:
        checks.append(f"k.matches({json.dumps(names['pattern'])})")
        message += " and qualified names (an optional DNS-subdomain prefix and '/', then a name)"
    return {"rule": f"self.all(k, {' && '.join(checks)})", "message": message}


def _structural(node: dict[str, Any], defs: dict[str, Any], where: str) -> dict[str, Any]:
    """One pydantic JSON-schema node -> one structural OpenAPI v3 node."""
    node = _resolve(node, defs)
    unknown = set(node) - _HANDLED_KEYWORDS - set(_VALUE_KEYWORDS) - {"x-kubernetes-int-or-string"}
    if unknown:
        raise SchemaError(f"{where}: unsupported keywords {sorted(unknown)}")
    if "const" in node:
        node.setdefault("enum", [node.pop("const")])

    out: dict[str, Any] = {}
    if "description" in node:
        out["description"] = node["description"]
    if node.get("x-kubernetes-int-or-string"):
        out["x-kubernetes-int-or-string"] = True
    elif "type" in node:
        if not isinstance(node["type"], str):
            raise SchemaError(f"{where}: type {node['type']!r} is not a single type")
        out["type"] = node["type"]
    else:
        raise SchemaError(f"{where}: no type")
    for key in _VALUE_KEYWORDS:
        if key in node:
            out[key] = node[key]
    # OpenAPI v3.0 (what Kubernetes speaks) has boolean exclusive bounds.
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if not isinstance(out.get(exclusive, True), bool):
            out[bound] = out[exclusive]
            out[exclusive] = True
    if isinstance(node.get("default"), _SCALARS):
        out["default"] = node["default"]

    kind = out.get("type")
    if kind == "object":
        properties = node.get("properties")
        extra = node.get("additionalProperties", True)
        names = dict(node.get("propertyNames") or {})
        if "patternProperties" in node:  # pydantic's dict[ConstrainedKey, V]: one pattern, no other keys
            (pattern, extra), *more = node["patternProperties"].items()
            if more or "additionalProperties" in node or properties is not None:
                raise SchemaError(f"{where}: patternProperties is only supported as a map's key pattern")
            names["pattern"] = pattern
        if properties is not None:
            if node.get("required"):
                out["required"] = list(node["required"])
            out["properties"] = {
                name: _structural(child, defs, f"{where}.{name}") for name, child in properties.items()
            }
            # additionalProperties must not sit next to properties; false is the
            # Kubernetes default anyway (unknown fields are pruned).
            if extra is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict):
            out["additionalProperties"] = _structural(extra, defs, f"{where}.*")
            if names:
                out.setdefault("x-kubernetes-validations", []).append(_key_rule(names, where))
        elif extra is True:
            out["x-kubernetes-preserve-unknown-fields"] = True
    elif kind == "array":
        if "items" not in node:
            raise SchemaError(f"{where}: array without items")
        out["items"] = _structural(node["items"], defs, f"{where}[]")
    return out


def model_schema(model: type, where: str) -> dict[str, Any]:
    """The structural schema of a pydantic model, by alias (the camelCase names users write)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}), where)


def _spec_schema() -> dict[str, Any]:
    schema = {"description": SPEC_DESCRIPTION, **model_schema(GemmaDeploymentSpec, "spec")}
    # Environment variables are keyed by name, as in a container: the server refuses duplicates.
    # So are adapters: each name is a served model name.
    for keyed in ("env", "adapters"):
        schema["properties"][keyed]["x-kubernetes-list-type"] = "map"
        schema["properties"][keyed]["x-kubernetes-list-map-keys"] = ["name"]
    return schema


def _status_schema() -> dict[str, Any]:
    schema = {"description": STATUS_DESCRIPTION, **model_schema(GemmaDeploymentStatus, "status")}
    # Conditions are keyed by type, so server-side apply merges them per condition.
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def open_api_schema() -> dict[str, Any]:
    """The openAPIV3Schema of the v1alpha1 version."""
    return {
        "description": DESCRIPTION,
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "Versioned schema of this representation of an object.",
                "type": "string",
            },
            "kind": {"description": "REST resource this object represents.", "type": "string"},
            "metadata": {"type": "object"},
            "spec": _spec_schema(),
            "status": _status_schema(),
        },
    }


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition of GemmaDeployment, as a plain dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": list(CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": open_api_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": [dict(column) for column in PRINTER_COLUMNS],
                }
            ],
        },
    }


HEADER = "# Generated from gemma_operator.api.v1alpha1 by `make crds`. Do not edit.\n"


def crd_yaml() -> str:
    """The CRD as YAML, byte-stable for a given set of models (committed under crds/)."""
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)
