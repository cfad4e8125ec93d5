"""Prometheus metrics: reconciles, errors, and plan decisions."""

from __future__ import annotations

import os

from prometheus_client import Counter, Histogram, start_http_server

PORT_ENV = "GEMMA_OPERATOR_METRICS_PORT"
DEFAULT_PORT = 9090

RECONCILES = Counter(
    "gemma_operator_reconciles_total", "Reconciles of GemmaDeployments, by trigger and outcome.", ["trigger", "outcome"]
)
ERRORS = Counter("gemma_operator_errors_total", "Errors while reconciling, by kind.", ["kind"])
PLANS = Counter(
    "gemma_operator_plan_decisions_total",
    "Plans made, by runtime, accelerator and quantization.",
    ["runtime", "accelerator", "quantization"],
)
APPLIES = Counter("gemma_operator_applies_total", "Server-side applies of children, by kind.", ["kind"])
DURATION = Histogram("gemma_operator_reconcile_seconds", "Time to reconcile one GemmaDeployment.")


def serve() -> int | None:
    """Expose /metrics on $GEMMA_OPERATOR_METRICS_PORT (default 9090; 0 turns it off)."""
    port = int(os.environ.get(PORT_ENV, DEFAULT_PORT))
    if port:
        start_http_server(port)
    return port or None
