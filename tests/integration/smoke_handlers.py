"""Test-only handlers for the API-server smoke test: enough to see kopf work end to end."""

from __future__ import annotations

from typing import Any

import kopf

GROUP, VERSION, PLURAL = "gemma.dev", "v1alpha1", "gemmadeployments"


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def reconcile(meta: kopf.Meta, patch: kopf.Patch, **_: Any) -> None:
        # Only fields the CRD schema declares: a real server prunes anything else.
        patch.status["observedGeneration"] = meta.get("generation")
        patch.status["phase"] = "Planning"
