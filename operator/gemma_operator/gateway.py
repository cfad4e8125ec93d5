"""spec.gateway -> the objects that put the model behind a Gateway API Gateway. Pure.

GKE's Inference Gateway: an HTTPRoute from the Gateway(s) to an `InferencePool`
(inference.networking.k8s.io/v1) over the model pods, whose endpoint picker (EPP) reads each
server's load from its /metrics and picks a pod per request. The operator renders the pool, the
EPP (Deployment, Service, ServiceAccount, a namespaced Role and RoleBinding, and a ConfigMap with
its scheduling config) and the route. Every builder returns plain dicts; `objects` returns [] when
spec.gateway is unset.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Any

from .api.v1alpha1 import GemmaDeploymentSpec
from .catalog import Image
from .runtimes import PORT

Condition = tuple[str, str, str, str]  # type, status, reason, message (as decide's)

# The served (apiVersion, kind) the gateway needs (discovery). Both, or nothing is applied.
INFERENCE_POOL = ("inference.networking.k8s.io/v1", "InferencePool")
HTTP_ROUTE = ("gateway.networking.k8s.io/v1", "HTTPRoute")
REQUIRED = (INFERENCE_POOL, HTTP_ROUTE)
GATEWAY = ("gateway.networking.k8s.io/v1", "Gateway")
# The core kinds of the endpoint picker, in apply order (the EPP's Deployment and Service are
# named NAME-epp, beside the model's own).
EPP_KINDS = (("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"),
             ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("v1", "ConfigMap"), ("apps/v1", "Deployment"),
             ("v1", "Service"))  # fmt: skip
KINDS = (*EPP_KINDS, INFERENCE_POOL, HTTP_ROUTE)
EPP_GRPC_PORT = 9002  # ext-proc, what the Gateway calls
EPP_HEALTH_PORT = 9003  # gRPC health
EPP_METRICS_PORT = 9090
CONFIG_FILE = "config.yaml"
# The picker reads its config file once, at start: a digest of it on the pod template rolls the picker
# when the config changes (its metric names and scorers follow the runtime, which a re-plan can change).
CONFIG_DIGEST_ANNOTATION = "gemma.dev/epp-config-sha256"
# The EPP image's chart values (the chart's gateway.eppImage, as env).
EPP_IMAGE_ENV = "GEMMA_OPERATOR_EPP_IMAGE"
READ_GATEWAYS_ENV = "GEMMA_OPERATOR_READ_GATEWAYS"  # gateway.readGateways

# What the EPP reads from each runtime's /metrics: its core-metrics-extractor's engineConfigs entry
# (an empty spec switches a metric off). v1.5.0 reads these from the EndpointPickerConfig only: its
# older --total-queued-requests-metric, --lora-info-metric, ... flags stop it at start ("flag ... is
# deprecated and cannot be used; configure metrics via engineConfigs", pkg/epp/server/options.go at
# v1.5.0; the data layer, pkg/epp/framework/plugins/datalayer/extractor/metrics, is its default).
# It parses the Prometheus text format; a spec names one gauge, and vLLM's LoRA info gauge is read
# by its labels running_lora_adapters, waiting_lora_adapters (comma lists) and max_lora, taking the
# series with the largest value (vLLM sets it to the time of writing).
# vLLM 0.32: its own names, the EPP's built-in vllm entry (scaling.SIGNALS for the two gauges seen live).
# llama.cpp b11434 --metrics: requests_deferred (waiting) and requests_processing (running), from
#   tools/server/README.md; it exposes no KV-cache gauge, no cache-config info and no LoRA info
#   metric, so llama.cpp pools are routed by queue only (the KV-cache scorer is left out of the
#   EPP's config). tests/dataplane (test_lora_serve.py, test_llama_server.py) read them off the
#   real servers' /metrics as the EPP parses them.
METRICS: dict[str, dict[str, str]] = {
    "vllm": {
        "queuedRequestsSpec": "vllm:num_requests_waiting",
        "runningRequestsSpec": "vllm:num_requests_running",
        "kvUsageSpec": "vllm:kv_cache_usage_perc",
        "loraSpec": "vllm:lora_requests_info",
        "cacheInfoSpec": "vllm:cache_config_info",
    },
    "llamacpp": {
        "queuedRequestsSpec": "llamacpp:requests_deferred",
        "runningRequestsSpec": "llamacpp:requests_processing",
        "kvUsageSpec": "",
        "loraSpec": "",
        "cacheInfoSpec": "",
    },
}
METRICS_SOURCE = "metrics-data-source"  # scrapes each pool pod's /metrics on the pool's target port
METRICS_EXTRACTOR = "core-metrics-extractor"
# The EPP's scoring per runtime: the weights of its chart's default profile, minus what the
# runtime cannot feed.
SCORERS: dict[str, list[tuple[str, int]]] = {
    "vllm": [("queue-scorer", 2), ("kv-cache-utilization-scorer", 2), ("prefix-cache-scorer", 3)],
    "llamacpp": [("queue-scorer", 2), ("prefix-cache-scorer", 3)],
}


def missing(served: set[tuple[str, str]] | frozenset[tuple[str, str]] | None) -> list[str]:
    """The kinds spec.gateway needs that the cluster does not serve, as 'Kind (apiVersion)'."""
    if served is None:
        return []
    return [f"{kind} ({api_version})" for api_version, kind in REQUIRED if (api_version, kind) not in served]


def reason(runtime: str) -> str:
    """Why the pool routes as it does, for status.selection.reasons."""
    if runtime == "llamacpp":
        return ("gateway: the endpoint picker routes by queue only: llama.cpp exposes no KV-cache gauge "
                "(llamacpp:requests_deferred and llamacpp:requests_processing are read)")  # fmt: skip
    return ("gateway: the endpoint picker routes by queue, KV-cache use and loaded adapters "
            "(vllm:num_requests_waiting, vllm:kv_cache_usage_perc, vllm:lora_requests_info)")  # fmt: skip


def epp_name(name: str) -> str:
    return f"{name}-epp"


def _labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "gemma-server", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": "gemma-operator"}  # fmt: skip


def _epp_selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "gemma-epp", "app.kubernetes.io/instance": name}


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels)}


def inference_pool(name: str, namespace: str, selector: dict[str, str]) -> dict[str, Any]:
    """The model pods as one pool, on the server's port, picked from by the EPP."""
    return {
        "apiVersion": INFERENCE_POOL[0],
        "kind": "InferencePool",
        "metadata": _meta(name, namespace, _labels(name, "inference-pool")),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "targetPorts": [{"number": PORT}],
            "endpointPickerRef": {"kind": "Service", "name": epp_name(name), "port": {"number": EPP_GRPC_PORT},
                                  "failureMode": "FailClose"},  # fmt: skip
        },
    }


def http_route(name: str, namespace: str, spec: GemmaDeploymentSpec, served_names: list[str]) -> dict[str, Any]:
    """From the Gateway(s) to the pool. By path prefix (/v1): routing on the request body's `model`
    needs a body-based router in front of the Gateway (GKE's is an add-on; Gateway API matches only
    paths, headers and query parameters), and one pool serves all of `served_names` anyway: the EPP
    and the server pick the model (adapter) from the body."""
    assert spec.gateway is not None
    # With the CRD's defaults written out: its CEL rules compare group and kind.
    parents = [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                **ref.model_dump(by_alias=True, exclude_none=True)} for ref in spec.gateway.parent_refs]  # fmt: skip
    return {
        "apiVersion": HTTP_ROUTE[0],
        "kind": "HTTPRoute",
        "metadata": {**_meta(name, namespace, _labels(name, "http-route")),
                     "annotations": {"gemma.dev/served-models": ",".join(served_names)}},
        "spec": {
            "parentRefs": parents,
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": name}],
            }],
        },
    }  # fmt: skip


def epp_config(runtime: str) -> str:
    """The EPP's EndpointPickerConfig: what it reads from this runtime's /metrics (the pool's pods
    are all this runtime: its engine is the default), its scorers and their weights."""
    scorers = SCORERS[runtime]
    engine = {"name": runtime, **METRICS[runtime]}
    config = {
        "apiVersion": "inference.networking.x-k8s.io/v1alpha1",
        "kind": "EndpointPickerConfig",
        "plugins": [{"type": METRICS_SOURCE},
                    {"type": METRICS_EXTRACTOR, "parameters": {"defaultEngine": runtime, "engineConfigs": [engine]}},
                    *({"type": kind} for kind, _ in scorers)],
        "dataLayer": {"sources": [{"pluginRef": METRICS_SOURCE, "extractors": [{"pluginRef": METRICS_EXTRACTOR}]}]},
        "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": kind, "weight": w} for kind, w in scorers]}],
    }  # fmt: skip
    return json.dumps(config, indent=2) + "\n"  # JSON is YAML


def engine_metrics(config: str) -> dict[str, str]:
    """The metric specs an EndpointPickerConfig (epp_config's text) gives its default engine."""
    parsed = json.loads(config)
    (extractor,) = [p for p in parsed["plugins"] if p["type"] == METRICS_EXTRACTOR]
    params = extractor["parameters"]
    (engine,) = [e for e in params["engineConfigs"] if e["name"] == params["defaultEngine"]]
    return {k: v for k, v in engine.items() if k != "name"}


def epp_args(name: str, namespace: str) -> list[str]:
    return ["--pool-name", name, "--pool-namespace", namespace, "--config-file", f"/config/{CONFIG_FILE}",
            "--zap-encoder", "json", "--tracing=false", "--metrics-endpoint-auth=false"]  # fmt: skip


def epp_objects(name: str, namespace: str, runtime: str, image: str, run_as: tuple[int, int]) -> list[dict[str, Any]]:
    """The endpoint picker and what it may read: the pool's pods and the InferencePool, in its namespace."""
    epp = epp_name(name)
    own = _labels(name, "endpoint-picker")
    select = _epp_selector(name)
    user, group = run_as
    config = epp_config(runtime)
    rules = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["inference.networking.k8s.io"], "resources": ["inferencepools"],
         "verbs": ["get", "list", "watch"]},
        # The picker watches these alpha kinds too (the upstream chart's Role grants them; without
        # them it stays unready: istio/istio.io#17528).
        {"apiGroups": ["inference.networking.x-k8s.io"], "resources": ["inferenceobjectives", "inferencemodelrewrites"],
         "verbs": ["get", "list", "watch"]},
    ]  # fmt: skip
    container = {
        "name": "epp",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": epp_args(name, namespace),
        "ports": [{"name": "grpc", "containerPort": EPP_GRPC_PORT}, {"name": "grpc-health", "containerPort": EPP_HEALTH_PORT},
                  {"name": "metrics", "containerPort": EPP_METRICS_PORT}],
        "env": [{"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "livenessProbe": {"grpc": {"port": EPP_HEALTH_PORT, "service": "inference-extension"},
                          "initialDelaySeconds": 5, "periodSeconds": 10},
        "readinessProbe": {"grpc": {"port": EPP_HEALTH_PORT, "service": "inference-extension"}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "config", "mountPath": "/config", "readOnly": True}],
    }  # fmt: skip
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(epp, namespace, own),
         "automountServiceAccountToken": True},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(epp, namespace, own),
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(epp, namespace, own),
         "subjects": [{"kind": "ServiceAccount", "name": epp, "namespace": namespace}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": epp}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(epp, namespace, own),
         "data": {CONFIG_FILE: config}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(epp, namespace, own),
         "spec": {
             "replicas": 1,
             # One active picker (its prefix-cache state is per process): replace, don't overlap.
             "strategy": {"type": "Recreate"},
             "selector": {"matchLabels": dict(select)},
             "template": {
                 "metadata": {"labels": {**select, "app.kubernetes.io/managed-by": "gemma-operator"},
                              "annotations": {CONFIG_DIGEST_ANNOTATION: hashlib.sha256(config.encode()).hexdigest()[:16]}},
                 "spec": {
                     "serviceAccountName": epp,
                     "terminationGracePeriodSeconds": 130,
                     "securityContext": {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": group,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [container],
                     "volumes": [{"name": "config", "configMap": {"name": epp}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(epp, namespace, own),
         "spec": {"type": "ClusterIP", "selector": dict(select),
                  "ports": [{"name": "grpc-ext-proc", "port": EPP_GRPC_PORT, "targetPort": EPP_GRPC_PORT,
                             "protocol": "TCP", "appProtocol": "http2"},
                            {"name": "http-metrics", "port": EPP_METRICS_PORT, "targetPort": EPP_METRICS_PORT,
                             "protocol": "TCP"}]}},
    ]  # fmt: skip


def objects(name: str, namespace: str, spec: GemmaDeploymentSpec, runtime: str, selector: dict[str, str],
            served_names: list[str], image: Image, image_override: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Everything spec.gateway renders, in apply order (the EPP before the pool that names it, the
    pool before the route to it); [] without spec.gateway."""
    if spec.gateway is None:
        return []
    run_as = (image.run_as.user, image.run_as.group) if image.run_as else (65532, 65532)
    return [*epp_objects(name, namespace, runtime, image_override or image.ref, run_as),
            inference_pool(name, namespace, selector), http_route(name, namespace, spec, served_names)]


def gateway_endpoint(gateway: dict[str, Any] | None, spec: GemmaDeploymentSpec) -> str | None:
    """The Gateway's first address as the OpenAI base URL, when it reports one (status.addresses)."""
    if not gateway:
        return None
    addresses = (gateway.get("status") or {}).get("addresses") or []
    value = next((a.get("value") for a in addresses if a.get("value")), None)
    if not value:
        return None
    assert spec.gateway is not None
    ref = spec.gateway.parent_refs[0]
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    listener = next((item for item in listeners if ref.section_name in (None, item.get("name"))
                     and ref.port in (None, item.get("port"))), {})  # fmt: skip
    scheme = "https" if listener.get("protocol") == "HTTPS" else "http"
    port = ref.port or listener.get("port")
    default = 443 if scheme == "https" else 80
    host = f"[{value}]" if ":" in value else value
    suffix = f":{port}" if port and port != default else ""
    path = "/v1/embeddings" if spec.model.task == "embed" else "/v1"
    return f"{scheme}://{host}{suffix}{path}"


def wanted(meta: Mapping[str, Any], spec: GemmaDeploymentSpec, runtime: str, served_names: list[str],
           selector: dict[str, str], owner: dict[str, Any], served: Collection[tuple[str, str]] | None,
           image: Image, image_override: str | None = None) -> tuple[list[dict[str, Any]], Condition | None]:  # fmt: skip
    """spec.gateway's objects, owned by `owner`, and its condition: all of them, or none when the
    cluster does not serve the InferencePool and HTTPRoute kinds (nothing is half-applied).
    `served_names`: the base model's and each adapter's (the route's and the picker's models)."""
    if spec.gateway is None:
        return [], None
    lacking = missing(served)
    if lacking:
        message = (f"spec.gateway needs {' and '.join(lacking)}, which this cluster does not serve: install the "
                   "Gateway API and Inference Extension CRDs (on GKE, enable the Gateway API). Nothing of the "
                   "gateway is applied meanwhile; the Service serves in-cluster.")  # fmt: skip
        return [], ("Gateway", "False", "CRDsNotServed", message)
    found = objects(meta["name"], meta["namespace"], spec, runtime, selector, served_names, image, image_override)
    for obj in found:
        obj["metadata"]["ownerReferences"] = [dict(owner)]
    parents = ", ".join(f"{ref.namespace or meta['namespace']}/{ref.name}" for ref in spec.gateway.parent_refs)
    message = (f"InferencePool {meta['name']} and its endpoint picker {epp_name(meta['name'])} serve "
               f"through HTTPRoute {meta['name']} attached to {parents}.")  # fmt: skip
    return found, ("Gateway", "True", "Attached", message)


def affected_by_discovery(specs: Mapping[Any, Mapping[str, Any] | None], before: Collection[tuple[str, str]],
                          after: Collection[tuple[str, str]]) -> list[Any]:  # fmt: skip
    """The resources (key -> raw spec) with spec.gateway whose rendering a discovery change alters:
    the InferencePool/HTTPRoute CRDs installed or removed (CRDsNotServed <-> Attached), or the
    Gateway kind (its address as the endpoint)."""
    kinds = (*REQUIRED, GATEWAY)
    if {k for k in before if k in kinds} == {k for k in after if k in kinds}:
        return []
    return [key for key, raw in specs.items() if (raw or {}).get("gateway")]
