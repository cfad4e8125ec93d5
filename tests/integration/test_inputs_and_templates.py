"""spec.model.inputs and spec.chatTemplate through the operator (issue 18, parts 2 and 5): kopf + the
real handlers against an API server. The handlers are unchanged: both ride the plan and the render."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_operator import args_of, condition, operator  # noqa: F401  (fixture)
from tests.integration.test_operator import Cluster

pytestmark = pytest.mark.integration
TEMPLATE = "{% for m in messages %}[[{{ m.role }}]]{{ m.content }}\n{% endfor %}[[model]]"


@pytest.fixture
def cluster(kube_api, namespace):
    return Cluster(kube_api, namespace)


def test_an_image_resource_serves_a_size_with_vision_and_says_which_were_left_out(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("vision", {"model": {"family": "gemma3", "inputs": ["image"], "imagesPerPrompt": 2},
                              "chatTemplate": {"inline": TEMPLATE}})  # fmt: skip
    deployment = cluster.wait(lambda: cluster.deployment("vision"), "the Deployment")
    args = args_of(deployment)
    assert args[0] == "google/gemma-3-4b-it"
    assert json.loads(args[args.index("--limit-mm-per-prompt") + 1]) == {"image": 2}
    assert args[args.index("--chat-template") + 1] == TEMPLATE
    gd = cluster.wait(lambda: (g := cluster.gd("vision")).get("status", {}).get("selection") and g, "status")
    selection = gd["status"]["selection"]
    assert selection["size"] == "4b" and selection["inputs"] == ["text", "image"]
    assert any(r.startswith("Inputs text, image: 270m and 1b left out") for r in selection["reasons"])


def test_a_template_that_does_not_parse_is_invalid_naming_the_line(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("broken", {"chatTemplate": {"inline": "fine\n{% for m in messages %}\n{{ m.content }\n"}})
    gd = cluster.wait(lambda: (g := cluster.gd("broken")).get("status", {}).get("phase") == "Invalid" and g, "Invalid")
    stalled = condition(gd, "Stalled")
    assert stalled["status"] == "True"
    assert "spec.chatTemplate.inline: line 3: unexpected '}'" in stalled["message"], stalled
    assert cluster.deployment("broken") is None
