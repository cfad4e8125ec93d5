"""spec.gateway: the InferencePool, the endpoint picker and the HTTPRoute, validated against the
published CRDs (read from ../shared/crds, never copied) and the Kubernetes schemas."""

from __future__ import annotations

import pytest
import yaml

from gemma_operator import gateway
from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
from gemma_operator.render import render, selector_labels
from tests.unit.test_scaling import assert_valid, planned

GATEWAY = {"parentRefs": [{"name": "inference-gateway", "namespace": "gateways", "sectionName": "http"}]}


def rendered(catalog, fixture: str, served_names: list[str]) -> tuple[str, list[dict]]:
    spec, result = planned(catalog, fixture, {"gateway": GATEWAY})
    objs = gateway.objects("chat", "team-a", spec, result.runtime, selector_labels("chat"), served_names,
                           catalog.images["inference-epp"])
    return result.runtime, objs


@pytest.mark.parametrize(("fixture", "runtime"), [("gke-l4", "vllm"), ("gke-cpu-only", "llamacpp")])
@pytest.mark.parametrize("served_names", [["gemma-3-1b-it"], ["gemma-3-1b-it", "support-bot", "sql-writer"]])
def test_every_gateway_object_validates(catalog, fixture, runtime, served_names):
    got, objs = rendered(catalog, fixture, served_names)
    assert got == runtime
    assert [(o["apiVersion"], o["kind"]) for o in objs] == list(gateway.KINDS)
    for obj in objs:
        assert_valid(obj)
    route = objs[-1]
    assert route["metadata"]["annotations"]["gemma.dev/served-models"] == ",".join(served_names)


def test_the_pool_selects_the_model_pods_and_names_its_picker(catalog):
    _, objs = rendered(catalog, "gke-l4", ["gemma-3-1b-it"])
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    pool = by_kind[("InferencePool", "chat")]["spec"]
    assert pool["selector"]["matchLabels"] == selector_labels("chat")
    assert pool["targetPorts"] == [{"number": 8000}]
    assert pool["endpointPickerRef"]["name"] == "chat-epp"
    service = by_kind[("Service", "chat-epp")]["spec"]
    assert pool["endpointPickerRef"]["port"]["number"] in [p["port"] for p in service["ports"]]
    # The picker's pods are not model pods (they would join the pool and the pod index).
    epp_pods = by_kind[("Deployment", "chat-epp")]["spec"]["template"]["metadata"]["labels"]
    assert not set(selector_labels("chat").items()) <= set(epp_pods.items())
    route = by_kind[("HTTPRoute", "chat")]["spec"]
    assert route["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", **GATEWAY["parentRefs"][0]}]
    assert route["rules"][0]["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                                 "name": "chat"}]


def test_the_picker_may_read_only_pods_pools_and_their_objectives_in_its_namespace(catalog):
    _, objs = rendered(catalog, "gke-l4", ["gemma-3-1b-it"])
    role = next(o for o in objs if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "team-a"
    verbs = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert verbs == {("", "pods"): {"get", "list", "watch"},
                     ("inference.networking.k8s.io", "inferencepools"): {"get", "list", "watch"},
                     ("inference.networking.x-k8s.io", "inferenceobjectives"): {"get", "list", "watch"},
                     ("inference.networking.x-k8s.io", "inferencemodelrewrites"): {"get", "list", "watch"}}


# The flags v1.5.0's Validate refuses at start (pkg/epp/server/options.go): metrics are configured
# in the EndpointPickerConfig's core-metrics-extractor instead.
REFUSED_FLAGS = ("--total-queued-requests-metric", "--total-running-requests-metric",
                 "--kv-cache-usage-percentage-metric", "--lora-info-metric", "--cache-info-metric")


@pytest.mark.parametrize(("fixture", "queue", "kv", "lora", "scorers"), [
    ("gke-l4", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:lora_requests_info",
     ["queue-scorer", "kv-cache-utilization-scorer", "prefix-cache-scorer"]),
    ("gke-cpu-only", "llamacpp:requests_deferred", "", "", ["queue-scorer", "prefix-cache-scorer"]),
])  # fmt: skip
def test_the_picker_reads_the_runtimes_own_metric_names(catalog, fixture, queue, kv, lora, scorers):
    runtime, objs = rendered(catalog, fixture, ["m"])
    args = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(zip(args[::2], args[1::2]))
    assert flags["--pool-name"] == "chat"
    assert not [a for a in args if a.split("=")[0] in REFUSED_FLAGS], args
    text = next(o for o in objs if o["kind"] == "ConfigMap")["data"][gateway.CONFIG_FILE]
    config = yaml.safe_load(text)
    assert [p["pluginRef"] for p in config["schedulingProfiles"][0]["plugins"]] == scorers
    metrics = gateway.engine_metrics(text)
    assert (metrics["queuedRequestsSpec"], metrics["kvUsageSpec"], metrics["loraSpec"]) == (queue, kv, lora)
    # The data layer scrapes with the extractor, and every plugin a profile or source names is declared.
    declared = {p.get("name", p["type"]) for p in config["plugins"]}
    (source,) = config["dataLayer"]["sources"]
    assert {source["pluginRef"], *(e["pluginRef"] for e in source["extractors"])} == {"metrics-data-source",
                                                                                      "core-metrics-extractor"}
    assert {source["pluginRef"], *(e["pluginRef"] for e in source["extractors"]), *scorers} <= declared
    assert ("queue only" in gateway.reason(runtime)) == (runtime == "llamacpp")


def test_a_config_change_rolls_the_picker(catalog):
    """The picker reads its config once: the runtime's config (metric names, scorers) is in the
    pod template's digest, so a re-plan onto another runtime replaces the picker's pod."""
    def digest(fixture, served_names):
        _, objs = rendered(catalog, fixture, served_names)
        template = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]
        return template["metadata"]["annotations"][gateway.CONFIG_DIGEST_ANNOTATION]

    assert digest("gke-l4", ["m"]) != digest("gke-cpu-only", ["m"])
    assert digest("gke-l4", ["m"]) == digest("gke-l4", ["m", "support-bot"])  # the served names are the route's


def test_the_image_is_the_catalogs_unless_overridden(catalog):
    spec, result = planned(catalog, "gke-l4", {"gateway": GATEWAY})
    image = catalog.images["inference-epp"]
    assert image.ref == "registry.k8s.io/gateway-api-inference-extension/epp:v1.5.0"
    objs = gateway.objects("chat", "team-a", spec, "vllm", {}, ["m"], image, "example.com/epp:v9")
    pod = next(o for o in objs if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "example.com/epp:v9"
    assert pod["securityContext"]["runAsUser"] == image.run_as.user


def test_no_gateway_renders_nothing(catalog):
    spec, result = planned(catalog, "gke-l4", {})
    assert gateway.objects("chat", "team-a", spec, "vllm", {}, ["m"], catalog.images["inference-epp"]) == []
    assert "InferencePool" not in [o["kind"] for o in render(result, "chat", "team-a", spec)]


@pytest.mark.parametrize(("served", "missing"), [
    (None, []),
    (set(), ["InferencePool (inference.networking.k8s.io/v1)", "HTTPRoute (gateway.networking.k8s.io/v1)"]),
    ({gateway.HTTP_ROUTE}, ["InferencePool (inference.networking.k8s.io/v1)"]),
    (set(gateway.REQUIRED), []),
])
def test_what_the_cluster_misses_is_named(served, missing):
    assert gateway.missing(served) == missing


@pytest.mark.parametrize(("status", "ref", "listeners", "url"), [
    ({"addresses": [{"type": "IPAddress", "value": "10.128.0.9"}]}, {"name": "g"}, [{"name": "http", "port": 80, "protocol": "HTTP"}],
     "http://10.128.0.9/v1"),
    ({"addresses": [{"value": "10.0.0.1"}]}, {"name": "g", "sectionName": "alt"},
     [{"name": "http", "port": 80, "protocol": "HTTP"}, {"name": "alt", "port": 8080, "protocol": "HTTP"}],
     "http://10.0.0.1:8080/v1"),
    ({"addresses": [{"value": "gw.example.com"}]}, {"name": "g"}, [{"name": "https", "port": 443, "protocol": "HTTPS"}],
     "https://gw.example.com/v1"),
    ({}, {"name": "g"}, [], None),
])
def test_the_endpoint_is_the_gateways_address(status, ref, listeners, url):
    spec = GemmaDeploymentSpec.model_validate({"gateway": {"parentRefs": [ref]}})
    live = {"spec": {"listeners": listeners}, "status": status}
    assert gateway.gateway_endpoint(live, spec) == url
