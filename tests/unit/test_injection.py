"""Property: whatever string a user puts in a field lands in that field and nowhere else.

Render a spec with a placeholder, render it again with an arbitrary string in the same place,
swap the placeholder back in: the two manifests must be identical. Nothing is spliced into YAML
or shell text, so no value can add a key, an object, or an argument.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gemma_operator import catalog as catalog_mod
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import plan
from gemma_operator.render import render
from tests.conftest import node_list

PLACEHOLDER = "PLACEHOLDER-VALUE"
CATALOG = catalog_mod.load()
POOLS = pools(node_list("gke-l4"), CATALOG)


def spec_with(value: str) -> dict:
    return {
        "env": [{"name": "NOTE", "value": value},
                {"name": "FROM_FIELD", "valueFrom": {"fieldRef": {"fieldPath": value[:256]}}}],
        "extraArgs": ["--override-generation-config", value],
        "nodeSelector": {"team": value[:63]},
        "tolerations": [{"key": "team", "operator": "Equal", "value": value[:63], "effect": "NoSchedule"}],
        "service": {"type": "ClusterIP", "port": 8000},
    }


def rendered(spec: dict) -> list[dict]:
    parsed = GemmaDeploymentSpec.model_validate(spec)
    return render(plan(parsed, POOLS, CATALOG), "chat", "team-a", parsed)


def swap_back(objects: list[dict], value: str) -> list[dict]:
    """Replace every occurrence of the value (and its 63-char cut) with the placeholder."""

    def walk(node):
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        for cut in (None, 256, 63):
            if node == value[:cut]:
                return PLACEHOLDER[:cut]
        return node

    return walk(objects)


BASELINE = rendered(spec_with(PLACEHOLDER))


def _strings(node) -> set[str]:
    if isinstance(node, dict):
        return set().union(*(_strings(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_strings(v) for v in node)) if node else set()
    return {node} if isinstance(node, str) else set()


# A value equal to a string the manifest already holds ("TCP", "http") can't be told apart by swapping.
TAKEN = _strings(BASELINE)

# Anything but a flag-looking first character (flags are checked on their own) and the empty string.
values = st.text(min_size=1, max_size=300).filter(
    lambda v: not v.startswith("-") and not {v, v[:256], v[:63]} & TAKEN
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_a_value_changes_only_its_own_fields(value):
    objects = rendered(spec_with(value))
    assert swap_back(objects, value) == BASELINE
    # And it survives the wire as the same string, not as structure.
    assert json.loads(json.dumps(objects)) == objects


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=200).filter(lambda v: not v.startswith("-")))
def test_extra_args_stay_one_argv_entry_each(value):
    (container,) = rendered({"extraArgs": [value]})[0]["spec"]["template"]["spec"]["containers"]
    assert container["args"][-1] == value
    assert "sh" not in container["command"] and "-c" not in container["command"]


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=512).filter(lambda v: not any(c.isspace() for c in v) and v not in TAKEN))
def test_an_image_override_is_only_the_image(value):
    """spec.image takes any non-blank reference (the runtime pulls it, or fails to): it becomes
    the container's image and touches nothing else."""
    objects = rendered({"image": value})
    (container,) = objects[0]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == value
    container["image"] = rendered({})[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert objects == rendered({})
