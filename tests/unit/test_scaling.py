"""The children that come and go: PDB, update strategy, HPA, ScaledObject, PodMonitoring, ServiceMonitor.

Built-in kinds are checked against Kubernetes' schemas (strict); the third-party kinds against
their projects' published CRDs, read from ../shared/crds (never copied into the project).
"""

from __future__ import annotations

import copy
import os
import pathlib

import kubernetes_validate
import pytest
import yaml

from gemma_operator import scaling
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.inventory import pools
from gemma_operator.planner import InvalidSpec, Plan, plan
from gemma_operator.render import render
from tests.conftest import ROOT, node_list
from tests.integration.kubeapi import schema as structural

KUBE_VERSION = "1.33.0"
OWNER = {"metadata": {"name": "chat", "namespace": "team-a", "uid": "3f1c2a9e-0000-4000-8000-000000000001"}}
THIRD_PARTY_CRDS = pathlib.Path(os.environ.get("GEMMA_THIRD_PARTY_CRDS", ROOT.parent / "shared" / "crds"))
CRD_FILES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("monitoring.googleapis.com/v1", "PodMonitoring"): "monitoring.googleapis.com_podmonitorings.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    # spec.gateway's (test_gateway.py)
    ("inference.networking.k8s.io/v1", "InferencePool"): "inference.networking.k8s.io_inferencepools.yaml",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproutes.yaml",
}
FIXTURES = sorted(p.stem for p in (ROOT / "tests/fixtures/nodes").glob("*.yaml"))
QUEUE = {"minReplicas": 1, "maxReplicas": 4, "metric": "queue", "target": 4}
ALL_SERVED = {scaling.KEDA, scaling.POD_MONITORING, scaling.SERVICE_MONITOR}


def planned(catalog, fixture: str, spec: dict) -> tuple[GemmaDeploymentSpec, Plan]:
    parsed = GemmaDeploymentSpec.model_validate(spec)
    result = plan(parsed, pools(node_list(fixture), catalog, parsed.node_selector), catalog)
    return parsed, result


def kinds(objects: list[dict]) -> list[str]:
    return [o["kind"] for o in objects]


def crd_schema(api_version: str, kind: str) -> dict:
    path = THIRD_PARTY_CRDS / CRD_FILES[(api_version, kind)]
    if not path.exists():
        pytest.skip(f"{path} is missing (the third-party CRDs live in ../shared/crds; see its README)")
    crd = yaml.safe_load(path.read_text())
    version = api_version.split("/")[1]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return served["schema"]["openAPIV3Schema"]


def assert_valid(obj: dict) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key not in CRD_FILES:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        return
    schema = crd_schema(*key)
    assert structural.validate(schema, obj) == [], obj
    # Strict: a field the CRD does not declare would be pruned silently by the API server.
    assert structural.prune(schema, copy.deepcopy(obj)) == obj, f"{obj['kind']} has fields its CRD drops"


# ------------------------------------------------------------------- PDB and strategy
@pytest.mark.parametrize(("spec", "pdb", "strategy"), [
    ({}, False, {"type": "Recreate"}),
    ({"replicas": 2}, True, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    ({"replicas": 0}, False, {"type": "Recreate"}),
    ({"autoscaling": QUEUE}, False, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
    ({"autoscaling": {**QUEUE, "minReplicas": 2}}, True,
     {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
])  # fmt: skip
def test_pdb_and_strategy_follow_the_replica_floor_on_accelerators(catalog, spec, pdb, strategy):
    parsed, result = planned(catalog, "gke-l4", spec)
    objects = render(result, "chat", "team-a", parsed, OWNER, scaling.choose(parsed, ALL_SERVED))
    deployment = objects[0]
    assert deployment["spec"]["strategy"] == strategy
    budgets = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert bool(budgets) == pdb
    for budget in budgets:
        assert budget["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
        assert budget["metadata"]["ownerReferences"][0]["uid"] == OWNER["metadata"]["uid"]
        assert_valid(budget)
    condition = scaling.disruption_condition(parsed)
    assert condition[1] == ("True" if pdb else "False")


def test_cpu_pools_keep_their_surge_strategy(catalog):
    parsed, result = planned(catalog, "gke-cpu-only", {"replicas": 3})
    deployment, *others = render(result, "chat", "team-a", parsed, OWNER)
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    assert "PodDisruptionBudget" in kinds(others)


# ------------------------------------------------------------------------ autoscaling
@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("metric", ["queue", "kvCache"])
@pytest.mark.parametrize(("provider", "collector"), [("hpa", "PodMonitoring"), ("hpa", "ServiceMonitor"),
                                                     ("keda", "PodMonitoring"), ("keda", "ServiceMonitor")])  # fmt: skip
def test_every_provider_metric_and_collector_renders_valid_objects(catalog, fixture, metric, provider, collector):
    spec = {"autoscaling": {"minReplicas": 2, "maxReplicas": 4, "metric": metric, "target": 4, "provider": provider}}
    parsed, result = planned(catalog, fixture, spec)
    if not isinstance(result, Plan):
        pytest.skip(f"{fixture}: nothing fits the default spec")
    choice = scaling.choose(parsed, ALL_SERVED, collector)
    if (result.runtime, metric) not in scaling.SIGNALS:
        with pytest.raises(InvalidSpec) as refused:
            render(result, "chat", "team-a", parsed, OWNER, choice)
        assert refused.value.field == "spec.autoscaling.metric"
        return
    objects = render(result, "chat", "team-a", parsed, OWNER, choice)
    autoscaler = "HorizontalPodAutoscaler" if provider == "hpa" else "ScaledObject"
    assert kinds(objects) == ["Deployment", "Service", "PodDisruptionBudget", collector, autoscaler]
    assert "replicas" not in objects[0]["spec"], "with autoscaling on, the autoscaler owns the replica count"
    for obj in objects:
        assert_valid(obj)
    name = scaling.SIGNALS[(result.runtime, metric)]
    scaler = objects[-1]
    if provider == "hpa":
        (pods_metric,) = scaler["spec"]["metrics"]
        served_as = pods_metric["pods"]["metric"]["name"]
        assert served_as == (f"prometheus.googleapis.com|{name}|gauge" if collector == "PodMonitoring" else name)
        assert scaler["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= scaling.scale_down_window_s(result)
    else:
        (trigger,) = scaler["spec"]["triggers"]
        assert name in trigger["metadata"]["query"]
        assert 'app.kubernetes.io/instance="chat"' in trigger["metadata"]["query"]


def test_the_scale_down_window_covers_a_replica_loading_its_weights(catalog):
    from gemma_operator.runtimes import startup_seconds

    parsed, result = planned(catalog, "gke-h100x8", {"model": {"sizePolicy": "largest"}, "autoscaling": QUEUE})
    hpa = render(result, "chat", "team-a", parsed, OWNER, scaling.choose(parsed, set(), "ServiceMonitor"))[-1]
    assert startup_seconds(result) > scaling.SCALE_DOWN_MIN_S
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == startup_seconds(result)


def test_kv_cache_percent_becomes_the_fraction_vllm_reports(catalog):
    spec = {"autoscaling": {**QUEUE, "metric": "kvCache", "target": 80}}
    parsed, result = planned(catalog, "gke-l4", spec)
    hpa = render(result, "chat", "team-a", parsed, OWNER, scaling.choose(parsed, set(), "ServiceMonitor"))[-1]
    assert hpa["spec"]["metrics"][0]["pods"] == {"metric": {"name": "vllm:kv_cache_usage_perc"},
                                                 "target": {"type": "AverageValue", "averageValue": "800m"}}  # fmt: skip
    parsed = GemmaDeploymentSpec.model_validate({"autoscaling": {**QUEUE, "metric": "kvCache", "target": 80, "provider": "keda"}})
    scaled = render(result, "chat", "team-a", parsed, OWNER, scaling.choose(parsed, ALL_SERVED))[-1]
    assert scaled["spec"]["triggers"][0]["metadata"]["threshold"] == "0.8"


def test_llamacpp_has_no_kv_cache_signal(catalog):
    parsed, result = planned(catalog, "gke-cpu-only", {"autoscaling": {**QUEUE, "metric": "kvCache", "target": 80}})
    assert result.runtime == "llamacpp"
    with pytest.raises(InvalidSpec, match="kvCache is not a signal llamacpp exposes; use queue") as refused:
        render(result, "chat", "team-a", parsed, OWNER)
    assert refused.value.field == "spec.autoscaling.metric"


@pytest.mark.parametrize(("autoscaling", "served", "provider", "collector"), [
    ({"provider": "auto"}, set(), "hpa", None),
    ({"provider": "auto"}, {scaling.KEDA, scaling.SERVICE_MONITOR}, "keda", "ServiceMonitor"),
    ({"provider": "hpa"}, ALL_SERVED, "hpa", "PodMonitoring"),
    ({"provider": "auto"}, None, "hpa", "PodMonitoring"),  # `plan`, no cluster to ask
    ({"provider": "keda", "minReplicas": 0}, {scaling.KEDA}, "keda", None),
])  # fmt: skip
def test_provider_and_collector_follow_what_the_cluster_serves(autoscaling, served, provider, collector):
    spec = GemmaDeploymentSpec.model_validate({"autoscaling": {**QUEUE, **autoscaling}})
    choice = scaling.choose(spec, served)
    assert (choice.provider, choice.collector) == (provider, collector)


@pytest.mark.parametrize(("autoscaling", "served", "field"), [
    ({"minReplicas": 0}, set(), "autoscaling.minReplicas"),
    ({"minReplicas": 0, "provider": "hpa"}, ALL_SERVED, "autoscaling.minReplicas"),
    ({"provider": "keda"}, set(), "autoscaling.provider"),
])  # fmt: skip
def test_what_the_cluster_cannot_do_is_refused_naming_the_field(autoscaling, served, field):
    spec = GemmaDeploymentSpec.model_validate({"autoscaling": {**QUEUE, **autoscaling}})
    with pytest.raises(InvalidSpec) as refused:
        scaling.choose(spec, served)
    assert refused.value.field == f"spec.{field}"


@pytest.mark.parametrize(("autoscaling", "words"), [
    ({"minReplicas": 5, "maxReplicas": 4}, "minReplicas (5) exceeds maxReplicas (4)"),
    ({"metric": "kvCache", "target": 120}, "over 100"),
    ({"metric": "cpu"}, "queue"),
])  # fmt: skip
def test_autoscaling_bounds(autoscaling, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        GemmaDeploymentSpec.model_validate({"autoscaling": {**QUEUE, **autoscaling}})


def test_the_autoscalers_conditions_reach_the_status_words():
    spec = GemmaDeploymentSpec.model_validate({"autoscaling": QUEUE})
    hpa = {"status": {"desiredReplicas": 3, "conditions": [
        {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale", "message": "the HPA controller was able to get the target's current scale"},
        {"type": "ScalingActive", "status": "False", "reason": "FailedGetPodsMetric",
         "message": "the HPA was unable to compute the replica count: unable to get metric vllm:num_requests_waiting: no custom metrics API (custom.metrics.k8s.io) registered"},
    ]}}  # fmt: skip
    conditions = scaling.autoscaler_conditions(spec, scaling.Choice("hpa", "ServiceMonitor"), hpa, "vllm:num_requests_waiting")
    active = next(c for c in conditions if c[0] == "ScalingActive")
    assert active[1:3] == ("False", "FailedGetPodsMetric")
    assert "no custom metrics API" in active[3] and "metrics adapter" in active[3]
    assert scaling.desired_replicas(spec, {"spec": {"replicas": 2}}, hpa) == 3
    assert scaling.desired_replicas(spec, {"spec": {"replicas": 2}}, None) == 2
    # A real HPA's status before the controller computed a count (and while it cannot): desiredReplicas 0.
    fresh = {"status": {"desiredReplicas": 0, "currentMetrics": None}}
    assert scaling.desired_replicas(spec, {"spec": {"replicas": 2}}, fresh) == 2
    failing = {"status": {"currentReplicas": 3, "desiredReplicas": 0, "conditions": hpa["status"]["conditions"]}}
    assert scaling.desired_replicas(spec, {"spec": {"replicas": 3}}, failing) == 3
    active = {"status": {"desiredReplicas": 0, "conditions": [{"type": "ScalingActive", "status": "True"}]}}
    assert scaling.desired_replicas(spec, {"spec": {"replicas": 1}}, active) == 0  # a computed zero (scale to zero)
    pending = scaling.autoscaler_conditions(spec, scaling.Choice("hpa", None), None, "vllm:num_requests_waiting")
    assert [c[:3] for c in pending] == [("MetricsScraped", "False", "NoCollector"),
                                        ("ScalingActive", "Unknown", "AutoscalerPending")]  # fmt: skip


# The names the data-plane tests must find in the real servers' /metrics (tests/dataplane):
# llama.cpp's are scraped in test_llama_server.py; vLLM's are for the vLLM server fixture.
ENGINE_METRICS = {
    "vllm": {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"},
    "llamacpp": {"llamacpp:requests_deferred"},
}


def test_the_builders_use_exactly_the_names_the_dataplane_checks():
    used = {runtime: {name for (r, _), name in scaling.SIGNALS.items() if r == runtime} for runtime in ENGINE_METRICS}
    assert used == ENGINE_METRICS
