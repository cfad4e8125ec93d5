"""ownership.py: what the index keeps of managedFields, and the JSON patch that upgrades our create's entry."""

from __future__ import annotations

import jsonpatch
import pytest

from gemma_operator import ownership

CREATED = {"manager": "gemma-operator", "operation": "Update", "apiVersion": "apps/v1", "time": "t0",
           "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:extra": {}}}}}  # fmt: skip
APPLIED = {"manager": "gemma-operator", "operation": "Apply", "apiVersion": "apps/v1", "time": "t1",
           "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {}}}  # fmt: skip
CONTROLLER = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
              "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}  # fmt: skip
OURS_ON_STATUS = dict(CREATED, subresource="status")


@pytest.mark.parametrize("entries, kept", [
    ([APPLIED, CONTROLLER], None),  # applied: nothing to upgrade, nothing kept
    ([], None),
    ([OURS_ON_STATUS], None),  # a subresource's entry is not the one an apply meets
    ([CONTROLLER, CREATED], [{"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
                             {"manager": "gemma-operator", "operation": "Update"}]),
])  # fmt: skip
def test_the_index_keeps_who_holds_each_entry_only_while_our_create_entry_is_there(entries, kept):
    meta = {"name": "chat", "resourceVersion": "5", **({"managedFields": entries} if entries else {})}
    indexed = ownership.index_metadata(meta)
    assert indexed.get("managedFields") == kept
    assert {k: v for k, v in indexed.items() if k != "managedFields"} == {"name": "chat", "resourceVersion": "5"}


def test_no_update_entry_of_ours_needs_no_patch():
    assert ownership.upgrade([APPLIED, CONTROLLER], "5") is None
    assert ownership.upgrade(None, "5") is None
    assert ownership.upgrade([OURS_ON_STATUS], "5") is None


def test_our_only_entry_becomes_the_apply_entry_in_place_at_the_version_read():
    obj = {"metadata": {"resourceVersion": "5", "managedFields": [CONTROLLER, CREATED]}}
    patch = ownership.upgrade(ownership.index_metadata(obj["metadata"])["managedFields"], "5")
    upgraded = jsonpatch.apply_patch(obj, list(patch))
    assert upgraded["metadata"]["managedFields"] == [CONTROLLER, dict(CREATED, operation="Apply")]
    with pytest.raises(jsonpatch.JsonPatchTestFailed):  # written since: read again
        jsonpatch.apply_patch(dict(obj, metadata=dict(obj["metadata"], resourceVersion="6")), list(patch))
    with pytest.raises(jsonpatch.JsonPatchTestFailed):  # the entries moved: read again
        jsonpatch.apply_patch({"metadata": {"resourceVersion": "5", "managedFields": [CREATED, CONTROLLER]}},
                              list(patch))  # fmt: skip


def test_with_both_entries_the_apply_entry_takes_the_union_which_the_index_keeps_our_entries_whole_for():
    meta = {"resourceVersion": "9", "managedFields": [CREATED, CONTROLLER, APPLIED]}
    indexed = ownership.index_metadata(meta)["managedFields"]
    assert indexed == [CREATED, {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
                       APPLIED]  # fmt: skip
    assert ownership.upgrade([{"manager": "gemma-operator", "operation": "Update"},
                              {"manager": "gemma-operator", "operation": "Apply"}], "9") == ()  # no field sets
    assert ownership.upgrade(meta["managedFields"], None) == ()
    upgraded = jsonpatch.apply_patch({"metadata": meta}, list(ownership.upgrade(indexed, "9")))
    assert upgraded["metadata"]["managedFields"] == [CONTROLLER, dict(APPLIED, fieldsV1={
        "f:metadata": {"f:labels": {"f:app": {}, "f:extra": {}}}, "f:spec": {}})]  # fmt: skip
