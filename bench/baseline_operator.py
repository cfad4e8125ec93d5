"""The floor: a bare kopf operator doing the same writes as gemma-operator, and nothing else.

On create of a GemmaDeployment it creates one Deployment and one Service (the same shape and
size as what gemma-operator renders for the quickstart on an L4 pool) with the official
`kubernetes` client, owned by the resource. No planning, no status, no indices, no queue.

kopf settings are kopf's defaults except the one gemma-operator also changes so both make the
same writes: kopf's own Events only at WARNING (by default kopf posts two Events per resource
for a successful handler, which would make the floor slower than what it is the floor of).

Run: `kopf run --standalone --all-namespaces bench/baseline_operator.py` (KUBECONFIG set).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf
import kubernetes

SELECTOR = {"app.kubernetes.io/name": "gemma-server"}
LABELS = {**SELECTOR, "app.kubernetes.io/component": "model-server", "app.kubernetes.io/managed-by": "baseline"}
PROBE = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
CONTAINER = {
    "name": "vllm",
    "image": "vllm/vllm-openai:v0.32.0-cu129",
    "imagePullPolicy": "IfNotPresent",
    "command": ["vllm", "serve"],
    "args": ["google/gemma-4-E2B-it", "--served-model-name", "gemma-4-e2b-it", "--host", "0.0.0.0",
             "--port", "8000", "--dtype", "bfloat16", "--max-model-len", "131072",
             "--tensor-parallel-size", "1", "--gpu-memory-utilization", "0.90"],
    "env": [{"name": "HF_HOME", "value": "/models/huggingface"}, {"name": "VLLM_NO_USAGE_STATS", "value": "1"}],
    "ports": [{"name": "http", "containerPort": 8000, "protocol": "TCP"}],
    "resources": {"requests": {"cpu": "4", "memory": "15Gi", "nvidia.com/gpu": "1"},
                  "limits": {"memory": "15Gi", "nvidia.com/gpu": "1"}},
    "volumeMounts": [{"name": "models", "mountPath": "/models"}, {"name": "dshm", "mountPath": "/dev/shm"}],
    "startupProbe": {**PROBE, "failureThreshold": 52},
    "readinessProbe": {**PROBE, "failureThreshold": 3},
    "livenessProbe": {**PROBE, "failureThreshold": 4},
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
}
POD = {
    "containers": [CONTAINER],
    "volumes": [{"name": "models", "emptyDir": {}},
                {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}],
    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "automountServiceAccountToken": False,
    "enableServiceLinks": False,
    "terminationGracePeriodSeconds": 60,
    "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}],
}

_clients: dict[str, Any] = {}


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    kubernetes.config.load_kube_config()
    api = kubernetes.client.ApiClient()
    _clients["apps"] = kubernetes.client.AppsV1Api(api)
    _clients["core"] = kubernetes.client.CoreV1Api(api)


def _create(call: Any, namespace: str, body: dict[str, Any]) -> None:
    try:
        call(namespace, body)
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:  # already there (a retry after a partial failure)
            raise


@kopf.on.create("gemma.dev", "v1alpha1", "gemmadeployments")
def create(name: str, namespace: str, uid: str, **_: Any) -> None:
    labels = {**LABELS, "app.kubernetes.io/instance": name}
    selector = {**SELECTOR, "app.kubernetes.io/instance": name}
    owner = [{"apiVersion": "gemma.dev/v1alpha1", "kind": "GemmaDeployment", "name": name, "uid": uid,
              "controller": True, "blockOwnerDeletion": True}]
    meta = {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": owner}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
        "spec": {"replicas": 1, "selector": {"matchLabels": selector}, "strategy": {"type": "Recreate"},
                 "template": {"metadata": {"labels": labels}, "spec": copy.deepcopy(POD)}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": meta,
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]},
    }
    _create(_clients["apps"].create_namespaced_deployment, namespace, deployment)
    _create(_clients["core"].create_namespaced_service, namespace, service)
