"""An embedding model through the operator loop: kopf + the real handlers against an API server
(emulator; envtest when available). spec.model.task embed -> EmbeddingGemma, Ready, /v1/embeddings."""

from __future__ import annotations

from tests.integration.test_operator import (  # noqa: F401 - the fixtures, and the verbs the loop tests use
    args_of,
    cluster,
    condition,
    ends_invalid_applying_nothing,
    operator,
)


def test_an_embed_resource_reaches_ready_with_the_embeddings_endpoint(operator, cluster, create_nodes, kube_api):
    create_nodes.from_fixture("gke-l4")
    operator()
    cluster.create("embed", {"model": {"task": "embed"}})
    deployment = cluster.wait(lambda: cluster.deployment("embed"), "the Deployment")
    args = args_of(deployment)
    # The cheapest pool that fits: the CPU node, llama.cpp's server with embeddings on, mean pooling.
    assert "ggml-org/embeddinggemma-300M-GGUF" in args
    assert args[args.index("--pooling") + 1] == "mean" and "--embeddings" in args and "--jinja" not in args
    service = cluster.wait(lambda: cluster.service("embed"), "the Service")
    assert service["metadata"]["annotations"]["gemma.dev/api-path"] == "/v1/embeddings"

    kube_api.set_deployment_ready(cluster.ns, "embed", ready=1)
    cluster.wait(lambda: condition(cluster.gd("embed"), "Ready").get("status") == "True", "Ready=True")
    st = cluster.gd("embed")["status"]
    assert st["phase"] == "Ready" and st["readyReplicas"] == 1
    assert st["endpoint"] == f"http://embed.{cluster.ns}.svc.cluster.local:8000/v1/embeddings"
    selection = st["selection"]
    assert (selection["family"], selection["task"], selection["maxModelLen"]) == ("embeddinggemma", "embed", 2048)
    assert selection["embeddingDimensions"] == [768, 512, 256, 128]
    assert any("no KV cache" in r for r in selection["reasons"])


def test_a_chat_only_field_on_an_embedding_model_ends_invalid_naming_it(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    ends_invalid_applying_nothing(cluster, {"model": {"task": "embed"}, "maxModelLen": 8192},
                                  "spec.maxModelLen: 8192 tokens is beyond embeddinggemma's input limit")  # fmt: skip



# Where issue 18's halves meet: an embedding model reads text and applies no chat template.
def test_an_image_input_on_an_embedding_model_ends_invalid_naming_it(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    ends_invalid_applying_nothing(cluster, {"model": {"task": "embed", "inputs": ["image"]}},
                                  "spec.model.inputs: embeddinggemma is an embedding model and reads text only, not image")  # fmt: skip


def test_a_chat_template_on_an_embedding_model_ends_invalid_naming_it(operator, cluster, create_nodes):
    create_nodes.from_fixture("gke-l4")
    operator()
    ends_invalid_applying_nothing(cluster, {"model": {"task": "embed"}, "chatTemplate": {"inline": "{{ messages }}"}},
                                  "spec.chatTemplate: embeddinggemma is an embedding model")  # fmt: skip
