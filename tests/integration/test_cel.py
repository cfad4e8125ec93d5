"""The CRD's CEL rules at the API: a spec the structural schema lets through but a rule refuses is
refused with 422 Invalid and never stored, on every tier (the emulator evaluates the rules with
cel-python; envtest's kube-apiserver with cel-go)."""

from __future__ import annotations

import json

import kubernetes
import pytest

from gemma_operator.api.v1alpha1 import REFUSED_FLAGS
from gemma_operator.crd import open_api_schema

GROUP_PATH = "/apis/gemma.dev/v1alpha1"
EXTRA_ARGS_MESSAGE = f"extraArgs may not carry {', '.join(REFUSED_FLAGS)}"
TOKEN_MESSAGE = "a Hugging Face token is never a literal: use spec.hfTokenSecretRef"
(KEY_RULE,) = open_api_schema()["properties"]["spec"]["properties"]["nodeSelector"]["x-kubernetes-validations"]

REFUSED = [
    pytest.param({"extraArgs": ["--trust-remote-code"]}, "spec.extraArgs", EXTRA_ARGS_MESSAGE, id="trust-remote-code"),
    pytest.param({"extraArgs": ["--max-num-seqs=8", "--hf-token=hf_abc"]}, "spec.extraArgs", EXTRA_ARGS_MESSAGE,
                 id="hf-token-flag"),
    pytest.param({"env": [{"name": "HF_TOKEN", "value": "x"}]}, "spec.env[0]", TOKEN_MESSAGE, id="hf-token-env"),
    pytest.param({"nodeSelector": {"not a label key": "x"}}, "spec.nodeSelector", KEY_RULE["message"],
                 id="node-selector-key"),
]


def collection(namespace: str) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/gemmadeployments"


def body(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def refusal(call) -> dict:
    """The Status of a request that must fail with 422 Invalid."""
    with pytest.raises(kubernetes.client.ApiException) as info:
        call()
    assert info.value.status == 422, info.value.body
    status = json.loads(info.value.body)
    assert (status["kind"], status["status"], status["reason"], status["code"]) == ("Status", "Failure", "Invalid", 422)
    return status


def assert_rule_cause(status: dict, field: str, message: str) -> None:
    # kube-apiserver: 'GemmaDeployment.gemma.dev "bad" is invalid: spec.extraArgs: Invalid value: "array": <message>'
    assert message in status["message"], status["message"]
    assert f"{field}: " in status["message"], status["message"]
    causes = status["details"]["causes"]
    assert any(c["field"] == field and message in c["message"] and c["reason"] == "FieldValueInvalid"
               for c in causes), causes


@pytest.mark.parametrize(("spec", "field", "message"), REFUSED)
def test_create_refused_by_a_rule_stores_nothing(kube_api, namespace, spec, field, message):
    status = refusal(lambda: kube_api.request("POST", collection(namespace), body("bad", namespace, spec)))
    assert_rule_cause(status, field, message)
    assert status["details"]["name"] == "bad" and status["details"]["kind"] == "GemmaDeployment"
    assert kube_api.request("GET", collection(namespace))["items"] == []


@pytest.mark.parametrize(("spec", "field", "message"), REFUSED)
def test_update_refused_by_a_rule_keeps_the_stored_spec(kube_api, namespace, spec, field, message):
    created = kube_api.request("POST", collection(namespace), body("chat", namespace, {"replicas": 1}))
    path = f"{collection(namespace)}/chat"
    status = refusal(lambda: kube_api.request("PATCH", path, {"spec": spec},
                                              content_type="application/merge-patch+json"))
    assert_rule_cause(status, field, message)
    stored = kube_api.request("GET", path)
    assert stored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert not {"extraArgs", "env", "nodeSelector"} & set(stored["spec"])


def test_what_the_rules_allow_is_stored(kube_api, namespace):
    spec = {"extraArgs": ["--enable-prefix-caching", "-hf", "ggml-org/gemma-3-1b-it-GGUF"],
            "env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
                    {"name": "HF_HOME", "value": "/cache"}],
            "nodeSelector": {"cloud.google.com/gke-nodepool": "gpu"}}  # fmt: skip
    created = kube_api.request("POST", collection(namespace), body("chat", namespace, spec))
    assert created["spec"]["extraArgs"] == spec["extraArgs"]
    assert created["spec"]["env"] == spec["env"]
    assert created["spec"]["nodeSelector"] == spec["nodeSelector"]
