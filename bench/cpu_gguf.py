"""A random-weight GGUF with a real Gemma 3 architecture, for measuring llama.cpp's speed on a CPU.

Decode speed depends on the bytes a step reads and the math it does, not on the weights' values:
this file has Gemma 3 1B's shapes (layers, hidden size, heads, KV heads, head dim, vocabulary,
sliding window, from the catalog; the MLP width from the model's config.json, which the catalog
does not carry) at q4_0, the quantization of Google's QAT GGUF, with random 4-bit values and a
small fixed scale per block. Its text is noise. Nothing is downloaded.

The vocabulary is Gemma 3's size (262,144 pieces) so the output projection (tied to the embedding,
302M weights, read every step) costs what it costs in the real model. Its pieces are ours: Gemma's
special tokens at their ids and the byte-fallback tokens (as tests/dataplane/tinygemma.py lays them
out), then placeholder pieces. A benchmark sends prompts as token ids.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dataplane import tinygemma  # noqa: E402

# Gemma 3 1B's MLP width: config.json "intermediate_size": 6912
# (https://huggingface.co/google/gemma-3-1b-it/blob/main/config.json). With the catalog's shapes it
# gives 999,885,952 weights, norms included: the catalog's count exactly.
GEMMA3_1B_INTERMEDIATE = 6912

Q4_0 = gguf.GGMLQuantizationType.Q4_0
BLOCK = 32  # weights per q4_0 block
BLOCK_BYTES = 18  # one fp16 scale + 16 bytes of 4-bit values
# Scale of every block: 4-bit values -8..7 (std ~4.6) times this give weights of std ~0.02,
# a normal initialisation; activations stay finite through 26 layers with Gemma's norms.
SCALE = np.float16(0.02 / 4.6)


@dataclass(frozen=True)
class Shapes:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    sliding_window: int
    sliding_window_pattern: int
    context: int

    @classmethod
    def of(cls, size, intermediate: int) -> Shapes:
        """From a catalog ModelSize (gemma3) and the MLP width."""
        a = size.architecture
        return cls(layers=a.layers, hidden=a.hidden_size, heads=a.attention_heads, kv_heads=a.kv_heads,
                   head_dim=a.head_dim, intermediate=intermediate, vocab=a.vocab_size,
                   sliding_window=a.sliding_window, sliding_window_pattern=a.sliding_window_pattern,
                   context=size.max_context)  # fmt: skip

    def tensors(self) -> list[tuple[str, tuple[int, int] | tuple[int], bool]]:
        """(GGUF name, numpy shape (rows, cols) or (n,), quantized) of every tensor, in file order.
        numpy (rows, cols) is ggml {cols, rows}: each row is one output's weights."""
        names, M = gguf.TENSOR_NAMES, gguf.MODEL_TENSOR
        h, q, kv, ff = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        out: list[tuple[str, tuple, bool]] = [
            (names[M.TOKEN_EMBD] + ".weight", (self.vocab, h), True),
            (names[M.OUTPUT_NORM] + ".weight", (h,), False),
        ]
        for i in range(self.layers):
            def t(kind) -> str:
                return names[kind].format(bid=i) + ".weight"

            out += [
                (t(M.ATTN_NORM), (h,), False),
                (t(M.ATTN_Q), (q, h), True),
                (t(M.ATTN_K), (kv, h), True),
                (t(M.ATTN_V), (kv, h), True),
                (t(M.ATTN_Q_NORM), (self.head_dim,), False),
                (t(M.ATTN_K_NORM), (self.head_dim,), False),
                (t(M.ATTN_OUT), (h, q), True),
                (t(M.ATTN_POST_NORM), (h,), False),
                (t(M.FFN_PRE_NORM), (h,), False),
                (t(M.FFN_GATE), (ff, h), True),
                (t(M.FFN_UP), (ff, h), True),
                (t(M.FFN_DOWN), (h, ff), True),
                (t(M.FFN_POST_NORM), (h,), False),
            ]
        return out

    def weights(self, norms: bool = True) -> int:
        return sum(int(np.prod(shape)) for _, shape, quantized in self.tensors() if quantized or norms)

    def q4_0_bytes(self) -> int:
        """Bytes of the quantized tensors: 18 per 32 weights."""
        return sum(int(np.prod(shape)) // BLOCK * BLOCK_BYTES for _, shape, quantized in self.tensors() if quantized)


def vocabulary(size: int) -> tuple[list[str], list[float], list[int]]:
    """tinygemma's first 363 ids (Gemma's special tokens at their ids, then the 256 byte tokens),
    then placeholder pieces up to `size`."""
    T = gguf.TokenType
    pieces, _, types = tinygemma.vocabulary()
    head = tinygemma.FIRST_BYTE + 256
    pieces, types = pieces[:head], types[:head]
    rest = size - head
    pieces += [f"{tinygemma.SPACE}p{i}" for i in range(rest)]
    types += [T.NORMAL] * rest
    scores = [0.0] * head + [-1.0 - i * 1e-6 for i in range(rest)]
    return pieces, scores, types


def random_q4_0(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """(rows, cols / 32 x 18) bytes: q4_0 blocks of random 4-bit values, every scale SCALE."""
    blocks = rows * cols // BLOCK
    data = rng.integers(0, 256, size=(blocks, BLOCK_BYTES), dtype=np.uint8)
    data[:, :2] = np.frombuffer(SCALE.tobytes(), dtype=np.uint8)
    return data.reshape(rows, cols // BLOCK * BLOCK_BYTES)


def write(path: Path | str, shapes: Shapes, seed: int = 0, name: str = "gemma-3-1b-random-q4_0") -> Path:
    path = Path(path)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), tinygemma.ARCH)
    w.add_name(name)
    w.add_context_length(shapes.context)
    w.add_embedding_length(shapes.hidden)
    w.add_block_count(shapes.layers)
    w.add_feed_forward_length(shapes.intermediate)
    w.add_head_count(shapes.heads)
    w.add_head_count_kv(shapes.kv_heads)
    w.add_key_length(shapes.head_dim)
    w.add_value_length(shapes.head_dim)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1_000_000.0)
    w.add_rope_freq_base_swa(10_000.0)
    w.add_sliding_window(shapes.sliding_window)
    w.add_sliding_window_pattern(shapes.sliding_window_pattern)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)

    pieces, scores, types = vocabulary(shapes.vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(tinygemma.BOS)
    w.add_eos_token_id(tinygemma.EOS)
    w.add_unk_token_id(tinygemma.UNK)
    w.add_pad_token_id(tinygemma.PAD)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)
    w.add_chat_template(tinygemma.CHAT_TEMPLATE)

    for tensor, shape, quantized in shapes.tensors():
        if quantized:
            w.add_tensor(tensor, random_q4_0(rng, *shape), raw_dtype=Q4_0)
        else:  # Gemma's RMSNorm weights, stored with the +1 folded in
            w.add_tensor(tensor, (1.0 + rng.normal(0.0, 0.02, size=shape)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
