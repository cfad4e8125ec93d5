"""What the endpoint picker reads from a model server's /metrics, checked against the real servers.

The EPP (the Gateway API Inference Extension's picker, pinned at v1.5.0) takes its metric names from
the config file gemma-operator renders into its ConfigMap (gateway.epp_config): one spec per signal
for the pool's runtime, "" for a signal the runtime does not have. How v1.5.0 reads them, from its
source (pkg/epp/framework/plugins/datalayer/source/metrics and .../extractor/metrics; restated
here, not copied):

- the whole /metrics body is parsed as the Prometheus text format with legacy name validation
  (metric names [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*);
- a spec is `family` or `family{label=value,...}`; the family must exist with at least one
  series whose labels include the spec's; its value is read as a gauge (or a counter);
- the LoRA spec's family is read by its labels: running_lora_adapters and waiting_lora_adapters
  (comma-separated adapter names) and max_lora (an integer), from the series with the largest
  value (vLLM sets it to the time it wrote the series);
- the cache-info spec's family is read by its labels block_size and num_gpu_blocks (integers).

This module re-reads the servers' text the same way in Python (prometheus_client's parser plus the
legacy name checks); the Go binary itself cannot run here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gemma_operator import catalog as catalog_mod
from gemma_operator import gateway
from gemma_operator.planner import NoFit
from gemma_operator.render import render, selector_labels
from tests.dataplane import servers

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
LORA_LABELS = ("running_lora_adapters", "waiting_lora_adapters", "max_lora")
CACHE_LABELS = ("block_size", "num_gpu_blocks")
GATEWAY = {"parentRefs": [{"name": "inference-gateway", "sectionName": "http"}]}


def rendered(fixture: str, spec: dict[str, Any], name: str = "chat") -> dict[tuple[str, str], dict[str, Any]]:
    """Every object rendered for `spec` + spec.gateway on the node fixture, as `plan --manifests`
    lists them (the model's objects, then the gateway's), keyed by (kind, name)."""
    cat = catalog_mod.load()
    parsed, result = servers.planned(fixture, {**spec, "gateway": GATEWAY})
    assert not isinstance(result, NoFit), result.message
    served = [result.served_model_name, *(a.name for a in result.adapters)]
    objects = render(result, name, "default", parsed)
    objects += gateway.objects(name, "default", parsed, result.runtime, selector_labels(name), served,
                               cat.images["inference-epp"])  # fmt: skip
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def metric_specs(objects: dict[tuple[str, str], dict[str, Any]], name: str = "chat") -> dict[str, str]:
    """The metric specs the rendered picker runs with: its Deployment's --config-file, read from the
    ConfigMap that Deployment mounts there."""
    epp = gateway.epp_name(name)
    pod = objects[("Deployment", epp)]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    path = container["args"][container["args"].index("--config-file") + 1]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    data = objects[("ConfigMap", volume["configMap"]["name"])]["data"]
    return gateway.engine_metrics(data[path[len(mount["mountPath"]) + 1:]])


@dataclass
class Family:
    name: str
    type: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def parse(text: str) -> dict[str, Family]:
    """The families of a /metrics body, failing where the EPP's parser would refuse it."""
    typed: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            assert name not in typed, f"a second TYPE line for {name}"
            typed[name] = kind
    families: dict[str, Family] = {}
    for parsed in text_string_to_metric_families(text):
        for sample in parsed.samples:
            assert METRIC_NAME.fullmatch(sample.name), f"not a legacy metric name: {sample.name!r}"
            for label in sample.labels:
                assert LABEL_NAME.fullmatch(label), f"not a legacy label name: {label!r} on {sample.name}"
        # prometheus_client names a counter family without its _total; the EPP keys by the TYPE line's name.
        name = parsed.name if parsed.name in typed else f"{parsed.name}_total"
        families[name] = Family(name, typed.get(name, parsed.type), [(s.labels, s.value) for s in parsed.samples])
    return families


def _spec(spec: str) -> tuple[str, dict[str, str]]:
    match = re.fullmatch(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(.*)\})?\s*", spec)
    assert match, f"not a metric spec: {spec!r}"
    labels = dict(pair.split("=", 1) for pair in (match.group(2) or "").split(",") if pair)
    return match.group(1), {k.strip(): v.strip().strip('"') for k, v in labels.items()}


def _matching(families: dict[str, Family], spec: str) -> tuple[Family, list[tuple[dict[str, str], float]]]:
    name, labels = _spec(spec)
    assert name in families, f"metric family {name!r} not found on /metrics"
    family = families[name]
    found = [(ls, v) for ls, v in family.samples if labels.items() <= ls.items()]
    assert found, f"no series of {name} with labels {labels}"
    return family, found


def read_gauge(families: dict[str, Family], spec: str) -> tuple[dict[str, str], float]:
    """What the picker reads for a queue, running or KV-cache spec: the first matching series'
    value (the servers write no timestamps), of a gauge or a counter."""
    family, found = _matching(families, spec)
    assert family.type in ("gauge", "counter"), f"{family.name} is a {family.type}: the picker reads gauges"
    return found[0]


@dataclass
class LoraInfo:
    running: set[str]
    waiting: set[str]
    max_lora: int
    labels: dict[str, str]
    value: float


def read_lora(families: dict[str, Family], spec: str) -> tuple[LoraInfo, list[LoraInfo]]:
    """The picker's pick from the LoRA info family (the series with the largest value), and every series."""
    family, found = _matching(families, spec)
    assert family.type == "gauge", f"{family.name} is a {family.type}"
    every = []
    for labels, value in found:
        assert set(LORA_LABELS) <= set(labels), f"{family.name} lacks {set(LORA_LABELS) - set(labels)}: {labels}"
        every.append(LoraInfo({a for a in labels["running_lora_adapters"].split(",") if a.strip()},
                              {a for a in labels["waiting_lora_adapters"].split(",") if a.strip()},
                              int(labels["max_lora"]), labels, value))  # fmt: skip
    return max(every, key=lambda info: info.value), every


def read_cache_info(families: dict[str, Family], spec: str) -> tuple[int, int, dict[str, str]]:
    """block_size and num_gpu_blocks, as the picker reads them from the cache-info family's labels."""
    _, found = _matching(families, spec)
    labels = found[0][0]
    assert set(CACHE_LABELS) <= set(labels), labels
    return int(labels["block_size"]), int(labels["num_gpu_blocks"]), labels


def sample_lines(text: str, spec: str) -> list[str]:
    """The /metrics lines of a spec's family (its HELP/TYPE and series), to quote."""
    name, _ = _spec(spec)
    return [line for line in text.splitlines()
            if line.split("{")[0].split(" ")[0] == name or line.startswith((f"# HELP {name} ", f"# TYPE {name} "))]  # fmt: skip
