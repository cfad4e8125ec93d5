"""Plan + spec -> the children around the model Deployment that come and go. Pure.

The PodDisruptionBudget, the autoscaler (an HPA or a KEDA ScaledObject) and the metrics
collector (a PodMonitoring or a ServiceMonitor). Each builder returns None when the object must
not exist; the apply step then deletes the one the operator owns (`decide._prunes`).
The Deployment's update strategy and who owns its replica count are decided here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from .api.v1alpha1 import GemmaDeploymentSpec
from .planner import InvalidSpec, Plan
from .runtimes import PORT, PORT_NAME, startup_seconds
from .sentences import sentence

# The engines' own load signals at the pinned versions, per (runtime, spec metric).
# vLLM 0.32: both gauges seen on a running vLLM 0.32 CPU server (/metrics); kv_cache_usage_perc
#   is a fraction (0 to 1) despite its name. https://docs.vllm.ai/en/stable/design/metrics.html
# llama.cpp b11434 with --metrics: requests_deferred (gauge) is there; it exposes no KV-cache
#   gauge (checked on the real llama-server, tests/dataplane/test_llama_server.py).
SIGNALS: dict[tuple[str, str], str] = {
    ("vllm", "queue"): "vllm:num_requests_waiting",
    ("vllm", "kvCache"): "vllm:kv_cache_usage_perc",
    ("llamacpp", "queue"): "llamacpp:requests_deferred",
}
# Signals whose value is a fraction: the spec's percent target is divided by 100.
FRACTIONS = {"vllm:kv_cache_usage_perc"}
METRICS_PATH = "/metrics"
SCRAPE_INTERVAL = "15s"
PROVIDERS = ("hpa", "keda")
COLLECTORS = ("PodMonitoring", "ServiceMonitor")
# The served (apiVersion, kind) that make each choice possible (discovery).
KEDA = ("keda.sh/v1alpha1", "ScaledObject")
POD_MONITORING = ("monitoring.googleapis.com/v1", "PodMonitoring")
SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")
HPA = ("autoscaling/v2", "HorizontalPodAutoscaler")
PDB = ("policy/v1", "PodDisruptionBudget")
# Every kind a builder here may return None for: the kinds the apply step prunes.
OPTIONAL_KINDS = (PDB, HPA, KEDA, POD_MONITORING, SERVICE_MONITOR)
# A KEDA Prometheus trigger needs the server to query. Chart value -> env.
PROMETHEUS_URL_DEFAULT = "http://prometheus-operated.monitoring.svc:9090"
# The scale-up window: a queue spike scales up at once (the HPA's default is 0 s, too).
SCALE_DOWN_MIN_S = 300


@dataclass(frozen=True)
class Choice:
    """What the cluster offers, resolved: which autoscaler and which collector to render."""

    provider: str | None = None  # "hpa" | "keda" | None (autoscaling off)
    collector: str | None = None  # "PodMonitoring" | "ServiceMonitor" | None
    prometheus_url: str = PROMETHEUS_URL_DEFAULT


def signal(spec: GemmaDeploymentSpec, plan: Plan) -> str | None:
    """The Prometheus metric the autoscaler follows; InvalidSpec when the engine has none."""
    if spec.autoscaling is None:
        return None
    name = SIGNALS.get((plan.runtime, spec.autoscaling.metric))
    if name is None:
        offered = sorted(m for r, m in SIGNALS if r == plan.runtime)
        raise InvalidSpec(
            "autoscaling.metric",
            f"{spec.autoscaling.metric} is not a signal {plan.runtime} exposes; use {' or '.join(offered)}",
        )
    return name


def choose(spec: GemmaDeploymentSpec, served: set[tuple[str, str]] | None, collector: str = "auto",
           prometheus_url: str = PROMETHEUS_URL_DEFAULT) -> Choice:  # fmt: skip
    """Provider and collector from the spec, the kinds the cluster serves and the chart's collector value.

    auto provider: KEDA when its ScaledObject is served, else an HPA. auto collector: PodMonitoring
    (Managed Service for Prometheus) when served, else ServiceMonitor when served. A collector
    whose CRD is not served is not rendered (status says so). `served` None: no cluster to ask
    (`plan`): keda only when asked for, and the collector as given (PodMonitoring for auto).
    """
    scaling = spec.autoscaling
    if scaling is None:
        return Choice(prometheus_url=prometheus_url)
    offline = served is None
    served = served or set()
    provider = scaling.provider
    if provider == "auto":
        provider = "keda" if KEDA in served else "hpa"
    if scaling.min_replicas == 0 and provider != "keda":
        raise InvalidSpec(
            "autoscaling.minReplicas",
            "0 needs provider keda (a HorizontalPodAutoscaler keeps one replica at least)"
            + ("" if offline else "; this cluster does not serve KEDA's ScaledObject"),
        )
    if provider == "keda" and not offline and KEDA not in served:
        raise InvalidSpec("autoscaling.provider", "keda needs KEDA installed (keda.sh/v1alpha1 ScaledObject is not "
                          "served by this cluster); install KEDA, or use hpa")  # fmt: skip
    kinds = {kind: (av, kind) for av, kind in (POD_MONITORING, SERVICE_MONITOR)}
    if collector not in COLLECTORS:
        collector = next((kind for kind, key in kinds.items() if key in served), None)
        if offline:
            collector = "PodMonitoring"
    elif not offline and kinds[collector] not in served:
        collector = None
    return Choice(provider, collector, prometheus_url)


def _choice_or_refusal(spec: GemmaDeploymentSpec, served: set[tuple[str, str]], collector: str) -> Choice | str:
    try:
        return choose(spec, served, collector)
    except InvalidSpec as exc:
        return str(exc)


def affected_by_discovery(specs: Mapping[Any, Mapping[str, Any] | None], before: set[tuple[str, str]],
                          after: set[tuple[str, str]], collector: str = "auto") -> list[Any]:  # fmt: skip
    """The resources (key -> raw spec) whose autoscaler or collector choice, or refusal, differs
    between two discovery results: those to reconcile again when a CRD appears or vanishes."""
    if before == after:
        return []
    affected = []
    for key, raw in specs.items():
        if not (raw or {}).get("autoscaling"):
            continue
        try:
            spec = GemmaDeploymentSpec.model_validate(raw)
        except ValidationError:  # refused whatever the cluster serves
            continue
        if _choice_or_refusal(spec, before, collector) != _choice_or_refusal(spec, after, collector):
            affected.append(key)
    return affected


def replica_floor(spec: GemmaDeploymentSpec) -> int:
    """The fewest replicas the spec keeps serving."""
    return spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas


def deployment_replicas(spec: GemmaDeploymentSpec) -> int | None:
    """The Deployment's replicas as the operator sends them; None with autoscaling on, so that the
    autoscaler is the field's one owner (server-side apply leaves a field nobody sends alone)."""
    return None if spec.autoscaling else spec.replicas


def strategy(spec: GemmaDeploymentSpec, plan: Plan) -> dict[str, Any]:
    """How pods are replaced. Accelerators can't be shared between an old and a new pod: never
    surge on them. One replica: Recreate. Several (or autoscaled): one at a time, no extra accelerator."""
    if plan.pool.kind == "cpu":
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    if spec.autoscaling is None and spec.replicas <= 1:
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def interrupts_on_upgrade(spec: GemmaDeploymentSpec) -> bool:
    """One replica (or none) at the floor: a node drain takes the model down; no PDB can help."""
    return replica_floor(spec) < 2


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels)}


def pod_disruption_budget(name: str, namespace: str, spec: GemmaDeploymentSpec, labels: dict[str, str],
                          selector: dict[str, str]) -> dict[str, Any] | None:  # fmt: skip
    """Two replicas or more: a drain takes one at a time. One: none (it would block drains for good)."""
    if interrupts_on_upgrade(spec):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace, labels),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    }


def _target_value(spec: GemmaDeploymentSpec, metric: str) -> str:
    """The per-pod target as a Kubernetes quantity in the metric's own unit."""
    assert spec.autoscaling is not None
    target = spec.autoscaling.target
    if metric in FRACTIONS:
        return f"{target * 10}m"  # percent -> fraction: 80 -> 800m (0.8)
    return str(target)


def _threshold(spec: GemmaDeploymentSpec, metric: str) -> str:
    """The same target as a plain number (KEDA's trigger metadata is strings of numbers)."""
    assert spec.autoscaling is not None
    target = spec.autoscaling.target
    return f"{target / 100:g}" if metric in FRACTIONS else str(target)


def scale_down_window_s(plan: Plan) -> int:
    """How long the load must stay low before a replica is removed: at least the model's start-up
    budget, so a replica that is still loading (not serving yet, pulling the signal down) is not the
    reason for, or the victim of, a scale-down that the next spike undoes."""
    return max(SCALE_DOWN_MIN_S, startup_seconds(plan))


def gke_metric_name(metric: str) -> str:
    """The name the Custom Metrics Stackdriver Adapter serves a Managed Prometheus gauge under.
    https://cloud.google.com/kubernetes-engine/docs/how-to/machine-learning/inference/autoscaling"""
    return f"prometheus.googleapis.com|{metric}|gauge"


def horizontal_pod_autoscaler(name: str, namespace: str, spec: GemmaDeploymentSpec, plan: Plan,
                              choice: Choice, labels: dict[str, str]) -> dict[str, Any] | None:  # fmt: skip
    metric = signal(spec, plan)
    if metric is None or choice.provider != "hpa":
        return None
    assert spec.autoscaling is not None
    # Through the custom metrics API. Scraped by Managed Prometheus (PodMonitoring), the gauge is
    # served by the Custom Metrics Stackdriver Adapter under its naming; scraped by a Prometheus
    # Operator (ServiceMonitor), by prometheus-adapter under its own name (its rule: README).
    served_as = gke_metric_name(metric) if choice.collector == "PodMonitoring" else metric
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.autoscaling.min_replicas,
            "maxReplicas": spec.autoscaling.max_replicas,
            "metrics": [{
                "type": "Pods",
                "pods": {
                    "metric": {"name": served_as},
                    "target": {"type": "AverageValue", "averageValue": _target_value(spec, metric)},
                },
            }],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": scale_down_window_s(plan),
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    }  # fmt: skip


def scaled_object(name: str, namespace: str, spec: GemmaDeploymentSpec, plan: Plan, choice: Choice,
                  labels: dict[str, str], selector: dict[str, str]) -> dict[str, Any] | None:  # fmt: skip
    metric = signal(spec, plan)
    if metric is None or choice.provider != "keda":
        return None
    assert spec.autoscaling is not None
    match = ",".join(f'{k}="{v}"' for k, v in selector.items() if k == "app.kubernetes.io/instance")
    # The per-pod average of the engine's gauge over the model's pods in this namespace.
    query = f'avg(avg_over_time({metric}{{namespace="{namespace}",{match}}}[1m]))'
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": spec.autoscaling.min_replicas,
            "maxReplicaCount": spec.autoscaling.max_replicas,
            # From zero, the first replica needs its whole start-up: don't scale back to zero sooner.
            "cooldownPeriod": scale_down_window_s(plan),
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": scale_down_window_s(plan),
                "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
            }}}},
            "triggers": [{
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": choice.prometheus_url,
                    "query": query,
                    "threshold": _threshold(spec, metric),
                    "activationThreshold": "0",
                },
            }],
        },
    }  # fmt: skip


def pod_monitoring(name: str, namespace: str, spec: GemmaDeploymentSpec, choice: Choice, labels: dict[str, str],
                   selector: dict[str, str]) -> dict[str, Any] | None:  # fmt: skip
    if spec.autoscaling is None or choice.collector != "PodMonitoring":
        return None
    return {
        "apiVersion": "monitoring.googleapis.com/v1",
        "kind": "PodMonitoring",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            # By number: the CRD's rule on this int-or-string field (self != 0) is one that
            # CEL evaluators without heterogeneous equality refuse for a name.
            "endpoints": [{"port": PORT, "path": METRICS_PATH, "interval": SCRAPE_INTERVAL}],
        },
    }


def service_monitor(name: str, namespace: str, spec: GemmaDeploymentSpec, choice: Choice, labels: dict[str, str],
                    selector: dict[str, str]) -> dict[str, Any] | None:  # fmt: skip
    if spec.autoscaling is None or choice.collector != "ServiceMonitor":
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "selector": {"matchLabels": dict(selector)},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [{"port": PORT_NAME, "path": METRICS_PATH, "interval": SCRAPE_INTERVAL}],
        },
    }


Condition = tuple[str, str, str, str]  # (type, status, reason, message)
MESSAGE_MAX = 600


def keda_hpa_name(name: str) -> str:
    """The HPA KEDA creates for a ScaledObject (it carries the ScaledObject's labels)."""
    return f"keda-hpa-{name}"


def disruption_condition(spec: GemmaDeploymentSpec) -> Condition:
    if interrupts_on_upgrade(spec):
        return ("PodDisruptionBudget", "False", "SingleReplica",
                "One replica: a node upgrade or drain stops serving until the pod starts again elsewhere. "
                "With replicas (or autoscaling.minReplicas) of 2 or more, a PodDisruptionBudget keeps all but one serving.")  # fmt: skip
    return ("PodDisruptionBudget", "True", "MaxUnavailableOne",
            "Node upgrades and drains take at most one replica at a time.")  # fmt: skip


def autoscaler_conditions(spec: GemmaDeploymentSpec, choice: Choice, hpa: dict[str, Any] | None,
                          metric: str | None) -> list[Condition]:  # fmt: skip
    """The autoscaler's own conditions, as the resource reports them (a missing metrics adapter shows)."""
    if spec.autoscaling is None:
        return []
    who = "KEDA" if choice.provider == "keda" else "The HorizontalPodAutoscaler"
    found = {c.get("type"): c for c in ((hpa or {}).get("status") or {}).get("conditions") or []}
    result: list[Condition] = []
    if choice.collector is None:
        result.append(("MetricsScraped", "False", "NoCollector",
                       f"This cluster serves neither PodMonitoring (Managed Service for Prometheus) nor ServiceMonitor "
                       f"(Prometheus Operator): nothing scrapes {metric} from the pods' port http at {METRICS_PATH}. "
                       f"Install one, or scrape them with your own Prometheus."))  # fmt: skip
    if "ScalingActive" not in found:
        return [*result, ("ScalingActive", "Unknown", "AutoscalerPending",
                          f"{who} has not reported yet; it scales on {metric} once it reads the metric.")]  # fmt: skip
    for type_ in ("AbleToScale", "ScalingActive", "ScalingLimited"):
        cond = found.get(type_)
        if not cond:
            continue
        message = str(cond.get("message") or "")
        if type_ == "ScalingActive" and cond.get("status") == "False":
            message = (f"{who} cannot read {metric}: {sentence(message or 'no reason given')} Check that the metrics "
                       f"adapter serves it (custom.metrics.k8s.io; README, Autoscaling).")  # fmt: skip
        result.append((type_, str(cond.get("status")), str(cond.get("reason") or type_), message[:MESSAGE_MAX]))
    return result


def desired_replicas(spec: GemmaDeploymentSpec, deployment: dict[str, Any] | None,
                     hpa: dict[str, Any] | None) -> int:  # fmt: skip
    """Replicas wanted now: the spec's, or with autoscaling the autoscaler's (its desired count,
    else what it last set on the Deployment, else minReplicas).

    An HPA's status.desiredReplicas is 0 from its creation until the controller computes a count
    from the metric, and stays 0 while it cannot read it: that 0 is no count, unless the HPA says
    it is scaling (ScalingActive=True)."""
    if spec.autoscaling is None:
        return spec.replicas
    status = (hpa or {}).get("status") or {}
    desired = status.get("desiredReplicas")
    active = any(c.get("type") == "ScalingActive" and c.get("status") == "True" for c in status.get("conditions") or [])
    if isinstance(desired, int) and (desired > 0 or active):
        return desired
    live = ((deployment or {}).get("spec") or {}).get("replicas")
    return live if isinstance(live, int) else max(1, spec.autoscaling.min_replicas)
