"""Field paths, merge patches and server-side apply, as the emulator needs them.

A path is a tuple of segments: a ``str`` is a map key; a ``Key`` picks an item of an
associative list (``x-kubernetes-list-type: map``) by its key fields. Atomic lists and
scalars are leaves. This is the model behind ``metadata.managedFields`` (FieldsV1).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any

Path = tuple[Any, ...]
ListKeys = Callable[[Path], tuple[str, ...] | None]

# Fields the API server never puts under field management.
UNMANAGED = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "generation"),
    ("metadata", "creationTimestamp"),
    ("metadata", "deletionTimestamp"),
    ("metadata", "deletionGracePeriodSeconds"),
    ("metadata", "managedFields"),
    ("metadata", "selfLink"),
}

# Key fields that have a server-side default, so an item without them still has a key.
KEY_DEFAULTS = {"protocol": "TCP"}


class Key(tuple):
    """An associative-list item selector: a sorted tuple of (field, value) pairs."""

    def encode(self) -> str:
        return "k:" + json.dumps(dict(self), separators=(",", ":"), sort_keys=True)

    def matches(self, item: Any) -> bool:
        return isinstance(item, dict) and all(
            item.get(field, KEY_DEFAULTS.get(field)) == value for field, value in self
        )


def make_key(item: dict, keys: tuple[str, ...]) -> Key:
    return Key(sorted((k, item.get(k, KEY_DEFAULTS.get(k))) for k in keys))


def field_names(path: Path) -> tuple[str, ...]:
    """The path with list items replaced by '[]', for schema/table lookups."""
    return tuple("[]" if isinstance(seg, Key) else seg for seg in path)


# --- Built-in associative lists (merge keys of the real API types). ---------------------------

def builtin_list_keys(path: Path) -> tuple[str, ...] | None:
    names = field_names(path)
    last = names[-1] if names else None
    parent = names[-3] if len(names) >= 3 else None  # e.g. containers in (.., containers, [], ports)
    if last in ("containers", "initContainers", "ephemeralContainers"):
        return ("name",)
    if last in ("env", "volumes", "imagePullSecrets"):
        return ("name",)
    if last == "volumeMounts":
        return ("mountPath",)
    if last == "ports":
        if parent in ("containers", "initContainers", "ephemeralContainers"):
            return ("containerPort", "protocol")
        return ("port", "protocol")  # Service ports
    if last == "conditions":
        return ("type",)
    if names == ("metadata", "ownerReferences"):
        return ("uid",)
    return None


def schema_list_keys(schema: dict | None) -> dict[tuple[str, ...], tuple[str, ...]]:
    """Collect ``x-kubernetes-list-type: map`` lists from a CRD's openAPIV3Schema."""
    found: dict[tuple[str, ...], tuple[str, ...]] = {}

    def walk(node: Any, names: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-list-type") == "map":
            found[names] = tuple(node.get("x-kubernetes-list-map-keys", []))
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, names + (name,))
        if isinstance(node.get("items"), dict):
            walk(node["items"], names + ("[]",))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], names + ("*",))

    walk(schema, ())
    return found


# --- Field sets. -------------------------------------------------------------------------------

def fieldset(value: Any, list_keys: ListKeys, path: Path = ()) -> set[Path]:
    """The leaf paths (and associative-list items) that a value sets."""
    if path in UNMANAGED:
        return set()
    if isinstance(value, dict):
        if not value and path:
            return {path}
        result: set[Path] = set()
        for k, v in value.items():
            if v is None:
                continue
            result |= fieldset(v, list_keys, path + (k,))
        return result
    if isinstance(value, list):
        keys = list_keys(path)
        if keys and value and all(isinstance(item, dict) for item in value):
            result = set()
            for item in value:
                item_path = path + (make_key(item, keys),)
                result.add(item_path)
                result |= fieldset(item, list_keys, item_path)
            return result
        return {path}
    return {path}


def encode_fields(paths: Iterable[Path]) -> dict:
    tree: dict = {}
    for path in sorted(paths, key=lambda p: [str(s) for s in p]):
        node = tree
        for seg in path:
            node = node.setdefault(seg.encode() if isinstance(seg, Key) else f"f:{seg}", {})
        if path and isinstance(path[-1], Key):
            node.setdefault(".", {})
    return tree


def decode_fields(tree: dict, path: Path = ()) -> set[Path]:
    result: set[Path] = set()
    if not tree and path:
        return {path}
    for name, sub in tree.items():
        if name == ".":
            result.add(path)
        elif name.startswith("f:"):
            result |= decode_fields(sub, path + (name[2:],))
        elif name.startswith("k:"):
            result |= decode_fields(sub, path + (Key(sorted(json.loads(name[2:]).items())),))
        # "v:" (sets) and "i:" (indexes) are not produced by this emulator.
    return result


# --- Path access. ------------------------------------------------------------------------------

_MISSING = object()


def get_path(obj: Any, path: Path) -> Any:
    node = obj
    for seg in path:
        if isinstance(seg, Key):
            if not isinstance(node, list):
                return _MISSING
            node = next((item for item in node if seg.matches(item)), _MISSING)
        else:
            if not isinstance(node, dict) or seg not in node:
                return _MISSING
            node = node[seg]
        if node is _MISSING:
            return _MISSING
    return node


def has_path(obj: Any, path: Path) -> bool:
    return get_path(obj, path) is not _MISSING


def delete_path(obj: Any, path: Path) -> None:
    """Remove a leaf or list item, then prune maps and lists it leaves empty."""
    if not path:
        return
    parent = get_path(obj, path[:-1])
    seg = path[-1]
    if isinstance(seg, Key) and isinstance(parent, list):
        parent[:] = [item for item in parent if not seg.matches(item)]
    elif isinstance(parent, dict):
        parent.pop(seg, None)
    else:
        return
    if len(path) > 2 and parent in ({}, []):
        delete_path(obj, path[:-1])


# --- Merging. ----------------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(target: Any, patch: Any, list_keys: ListKeys, path: Path = ()) -> Any:
    """A strategic merge patch without ``$patch``/``$setElementOrder`` directives.

    Maps merge as in a JSON merge patch; lists with merge keys merge item by item; other lists
    are replaced.
    """
    if isinstance(patch, dict):
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for k, v in patch.items():
            if v is None:
                result.pop(k, None)
            else:
                result[k] = strategic_merge_patch(result.get(k), v, list_keys, path + (k,))
        return result
    if isinstance(patch, list) and isinstance(target, list):
        merged = _merge_keyed_list(target, patch, list_keys, path, strategic_merge_patch)
        if merged is not None:
            return merged
    return copy.deepcopy(patch)


def _merge_keyed_list(live: list, incoming: list, list_keys: ListKeys, path: Path, merge) -> list | None:
    """Merge a list whose items have merge keys item by item (None for an atomic list)."""
    keys = list_keys(path)
    if not keys or not all(isinstance(item, dict) for item in incoming + live):
        return None
    result_list = copy.deepcopy(live)
    for item in incoming:
        key = make_key(item, keys)
        for index, existing in enumerate(result_list):
            if key.matches(existing):
                result_list[index] = merge(existing, item, list_keys, path + (key,))
                break
        else:
            result_list.append(copy.deepcopy(item))
    return result_list


def _apply_keyed_list(live: list, applied: list, list_keys: ListKeys, path: Path) -> list | None:
    """An associative list merged as server-side apply orders it (structured-merge-diff's
    typed/merge.go, mergingWalker.visitListItems): the applied items keep the order applied, an
    item new to the list lands where it was applied (not at the end), and a live item the apply
    does not name keeps its place among them. None for an atomic list."""
    keys = list_keys(path)
    if not keys or not all(isinstance(item, dict) for item in applied + live):
        return None
    live_keys = [make_key(item, keys) for item in live]
    applied_keys = [make_key(item, keys) for item in applied]
    live_by_key = dict(zip(live_keys, live, strict=True))
    applied_by_key = dict(zip(applied_keys, applied, strict=True))
    shared = [key for key in applied_keys if key in live_by_key]  # items in both, in the applied order
    next_shared = shared.pop(0) if shared else None
    merged: set[Key] = set()
    out = []

    def take(key: Key) -> None:
        item = live_by_key.get(key)
        out.append(apply_merge(item, applied_by_key[key], list_keys, path + (key,)) if item is not None
                   else copy.deepcopy(applied_by_key[key]))  # fmt: skip

    li = ri = 0
    while li < len(live_keys) or ri < len(applied_keys):
        if li < len(live_keys) and ri < len(applied_keys):
            key = live_keys[li]
            if key == applied_keys[ri]:  # in both, at the same turn: merged
                merged.add(key)
                take(key)
                li, ri = li + 1, ri + 1
                next_shared = shared.pop(0) if shared else None
                continue
            if key in applied_by_key and next_shared is not None and next_shared != key:
                li += 1  # applied, but later: it comes in the applied order
                continue
        if li < len(live_keys):
            key = live_keys[li]
            if key not in applied_by_key:  # not applied: stays where it is
                out.append(copy.deepcopy(live[li]))
                li += 1
                continue
            if key in merged:
                li += 1
        if ri < len(applied_keys):
            key = applied_keys[ri]
            merged.add(key)
            take(key)
            ri += 1
            if next_shared is not None and next_shared == key:
                next_shared = shared.pop(0) if shared else None
    return out


def apply_merge(live: Any, applied: Any, list_keys: ListKeys, path: Path = ()) -> Any:
    """Merge an applied configuration into the live object (SSA's merge step)."""
    if isinstance(applied, dict) and isinstance(live, dict):
        result = copy.deepcopy(live)
        for k, v in applied.items():
            if v is None:
                continue
            result[k] = apply_merge(live.get(k), v, list_keys, path + (k,))
        return result
    if isinstance(applied, list) and isinstance(live, list):
        merged = _apply_keyed_list(live, applied, list_keys, path)
        if merged is not None:
            return merged
    return copy.deepcopy(applied)


def dotted(path: Path) -> str:
    """A path as the API server prints it in conflict messages: .spec.containers[name="x"].image"""
    out = ""
    for seg in path:
        if isinstance(seg, Key):
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in seg) + "]"
        else:
            out += f".{seg}"
    return out
