"""scaling.affected_by_discovery: which resources a CRD appearing or vanishing re-queues."""

from __future__ import annotations

import pytest

from gemma_operator import scaling

KEDA, PM, SM = scaling.KEDA, scaling.POD_MONITORING, scaling.SERVICE_MONITOR
QUEUE = {"minReplicas": 1, "maxReplicas": 4, "metric": "queue", "target": 4}


def scaled(**autoscaling):
    return {"autoscaling": {**QUEUE, **autoscaling}}


@pytest.mark.parametrize(
    ("spec", "before", "after", "collector", "affected"),
    [
        (scaled(provider="keda"), set(), {KEDA}, "auto", True),  # refused without KEDA: now applies
        (scaled(provider="keda"), {KEDA}, set(), "auto", True),  # KEDA removed: refused now
        (scaled(provider="auto"), set(), {KEDA}, "auto", True),  # auto: an HPA becomes a ScaledObject
        (scaled(provider="auto", minReplicas=0), set(), {KEDA}, "auto", True),  # 0 needs KEDA
        (scaled(provider="hpa"), set(), {KEDA}, "auto", False),  # hpa asked for: KEDA changes nothing
        (scaled(provider="hpa"), set(), {PM}, "auto", True),  # a collector to render now
        (scaled(provider="hpa"), {SM}, {SM, PM}, "auto", True),  # auto prefers PodMonitoring
        (scaled(provider="hpa"), {SM}, {SM, PM}, "ServiceMonitor", False),  # the chart's collector stays
        (scaled(provider="hpa"), {SM}, set(), "ServiceMonitor", True),  # ... until it is gone
        ({}, set(), {KEDA, PM, SM}, "auto", False),  # no autoscaling: discovery does not matter
        (None, set(), {KEDA}, "auto", False),
        ({"autoscaling": {**QUEUE, "provider": "keda", "maxReplicas": 0}}, set(), {KEDA}, "auto", False),  # invalid
    ],
)  # fmt: skip
def test_affected_by_discovery(spec, before, after, collector, affected):
    got = scaling.affected_by_discovery({("ns", "chat"): spec}, before, after, collector)
    assert got == ([("ns", "chat")] if affected else [])


def test_no_change_affects_nobody():
    assert scaling.affected_by_discovery({("ns", "chat"): scaled(provider="keda")}, {KEDA}, {KEDA}) == []
