"""performance.py, table-tested with hand-computed rows (issue 21, item 2). Each row shows its
arithmetic; the two efficiency constants are applied by name, never folded into the expectation."""

from __future__ import annotations

import pytest

from gemma_operator import performance as perf
from gemma_operator.performance import BANDWIDTH_UTILISATION as MBU
from gemma_operator.performance import COMPUTE_UTILISATION as MFU
from gemma_operator.performance import Device, Workload

GIB = 2**30


def size(catalog, family: str, name: str):
    return catalog.families[family].sizes[name]


def l4(devices: int = 1, budget: float = 8.0, slots: int = 256) -> Device:
    return Device(bandwidth_gbps=300, peak_tflops=121, devices=devices, kv_budget_gib=budget, slots=slots)


# -- parameters read per decode step -------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "name", "batch", "billions"),
    [
        ("gemma3", "27b", 1, 27.4),   # dense: every weight, the tied embedding/output projection included
        ("gemma3", "27b", 64, 27.4),  # and the same at any batch
        ("gemma4", "e2b", 1, 2.3),    # "E" size: the effective count; per-layer embeddings are looked up
        ("gemma4", "26b-a4b", 1, 3.8),  # MoE at batch 1: the active experts
        # MoE at batch 8: 25.2 x (1 - (1 - 3.8/25.2)^8) = 25.2 x (1 - 0.84921^8) = 25.2 x 0.72937 = 18.38
        ("gemma4", "26b-a4b", 8, 18.38),
    ],
)
def test_parameters_read_per_step(catalog, family, name, batch, billions):
    assert perf.read_params(size(catalog, family, name), batch) == pytest.approx(billions, abs=0.01)


# -- decode: memory-bandwidth bound ---------------------------------------------------------------


def test_2b_bf16_on_one_l4_at_batch_1(catalog):
    # Gemma 4 E2B reads 2.3e9 params x 2 bytes = 4.6 GB a step. One L4 streams 300 GB/s:
    # 300 / 4.6 = 65.2 tokens/s before the efficiency factor; x 0.75 (MBU) = 48.9 tokens/s.
    # The KV cache of one 1-token sequence adds ~4 KB: negligible here.
    seconds, bound = perf.step_seconds(size(catalog, "gemma4", "e2b"), "bf16", l4(), batch=1, context=1)
    assert bound == "memory"
    assert 1 / seconds == pytest.approx(300 / 4.6 * MBU, rel=1e-3)
    assert 300 / 4.6 == pytest.approx(65.2, abs=0.1)


def test_quantized_weights_read_fewer_bytes(catalog):
    # q4_0: 18 bytes per 32 weights. 2.3e9 x 18/32 = 1.294 GB -> 300 x 0.75 / 1.294 = 173.9 tokens/s.
    seconds, _ = perf.step_seconds(size(catalog, "gemma4", "e2b"), "q4_0", l4(), batch=1, context=1)
    assert 1 / seconds == pytest.approx(300e9 * MBU / (2.3e9 * 18 / 32), rel=1e-3)


def test_tensor_parallelism_splits_the_weights_over_the_devices(catalog):
    # Gemma 3 27B bf16 over 2 GPUs: 27.4e9 x 2 / 2 = 27.4 GB per GPU a step; at 3350 GB/s (H100) x 0.75:
    # 2512.5 / 27.4 = 91.7 tokens/s. This Device names no interconnect: no all-reduce time (see below).
    h100x2 = Device(bandwidth_gbps=3350, peak_tflops=989, devices=2, kv_budget_gib=30, slots=256)
    seconds, _ = perf.step_seconds(size(catalog, "gemma3", "27b"), "bf16", h100x2, batch=1, context=1)
    assert 1 / seconds == pytest.approx(3350 * MBU / 27.4, rel=2e-3)


def test_each_sequence_adds_its_kv_cache_sliding_window_aware(catalog):
    # Gemma 3 27B: 62 layers, every 6th global -> 10 global, 52 local (window 1024); 16 KV heads x 128
    # dims x 2 (K, V) x 2 bytes = 8192 bytes per token per layer.
    # At 32768 tokens: global 10 x 32768 x 8192 = 2,684,354,560; local 52 x 1024 x 8192 = 436,207,616.
    # One sequence: 3,120,562,176 bytes (2.906 GiB) -- all-global would be 16.6 GB.
    gemma = size(catalog, "gemma3", "27b")
    kv = 10 * 32768 * 8192 + 52 * 1024 * 8192
    assert perf.sizing.kv_cache_gib(gemma.architecture, 32768) * GIB == kv
    # Four such sequences on one A100 80GB (2039 GB/s): (54.8e9 + 4 x kv) / (2039e9 x 0.75) per step.
    a100 = Device(bandwidth_gbps=2039, peak_tflops=312, devices=1, kv_budget_gib=20, slots=256)
    seconds, bound = perf.step_seconds(gemma, "bf16", a100, batch=4, context=32768)
    assert bound == "memory"
    assert seconds == pytest.approx((27.4e9 * 2 + 4 * kv) / (2039e9 * MBU), rel=1e-6)


def test_a_large_batch_on_a_slow_chip_turns_compute_bound(catalog):
    # 256 sequences of Gemma 4 E2B: 2 x 2.3e9 x 256 = 1.1776e12 FLOPs a step. At a made-up 5 TFLOPS x
    # 0.5 (MFU) that is 0.471 s, far above the memory time (4.6 GB + 256 small caches at 300 GB/s).
    slow = Device(bandwidth_gbps=300, peak_tflops=5, devices=1, kv_budget_gib=8, slots=256)
    seconds, bound = perf.step_seconds(size(catalog, "gemma4", "e2b"), "bf16", slow, batch=256, context=1)
    assert bound == "compute"
    assert seconds == pytest.approx(2 * 2.3e9 * 256 / (5e12 * MFU), rel=1e-9)


# -- tensor parallelism: two all-reduces per layer ------------------------------------------------


def h100s(devices: int) -> Device:
    # NVLink 4 at 450 GB/s one way; NCCL's small all-reduce: 6.6 + 2 x (n - 1) x 0.6 us.
    return Device(bandwidth_gbps=3350, peak_tflops=989, devices=devices, kv_budget_gib=30, slots=256,
                  allreduce_latency_s=(6.6 + 2 * (devices - 1) * 0.6) * 1e-6, link_bandwidth_gbps=450)  # fmt: skip


@pytest.mark.parametrize(
    ("device", "values", "seconds"),
    [
        # 8 GPUs, one sequence of Llama-2-7B's 4096 values: 8192 bytes; 2 x 7/8 x 8192 / 450e9 = 0.0319 us
        # on top of 15.0 us. Latency-bound.
        (h100s(8), 4096, 15.0e-6 + 14_336 / 450e9),
        # 2 L4s over PCIe (32 GB/s one way, 6.6 + 2 x 1.0 = 8.6 us), 256 sequences x 4096 values = 2 MiB:
        # 2 x 1/2 x 2,097,152 / 32e9 = 65.5 us on top of 8.6 us. Bandwidth-bound.
        (Device(bandwidth_gbps=300, peak_tflops=121, devices=2, kv_budget_gib=8, slots=256, allreduce_latency_s=8.6e-6,
                link_bandwidth_gbps=32), 256 * 4096, 8.6e-6 + 2_097_152 / 32e9),  # fmt: skip
        (l4(), 4096, 0.0),  # one device: nothing to reduce
    ],
)
def test_one_allreduce_is_latency_plus_ring_bytes_over_the_link(device, values, seconds):
    assert perf.allreduce_seconds(device, values) == pytest.approx(seconds, rel=1e-9)


def test_a_decode_step_over_two_gpus_adds_two_allreduces_per_layer(catalog):
    # Gemma 3 27B (62 layers, hidden 5376) over 2 H100s at batch 1: 124 all-reduces of 5376 values
    # (10,752 bytes): each 7.8 us + 2 x 1/2 x 10,752 / 450e9 = 7.8239 us; 124 x = 0.9702 ms, on top of the
    # 10.905 ms weight read (27.4 GB / 2512.5 GB/s) and the one-token cache. 91.7 -> 84.2 tokens/s.
    gemma = size(catalog, "gemma3", "27b")
    without = Device(bandwidth_gbps=3350, peak_tflops=989, devices=2, kv_budget_gib=30, slots=256)
    memory, _ = perf.step_seconds(gemma, "bf16", without, batch=1, context=1)
    seconds, bound = perf.step_seconds(gemma, "bf16", h100s(2), batch=1, context=1)
    assert bound == "memory"
    assert seconds - memory == pytest.approx(124 * (7.8e-6 + 10_752 / 450e9), rel=1e-9)
    assert seconds - memory == pytest.approx(0.9702e-3, abs=1e-7)
    assert 1 / seconds == pytest.approx(84.2, abs=0.1)


def test_prompts_prefilled_together_cost_their_flops_and_allreduces_once_per_batch(catalog):
    # Eight 1000-token prompts of Gemma 3 1B on one L4: 8 x 2.0425e12 FLOPs at 60.5 TFLOPS = 270.1 ms; one
    # prompt alone is 33.8 ms. The weights (2 GB) are read once either way.
    gemma = size(catalog, "gemma3", "1b")
    flops = 2.0e12 + 42_549_444_608
    assert perf.prefill_seconds(gemma, "bf16", l4(), 1000, prompts=8) == pytest.approx(8 * flops / (121e12 * MFU), rel=1e-9)
    # Over 8 H100s: 8 x 2.0425e12 / (8 x 494.5e12) = 4.13 ms, plus 2 x 26 layers of all-reduces of
    # 8000 x 1152 values (18,432,000 bytes): 15.0 us + 2 x 7/8 x 18,432,000 / 450e9 = 86.68 us each.
    seconds = perf.prefill_seconds(gemma, "bf16", h100s(8), 1000, prompts=8)
    allreduces = 52 * (15.0e-6 + 1.75 * 18_432_000 / 450e9)
    assert seconds == pytest.approx(8 * flops / (8 * 989e12 * MFU) + allreduces, rel=1e-9)
    assert allreduces == pytest.approx(4.507e-3, abs=1e-6)


# -- prefill: compute bound ----------------------------------------------------------------------


def test_prefill_flops_count_the_attention_term_per_window(catalog):
    # Gemma 3 1B, a 1000-token prompt. Matmuls: 2 x 1.0e9 x 1000 = 2.0e12.
    # Attention: 26 layers, every 6th global -> 4 global, 22 local (window 512); 4 query heads x 256 dims;
    # 4 x heads x dim FLOPs per query-key pair (QK^T and AV, 2 each).
    #   global pairs: 1000 x 1001 / 2 = 500,500; local: 512 x 513 / 2 + (1000 - 512) x 512 = 381,184
    #   4 x 4 x 256 x (4 x 500,500 + 22 x 381,184) = 4096 x 10,388,048 = 42,549,444,608
    flops = perf.prefill_flops(size(catalog, "gemma3", "1b"), 1000)
    assert flops == 2.0e12 + 42_549_444_608


def test_prefill_time_at_the_compute_peak_and_efficiency(catalog):
    # The same prompt on one L4 (121 TFLOPS bf16 dense) x 0.5: 2.0425e12 / 60.5e12 = 33.8 ms.
    flops = 2.0e12 + 42_549_444_608
    seconds = perf.prefill_seconds(size(catalog, "gemma3", "1b"), "bf16", l4(), 1000)
    assert seconds == pytest.approx(flops / (121e12 * MFU), rel=1e-9)
    assert seconds == pytest.approx(0.0338, abs=1e-4)


def test_a_one_token_prompt_is_never_faster_than_reading_the_weights(catalog):
    # 2 x 1e9 FLOPs take 33 us at 60.5 TFLOPS, but the 2 GB of weights take 2e9 / 225e9 = 8.9 ms.
    seconds = perf.prefill_seconds(size(catalog, "gemma3", "1b"), "bf16", l4(), 1)
    assert seconds == pytest.approx(2.0e9 / (300e9 * MBU), rel=1e-9)


# -- concurrency, replicas, cost ------------------------------------------------------------------


def test_largest_concurrency_whose_kv_cache_fits(catalog):
    # Gemma 4 E2B keeps KV in its first 15 layers (20 share it): every 5th global -> 3 global (1 KV head x
    # 512 dims), 12 local (1 x 256, window 512). A 1280-token sequence:
    #   global 3 x (2 x 512 x 2) x 1280 = 7,864,320; local 12 x (2 x 256 x 2) x 512 = 6,291,456
    #   = 14,155,776 bytes. A 1 GiB budget holds 1,073,741,824 // 14,155,776 = 75 of them.
    e2b = size(catalog, "gemma4", "e2b")
    assert perf.max_concurrency(e2b, l4(budget=1.0), 1280) == 75
    assert perf.max_concurrency(e2b, l4(budget=1.0, slots=4), 1280) == 4  # llama.cpp's slots cap it
    assert perf.max_concurrency(e2b, l4(budget=0.0), 1280) == 0


def test_replicas_and_cost_per_million_tokens(catalog):
    # 100 users of 1024 + 256 tokens; a replica holds 40 (its slots): ceil(100 / 40) = 3 replicas, 34 each.
    e2b = size(catalog, "gemma4", "e2b")
    device = l4(budget=8.0, slots=40)
    workload = Workload(prompt_tokens=1024, output_tokens=256, concurrency=100)
    got = perf.predict_on(e2b, "bf16", device, workload, (0.8536, False))
    assert (got.max_concurrency, got.replicas) == (40, 3)
    step, _ = perf.step_seconds(e2b, "bf16", device, batch=34, context=1024 + 128)
    assert got.tokens_per_second_per_user == pytest.approx(1 / step)
    assert got.tokens_per_second == pytest.approx(100 / step)  # every user at the per-user rate
    # $0.8536/h x 3 replicas / (tokens/s x 3600) x 1e6
    assert got.cost_per_million_tokens == pytest.approx(0.8536 * 3 / (100 / step * 3600) * 1e6)
    full_step, _ = perf.step_seconds(e2b, "bf16", device, batch=40, context=1024 + 128)
    assert got.cost_per_million_tokens_full_load == pytest.approx(0.8536 / (40 / full_step * 3600) * 1e6)
    # TTFT: the prompt's prefill plus one decode step of the batch it joins.
    assert got.ttft_seconds == pytest.approx(perf.prefill_seconds(e2b, "bf16", device, 1024) + step)


def test_an_unpriced_machine_predicts_speed_but_no_cost(catalog):
    got = perf.predict_on(size(catalog, "gemma4", "e2b"), "bf16", l4(), perf.DEFAULT_WORKLOAD, None)
    assert got.cost_per_million_tokens is None and got.tokens_per_second > 0
    assert "costPerMillionTokens" not in got.as_status()  # left out, not written as null


def test_nothing_fits_means_no_replica_count(catalog):
    got = perf.predict_on(size(catalog, "gemma4", "e2b"), "bf16", l4(budget=0.0), perf.DEFAULT_WORKLOAD, (1.0, False))
    assert (got.max_concurrency, got.replicas, got.cost_per_million_tokens) == (0, 0, None)


# -- a plan's pool, as the planner hands it over -------------------------------------------------


def _plan(catalog, fixture: str, spec: dict):
    from gemma_operator.api.v1alpha1 import GemmaDeploymentSpec
    from gemma_operator.inventory import pools
    from gemma_operator.planner import Plan, plan
    from tests.conftest import node_list

    parsed = GemmaDeploymentSpec.model_validate(spec)
    result = plan(parsed, pools(node_list(fixture), catalog), catalog)
    assert isinstance(result, Plan)
    return result


def test_a_plan_on_an_l4_node_is_priced_from_its_machine_type(catalog):
    result = _plan(catalog, "gke-l4", {"model": {"family": "gemma4", "size": "e2b"}, "quantization": "bf16"})
    assert result.pool.machine_type == "g2-standard-8"  # the nodes' instance-type label
    device = perf.device_of(result, catalog)
    # vLLM's budget: 22.5 GiB x 0.9 - weights (Google's 11.4 GB = 10.617 GiB) - overhead (1.5 + 5% of weights).
    weights = 11.4e9 / GIB
    assert device.kv_budget_gib == pytest.approx(22.5 * 0.9 - weights - (1.5 + 0.05 * weights))
    assert (device.bandwidth_gbps, device.peak_tflops, device.slots) == (300, 121, perf.VLLM_MAX_SEQS)
    assert perf.price_of(result, catalog) == (0.8536, False)


def test_a_plan_over_two_h100s_carries_nvlink_and_nccls_latency(catalog):
    # Gemma 4 31B bf16 takes 2 of the node's H100s: one all-reduce costs 6.6 + 2 x 1 x 0.6 = 7.8 us
    # plus bytes over NVLink 4's 450 GB/s one way.
    result = _plan(catalog, "gke-h100x8", {"model": {"family": "gemma4", "size": "31b"}})
    device = perf.device_of(result, catalog)
    assert device.devices == 2
    assert (device.allreduce_latency_s, device.link_bandwidth_gbps) == (pytest.approx(7.8e-6), 450)


def test_a_plan_on_one_device_has_no_communication(catalog):
    result = _plan(catalog, "gke-l4", {"model": {"family": "gemma4", "size": "e2b"}, "quantization": "bf16"})
    device = perf.device_of(result, catalog)
    assert (device.devices, device.allreduce_latency_s, device.link_bandwidth_gbps) == (1, 0.0, 0.0)


def test_a_plan_on_part_of_a_multi_gpu_node_pays_its_share(catalog):
    # Gemma 4 31B bf16 takes 2 of the a3-highgpu-8g's 8 H100s: 2/8 of $88.2539 an hour.
    result = _plan(catalog, "gke-h100x8", {"model": {"family": "gemma4", "size": "31b"}})
    assert (result.accelerator_count, result.pool.devices_per_node) == (2, 8)
    hourly, _ = perf.price_of(result, catalog)
    assert hourly == pytest.approx(88.2539 * 2 / 8)


def test_a_cpu_plan_uses_the_family_bandwidth_per_vcpu_and_llamacpp_slots(catalog):
    result = _plan(catalog, "gke-cpu-only", {})
    device = perf.device_of(result, catalog)
    family = catalog.machines.family(result.pool.machine_type)
    assert device.bandwidth_gbps == pytest.approx(result.pool.node_cpu * family.memory_bandwidth_gbps_per_vcpu)
    assert device.slots == perf.LLAMACPP_SLOTS
    # llama.cpp's cache is --ctx-size tokens, shared by its slots.
    assert device.kv_budget_gib == perf.sizing.kv_cache_gib(catalog.families[result.family].sizes[result.size].architecture,
                                                             result.max_model_len)  # fmt: skip


# -- embedding plans: one forward pass a request (task embed) -------------------------------------
# EmbeddingGemma 300m: 0.308e9 parameters, of which the token-embedding table (262,144 x 768 =
# 201,326,592) is looked up, not multiplied: 106,673,408 multiply each token. 24 layers, every 6th
# global (4 global, 20 local with a 512-token window), 3 heads x 256 dims: 4 x 3 x 256 = 3072 FLOPs per
# query-key pair per layer, and attention is bidirectional (every query sees every key, or its window's).
EMBED_PARAMS = 106_673_408
# One 1024-token input: 2 x 106,673,408 x 1024 = 218,467,139,584
#   + global 4 x 1024 x 1024 x 3072 = 12,884,901,888 + local 20 x 1024 x 512 x 3072 = 32,212,254,720
EMBED_FLOPS_1024 = 263_564_296_192
# One 16-token input: 2 x 106,673,408 x 16 = 3,413,549,056 + 4 x 16 x 16 x 3072 + 20 x 16 x 16 x 3072
EMBED_FLOPS_16 = 3_413_549_056 + 3_145_728 + 15_728_640


def embedding(catalog):
    return size(catalog, "embeddinggemma", "300m")


def test_an_embedding_model_multiplies_all_but_its_lookup_table(catalog):
    assert perf.embed_params(embedding(catalog)) * 1e9 == pytest.approx(EMBED_PARAMS)
    assert perf.embed_flops(embedding(catalog), 1024) == EMBED_FLOPS_1024
    assert perf.embed_flops(embedding(catalog), 16) == EMBED_FLOPS_16


# (device, quantization, prompt tokens, context, batch tokens, concurrency) ->
#   (input tokens, inputs per pass, replicas, latency alone, latency at concurrency, bound), hand-computed
L4_COMPUTE = 121e12 * MFU  # 60.5 TFLOPS
L4_READ = EMBED_PARAMS * 2 / (300e9 * MBU)  # bf16 weights once: 213.3 MB at 225 GB/s = 0.948 ms
CPU = Device(bandwidth_gbps=4 * 4.0, peak_tflops=4 * 0.040, devices=1, kv_budget_gib=0.1, slots=4)  # 4 vCPUs
EMBED_ROWS = [
    # vLLM on one L4, 1024 tokens: 263.56e9 / 60.5e12 = 4.356 ms, compute-bound (above the 0.948 ms read);
    # 8192 // 1024 = 8 inputs a pass.
    (l4(), "bf16", 1024, 2048, 8192, 1, (1024, 8, 1, EMBED_FLOPS_1024 / L4_COMPUTE, EMBED_FLOPS_1024 / L4_COMPUTE, "compute")),
    # 20 at once: ceil(20 / 8) = 3 replicas, ceil(20 / 3) = 7 inputs in one pass: 7 x 4.356 = 30.5 ms.
    (l4(), "bf16", 1024, 2048, 8192, 20, (1024, 8, 3, EMBED_FLOPS_1024 / L4_COMPUTE, 7 * EMBED_FLOPS_1024 / L4_COMPUTE,
                                          "compute")),
    # 16 tokens: 3.43e9 FLOPs take 56.7 us, below the 0.948 ms weight read: memory-bound alone;
    # 8192 // 16 = 512 inputs, capped at vLLM's 256 sequences.
    (l4(), "bf16", 16, 2048, 8192, 1, (16, 256, 1, L4_READ, L4_READ, "memory")),
    # 4096 asked, but an input is at most the context: counted at 2048, 8192 // 2048 = 4 a pass.
    # 2 x 106,673,408 x 2048 + 4 x 2048^2 x 3072 + 20 x 2048 x 512 x 3072 = 552,898,396,160 FLOPs: 9.139 ms.
    (l4(), "bf16", 4096, 2048, 8192, 1, (2048, 4, 1, 552_898_396_160 / L4_COMPUTE, 552_898_396_160 / L4_COMPUTE,
                                         "compute")),
    # llama.cpp on 4 vCPUs (160 GFLOPS x 0.5 = 80 GFLOPS): 263.56e9 / 80e9 = 3.295 s; its micro-batch is
    # the context, 2048 // 1024 = 2 inputs a pass.
    (CPU, "q8_0", 1024, 2048, 2048, 1, (1024, 2, 1, EMBED_FLOPS_1024 / 80e9, EMBED_FLOPS_1024 / 80e9, "compute")),
]  # fmt: skip


@pytest.mark.parametrize(("device", "quantization", "prompt", "context", "batch", "concurrency", "expected"), EMBED_ROWS,
                         ids=["l4-1024", "l4-1024-x20", "l4-16", "l4-capped", "cpu-1024"])  # fmt: skip
def test_an_embedding_request_is_one_forward_pass(catalog, device, quantization, prompt, context, batch, concurrency,
                                                  expected):  # fmt: skip
    tokens, per_pass, replicas, alone, loaded, bound = expected
    workload = Workload(prompt_tokens=prompt, output_tokens=0, concurrency=concurrency)
    got = perf.predict_embed_on(embedding(catalog), quantization, device, workload, context, batch, None)
    assert (got.input_tokens, got.max_concurrency, got.replicas, got.bound) == (tokens, per_pass, replicas, bound)
    assert got.latency_seconds == pytest.approx(alone, rel=1e-9)
    assert got.latency_seconds_at_concurrency == pytest.approx(loaded, rel=1e-9)
    assert got.cost_per_million_input_tokens is None  # no price given


def test_embedding_throughput_and_cost_at_full_load(catalog):
    # vLLM on one L4, 1024-token inputs: 8 a pass of 8 x 4.356 ms = 34.85 ms -> 229.55 requests/s,
    # 235,056 input tokens/s. $0.8536/h / (235,056 x 3600) x 1e6 = $0.001009 per million input tokens.
    workload = Workload(prompt_tokens=1024, output_tokens=0, concurrency=1)
    got = perf.predict_embed_on(embedding(catalog), "bf16", l4(), workload, 2048, 8192, (0.8536, False))
    full = 8 * EMBED_FLOPS_1024 / L4_COMPUTE
    assert got.requests_per_second == pytest.approx(8 / full, rel=1e-9)
    assert got.requests_per_second == pytest.approx(229.55, abs=0.01)
    assert got.input_tokens_per_second == pytest.approx(8 * 1024 / full, rel=1e-9)
    assert got.cost_per_million_input_tokens == pytest.approx(0.8536 / (8 * 1024 / full * 3600) * 1e6, rel=1e-9)
    assert got.cost_per_million_input_tokens == pytest.approx(0.001009, abs=1e-6)
    # The status carries the embedding fields and none of a chat plan's.
    status = got.as_status()
    assert status["workload"] == {"promptTokens": 1024, "concurrency": 1, "inputTokens": 1024}
    assert {"latencySeconds", "requestsPerSecond", "inputTokensPerSecond", "costPerMillionInputTokens"} <= set(status)
    assert not {"ttftSeconds", "outputTokensPerSecond", "outputTokensPerSecondPerUser", "costPerMillionTokens"} & set(status)


def test_an_embedding_plan_is_predicted_as_one(catalog):
    # The example of examples/10-embeddings on gke-l4: llama.cpp on the e2-standard-4 node (3.92 vCPUs
    # allocatable: 156.8 GFLOPS x 0.5), its micro-batch the 2048-token context, $0.134/h.
    result = _plan(catalog, "gke-l4", {"model": {"task": "embed"}})
    assert (result.pool.machine_type, result.batch_tokens) == ("e2-standard-4", 2048)
    p = result.predicted
    assert p["latencySeconds"] == pytest.approx(EMBED_FLOPS_1024 / (3.92 * 0.040e12 * MFU), abs=1e-4)  # 3.3618 s
    assert (p["maxConcurrency"], p["replicas"], p["pricePerHour"]) == (2, 1, 0.134)
    assert "ttftSeconds" not in p and "outputTokensPerSecond" not in p
