"""Structural-schema handling of custom resources, in the real server's order: prune, default, validate.

``validate`` checks the OpenAPI schema, then, as kube-apiserver does, the CEL rules
(``x-kubernetes-validations``) with cel-python: every rule at the schema node it sits on, with
``self`` bound to the value there (the list itself for a rule on a list), only where that value
is present. Objects are bound as CEL maps with their declared properties (names escaped as
Kubernetes escapes them: ``-`` is ``__dash__``, ``namespace`` is ``__namespace__``, ...), so
``has(self.value)`` is false for an absent key. A failed rule is a ``FieldValueInvalid`` cause
(or the rule's ``reason``) at the node's path (plus the rule's ``fieldPath``) with the rule's
``message``, ``messageExpression`` or ``failed rule: <rule>``, worded as the real server words
it. Rules are skipped, with the server's "some validation rules were not checked" cause, when
the schema errors include one that blocks them (required, enum, type, maxLength, maxItems,
maxProperties). Rules are compiled once per expression.

Not emulated: ``oldSelf`` and transition rules, validation ratcheting, CEL's static type check
and cost limits (the unit tests bound the cost), the Kubernetes CEL libraries beyond standard
CEL (quantity, IP/CIDR, URL, regex ``find``, string extensions), list-type set/map equality in CEL (a
repeated list-map key is refused, as ``list_map_causes`` says), and
formats (neither as schema checks nor as CEL timestamp/duration/bytes values).
"""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
from typing import Any

import celpy
import celpy.celtypes as celtypes
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


# Schema errors after which kube-apiserver does not run the CEL rules (its hasBlockingErr):
# Required, NotSupported (enum), TypeInvalid, TooLong (maxLength), TooMany (maxItems/maxProperties).
_BLOCKING = {"required", "enum", "type", "maxLength", "maxItems", "maxProperties"}
# A switch kube-apiserver does not have: a test that needs a spec only the models refuse (to see
# the operator's own checks) turns the rules off with monkeypatch.setattr(schema, "CHECK_CEL", False).
CHECK_CEL = True
RULES_NOT_CHECKED = {
    "reason": "FieldValueInvalid", "field": "<nil>",
    "message": 'Invalid value: "null": some validation rules were not checked because the object was invalid; '
               "correct the existing errors to complete validation",
}


def validate(schema: dict, obj: dict) -> list[dict]:
    """The violations as Status causes (``field``, ``reason``, ``message``); empty when valid."""
    converted = _to_jsonschema(schema)
    props = dict(converted.get("properties") or {})
    props.pop("metadata", None)  # metadata is validated by the server's own rules
    converted["properties"] = props
    validator = jsonschema.Draft7Validator(converted)
    causes = []
    blocking = False
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        reason = {"required": "FieldValueRequired", "enum": "FieldValueNotSupported",
                  "type": "FieldValueTypeInvalid"}.get(error.validator, "FieldValueInvalid")
        message = error.message
        if error.validator == "required":  # as kube-apiserver says it: the missing field's path, "Required value"
            missing = next((name for name in error.validator_value
                            if isinstance(error.instance, dict) and name not in error.instance
                            and f"{name!r} is a required property" == error.message), None)  # fmt: skip
            if missing is not None:
                field, message = f"{field}.{missing}", "Required value"
        causes.append({"reason": reason, "message": message, "field": field.lstrip(".") or "<root>"})
        blocking = blocking or error.validator in _BLOCKING
    causes += list_map_causes(schema, obj)
    if not CHECK_CEL:
        pass
    elif blocking:
        causes.append(dict(RULES_NOT_CHECKED))
    else:
        causes += cel_causes(schema, _root_self(obj))
    return causes


def list_map_causes(schema: dict, value: Any, path: str = "") -> list[dict]:
    """`x-kubernetes-list-type: map`: an item repeating an earlier item's keys is refused, as kube-apiserver
    refuses it: a FieldValueDuplicate at its index (the message's wording is not the server's exactly)."""
    causes: list[dict] = []
    if isinstance(value, dict):
        for name, child in (schema.get("properties") or {}).items():
            if name in value:
                causes += list_map_causes(child, value[name], f"{path}.{name}")
    elif isinstance(value, list):
        items = schema.get("items") or {}
        keys = schema.get("x-kubernetes-list-map-keys") if schema.get("x-kubernetes-list-type") == "map" else None
        seen: set[str] = set()
        for i, item in enumerate(value):
            if keys and isinstance(item, dict):
                key = json.dumps({k: item.get(k) for k in keys if k in item}, separators=(",", ":"), sort_keys=True)
                if key in seen:
                    causes.append({"reason": "FieldValueDuplicate", "field": f"{path}[{i}]".lstrip("."),
                                   "message": f"Duplicate value: {key}"})  # fmt: skip
                seen.add(key)
            causes += list_map_causes(items, item, f"{path}[{i}]")
    return causes


# --- CEL (x-kubernetes-validations) --------------------------------------------------------------

class RuleCompileError(ValueError):
    """A CEL rule that does not parse: kube-apiserver would have refused the CRD."""


_lock = threading.Lock()
_env: celpy.Environment | None = None


@functools.lru_cache(maxsize=None)
def compile_rule(expression: str) -> celpy.Runner:
    """The runnable program of one CEL expression, compiled once."""
    global _env
    with _lock:  # celpy's parser is shared state
        if _env is None:
            _env = celpy.Environment()
        try:
            return _env.program(_env.compile(expression))
        except celpy.CELParseError as e:
            raise RuleCompileError(f"CEL rule {expression!r} does not compile: {e}") from e


def evaluate(expression: str, value: Any) -> Any:
    """The result of a CEL expression with ``self`` bound to ``value`` (already a CEL value)."""
    return compile_rule(expression).evaluate({"self": value})


# Kubernetes' escaping of property names (apiserver/pkg/cel/escaping.go).
_RESERVED = {"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
             "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"}
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}
_ESCAPED = re.compile(r"(__|[-./]|[^a-zA-Z0-9\-./_])")


def escape(name: str) -> str | None:
    """A property name as CEL sees it, or None when it cannot be accessed from CEL."""
    if not name or name[0].isdigit():
        return None
    if name in _RESERVED:
        return f"__{name}__"
    parts = _ESCAPED.split(name)
    if any(p and i % 2 and p not in _ESCAPES for i, p in enumerate(parts)):
        return None
    return "".join(_ESCAPES.get(p, p) if i % 2 else p for i, p in enumerate(parts))


def to_cel(schema: dict, value: Any) -> Any:
    """A JSON value as a CEL value typed by its schema node."""
    kind = schema.get("type")
    if value is None or schema.get("x-kubernetes-int-or-string") or kind is None:
        return celpy.json_to_cel(value)
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        if props is not None:
            return celtypes.MapType({celtypes.StringType(name): to_cel(props[key], item)
                                     for key, item in value.items()
                                     if key in props and (name := escape(key)) is not None})
        if isinstance(additional, dict):
            return celtypes.MapType({celtypes.StringType(key): to_cel(additional, item)
                                     for key, item in value.items()})
        return celpy.json_to_cel(value)
    if kind == "array" and isinstance(value, list):
        items = schema.get("items") or {}
        return celtypes.ListType([to_cel(items, item) for item in value])
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return celtypes.DoubleType(value)
    return celpy.json_to_cel(value)


def _root_self(obj: dict) -> dict:
    """The object as root rules see it: of metadata, only name and generateName."""
    meta = obj.get("metadata") or {}
    return {**obj, "metadata": {k: meta[k] for k in ("name", "generateName") if k in meta}}


def _present(schema: dict, value: Any) -> bool:
    """Rules run on values that are there and of the schema's type (a type error blocks them anyway)."""
    kind = schema.get("type")
    if value is None:
        return False
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    return True


def cel_causes(schema: dict, value: Any, path: str = "") -> list[dict]:
    """Status causes of the CEL rules that ``value`` fails, from this node down."""
    causes: list[dict] = []
    if not _present(schema, value):
        return causes
    rules = schema.get("x-kubernetes-validations") or []
    if rules:
        bound = to_cel(schema, value)
        for rule in rules:
            cause = _check(rule, bound, schema.get("type") or "object", path)
            if cause:
                causes.append(cause)
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in props.items():
            if key in value and not (path == "" and key == "metadata"):
                causes += cel_causes(sub, value[key], f"{path}.{key}" if path else key)
        additional = schema.get("additionalProperties")
        if isinstance(additional, dict):
            for key, item in value.items():
                if key not in props:
                    causes += cel_causes(additional, item, f"{path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            causes += cel_causes(schema["items"], item, f"{path}[{i}]")
    return causes


def _check(rule: dict, bound: Any, kind: str, path: str) -> dict | None:
    """The cause for one rule, or None when it holds; worded as kube-apiserver words it."""
    expression = rule["rule"]
    field = path + (rule.get("fieldPath") or "")
    field = field.lstrip(".") or "<nil>"
    try:
        result = evaluate(expression, bound)
    except RuleCompileError:
        raise
    except Exception as e:  # CELEvalError, or a celpy bug: the server reports it and goes on
        detail = e.args[0] if isinstance(e, celpy.CELEvalError) and e.args else e
        return {"reason": "FieldValueInvalid", "field": field,
                "message": f'Invalid value: "{kind}": {detail} evaluating rule: {expression.strip()}'}
    if not isinstance(result, celtypes.BoolType):
        return {"reason": "FieldValueInvalid", "field": field,
                "message": f'Invalid value: "{kind}": rule {expression.strip()!r} evaluated to {result!r}, not a bool'}
    if result:
        return None
    message = rule.get("message") or f"failed rule: {expression.strip()}"
    if rule.get("messageExpression"):
        try:
            computed = evaluate(rule["messageExpression"], bound)
            if isinstance(computed, celtypes.StringType) and computed.strip():
                message = str(computed)
        except Exception:  # noqa: BLE001 - the server falls back to message too
            pass
    reason = rule.get("reason") or "FieldValueInvalid"
    body = {"FieldValueForbidden": f"Forbidden: {message}",
            "FieldValueRequired": f"Required value: {message}",
            "FieldValueDuplicate": f'Duplicate value: "{kind}"'}.get(reason, f'Invalid value: "{kind}": {message}')
    return {"reason": reason, "field": field, "message": body}
