"""When the model pods are replaced: rollout.decide and rollout_reason, tabled."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml

from gemma_operator import rollout
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import plan
from gemma_operator.render import render
from tests.conftest import node_list

# The children as the previous release (main at 86663f2) rendered them for gke-l4 and an empty spec.
RELEASED = pathlib.Path(__file__).parents[1] / "integration" / "golden-children" / "l4-default.yaml"


def template(args=("a",), image="img:1", **container) -> dict:
    return {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "vllm", "image": image, "args": list(args), **container}]}}  # fmt: skip


def live_deployment(tmpl: dict, mark: str | None) -> dict:
    meta = {"annotations": {rollout.TEMPLATE_FOR: mark}} if mark else {}
    served = copy.deepcopy(tmpl)
    served["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"  # a server default
    return {"metadata": meta, "spec": {"template": served}}


def test_the_reason_names_the_first_field_in_a_fixed_order():
    live, desired = template(args=("a",), image="img:1"), template(args=("b",), image="img:2")
    assert rollout.rollout_reason(live, desired) == 'spec.containers[vllm].image: "img:1" -> "img:2"'
    desired = template(args=("a", "--metrics"), terminationMessagePolicy="FallbackToLogsOnError")
    assert rollout.rollout_reason(live, desired) == 'spec.containers[vllm].args: ["a"] -> ["a", "--metrics"]'
    assert rollout.rollout_reason(live_deployment(live, None)["spec"]["template"], live) is None  # defaults aside


SPEC_A, SPEC_B = "spec-a", "spec-b"
OLD, NEW = template(), template(terminationMessagePolicy="FallbackToLogsOnError")
OLD_MARK = f"{SPEC_A}/{rollout._digest(OLD)}"


@pytest.mark.parametrize(("live", "rendered_for", "accept", "legacy_current", "keeps"), [
    # An operator upgrade alone: the spec is the same, the rendering is not. Keep the pods.
    (live_deployment(OLD, OLD_MARK), SPEC_A, False, False, True),
    # ...unless the resource (or the chart) opts in: one rollout.
    (live_deployment(OLD, OLD_MARK), SPEC_A, True, False, False),
    # The spec changed: the new rendering goes out with it.
    (live_deployment(OLD, OLD_MARK), SPEC_B, False, False, False),
    # A Deployment of the previous release (no annotation), already reconciled for this spec: keep.
    (live_deployment(OLD, None), SPEC_A, False, True, True),
    # ...not reconciled for it (the spec changed while the operator was away): roll.
    (live_deployment(OLD, None), SPEC_A, False, False, False),
    # Nothing live yet.
    (None, SPEC_A, False, False, False),
])  # fmt: skip
def test_decide(live, rendered_for, accept, legacy_current, keeps):
    decision = rollout.decide(live, NEW, rendered_for, accept=accept, legacy_current=legacy_current)
    if keeps:
        assert decision.template == live["spec"]["template"]
        assert decision.update_available == 'spec.containers[vllm].terminationMessagePolicy: (unset) -> "FallbackToLogsOnError"'
        assert decision.template_for.startswith(f"{rendered_for}/") and decision.template_for != f"{rendered_for}/{rollout._digest(NEW)}"
    else:
        assert decision.template == NEW and decision.update_available is None
        assert decision.rolls_out == (None if live is None else
                                      'spec.containers[vllm].terminationMessagePolicy: (unset) -> "FallbackToLogsOnError"')
        assert decision.template_for == f"{rendered_for}/{rollout._digest(NEW)}"


def test_a_kept_template_stays_kept_and_a_hand_edit_of_a_current_one_is_reverted():
    first = rollout.decide(live_deployment(OLD, None), NEW, SPEC_A, accept=False, legacy_current=True)
    again = rollout.decide(live_deployment(OLD, first.template_for), NEW, SPEC_A, accept=False, legacy_current=False)
    assert again.template["spec"]["containers"][0]["image"] == "img:1" and again.update_available
    current = f"{SPEC_A}/{rollout._digest(NEW)}"
    edited = live_deployment(template(image="img:hand"), current)
    assert rollout.decide(edited, NEW, SPEC_A, accept=False, legacy_current=False).template == NEW


def test_the_spec_hash_ignores_what_does_not_shape_the_pod():
    selection = {"modelId": "google/gemma-4-E2B-it", "reasons": ["one"]}
    base = rollout.spec_hash({"maxModelLen": 8192}, selection)
    assert base == rollout.spec_hash({"maxModelLen": 8192, "replicas": 3, "acceptOperatorUpdates": True,
                                      "autoscaling": {"maxReplicas": 4}}, {**selection, "reasons": ["two"]})  # fmt: skip
    assert base != rollout.spec_hash({"maxModelLen": 4096}, selection)
    assert base != rollout.spec_hash({"maxModelLen": 8192}, {**selection, "modelId": "google/gemma-3-1b-it"})


def test_a_new_catalog_image_pin_is_rendering_not_a_new_choice():
    """An operator release that pins a newer server image (or revises an estimate) renders the
    same choice: the running pods keep their template until the opt-in. spec.image is the spec's."""
    selection = {"modelId": "google/gemma-4-E2B-it", "image": "vllm/vllm-openai:v0.32.0-cu129",
                 "estimatedMemoryGiB": 13.4, "capacity": "scale-up", "pool": "l4"}  # fmt: skip
    base = rollout.spec_hash({}, selection)
    assert base == rollout.spec_hash({}, {**selection, "image": "vllm/vllm-openai:v0.33.0-cu129",
                                          "estimatedMemoryGiB": 13.9, "capacity": "ready"})  # fmt: skip
    assert base != rollout.spec_hash({"image": "registry.example.com/vllm:patched"}, selection)
    assert base != rollout.spec_hash({}, {**selection, "pool": "t4"})
    template = {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.32.0-cu129"}]}}
    assert rollout.running_image(template) == "vllm/vllm-openai:v0.32.0-cu129"


def test_the_released_children_are_kept_by_this_release(catalog):
    """The previous release's Deployment, without the annotation, meets this release's rendering
    (which adds terminationMessagePolicy to the model container): the live template is what is sent."""
    released = yaml.safe_load_all(RELEASED.read_text())
    deployment = next(d for d in released if d["kind"] == "Deployment")
    spec = GemmaDeploymentSpec.model_validate({})
    result = plan(spec, pools(node_list("gke-l4"), catalog), catalog)
    desired = next(o for o in render(result, "chat", "team-a", spec) if o["kind"] == "Deployment")["spec"]["template"]
    for_ = rollout.spec_hash({}, result.selection())
    decision = rollout.decide(deployment, desired, for_, accept=False, legacy_current=True)
    assert decision.template == deployment["spec"]["template"]
    # The first change in the fixed order (args, env, resources): this release runs a text-only Gemma 4
    # E2B as its language model alone (--language-model-only); it also turns hf_xet's chunk cache off
    # (env) and asks for scratch space for the weights and a bounded HOME (resources).
    assert decision.update_available.startswith("spec.containers[vllm].args")
    assert "--language-model-only" in desired["spec"]["containers"][0]["args"]
    assert {"name": "HF_XET_CHUNK_CACHE_SIZE_BYTES", "value": "0"} in desired["spec"]["containers"][0]["env"]
