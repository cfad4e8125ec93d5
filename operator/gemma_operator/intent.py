"""What one reconcile reads and what it decides, as data: `Wants` (what the shell must read), `Observed`
(what it read), and the `Intent` (the Applies, Prunes, Expands and Events execute.py carries out, and
the status patch). Pure data, no logic: decide.py makes them, queue.py and execute.py read them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import chat_template


@dataclass(frozen=True)
class Wants:
    """What the shell must read for one resource before deciding."""

    children: tuple[tuple[str, str], ...]  # (kind, name) of watched children, in the resource's namespace
    unwatched: tuple[str, ...]  # kinds applied without a watch: their last applied digest
    served: bool  # discovery of the optional CRDs (autoscaling asks for them)
    secret: str | None  # the Secret whose existence to check
    gateway: tuple[str, str] | None = None  # (namespace, name) of the Gateway whose address to read
    config_map: str | None = None  # the ConfigMap spec.chatTemplate.configMapRef names, to read


@dataclass(frozen=True)
class Observed:
    """The world one reconcile decides on, gathered by the shell before deciding."""

    children: Mapping[tuple[str, str], Mapping[str, Any] | None] = field(default_factory=dict)  # (kind, name) -> live
    shared: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)  # the namespace's cache objects
    applied_digests: Mapping[str, str] = field(default_factory=dict)  # unwatched kind -> digest last applied
    pods: tuple[Mapping[str, Any], ...] = ()  # pods.essentials, with autoscaler Events on an unscheduled one
    served: frozenset[tuple[str, str]] | None = None  # optional (apiVersion, kind) served; None: not read
    secret_exists: bool | None = None  # None: not checked
    gone_pods: frozenset[str] = frozenset()  # names of pods the index holds that the last resync found deleted
    # claim -> (the storage asked, the API server's answer: None accepted, else why it refused), for
    # an expansion asked of the claim at the very version observed now (a changed claim is asked again)
    expansions: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)
    gateway: Mapping[str, Any] | None = None  # the Gateway spec.gateway attaches to first, when readable
    config_map: chat_template.Source | None = None  # spec.chatTemplate.configMapRef's; None: not read


@dataclass(frozen=True)
class Apply:
    """One child to send: `apply` (server-side apply), `create` (a shared cache object; a child absent
    from the index: applied if it exists) or `join` (add this owner to a shared cache object, only at
    `resource_version`)."""

    obj: Mapping[str, Any]
    how: str = "apply"
    confirm_owner: bool = False  # the child vanished: check the owner still exists first (GC, not drift)
    handover_replicas: int | None = None  # autoscaled: hand the live count to the handover manager first
    owners: tuple[Mapping[str, Any], ...] = ()  # join: the owner references to set
    resource_version: str | None = None  # join: the version read
    digest: str | None = None  # a kind without a watch: the digest to remember
    digest_key: str | None = None  # ...under this key instead of the kind (the gateway's objects)
    upgrade: tuple[Mapping[str, Any], ...] | None = None  # ownership.upgrade's patch, to send first


@dataclass(frozen=True)
class Prune:
    """One child to remove: `delete` it, or `leave` a shared cache object to its other `owners`."""

    api_version: str
    kind: str
    name: str
    how: str = "delete"
    uid: str | None = None
    resource_version: str | None = None
    owners: tuple[Mapping[str, Any], ...] = ()
    digest_key: str | None = None  # the applied digest to forget (Apply.digest_key)


@dataclass(frozen=True)
class Expand:
    """Ask the API server to expand a cache claim to `storage`, only at `resource_version`. The
    executor records the answer; the next pass observes it (Observed.expansions) and decides on it."""

    claim: str
    storage: str
    resource_version: str


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Intent:
    """Everything one reconcile does, in the order execute.py does it: expansions, claims (shared
    cache objects), prunes, applies, Events, then the status patch."""

    outcome: str  # Applied | NoFit | Invalid | ApplyFailed | Asked: the reconcile metric's label
    claims: tuple[Apply, ...] = ()
    prunes: tuple[Prune, ...] = ()
    applies: tuple[Apply, ...] = ()
    events: tuple[Event, ...] = ()
    status: Mapping[str, Any] | None = None  # the merge patch; None: nothing to write
    recheck_s: float | None = None  # look again at a time-bound pod state
    retry_s: float | None = None  # reconcile again (the Secret may appear; 0: an answer to decide on)
    cache_fill: Mapping[str, Any] | None = None  # status.cache while a loader Job fills (failed, too small)
    plans: tuple[tuple[str, str, str], ...] = ()  # (runtime, accelerator, quantization) to count
    notes: tuple[str, ...] = ()  # log lines
    expands: tuple[Expand, ...] = ()  # cache claims to expand (a question: nothing else is done meanwhile)
