"""Structural-schema handling of custom resources, in the real server's order: prune, default, validate.

CEL rules (``x-kubernetes-validations``) and formats are not checked.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

ROOT_KEEP = {"apiVersion", "kind", "metadata"}


def prune(schema: dict, value: Any, root: bool = True) -> Any:
    """Drop fields the schema does not declare, unless it preserves unknown fields."""
    if isinstance(value, dict) and schema.get("type") == "object" or (root and isinstance(value, dict)):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for key in list(value):
            if root and key in ROOT_KEEP:
                continue
            if key in props:
                value[key] = prune(props[key], value[key], root=False)
            elif isinstance(additional, dict):
                value[key] = prune(additional, value[key], root=False)
            elif not preserve and additional is not True:
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [prune(schema["items"], item, root=False) for item in value]
    return value


def default(schema: dict, value: Any) -> Any:
    """Fill ``default`` for absent properties of objects that are present."""
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = default(sub, value[key])
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key in value:
                if key not in (schema.get("properties") or {}):
                    value[key] = default(additional, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        value[:] = [default(schema["items"], item) for item in value]
    return value


def _to_jsonschema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    result = {k: _to_jsonschema(v) for k, v in node.items()
              if not k.startswith("x-kubernetes-") and k not in ("nullable", "format", "default")}
    if node.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in result:
        result["type"] = [result["type"], "null"]
    if node.get("x-kubernetes-preserve-unknown-fields") and "type" not in result and "anyOf" not in result:
        pass  # anything goes
    return result


def validate(schema: dict, obj: dict) -> list[dict]:
    """The violations as Status causes (``field``, ``reason``, ``message``); empty when valid."""
    converted = _to_jsonschema(schema)
    props = dict(converted.get("properties") or {})
    props.pop("metadata", None)  # metadata is validated by the server's own rules
    converted["properties"] = props
    validator = jsonschema.Draft7Validator(converted)
    causes = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        reason = {"required": "FieldValueRequired", "enum": "FieldValueNotSupported",
                  "type": "FieldValueTypeInvalid"}.get(error.validator, "FieldValueInvalid")
        causes.append({"reason": reason, "message": error.message, "field": field.lstrip(".") or "<root>"})
    return causes
