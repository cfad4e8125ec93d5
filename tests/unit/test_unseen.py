"""unseen: what a fresh read shows that the indices (or the operator's own record) do not."""

from __future__ import annotations

import pytest

from gemma_operator import unseen


@pytest.mark.parametrize(
    ("indexed", "listed", "gone"),
    [
        ({("a", "chat"): {"chat-1"}}, {"a": {"chat-1"}}, {}),
        ({("a", "chat"): {"chat-1", "chat-2"}}, {"a": {"chat-2"}}, {("a", "chat"): {"chat-1"}}),
        ({("a", "chat"): {"chat-1"}}, {"a": set()}, {("a", "chat"): {"chat-1"}}),
        # a namespace not listed is not judged; a listed pod the index lacks is nobody's loss
        ({("a", "chat"): {"chat-1"}, ("b", "chat"): {"chat-9"}}, {"b": {"chat-9", "new"}}, {}),
        ({("a", "chat"): {"chat-1"}, ("a", "code"): {"code-1"}}, {"a": {"chat-1"}}, {("a", "code"): {"code-1"}}),
    ],
)
def test_vanished_pods(indexed, listed, gone):
    assert unseen.vanished_pods(indexed, listed) == gone


def test_indexed_pods_are_names_by_owner():
    index = {("a", "chat"): [{"name": "chat-1", "phase": "Running"}, {"name": "chat-2"}], ("b", "x"): []}
    assert unseen.indexed_pods(index) == {("a", "chat"): {"chat-1", "chat-2"}, ("b", "x"): set()}


SCALED = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
          "metadata": {"name": "chat", "namespace": "a", "labels": {"app.kubernetes.io/managed-by": "gemma-operator"}},
          "spec": {"minReplicaCount": 1, "maxReplicaCount": 4, "triggers": [{"type": "prometheus"}]}}  # fmt: skip


def live(**spec):
    return {**SCALED, "metadata": {**SCALED["metadata"], "uid": "u1", "resourceVersion": "7"},
            "spec": {**SCALED["spec"], **spec}}  # fmt: skip


@pytest.mark.parametrize(
    ("listed", "drift"),
    [
        ({"chat": live()}, False),
        ({"chat": live(pollingInterval=30)}, False),  # a default the server (or KEDA) adds
        ({"chat": live(maxReplicaCount=40)}, True),  # a hand edit of a value the operator sets
        ({"chat": {**live(), "metadata": {"name": "chat", "namespace": "a"}}}, True),  # its labels removed
        ({"other": live()}, True),  # deleted
        ({}, True),
    ],
)
def test_drifted(listed, drift):
    key = ("ScaledObject", "a", "chat")
    assert unseen.drifted({key: SCALED}, listed) == ([key] if drift else [])


def test_pods_gone_unseen_do_not_count_the_others_do():
    indexed = [{"name": "chat-a", "phase": "Running"}, {"name": "chat-b", "phase": "Pending"}]
    assert unseen.counted(indexed, {"chat-a"}) == [{"name": "chat-b", "phase": "Pending"}]
    assert unseen.counted(indexed, ()) == indexed


ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "chat-epp", "namespace": "a"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}  # fmt: skip


@pytest.mark.parametrize(("rules", "drift"), [
    (ROLE["rules"], False),
    ([{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list", "watch"]}], True),  # widened
    ([], True),
])  # fmt: skip
def test_drift_beyond_spec_a_roles_rules(rules, drift):
    """The gateway's unwatched objects keep what matters outside spec (rules, data, subjects)."""
    key = ("gateway/Role", "a", "chat")
    listed = {"chat-epp": {**ROLE, "metadata": {**ROLE["metadata"], "uid": "u"}, "rules": rules}}
    assert unseen.drifted({key: ROLE}, listed) == ([key] if drift else [])
