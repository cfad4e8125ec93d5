"""bench/cpu_gguf.py, the writer of the random-weight GGUF that `make bench-cpu-measure` serves: it must
have the shapes the catalog gives Gemma 3 1B (so llama.cpp reads the bytes the real model makes it
read), at q4_0. The benchmark itself is not run here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from gemma_operator import sizing

BENCH = Path(__file__).resolve().parents[2] / "bench" / "cpu_gguf.py"


@pytest.fixture(scope="module")
def cpu_gguf():
    spec = importlib.util.spec_from_file_location("cpu_gguf", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["cpu_gguf"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("cpu_gguf", None)


def test_gemma3_1b_shapes_give_the_real_parameter_count(catalog, cpu_gguf):
    size = catalog.families["gemma3"].sizes["1b"]
    shapes = cpu_gguf.Shapes.of(size, cpu_gguf.GEMMA3_1B_INTERMEDIATE)
    # 26 layers x (q 1152x1024 + k, v 1152x256 + o 1024x1152 + MLP 3 x 1152x6912 + norms 4 x 1152 + 2 x 256)
    # + the 262,144 x 1152 embedding + the final norm = 999,885,952, google/gemma-3-1b-it's count.
    assert shapes.weights() == 999_885_952
    assert shapes.weights() == pytest.approx(size.params_b * 1e9, rel=2e-4)
    # The q4_0 tensors are everything but the norms: 999,751,680 weights x 18/32 bytes = 562,360,320 bytes,
    # the bytes a decode step reads; performance.py prices 1.0e9 x 18/32 = 562,500,000.
    assert shapes.weights(norms=False) == 999_751_680
    assert shapes.q4_0_bytes() == 562_360_320
    assert shapes.q4_0_bytes() == pytest.approx(size.params_b * 1e9 * sizing.BYTES_PER_WEIGHT["q4_0"], rel=3e-4)


def test_a_small_file_reads_back_with_q4_0_matrices_and_f32_norms(cpu_gguf, tmp_path):
    shapes = cpu_gguf.Shapes(layers=2, hidden=64, heads=4, kv_heads=1, head_dim=32, intermediate=128, vocab=512,
                             sliding_window=512, sliding_window_pattern=6, context=1024)  # fmt: skip
    path = cpu_gguf.write(tmp_path / "small.gguf", shapes)
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 + 13 * 2
    embd = tensors["token_embd.weight"]
    assert embd.tensor_type == gguf.GGMLQuantizationType.Q4_0
    assert list(embd.shape) == [64, 512]  # ggml order: {cols, rows}
    assert tensors["blk.1.ffn_down.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_0
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [128, 64]
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    # Every q4_0 block's scale is the writer's fixed SCALE.
    blocks = np.asarray(embd.data).reshape(-1, 18)
    assert (blocks[:, :2].copy().view(np.float16) == cpu_gguf.SCALE).all()
    field = reader.fields["gemma3.attention.sliding_window_pattern"]
    assert int(field.parts[field.data[0]][0]) == 6
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == 512
