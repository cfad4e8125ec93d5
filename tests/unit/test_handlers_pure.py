"""The loop's small pure helpers: drift detection (rollout), stickiness (decide), and the work queue."""

from __future__ import annotations

import asyncio

import pytest

from gemma_operator.decide import previous_selection as _previous_selection
from gemma_operator.queue import WorkQueue
from gemma_operator.rollout import matches as _matches


@pytest.mark.parametrize(
    ("desired", "live", "same"),
    [
        ({"a": 1}, {"a": 1, "defaulted": "x"}, True),  # the server may add fields
        ({"a": 1}, {"a": 2}, False),
        ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 3}}, True),
        ({"a": [1, 2]}, {"a": [1, 2, 3]}, False),  # lists are owned whole
        ({"ports": [{"port": 80}]}, {"ports": [{"port": 80, "protocol": "TCP"}]}, True),
        ({"cpu": "6"}, {"cpu": 6}, True),
        ({"a": 1}, None, False),
        ({"image": "vllm:v1"}, {"image": "evil:latest"}, False),
    ],
)
def test_matches(desired, live, same):
    assert _matches(desired, live) is same


SELECTION = {"pool": "nvidia-l4-x1", "modelId": "google/gemma-4-E2B-it"}


@pytest.mark.parametrize(
    ("generation", "observed", "phase", "sticky"),
    [
        (2, 2, "Ready", True),  # the same spec (a restart, a child or pod event, nodes)
        (2, 2, "Deploying", True),
        (3, 2, "Ready", False),  # a spec change (generation ahead of status) plans afresh
        (1, None, None, False),  # a new resource
        (2, 2, "NoFit", False),  # left over from an older, serving spec
        (2, 2, "Invalid", False),
    ],
)
def test_previous_selection_is_kept_only_for_the_same_spec(generation, observed, phase, sticky):
    cr = {"metadata": {"generation": generation},
          "status": {"observedGeneration": observed, "phase": phase, "selection": SELECTION}}  # fmt: skip
    assert (_previous_selection(cr) == SELECTION) is sticky


def test_work_queue_holds_a_key_once_until_taken():
    async def scenario():
        queue = WorkQueue()
        queue.add(("ns", "a"), "child")
        queue.add(("ns", "a"), "nodes")  # already waiting: not added twice
        queue.add(("ns", "b"), "child")
        first = await queue.get()
        second = await queue.get()
        queue.add(("ns", "a"), "child")  # taken, so it can come back
        third = await queue.get()
        return [first, second, third]

    assert asyncio.run(scenario()) == [(("ns", "a"), "child"), (("ns", "b"), "child"), (("ns", "a"), "child")]


def test_a_spec_change_or_the_start_up_listing_names_a_waiting_key():
    async def scenario():
        queue = WorkQueue()
        queue.add(("ns", "a"), "child")
        queue.add(("ns", "a"), "resume")  # the start-up listing after a child's: a resume
        queue.add(("ns", "a"), "pod")
        queue.add(("ns", "b"), "spec")
        queue.add(("ns", "b"), "resume")  # a spec change stays one
        return [await queue.get(), await queue.get()]

    assert asyncio.run(scenario()) == [(("ns", "a"), "resume"), (("ns", "b"), "spec")]


def test_no_handler_reads_kopfs_diff_base_so_it_builds_none():
    """tuning.NoDiffBase is sound only while kopf has no change-detecting handler (create, update,
    resume, delete, field) and no daemon or timer: those read the diff base and store it."""
    import kopf

    from gemma_operator import handlers, tuning  # noqa: F401  (handlers registers the handlers)

    registry = kopf.get_default_registry()
    assert registry._changing.get_all_handlers() == [] and registry._spawning.get_all_handlers() == []
    assert registry._watching.get_all_handlers()  # the event handlers feed the work queue
    storage = tuning.NoDiffBase()
    body = kopf.Body({"metadata": {"name": "x", "annotations": {"a": "b"}}, "spec": {"replicas": 1}})
    assert storage.fetch(body=body) == storage.build(body=body) == {}
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch  # nothing written to the object
