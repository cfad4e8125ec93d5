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
