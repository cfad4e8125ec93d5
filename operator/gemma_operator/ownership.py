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
    except who holds each entry while our create's Update entry is there (what `upgrade` needs)."""
    kept = {k: v for k, v in meta.items() if k != "managedFields"}
    entries = meta.get("managedFields") or []
    if any(_ours(entry, "Update") for entry in entries):
        kept["managedFields"] = [{k: entry[k] for k in ("manager", "operation", "subresource") if k in entry}
                                 for entry in entries]  # fmt: skip
    return kept


def _union(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two FieldsV1 sets (tries of nested objects) as one."""
    merged = dict(a)
    for key, value in b.items():
        merged[key] = _union(merged[key], value) if key in merged else value
    return merged


def upgrade(entries: Sequence[Mapping[str, Any]] | None, resource_version: str | None) -> tuple[dict[str, Any], ...] | None:
    """The JSON patch that hands our Update entry to our Apply entry, only at `resource_version`
    (a 422 otherwise: read the object and ask again); None when there is no such Update entry. With
    no Apply entry of ours the Update entry becomes it, in place. With both (a create that lost a
    race to another reconcile's, then an apply), the Apply entry takes the union of the two field
    sets and the Update entry goes: that needs their fieldsV1, which an index's entries
    (`index_metadata`) do not have: then () says "read the object and ask again"."""
    entries = list(entries or ())
    update = next((n for n, entry in enumerate(entries) if _ours(entry, "Update")), None)
    if update is None:
        return None
    if resource_version is None:
        return ()
    at_version = {"op": "test", "path": "/metadata/resourceVersion", "value": resource_version}
    apply = next((n for n, entry in enumerate(entries) if _ours(entry, "Apply")), None)
    if apply is None:
        at = f"/metadata/managedFields/{update}"
        return (at_version, {"op": "test", "path": f"{at}/manager", "value": MANAGER},
                {"op": "test", "path": f"{at}/operation", "value": "Update"},
                {"op": "replace", "path": f"{at}/operation", "value": "Apply"})  # fmt: skip
    if any("fieldsV1" not in entries[n] for n in (update, apply)):
        return ()
    joined = dict(entries[apply], fieldsV1=_union(entries[apply]["fieldsV1"], entries[update]["fieldsV1"]))
    kept = [joined if n == apply else dict(entry) for n, entry in enumerate(entries) if n != update]
    return (at_version, {"op": "replace", "path": "/metadata/managedFields", "value": kept})
