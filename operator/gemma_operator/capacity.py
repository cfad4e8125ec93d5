"""Declared capacity: node shapes the cluster can add on demand -> pools with no node yet.

GKE node pools autoscaled from zero, node auto-provisioning and ComputeClasses create nodes only
when a pending pod asks for them, so the nodes alone cannot tell the planner what a cluster can
run. The capacity file (`plan --capacity FILE`, the chart value `capacity.pools`) lists those
shapes; each becomes a `Pool` with `source: "declared"` and no nodes. Its CPU and memory come
from the catalog's GKE machine shapes less GKE's reservation, and its selectors and tolerations
are exactly what makes the cluster autoscaler or node auto-provisioning add that shape.

Validated at load, like the catalog: a typo fails with the entry and field it is in.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .catalog import Catalog, gke_aliases
from .inventory import ARCH, GKE_GPU, GKE_TPU, GKE_TPU_TOPOLOGY, GPU_RESOURCE, INSTANCE_TYPE, TPU_RESOURCE, Pool, slug

ENV = "GEMMA_OPERATOR_CAPACITY_FILE"
SPOT = "cloud.google.com/gke-spot"
COMPUTE_CLASS = "cloud.google.com/compute-class"
# GKE taints accelerator nodes (https://cloud.google.com/kubernetes-engine/docs/how-to/gpus,
# https://cloud.google.com/kubernetes-engine/docs/concepts/plan-tpus) and Spot nodes that node
# auto-provisioning creates (https://cloud.google.com/kubernetes-engine/docs/concepts/spot-vms).
# unverified: GKE's taint on ComputeClass nodes (about-custom-compute-classes); tolerating a taint a
# node lacks changes nothing, so the pod carries it either way.
GPU_TAINT = {"key": GPU_RESOURCE, "operator": "Equal", "value": "present", "effect": "NoSchedule"}
TPU_TAINT = {"key": TPU_RESOURCE, "operator": "Equal", "value": "present", "effect": "NoSchedule"}
SPOT_TAINT = {"key": SPOT, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
_TOPOLOGY = r"^[1-9]\d*(x[1-9]\d*){1,2}$"


class CapacityError(ValueError):
    """The capacity file is invalid: the message names the entry and the field."""


class DeclaredPool(BaseModel):
    """One node shape the cluster can add (an entry of `pools:`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", description="shown in status and reasons")
    accelerator: str = Field(min_length=1, description="catalog name or GKE label value; `cpu` for a CPU shape")
    accelerator_count: int | None = Field(default=None, alias="acceleratorCount", ge=1, le=16)
    machine_type: str | None = Field(default=None, alias="machineType", min_length=1)
    cpu: float | None = Field(default=None, gt=0, description="vCPUs of the machine, instead of machineType")
    memory_gib: float | None = Field(default=None, alias="memoryGiB", gt=0, description="memory of the machine")
    max_nodes: int | None = Field(default=None, alias="maxNodes", ge=1)
    spot: bool = False
    tpu_topology: str | None = Field(default=None, alias="tpuTopology", pattern=_TOPOLOGY)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")


class CapacityFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: list[DeclaredPool] = Field(default_factory=list)


def _where(index: int, raw: Any) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"pools[{index}]" + (f" ({name})" if isinstance(name, str) and name else "")


def parse(document: Any, catalog: Catalog) -> list[Pool]:
    """The pools of a capacity document (`{pools: [...]}`, or None for none). Raises CapacityError."""
    if document is None:
        return []
    if not isinstance(document, dict):
        raise CapacityError(f"expected a mapping with `pools:`, got {type(document).__name__}")
    try:
        parsed = CapacityFile.model_validate(document)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = list(error["loc"])
            if len(loc) >= 2 and loc[0] == "pools" and isinstance(loc[1], int):
                raw = (document.get("pools") or [])[loc[1]]
                where = _where(loc[1], raw) + "".join(f".{part}" for part in loc[2:])
            else:
                where = ".".join(map(str, loc)) or "capacity"
            problems.append(f"{where}: {error['msg']}")
        raise CapacityError("; ".join(problems)) from None
    seen: set[str] = set()
    result = []
    for index, entry in enumerate(parsed.pools):
        if entry.name in seen:
            raise CapacityError(f"{_where(index, {'name': entry.name})}.name: {entry.name!r} is declared twice")
        seen.add(entry.name)
        result.append(declared_pool(entry, catalog, _where(index, {"name": entry.name})))
    return result


def parse_text(text: str, catalog: Catalog, origin: str = "capacity") -> list[Pool]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CapacityError(f"{origin}: not valid YAML: {exc}") from None
    try:
        return parse(document, catalog)
    except CapacityError as exc:
        raise CapacityError(f"{origin}: {exc}") from None


def read(path: str, catalog: Catalog) -> list[Pool]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise CapacityError(f"{path}: {exc.strerror}") from None
    return parse_text(text, catalog, path)


def _near(word: str, names: list[str]) -> str:
    close = difflib.get_close_matches(word, names, n=3, cutoff=0.7)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _accelerator(asked: str, catalog: Catalog, where: str) -> tuple[str, str | None]:
    """The catalog name and the GKE label value for a declared accelerator."""
    aliases = gke_aliases(catalog)
    if asked in aliases:
        return aliases[asked], asked
    if asked not in catalog.accelerators:
        names = sorted({*catalog.accelerators, *aliases})
        raise CapacityError(f"{where}.accelerator: unknown accelerator {asked!r}{_near(asked, names)}")
    match = catalog.accelerators[asked].match
    labels = match.gke_tpu_accelerator or match.gke_accelerator
    if asked != "cpu" and not labels:
        raise CapacityError(
            f"{where}.accelerator: {asked} has no GKE node label value; declared capacity describes GKE node shapes"
        )
    return asked, labels[0] if labels else None


def _smallest(catalog: Catalog, label: str, count: int) -> str | None:
    fitting = [(m.vcpus, m.memory_gib, name) for name, m in catalog.machines.machines.items()
               if count in m.accelerators.get(label, [])]  # fmt: skip
    return min(fitting)[2] if fitting else None


def declared_pool(entry: DeclaredPool, catalog: Catalog, where: str,
                  source: Literal["declared", "standard"] = "declared") -> Pool:
    name, label = _accelerator(entry.accelerator, catalog, where)
    acc = catalog.accelerators[name]
    machines = catalog.machines.machines
    shape = machines.get(entry.machine_type) if entry.machine_type else None
    if (entry.cpu is None) != (entry.memory_gib is None):
        raise CapacityError(f"{where}: give both cpu and memoryGiB, or neither (machineType sizes the node)")
    if entry.machine_type and shape is None and entry.cpu is None:
        raise CapacityError(
            f"{where}.machineType: {entry.machine_type!r} is not among the catalog's GKE machine shapes"
            f"{_near(entry.machine_type, sorted(machines))}; give cpu and memoryGiB for it"
        )

    if acc.kind == "cpu":
        if entry.accelerator_count or entry.tpu_topology:
            raise CapacityError(f"{where}: a cpu shape has no acceleratorCount or tpuTopology")
        if shape and shape.accelerators:
            raise CapacityError(f"{where}.machineType: {entry.machine_type} carries accelerators; use accelerator "
                                f"{next(iter(shape.accelerators))}")  # fmt: skip
        if shape is None and entry.cpu is None:
            raise CapacityError(f"{where}: a cpu shape needs machineType, or cpu and memoryGiB")
        count, topology = 0, None
        selector = {ARCH: "amd64"}
        if entry.machine_type:
            # Without it, any CPU node (the system pool too) matches: the planned size would be a guess.
            selector[INSTANCE_TYPE] = entry.machine_type
        tolerations: list[dict[str, str]] = []
        resource = None
    else:
        assert label is not None
        topology = entry.tpu_topology
        if acc.kind == "tpu":
            topology = topology or (shape.tpu_topology if shape else None)
            if not topology:
                raise CapacityError(f"{where}.tpuTopology: a TPU shape needs its topology, e.g. "
                                    f"{', '.join(acc.single_host_topologies)}")  # fmt: skip
            if topology not in acc.single_host_topologies:
                raise CapacityError(
                    f"{where}.tpuTopology: {topology} spans several {acc.display_name} hosts; single-host "
                    f"topologies are {', '.join(acc.single_host_topologies)} (multi-host needs LeaderWorkerSet)"
                )
            if shape and shape.tpu_topology != topology:
                raise CapacityError(f"{where}.machineType: {entry.machine_type} hosts a {shape.tpu_topology} slice, not {topology}")
            chips = acc.single_host_topologies[topology]
            if entry.accelerator_count not in (None, chips):
                raise CapacityError(f"{where}.acceleratorCount: a {topology} host has {chips} chips, not {entry.accelerator_count}")
            count = chips
        else:
            if entry.tpu_topology:
                raise CapacityError(f"{where}.tpuTopology: {name} is a GPU; tpuTopology is for TPU shapes")
            counts = shape.accelerators.get(label) if shape else None
            count = entry.accelerator_count or (counts[0] if counts and len(counts) == 1 else 1)
            if shape is not None and entry.cpu is None and count not in (counts or []):
                offers = f"{' or '.join(map(str, counts))} {label}" if counts else f"no {label}"
                raise CapacityError(f"{where}.machineType: {entry.machine_type} takes {offers}, not {count}")
        if shape is None and entry.cpu is None:
            smallest = _smallest(catalog, label, count)
            if smallest is None:
                raise CapacityError(f"{where}: no GKE machine shape in the catalog has {count} {label}; "
                                    "give machineType, or cpu and memoryGiB")  # fmt: skip
            entry = entry.model_copy(update={"machine_type": smallest})
            shape = machines[smallest]
        if acc.kind == "tpu":
            selector = {GKE_TPU: label, GKE_TPU_TOPOLOGY: topology}
            tolerations = [TPU_TAINT]
            resource = TPU_RESOURCE
        else:
            selector = {GKE_GPU: label}
            tolerations = [GPU_TAINT]
            resource = GPU_RESOURCE

    if entry.spot:
        selector[SPOT] = "true"
        tolerations.append(SPOT_TAINT)
    for key, value in entry.node_selector.items():
        if key in selector and selector[key] != value:
            raise CapacityError(f"{where}.nodeSelector: {key}={value} contradicts the shape's {key}={selector[key]}")
        selector[key] = value
    if COMPUTE_CLASS in selector:
        tolerations.append({"key": COMPUTE_CLASS, "operator": "Equal", "value": selector[COMPUTE_CLASS],
                            "effect": "NoSchedule"})  # fmt: skip

    vcpus = entry.cpu if entry.cpu is not None else shape.vcpus  # type: ignore[union-attr]
    memory = entry.memory_gib if entry.memory_gib is not None else shape.memory_gib  # type: ignore[union-attr]
    node_cpu, node_memory = catalog.machines.reserve.allocatable(vcpus, memory)
    return Pool(
        name=entry.name, kind=acc.kind, accelerator=name, display_name=acc.display_name,
        devices_per_node=count, device_memory_gib=acc.memory_gib, bf16=acc.bf16, fp8=acc.fp8,
        compute_capability=acc.compute_capability, node_cpu=node_cpu, node_memory_gib=node_memory,
        node_selector=selector, tolerations=tuple(sorted(tolerations, key=lambda t: sorted(t.items()))),
        nodes=(), tpu_topology=topology, resource_name=resource, source=source,
        machine_type=entry.machine_type, max_nodes=entry.max_nodes,
    )  # fmt: skip


def standard_pool(accelerator: str, label: str | None, catalog: Catalog) -> Pool | None:
    """The catalog's standard GKE shape for an accelerator (by its GKE label value, or the first
    one the catalog lists for it), as a pool with no node; None when the catalog has none."""
    acc = catalog.accelerators.get(accelerator)
    if acc is None or acc.kind == "cpu":
        return None
    label = label or next(iter(acc.match.gke_tpu_accelerator or acc.match.gke_accelerator), None)
    machine = catalog.machines.standard.get(label or "")
    if machine is None:
        return None
    shape = catalog.machines.machines[machine]
    entry = DeclaredPool(name=slug(f"{accelerator}-{machine}"), accelerator=label, machineType=machine,
                         acceleratorCount=shape.accelerators[label][0])  # fmt: skip
    return declared_pool(entry, catalog, f"standard shape {machine}", source="standard")


@dataclass
class CapacityFileWatch:
    """The capacity file the operator follows: re-read when its content changes (a mounted
    ConfigMap is swapped in place by the kubelet, about a minute after an edit)."""

    path: str
    catalog: Catalog
    digest: str | None = None

    def poll(self) -> list[Pool] | None:
        """The new pools when the content changed since the last poll, else None. Raises
        CapacityError for invalid content (the digest is kept: the same bad content is reported once)."""
        try:
            with open(self.path, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            content = b""
        except OSError as exc:
            raise CapacityError(f"{self.path}: {exc.strerror}") from None
        digest = hashlib.sha256(content).hexdigest()
        if digest == self.digest:
            return None
        self.digest = digest
        return parse_text(content.decode("utf-8", errors="replace"), self.catalog, self.path)


def watch_from_env(catalog: Catalog, environ: Mapping[str, str] = os.environ) -> CapacityFileWatch | None:
    path = environ.get(ENV)
    return CapacityFileWatch(path, catalog) if path else None
