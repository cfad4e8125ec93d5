"""When the model pods are replaced, and why. Pure.

A serving model restarts only for a reason its owner gave: a spec change (or a new plan), an
opt-in to the operator's new rendering (`spec.acceptOperatorUpdates: true`), or the chart's
rollout policy. An operator upgrade alone that renders the pod template differently keeps the
live template and reports `UpdateAvailable` with the first field that would change.

The Deployment carries `gemma.dev/template-for: <spec hash>/<template digest>`: the spec and
selection its live template was rendered for, and that rendering's digest. A Deployment of an
earlier release has no such annotation: its template counts as rendered for the current spec
when the plan's selection is unchanged and the spec was already reconciled (`legacy_current`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TEMPLATE_FOR = "gemma.dev/template-for"
LEGACY = "legacy"  # the digest of a template an earlier release rendered (unknown)
# Spec fields that do not shape the pod template: changing them rolls nothing out.
NOT_TEMPLATE = ("replicas", "autoscaling", "acceptOperatorUpdates", "service", "objective")
# `predicted` is an estimate of the plan (issue 21): a new price or constant restarts nothing.
NOT_CHOICES = ("reasons", "capacity", "image", "estimatedMemoryGiB", "predicted")
# The order fields are compared in, so that the reason names the same field every time.
CONTAINER_ORDER = ("image", "command", "args", "env", "resources", "ports", "volumeMounts", "startupProbe",
                   "readinessProbe", "livenessProbe", "securityContext")  # fmt: skip
POD_ORDER = ("containers", "initContainers", "nodeSelector", "tolerations", "volumes", "securityContext")
MAX_VALUE = 120


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def choice(selection: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's choices, without what the operator's release decides: the catalog's image pin
    (spec.image is in the spec) and the estimate are rendering, which an upgrade may change without
    restarting anything; the explanation and whether the pool had a node yet are not choices."""
    return {k: v for k, v in selection.items() if k not in NOT_CHOICES}


def spec_hash(spec: Mapping[str, Any], selection: Mapping[str, Any]) -> str:
    """What a template is rendered for: the spec fields that shape it and the plan's choices."""
    shaping = {k: v for k, v in spec.items() if k not in NOT_TEMPLATE}
    return _digest([shaping, choice(selection)])


def running_image(template: Mapping[str, Any]) -> str | None:
    """The model server's image in a pod template (its first container)."""
    containers = (template.get("spec") or {}).get("containers") or [{}]
    return containers[0].get("image")


def matches(desired: Any, live: Any) -> bool:
    """Every value desired is in live (the server adds defaults the renderer leaves out)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(matches(v, live.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(matches, desired, live))
    return desired == live or (desired is not None and str(desired) == str(live))


def _ordered(desired: Mapping[str, Any], first: tuple[str, ...]) -> list[str]:
    return [k for k in first if k in desired] + sorted(k for k in desired if k not in first)


def _short(value: Any) -> str:
    text = "(unset)" if value is None else json.dumps(value, sort_keys=True)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."


def _first_difference(path: str, desired: Any, live: Any) -> str | None:
    if matches(desired, live):
        return None
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        order = POD_ORDER if path.endswith("spec") else CONTAINER_ORDER if "containers[" in path else ()
        for key in _ordered(desired, order):
            found = _first_difference(f"{path}.{key}" if path else key, desired[key], live.get(key))
            if found:
                return found
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        for i, (d, l) in enumerate(zip(desired, live, strict=True)):
            label = d.get("name", i) if isinstance(d, Mapping) else i
            found = _first_difference(f"{path}[{label}]", d, l)
            if found:
                return found
    if _too_long(desired, live) and isinstance(desired, list) and isinstance(live, list):
        # A long argv (spec.adapters adds to its end): from the first argument that differs, so the
        # message names the change rather than the arguments every rendering shares.
        i = next((i for i, (d, l) in enumerate(zip(desired, live)) if not matches(d, l)), min(len(desired), len(live)))
        return f"{path}[{i}:]: {_short(live[i:])} -> {_short(desired[i:])}"
    return f"{path}: {_short(live)} -> {_short(desired)}"


def _too_long(*values: Any) -> bool:
    return any(len(json.dumps(v, sort_keys=True)) > MAX_VALUE for v in values)


def rollout_reason(live: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> str | None:
    """The first field of the pod template that differs (checked in a fixed order), as
    `spec.containers[vllm].args: [...] -> [...]`; None when the live template already has every
    value desired."""
    if live is None:
        return "no pod template yet"
    return _first_difference("", {"metadata": desired.get("metadata") or {}, "spec": desired.get("spec") or {}},
                             {"metadata": live.get("metadata") or {}, "spec": live.get("spec") or {}})  # fmt: skip


@dataclass(frozen=True)
class Decision:
    template: dict[str, Any]  # the pod template to send
    template_for: str  # the Deployment's TEMPLATE_FOR annotation to send
    update_available: str | None = None  # why the kept template is not the new rendering
    rolls_out: str | None = None  # the new template replaces a live one that differs: the first change


def _sendable(template: Mapping[str, Any]) -> dict[str, Any]:
    """The live template as an apply may send it back (fields the server writes as null left out)."""
    kept = json.loads(json.dumps(template))
    (kept.get("metadata") or {}).pop("creationTimestamp", None)
    return kept


def decide(live: Mapping[str, Any] | None, desired_template: Mapping[str, Any], rendered_for: str, *,
           accept: bool, legacy_current: bool) -> Decision:  # fmt: skip
    """Which template the Deployment gets: the new rendering, or the live one kept.

    `rendered_for` is `spec_hash` of the current spec and selection; `accept` the opt-in (the
    resource's, else the chart's policy); `legacy_current` whether a Deployment without the
    annotation was rendered for the current spec (see the module's docstring).
    """
    live_template = ((live or {}).get("spec") or {}).get("template")
    if live_template is None:
        return Decision(dict(desired_template), f"{rendered_for}/{_digest(desired_template)}")
    reason = rollout_reason(live_template, desired_template)
    new = Decision(dict(desired_template), f"{rendered_for}/{_digest(desired_template)}", rolls_out=reason)
    mark = ((live.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_FOR)
    if mark is None:
        if not legacy_current:
            return new
        live_for, live_digest = rendered_for, LEGACY
    else:
        live_for, _, live_digest = mark.partition("/")
    if accept or live_for != rendered_for or live_digest == _digest(desired_template):
        return new  # a spec change, an opt-in, or the same rendering (a hand edit is reverted)
    if reason is None:
        return new  # the live pods already run this rendering: only the annotation is new
    return Decision(_sendable(live_template), f"{rendered_for}/{live_digest}", reason)
