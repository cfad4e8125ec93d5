"""The facts the speed and cost predictions stand on (issue 21, item 1): peak compute per device and
precision, CPU memory bandwidth per vCPU, and a price for every machine shape, each with a source
and an honest `verified` flag. The catalog refuses data that breaks these at load."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from gemma_operator import catalog as catalog_module
from gemma_operator.catalog import Accelerator, MachineCatalog

A100 = "nvidia-tesla-a100"


def test_every_gpu_and_tpu_has_a_dense_16_bit_peak_with_a_source(catalog):
    for name, acc in catalog.accelerators.items():
        if acc.kind == "cpu":
            continue
        assert acc.peak_tflops_source is not None, name
        assert acc.peak("bf16") > 0, name


@pytest.mark.parametrize(
    ("accelerator", "quantization", "tflops"),
    [
        ("nvidia-l4", "bf16", 121),   # datasheet 242 "with sparsity", halved
        ("nvidia-l4", "fp8", 242),    # native FP8 (Ada)
        (A100, "fp8", 312),           # no FP8 on Ampere: weights upcast, 16-bit math
        (A100, "int4", 312),          # weight-only formats run 16-bit math
        ("nvidia-tesla-t4", "fp16", 65),
        ("nvidia-tesla-t4", "bf16", 65),  # no BF16 on Turing: the 16-bit figure it has
        ("tpu-v5e", "bf16", 197),
        ("tpu-v6e", "fp8", 918),      # the catalog's own note: v6e has no native FP8
    ],
)
def test_prefill_runs_at_the_native_precision_peak(catalog, accelerator, quantization, tflops):
    assert catalog.accelerators[accelerator].peak(quantization) == tflops


def test_native_fp8_is_faster_than_16_bit_wherever_the_catalog_says_fp8(catalog):
    for name, acc in catalog.accelerators.items():
        if acc.fp8:
            assert acc.peak_tflops["fp8"] > acc.peak("bf16"), name


def test_a_gpu_without_a_peak_is_refused(catalog):
    data = catalog.accelerators[A100].model_dump(mode="json", exclude={"peak_tflops", "peak_tflops_source"})
    with pytest.raises(ValidationError, match="peak_tflops"):
        Accelerator.model_validate(data)


def test_every_machine_shape_has_a_price_and_spot_is_cheaper(catalog):
    prices = catalog.machines.prices
    assert prices is not None and prices.region == "us-central1"
    assert set(prices.machines) == set(catalog.machines.machines)
    for name, price in prices.machines.items():
        assert 0 < price.spot < price.on_demand, name


def test_an_unpriced_machine_is_refused(catalog):
    data = copy.deepcopy(catalog_module._read("machines.yaml"))
    del data["prices"]["machines"]["g2-standard-8"]
    with pytest.raises(ValidationError, match="without a price: \\['g2-standard-8'\\]"):
        MachineCatalog.model_validate(data)


def test_n1_shapes_add_their_attached_gpus(catalog):
    # n1-standard-4 ($0.19) + 2 x T4 ($0.35) = $0.89 an hour.
    total, verified = catalog.machines.hourly("n1-standard-4", "nvidia-tesla-t4", 2)
    assert total == pytest.approx(0.89)
    assert verified is False
    # A G2 machine's price already includes its L4.
    assert catalog.machines.hourly("g2-standard-8", "nvidia-l4", 1) == (0.8536, False)
    assert catalog.machines.hourly("no-such-machine") is None


def test_cpu_bandwidth_per_vcpu_by_family_with_a_default(catalog):
    assert catalog.machines.family("n2-standard-8").memory_bandwidth_gbps_per_vcpu == 3.5
    # Unknown machine type (a node without the instance-type label): the default family.
    assert catalog.machines.family(None).memory_bandwidth_gbps_per_vcpu == 3.0
    assert all(not family.verified for family in catalog.machines.cpu_families.values())  # estimates, said so


# -- interconnect: what tensor parallelism's all-reduces cross (issue 21 follow-up) ------------------


def test_every_gpu_and_tpu_names_its_interconnect_with_a_source(catalog):
    for name, acc in catalog.accelerators.items():
        if acc.kind == "cpu":
            assert acc.interconnect is None, name
            continue
        assert acc.interconnect is not None, name
        assert acc.interconnect.kind in catalog.hardware.allreduce_latency, name
        assert acc.interconnect.source.url, name
    # TPUs talk over ICI, NVLink-less GPUs over PCIe.
    assert catalog.accelerators["tpu-v5e"].interconnect.kind == "ici"
    assert catalog.accelerators["nvidia-l4"].interconnect.kind == "pcie"
    assert catalog.accelerators["nvidia-h100-80gb"].interconnect.kind == "nvlink"


@pytest.mark.parametrize(
    ("accelerator", "gbps"),
    [
        ("nvidia-h100-80gb", 450),  # NVLink 4: 900 GB/s both directions
        ("nvidia-tesla-a100", 300),  # NVLink 3: 600 GB/s both directions
        ("nvidia-l4", 32),  # PCIe Gen4 x16: 64 GB/s both directions
        ("nvidia-tesla-t4", 16),  # PCIe Gen3 x16
        ("tpu-v5e", 200),  # ICI 400 GB/s bidirectional per chip (Cloud TPU v5e docs)
    ],
)
def test_link_bandwidth_is_one_direction(catalog, accelerator, gbps):
    assert catalog.accelerators[accelerator].interconnect.bandwidth_gbps == gbps


@pytest.mark.parametrize(
    ("kind", "devices", "microseconds"),
    [
        ("nvlink", 8, 15.0),  # NCCL Ring/LL: 6.6 + 2 x 7 x 0.6
        ("nvlink", 2, 7.8),  # 6.6 + 2 x 1 x 0.6
        ("pcie", 4, 12.6),  # 6.6 + 2 x 3 x 1.0
        ("pcie", 1, 0.0),  # one device: no all-reduce
    ],
)
def test_small_allreduce_latency_follows_nccls_ring_model(catalog, kind, devices, microseconds):
    assert catalog.hardware.allreduce_latency[kind].seconds(devices) * 1e6 == pytest.approx(microseconds)


def test_a_gpu_without_an_interconnect_is_refused(catalog):
    data = catalog.accelerators[A100].model_dump(mode="json", exclude={"interconnect"})
    with pytest.raises(ValidationError, match="interconnect"):
        Accelerator.model_validate(data)


def test_an_interconnect_kind_without_a_latency_is_refused():
    data = copy.deepcopy(catalog_module._read("accelerators.yaml"))
    del data["allreduce_latency"]["ici"]
    with pytest.raises(ValidationError, match="no allreduce_latency for interconnect kinds \\['ici'\\]"):
        catalog_module.AcceleratorCatalog.model_validate(data)
