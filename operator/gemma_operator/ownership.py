"""Field ownership of children created on first sight. Pure: kube.py sends what this returns.

A child absent from the operator's index is created (POST, fieldManager `gemma-operator`) rather
than applied: a create costs the API server less than a server-side apply (bench/README.md). The
server records the create's fields under our manager with operation `Update`, and a later apply by
the same manager name gets an entry of its own (`Apply`): a field a newer rendering drops would stay
owned by the Update entry, and never be removed. So before the first re-apply of such a child one
JSON patch on `metadata.managedFields` makes the Update entry the Apply entry, as kubectl's
client-side -> server-side upgrade does (k8s.io/client-go/util/csaupgrade); then the apply owns,
and can drop, every field the create set. The burst of creates pays nothing for it: only a change.
https://kubernetes.io/docs/reference/using-api/server-side-apply/#upgrading-from-client-side-apply-to-server-side-apply
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MANAGER = "gemma-operator"  # kube.MANAGER (kube.py imports nothing of ours but the API names)


def _ours(entry: Mapping[str, Any], operation: str) -> bool:
    return entry.get("manager") == MANAGER and entry.get("operation") == operation and not entry.get("subresource")


def index_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as the indices keep it: managedFields left out (the largest part of it, and unread),
    except, while our create's Update entry is there, who holds each entry and, when we hold an Apply
    entry too, the field sets of our two (what `upgrade` needs)."""
    kept = {k: v for k, v in meta.items() if k != "managedFields"}
    entries = meta.get("managedFields") or []
    if any(_ours(entry, "Update") for entry in entries):
        both = any(_ours(entry, "Apply") for entry in entries)
        kept["managedFields"] = [{k: v for k, v in entry.items() if k in ("manager", "operation", "subresource")
                                  or (both and _ours(entry, entry.get("operation", "")))}
                                 for entry in entries]  # fmt: skip
    return kept


def _union(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two FieldsV1 sets (tries of nested objects) as one."""
    merged = dict(a)
    for key, value in b.items():
        merged[key] = _union(merged[key], value) if key in merged else value
    return merged


def upgrade(entries: Sequence[Mapping[str, Any]] | None,
            resource_version: str | None) -> tuple[dict[str, Any], ...] | None:  # fmt: skip
    """The JSON patch that hands our Update entry to our Apply entry, only at `resource_version`
    (a 422 otherwise: execute makes it a conflict, retried on a fresher copy); None when there is no
    such Update entry. With
    no Apply entry of ours the Update entry becomes it, in place. With both (a create that lost a
    race to another reconcile's, then an apply), the Apply entry takes the union of the two field
    sets and the Update entry goes (`index_metadata` keeps the two's entries whole then). () when
    that cannot be said (no version, or no field sets): nothing to send."""
    entries = list(entries or ())
    update = next((n for n, entry in enumerate(entries) if _ours(entry, "Update")), None)
    if update is None:
        return None
    if resource_version is None:
        return ()
    at = f"/metadata/managedFields/{update}"
    checks = ({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version},
              {"op": "test", "path": f"{at}/manager", "value": MANAGER},
              {"op": "test", "path": f"{at}/operation", "value": "Update"})  # fmt: skip
    apply = next((n for n, entry in enumerate(entries) if _ours(entry, "Apply")), None)
    if apply is None:
        return (*checks, {"op": "replace", "path": f"{at}/operation", "value": "Apply"})
    if any("fieldsV1" not in entries[n] for n in (update, apply)):
        return ()
    # Only our two entries are touched: the others' field sets are not in the index's copy.
    union = _union(entries[apply]["fieldsV1"], entries[update]["fieldsV1"])
    return (*checks, {"op": "test", "path": f"/metadata/managedFields/{apply}/operation", "value": "Apply"},
            {"op": "replace", "path": f"/metadata/managedFields/{apply}/fieldsV1", "value": union},
            {"op": "remove", "path": at})  # fmt: skip
