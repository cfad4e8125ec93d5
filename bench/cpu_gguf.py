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


class Shapes(tinygemma.Shapes):
    """tinygemma's Shapes (the same header numbers and tensor list), with the q4_0 file's size."""

    def q4_0_bytes(self) -> int:
        """Bytes of the quantized tensors (the matrices): 18 per 32 weights."""
        return sum(int(np.prod(shape)) // BLOCK * BLOCK_BYTES for _, shape, is_matrix in self.tensors() if is_matrix)


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


def random_q4_0_matrix(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    return random_q4_0(rng, rows, cols), Q4_0


def write(path: Path | str, shapes: Shapes, seed: int = 0, name: str = "gemma-3-1b-random-q4_0") -> Path:
    """tinygemma's writer with these shapes, q4_0 matrices and the placeholder vocabulary of `shapes.vocab`."""
    return tinygemma.write(path, seed, name, shapes=shapes, file_type=gguf.LlamaFileType.MOSTLY_Q4_0,
                           tokens=vocabulary(shapes.vocab), matrix=random_q4_0_matrix)  # fmt: skip
