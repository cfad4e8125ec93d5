"""spec.model.inputs and spec.chatTemplate through the operator (issue 18, parts 2 and 5): kopf + the
real handlers against an API server. Both ride the plan and the render; a configMapRef's ConfigMap is
also read by the reconcile (and the resync), checked, and its key's digest put on the pod template."""

from __future__ import annotations

import json

import pytest

from gemma_operator import chat_template, handlers
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


# spec.chatTemplate.configMapRef: the operator reads the ConfigMap, checks it, mounts it, and rolls the pods
# when the key changes; the resync (shortened here) finds an edit of the ConfigMap alone.
TEMPLATES = "templates"
EDITED = TEMPLATE.replace("[[", "<<").replace("]]", ">>")
BROKEN = "{% for m in messages %}\n{{ m.content }\n{% endfor %}"  # line 2: unexpected '}'
BY_REF = {"chatTemplate": {"configMapRef": {"name": TEMPLATES, "key": "chat.jinja"}}}


def put_templates(cluster: Cluster, **data: str) -> None:
    """Create the ConfigMap, or replace its data."""
    path = f"/api/v1/namespaces/{cluster.ns}/configmaps"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": TEMPLATES}, "data": data}
    if cluster.get(f"{path}/{TEMPLATES}") is None:
        cluster.api.request("POST", path, body)
    else:
        cluster.api.request("PUT", f"{path}/{TEMPLATES}", body)


def pod_template(cluster: Cluster, name: str) -> dict:
    return (cluster.deployment(name) or {}).get("spec", {}).get("template") or {}


def template_digest(cluster: Cluster, name: str) -> str | None:
    return ((pod_template(cluster, name).get("metadata") or {}).get("annotations") or {}).get(chat_template.DIGEST)


def test_a_config_map_chat_template_is_checked_mounted_and_rolled_out(operator, cluster, create_nodes, monkeypatch):
    monkeypatch.setenv(handlers.RESYNC_ENV, "0.5")
    create_nodes.from_fixture("gke-l4")
    put_templates(cluster, **{"chat.jinja": TEMPLATE})
    operator()
    cluster.create("templated", BY_REF)
    cluster.wait(lambda: template_digest(cluster, "templated") == chat_template.content_digest(TEMPLATE),
                 "the Deployment, with the template's digest")  # fmt: skip
    template = pod_template(cluster, "templated")
    args = args_of(cluster.deployment("templated"))
    assert args[args.index("--chat-template") + 1] == f"{chat_template.MOUNT_DIR}/{chat_template.FILE}"
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == chat_template.VOLUME)
    assert volume["configMap"]["name"] == TEMPLATES
    assert volume["configMap"]["items"] == [{"key": "chat.jinja", "path": chat_template.FILE}]

    # A bad edit: refused, naming the ConfigMap, the key and the line; the Deployment is left as it was.
    generation = cluster.deployment("templated")["metadata"]["generation"]
    put_templates(cluster, **{"chat.jinja": BROKEN})
    gd = cluster.wait(lambda: (g := cluster.gd("templated")).get("status", {}).get("phase") == "Invalid" and g,
                      "the bad edit refused", 30)  # fmt: skip
    stalled = condition(gd, "Stalled")
    assert stalled["reason"] == "InvalidChatTemplate", stalled
    assert "ConfigMap templates, key chat.jinja: line 2: unexpected '}'" in stalled["message"], stalled
    assert "InvalidChatTemplate" in {e["reason"] for e in cluster.events("templated")}
    deployment = cluster.deployment("templated")
    assert deployment["metadata"]["generation"] == generation
    assert pod_template(cluster, "templated") == template

    # A good edit: the model pods roll, and the Event says why.
    put_templates(cluster, **{"chat.jinja": EDITED})
    cluster.wait(lambda: template_digest(cluster, "templated") == chat_template.content_digest(EDITED),
                 "the edit rolled out", 30)  # fmt: skip
    assert cluster.deployment("templated")["metadata"]["generation"] > generation
    rolled = cluster.wait(lambda: [e for e in cluster.events("templated") if e["reason"] == "RollingOut"],
                          "the RollingOut Event")  # fmt: skip
    assert any("first change: chat template from ConfigMap templates key chat.jinja changed" in e["message"]
               for e in rolled), rolled  # fmt: skip
    cluster.wait(lambda: cluster.phase("templated") != "Invalid", "the refusal cleared")


def test_a_missing_config_map_is_named_and_nothing_is_deployed_until_it_exists(operator, cluster, create_nodes,
                                                                               monkeypatch):  # fmt: skip
    monkeypatch.setenv(handlers.RESYNC_ENV, "0.5")
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("waiting", BY_REF)
    gd = cluster.wait(lambda: (g := cluster.gd("waiting")).get("status", {}).get("phase") == "Degraded" and g,
                      "the missing ConfigMap named")  # fmt: skip
    ready = condition(gd, "Ready")
    assert ready["reason"] == "ChatTemplateNotFound", ready
    assert f"ConfigMap '{TEMPLATES}' (spec.chatTemplate.configMapRef) does not exist" in ready["message"]
    progressing = condition(gd, "Progressing")  # what the operator does: no backoff, a look every 30 s
    assert progressing["message"].startswith(f"The operator reads ConfigMap '{TEMPLATES}' again every 30 s"), progressing
    assert cluster.deployment("waiting") is None
    put_templates(cluster, other=TEMPLATE)  # the key is still missing
    cluster.wait(lambda: "has no key 'chat.jinja' (its keys: other)"
                 in condition(cluster.gd("waiting"), "Ready").get("message", ""), "the missing key named", 30)
    assert cluster.deployment("waiting") is None
    put_templates(cluster, **{"chat.jinja": TEMPLATE}, other=TEMPLATE)
    cluster.wait(lambda: template_digest(cluster, "waiting") == chat_template.content_digest(TEMPLATE),
                 "the Deployment once the key exists", 30)  # fmt: skip
