"""Nodes -> typed accelerator pools. The ONE place node labels are read.

A pool is a set of schedulable nodes that a single nodeSelector picks and that
offer the same devices per node. GKE labels are read first (they are what GKE's
scheduler matches), NVIDIA GPU feature discovery labels second.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .catalog import Accelerator, Catalog

GKE_GPU = "cloud.google.com/gke-accelerator"
GKE_TPU = "cloud.google.com/gke-tpu-accelerator"
GKE_TPU_TOPOLOGY = "cloud.google.com/gke-tpu-topology"
GFD_PRODUCT = "nvidia.com/gpu.product"
GFD_MEMORY = "nvidia.com/gpu.memory"  # MiB
GFD_CC_MAJOR = "nvidia.com/gpu.compute.major"
GFD_CC_MINOR = "nvidia.com/gpu.compute.minor"
# NVIDIA's device plugin, sharing a GPU by time-slicing or MPS, appends -SHARED to the product
# label and writes these two (k8s-device-plugin README, "Shared Access to GPUs").
GFD_SHARED_SUFFIX = "-SHARED"
GFD_SHARING = "nvidia.com/gpu.sharing-strategy"
GFD_REPLICAS = "nvidia.com/gpu.replicas"
ARCH = "kubernetes.io/arch"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
GPU_RESOURCE = "nvidia.com/gpu"
TPU_RESOURCE = "google.com/tpu"

_TOPOLOGY = re.compile(r"^[1-9]\d*(x[1-9]\d*){1,2}$")
_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


@dataclass(frozen=True)
class Pool:
    name: str
    kind: Literal["gpu", "tpu", "cpu"]
    accelerator: str
    display_name: str
    devices_per_node: int
    device_memory_gib: float
    bf16: bool
    fp8: bool
    compute_capability: str | None
    node_cpu: float
    node_memory_gib: float
    node_selector: dict[str, str]
    tolerations: tuple[dict[str, str], ...]
    nodes: tuple[str, ...]
    tpu_topology: str | None = None
    resource_name: str | None = None
    sharing: str | None = None  # GPUs shared with other pods: "time-slicing", "mps" or "shared"
    # Pods that share each GPU (nvidia.com/gpu.replicas); device_memory_gib is one pod's share of it.
    replicas: int = 1
    # Where the pool comes from: the cluster's nodes, the capacity file (a shape the cluster can add
    # on demand), or the catalog's standard GKE shape for an accelerator named in the spec.
    source: Literal["nodes", "declared", "standard"] = "nodes"
    machine_type: str | None = None
    max_nodes: int | None = None  # declared pools: the most nodes the pool grows to, if known

    @property
    def ready(self) -> bool:
        """Nodes exist; otherwise the cluster autoscaler or node auto-provisioning must add one first."""
        return bool(self.nodes)

    @property
    def time_sliced(self) -> bool:
        """GPUs time-sliced between pods (a -SHARED product without MPS): memory that is not partitioned."""
        return self.sharing is not None and self.sharing != "mps"

    @property
    def cc(self) -> tuple[int, int]:
        major, _, minor = (self.compute_capability or "0.0").partition(".")
        return int(major), int(minor)

    def describe(self) -> str:
        if self.source != "nodes":
            return self._describe_shape()
        if self.kind == "cpu":
            return f"{self.name}: {len(self.nodes)} CPU node(s), {self.node_cpu:g} CPUs and {self.node_memory_gib:.1f} GiB each"
        unit = "chip" if self.kind == "tpu" else "GPU"
        shared = {
            None: "",
            "mps": ", an MPS share of a GPU other pods also use",
        }.get(self.sharing, f", a 1/{self.replicas} share of a GPU time-sliced with other pods (memory not isolated)")
        return (
            f"{self.name}: {len(self.nodes)} node(s) x {self.devices_per_node} {self.display_name} {unit}(s) "
            f"of {self.device_memory_gib:g} GiB{shared}"
        )


    def _describe_shape(self) -> str:
        machine = self.machine_type or "a machine"
        size = f"{machine} ({self.node_cpu:g} CPUs and {self.node_memory_gib:.1f} GiB allocatable)"
        where = "declared capacity" if self.source == "declared" else "the catalog's standard GKE shape"
        nodes = f"{len(self.nodes)} ready node(s)" if self.nodes else "no node yet"
        grows = f", up to {self.max_nodes} node(s)" if self.max_nodes else ""
        if self.kind == "cpu":
            return f"{self.name}: {where}, {nodes}{grows}; CPU nodes of {size}"
        unit = "chip" if self.kind == "tpu" else "GPU"
        return (
            f"{self.name}: {where}, {nodes}{grows}; {self.devices_per_node} {self.display_name} {unit}(s) "
            f"of {self.device_memory_gib:g} GiB on {size}"
        )


@dataclass
class Inventory:
    pools: list[Pool] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def by_name(self, name: str) -> Pool | None:
        return next((p for p in self.pools if p.name == name), None)


def quantity(value: Any) -> float:
    """A Kubernetes quantity ("3920m", "13609708Ki", "32Gi", 8) as a float of base units."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def slug(text: str) -> str:
    """A name part from free text: lowercase letters, digits and '-', at most 63 (a label value's limit)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63]


def _schedulable(node: Mapping[str, Any]) -> str | None:
    """Why a node can't take new pods, or None."""
    if (node.get("spec") or {}).get("unschedulable"):
        return "cordoned"
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return None if cond.get("status") == "True" else "NotReady"
    return "NotReady (no Ready condition)"


def _tolerations(node: Mapping[str, Any]) -> list[dict[str, str]]:
    result = []
    for taint in (node.get("spec") or {}).get("taints") or []:
        key = taint.get("key", "")
        # Taints the node lifecycle controller sets come and go; tolerating them would hide trouble.
        if key.startswith("node.kubernetes.io/") or taint.get("effect") == "PreferNoSchedule":
            continue
        toleration = {"key": key, "operator": "Exists", "effect": taint.get("effect", "NoSchedule")}
        if "value" in taint:
            toleration = {"key": key, "operator": "Equal", "value": str(taint["value"]), "effect": toleration["effect"]}
        result.append(toleration)
    return result


@dataclass(frozen=True)
class _Device:
    kind: Literal["gpu", "tpu", "cpu"]
    accelerator: str
    display_name: str
    memory_gib: float
    bf16: bool
    fp8: bool
    compute_capability: str | None
    selector: tuple[tuple[str, str], ...]
    resource_name: str | None
    topology: str | None = None
    chips: int = 0
    sharing: str | None = None
    replicas: int = 1


def _by_label(catalog: Catalog) -> dict[tuple[str, str], tuple[str, Accelerator]]:
    index = {}
    for name, acc in catalog.accelerators.items():
        for value in acc.match.gke_accelerator:
            index[(GKE_GPU, value)] = (name, acc)
        for value in acc.match.gke_tpu_accelerator:
            index[(GKE_TPU, value)] = (name, acc)
        for value in acc.match.gfd_product:
            index[(GFD_PRODUCT, value)] = (name, acc)
    return index


def _known(name: str, acc: Accelerator, selector: dict[str, str], resource: str | None, **extra: Any) -> _Device:
    return _Device(
        kind=acc.kind, accelerator=name, display_name=acc.display_name, memory_gib=acc.memory_gib,
        bf16=acc.bf16, fp8=acc.fp8, compute_capability=acc.compute_capability,
        selector=tuple(sorted(selector.items())), resource_name=resource, **extra,
    )  # fmt: skip


def _device(labels: Mapping[str, str], index: dict, catalog: Catalog) -> _Device:
    """What accelerator a node carries, from its labels. Raises ValueError on labels it can't trust."""
    if GKE_TPU in labels:
        value = labels[GKE_TPU]
        if (GKE_TPU, value) not in index:
            raise ValueError(f"unknown TPU {GKE_TPU}={value!r}")
        name, acc = index[(GKE_TPU, value)]
        topology = labels.get(GKE_TPU_TOPOLOGY, "")
        if not _TOPOLOGY.match(topology):
            raise ValueError(f"malformed {GKE_TPU_TOPOLOGY}={topology!r}")
        if topology not in acc.single_host_topologies:
            raise ValueError(
                f"{acc.display_name} topology {topology} spans several hosts; "
                "only single-host TPU slices are served (multi-host needs LeaderWorkerSet)"
            )
        selector = {GKE_TPU: value, GKE_TPU_TOPOLOGY: topology}
        return _known(name, acc, selector, TPU_RESOURCE, topology=topology, chips=acc.single_host_topologies[topology])
    if GKE_GPU in labels:
        value = labels[GKE_GPU]
        if (GKE_GPU, value) in index:
            name, acc = index[(GKE_GPU, value)]
            return _known(name, acc, {GKE_GPU: value}, GPU_RESOURCE)
        if GFD_PRODUCT not in labels:
            raise ValueError(f"unknown GPU {GKE_GPU}={value!r} and no GPU feature discovery labels to size it")
    if GFD_PRODUCT in labels:
        product = labels[GFD_PRODUCT]
        if "-MIG-" in product:
            raise ValueError(f"{product}: MIG partitions are not planned")
        # Time-slicing and MPS append -SHARED to the product; the device underneath is the same, so
        # the catalog is asked without it. The selector keeps the label as the nodes carry it.
        selector = {GFD_PRODUCT: product}
        sharing = None
        if product.endswith(GFD_SHARED_SUFFIX):
            product = product.removesuffix(GFD_SHARED_SUFFIX)
            sharing = labels.get(GFD_SHARING, "shared")
            if GFD_SHARING in labels:
                selector[GFD_SHARING] = labels[GFD_SHARING]
        replicas = 1
        if sharing:
            # MPS gives each client an equal fraction of the device memory. Time-slicing partitions
            # nothing: every pod sees the whole memory, and one planned for all of it runs the others
            # out of memory. Either way a pod is planned for its share, which the replica count sizes.
            how = "MPS-shared" if sharing == "mps" else "time-sliced"
            try:
                replicas = int(labels[GFD_REPLICAS])
            except (KeyError, ValueError):
                raise ValueError(f"{how} GPU without a numeric {GFD_REPLICAS} label: its share of memory is unknown") from None
            if replicas < 1:
                raise ValueError(f"{GFD_REPLICAS}={replicas} is not a replica count")
            # Nodes that split a GPU in other counts are other pools: a plan for a half must not land on an eighth.
            selector[GFD_REPLICAS] = labels[GFD_REPLICAS]
        if (GFD_PRODUCT, product) in index:
            name, acc = index[(GFD_PRODUCT, product)]
            device = _known(name, acc, selector, GPU_RESOURCE, sharing=sharing, replicas=replicas)
            return replace(device, memory_gib=round(acc.memory_gib / replicas, 1))
        # A GPU the catalog doesn't know: trust GFD's own memory and compute capability labels.
        try:
            memory_mib = int(labels[GFD_MEMORY])
            major, minor = int(labels[GFD_CC_MAJOR]), int(labels[GFD_CC_MINOR])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"unknown GPU {product!r} with missing or non-numeric GFD labels ({exc})") from None
        return _Device(
            kind="gpu", accelerator=slug(product), display_name=product,
            memory_gib=round(memory_mib / 1024 / replicas, 1), bf16=major >= 8, fp8=(major, minor) >= (8, 9),
            compute_capability=f"{major}.{minor}", selector=tuple(sorted(selector.items())),
            resource_name=GPU_RESOURCE, sharing=sharing, replicas=replicas,
        )  # fmt: skip
    # CPU pools are told apart by machine type, so a plan sized for one shape stays on it.
    selector = {ARCH: labels.get(ARCH, "amd64")}
    if INSTANCE_TYPE in labels:
        selector[INSTANCE_TYPE] = labels[INSTANCE_TYPE]
    return _known("cpu", catalog.accelerators["cpu"], selector, None)


def on_gke(nodes: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the nodes are GKE's (its node labels): `plan` then assumes Managed Prometheus."""
    return any(key.startswith("cloud.google.com/gke-")
               for node in nodes for key in ((node.get("metadata") or {}).get("labels") or {}))  # fmt: skip


def essentials(node: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a Node that `pools` reads: what an index keeps, so that other changes
    (heartbeats, images, addresses) are not mistaken for a change in capacity."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    ready = [{"type": c.get("type"), "status": c.get("status")} for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return {
        "metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
        "spec": {"unschedulable": bool(spec.get("unschedulable")), "taints": list(spec.get("taints") or [])},
        "status": {"allocatable": dict(status.get("allocatable") or {}), "conditions": ready},
    }


def pools(
    nodes: Iterable[Mapping[str, Any]], catalog: Catalog, node_selector: Mapping[str, str] | None = None,
    declared: Iterable[Pool] = (),
) -> Inventory:
    """Group schedulable nodes into pools. Nodes that can't be used are listed in `skipped`, with why.

    With `node_selector` (the spec's), only nodes carrying all those labels are considered.
    `declared` pools (capacity.py: shapes the cluster adds on demand) follow the observed ones,
    each with the ready nodes that carry its labels and devices, if any; a declared pool whose
    labels contradict `node_selector` is left out.
    """
    index = _by_label(catalog)
    groups: dict[tuple, dict[str, Any]] = {}
    inventory = Inventory()
    usable: list[tuple[str, Mapping[str, str], _Device, int]] = []
    unselected = 0
    for node in nodes:
        meta = node.get("metadata") or {}
        name = meta.get("name", "?")
        labels = meta.get("labels") or {}
        if node_selector and any(labels.get(k) != v for k, v in node_selector.items()):
            unselected += 1
            continue
        why = _schedulable(node)
        if why:
            inventory.skipped.append(f"{name}: {why}")
            continue
        allocatable = (node.get("status") or {}).get("allocatable") or {}
        try:
            device = _device(labels, index, catalog)
            cpu = quantity(allocatable.get("cpu", 0))
            memory_gib = quantity(allocatable.get("memory", 0)) / 2**30
            devices = int(quantity(allocatable.get(device.resource_name, 0))) if device.resource_name else 0
        except ValueError as exc:
            inventory.skipped.append(f"{name}: {exc}")
            continue
        if device.kind == "gpu" and devices < 1:
            inventory.skipped.append(f"{name}: no allocatable {GPU_RESOURCE} (is the GPU driver installed?)")
            continue
        if device.sharing:
            # Allocatable counts replicas, and two replicas may be one GPU: a pod uses one, never more.
            devices = 1
        if device.kind == "tpu" and devices != device.chips:
            inventory.skipped.append(
                f"{name}: allocatable {TPU_RESOURCE}={devices} does not match topology {device.topology} "
                f"({device.chips} chips)"
            )
            continue
        usable.append((name, labels, device, devices))
        group = groups.setdefault(
            (device, devices), {"nodes": [], "cpu": cpu, "memory": memory_gib, "tolerations": [], "machines": set()}
        )
        group["nodes"].append(name)
        group["machines"].add(labels.get(INSTANCE_TYPE))
        group["cpu"] = min(group["cpu"], cpu)
        group["memory"] = min(group["memory"], memory_gib)
        for toleration in _tolerations(node):
            if toleration not in group["tolerations"]:
                group["tolerations"].append(toleration)

    if unselected:
        inventory.skipped.append(f"{unselected} node(s) do not match spec.nodeSelector")
    for (device, devices), group in groups.items():
        if device.kind == "tpu":
            name = f"{device.accelerator}-{device.topology}"
        elif device.kind == "gpu":
            # A shared pool is another pool than the whole GPUs of the same model (another selector).
            shared = {None: "", "mps": f"-mps{device.replicas}"}.get(device.sharing, f"-shared{device.replicas}")
            name = f"{device.accelerator}{shared}-x{devices}"
        else:
            selector = dict(device.selector)
            name = f"cpu-{slug(selector.get(INSTANCE_TYPE, selector[ARCH]))}"
        inventory.pools.append(
            Pool(
                name=name, kind=device.kind, accelerator=device.accelerator, display_name=device.display_name,
                devices_per_node=devices, device_memory_gib=device.memory_gib, bf16=device.bf16, fp8=device.fp8,
                compute_capability=device.compute_capability, node_cpu=group["cpu"],
                node_memory_gib=round(group["memory"], 2), node_selector=dict(device.selector),
                tolerations=tuple(sorted(group["tolerations"], key=lambda t: sorted(t.items()))),
                nodes=tuple(sorted(group["nodes"])), tpu_topology=device.topology, resource_name=device.resource_name,
                sharing=device.sharing, replicas=device.replicas,
                # One machine type across the pool's nodes prices it (performance.py); mixed or unlabelled: unknown.
                machine_type=next(iter(group["machines"])) if len(group["machines"]) == 1 else None,
            )
        )  # fmt: skip
    inventory.pools.sort(key=lambda p: p.name)
    for pool in declared:
        if node_selector and any(pool.node_selector.get(k, v) != v for k, v in node_selector.items()):
            continue
        ready = [name for name, labels, device, devices in usable
                 if all(labels.get(k) == v for k, v in pool.node_selector.items())
                 and device.accelerator == pool.accelerator and devices >= pool.devices_per_node]  # fmt: skip
        inventory.pools.append(replace(pool, nodes=tuple(sorted(ready))))
    return inventory
