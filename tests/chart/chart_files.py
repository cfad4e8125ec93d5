"""Paths of the chart and its values, shared by the chart and example tests."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gemma-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE = "gemma", "gemma-system"


def merge(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge key by key, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{key: merge(base.get(key), value) for key, value in override.items()}}
    return override


def values(*files: pathlib.Path) -> dict[str, Any]:
    """The chart's defaults with `files` merged over them, as helm computes them."""
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in files:
        merged = merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged
