"""What the watches missed, found by comparing the indices with fresh reads. Pure.

After an expired watch (410) kopf re-lists but never reports what vanished in the gap, and the
kinds the operator does not watch (third-party CRDs) report nothing at all. The resync reads the
cluster again; these functions say what that read shows and the indices do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .rollout import matches

OwnerKey = tuple[str, str]  # (namespace, GemmaDeployment name)


def indexed_pods(index: Mapping[OwnerKey, Iterable[Mapping[str, Any]]]) -> dict[OwnerKey, set[str]]:
    """The pod names the index holds per GemmaDeployment (its entries are pods.essentials).

    Taken before the fresh list: a pod indexed before the list and absent from it was deleted.
    """
    return {key: {str(pod.get("name")) for pod in pods} for key, pods in index.items()}


def vanished_pods(indexed: Mapping[OwnerKey, Iterable[str]],
                  listed: Mapping[str, set[str]]) -> dict[OwnerKey, set[str]]:  # fmt: skip
    """The indexed pods a fresh list (names per namespace) no longer has, by GemmaDeployment.

    Namespaces not listed are not judged.
    """
    gone: dict[OwnerKey, set[str]] = {}
    for (namespace, owner), names in indexed.items():
        if namespace not in listed:
            continue
        missing = set(names) - listed[namespace]
        if missing:
            gone[(namespace, owner)] = missing
    return gone


def counted(pods: Iterable[Mapping[str, Any]], gone: Iterable[str]) -> list[Mapping[str, Any]]:
    """The indexed pods (pods.essentials) that count in status: not those a fresh list no longer
    has (`gone`: pod names, in the resource's namespace)."""
    names = set(gone)
    return [pod for pod in pods if pod.get("name") not in names]


def drifted(desired: Mapping[Any, Mapping[str, Any]], live: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """The keys of the desired objects that a fresh list (objects by name) has no longer as desired:
    deleted, or edited so that a value the operator sets differs (values the server or others add
    are left alone, as for the watched children)."""
    found = []
    for key, obj in desired.items():
        now = live.get(obj["metadata"]["name"])
        # Every field the operator sends, not only spec: a Role's rules, a ConfigMap's data, a RoleBinding's subjects.
        if now is None or not all(matches(value, now.get(field)) for field, value in obj.items()
                                  if field not in ("apiVersion", "kind", "status")):  # fmt: skip
            found.append(key)
    return found
