"""Text from elsewhere set into the operator's messages ends its sentence once (sentences.sentence).

Each row puts one foreign message through the real code that quotes it, once with its own trailing
stop and once without: the API server's refusal of a claim expansion, the Job controller's failure of
a loader or an adapter Job, the HorizontalPodAutoscaler's ScalingActive message, a chat template's own
exception or jinja2's syntax error, and a spec refused by validation or by the planner. The pods'
quoted messages are tabled in test_pods.py (ENDINGS).
"""

from __future__ import annotations

from typing import Any

import pytest

from gemma_operator import cache as cache_mod
from gemma_operator import chat_template, inventory, scaling
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.decide import Observed, Settings, decide
from gemma_operator.planner import Plan, plan
from gemma_operator.sentences import sentence
from tests.conftest import node_list

NS = "team-a"
RESIZE = ('persistentvolumeclaims "gemma-cache-x" is forbidden: only dynamically provisioned pvc can be resized and '
          "the storageclass that provisions the pvc must support resize")  # fmt: skip
HPA = ("the HPA was unable to compute the replica count: unable to get metric vllm:num_requests_waiting: no custom "
       "metrics API (custom.metrics.k8s.io) registered")  # fmt: skip


@pytest.mark.parametrize(("text", "ended"), [
    ("no nodes available", "no nodes available."),
    ("no nodes available.", "no nodes available."),
    ("no nodes available. ", "no nodes available."),
    ("did you mean spec.model?", "did you mean spec.model?"),
    ("stop!", "stop!"),
    ("a message cut by the cap…", "a message cut by the cap…"),
    ("user/assistant/...", "user/assistant/..."),
])  # fmt: skip
def test_a_full_stop_only_when_the_text_has_no_ending_of_its_own(text, ended):
    assert sentence(text) == ended


def claim_refused(catalog, said: str) -> str:
    claim = cache_mod.resize({"metadata": {"name": "gemma-cache-x", "namespace": NS},
                              "spec": {"resources": {"requests": {"storage": "10Gi"}}}, "status": {"phase": "Bound"}},
                             {"spec": {"resources": {"requests": {"storage": "13Gi"}}}})  # fmt: skip
    return cache_mod.fill_state(None, claim.answered(said))[1]


def _failed(name: str, said: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": said}]}}  # fmt: skip


def loader_failed(catalog, said: str) -> str:
    return cache_mod.fill_state(_failed("fill", said))[1]


def adapter_failed(catalog, said: str) -> str:
    spec = GemmaDeploymentSpec.model_validate({"model": {"family": "gemma3", "size": "1b"}, "cache": {"type": "pvc"},
                                               "adapters": [{"name": "support-bot", "repo": "acme/support-lora"}]})
    result = plan(spec, inventory.pools(node_list("gke-l4"), catalog, None), catalog)
    assert isinstance(result, Plan), result
    cache = cache_mod.plan_cache(result, spec)
    job = cache_mod.adapter_job_name(cache, result, result.adapters[0])
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    return cache_mod.fill(cache, result, {cache.claim: done, job: _failed(job, said)})[1]


def hpa_refused(catalog, said: str) -> str:
    spec = GemmaDeploymentSpec.model_validate({"autoscaling": {"minReplicas": 1, "maxReplicas": 3, "metric": "queue",
                                                               "target": 4}})  # fmt: skip
    hpa = {"status": {"conditions": [{"type": "ScalingActive", "status": "False", "reason": "FailedGetPodsMetric",
                                      "message": said}]}}  # fmt: skip
    conditions = scaling.autoscaler_conditions(spec, scaling.Choice("hpa", "ServiceMonitor"), hpa,
                                               "vllm:num_requests_waiting")  # fmt: skip
    return next(c[3] for c in conditions if c[0] == "ScalingActive")


def template_refused(catalog, template: str) -> str:
    ref = {"chatTemplate": {"configMapRef": {"name": "templates", "key": "chat.jinja"}}}
    refused = chat_template.refusal(GemmaDeploymentSpec.model_validate(ref),
                                    chat_template.Source("templates", {"chat.jinja": template}), NS, 30)  # fmt: skip
    assert refused is not None
    return refused[2]


def spec_refused(catalog, spec: dict[str, Any]) -> str:
    resource = {"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "spec": spec,
                "metadata": {"name": "chat", "namespace": NS, "uid": "uid-chat", "generation": 1}}  # fmt: skip
    intent = decide(resource, Observed(), inventory.pools(node_list("gke-l4"), catalog, None), catalog, Settings(),
                    "2026-12-04T16:00:00Z")  # fmt: skip
    assert intent.outcome == "Invalid", intent.outcome
    return next(c["message"] for c in intent.status["conditions"] if c["type"] == "Ready")


ENDINGS = [
    # id, the code that quotes it, what it quotes (a message, or a spec), what the message says where it ends
    ("claim-refusal-with-a-stop", claim_refused, f"{RESIZE}.", "must support resize. Allow expansion"),
    ("claim-refusal-without", claim_refused, RESIZE, "must support resize. Allow expansion"),
    ("loader-job-with-a-stop", loader_failed, "Job has reached the specified backoff limit.", "backoff limit. See `"),
    ("loader-job-without", loader_failed, "Job has reached the specified backoff limit", "backoff limit. See `"),
    ("adapter-job-with-a-stop", adapter_failed, "Job was active longer than specified deadline.",
     "longer than specified deadline. See `"),
    ("adapter-job-without", adapter_failed, "Job was active longer than specified deadline",
     "longer than specified deadline. See `"),
    ("hpa-with-a-stop", hpa_refused, f"{HPA}.", "(custom.metrics.k8s.io) registered. Check that"),
    ("hpa-without", hpa_refused, HPA, "(custom.metrics.k8s.io) registered. Check that"),
    ("template-exception-with-a-stop", template_refused,
     "{{ raise_exception('Only user and assistant roles are supported.') }}",
     "the template refuses the sample conversation: Only user and assistant roles are supported. Nothing is changed"),
    ("template-syntax-without", template_refused, "{% for m in messages %}\n{{ m.content }\n{% endfor %}",
     "line 2: unexpected '}'. Nothing is changed"),
    ("schema-ends-in-a-question", spec_refused, {"modle": {}}, "did you mean spec.model?"),
    ("schema-ends-without", spec_refused, {"replicas": "many"}, "spec.replicas: Input should be a valid integer"),
    ("plan-ends-in-a-question", spec_refused, {"accelerator": "nvidia-h100"},
     "did you mean nvidia-h100-80gb or nvidia-h100-mega-80gb?"),
    ("plan-ends-without", spec_refused, {"model": {"family": "nosuch"}}, "Invalid spec: spec.model.family: unknown family 'nosuch'; known: "),
]  # fmt: skip


@pytest.mark.parametrize(("quote", "said", "says"), [row[1:] for row in ENDINGS], ids=[row[0] for row in ENDINGS])
def test_a_quoted_message_ends_its_sentence_once(catalog, quote, said, says):
    message = quote(catalog, said)
    assert says in message, message
    assert not any(twice in message for twice in ("..", "?.", "!.", ". .")), message
    assert message.rstrip().endswith((".", "?")), message
