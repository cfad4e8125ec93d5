"""A tiny Gemma-3-architecture GGUF with random weights, written with the `gguf` package.

Nothing here is a real model: the weights are random, so the text it generates is noise. What
is real is everything a server checks at start-up and while chatting: the `gemma3`
architecture and its tensors (q/k norms, post-attention and post-FFN norms, sliding-window
layers), a SentencePiece ("llama") vocabulary with byte fallback, Gemma's special tokens at
Gemma 3's own ids, and Gemma's chat template in `tokenizer.chat_template`, which a server
started with `--jinja` applies.

Vocabulary layout (512 tokens). Ids 0..106 are laid out as in Gemma 3's tokenizer:
  0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, 4 <mask>, 5 [multimodal], 6..104 <unused0>..<unused98>,
  105 <start_of_turn>, 106 <end_of_turn>.
The rest is ours, not Gemma's (Gemma 3 has 262k pieces): 107..362 the 256 byte-fallback
tokens <0x00>..<0xFF>, then single characters and a few whole words.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

ARCH = "gemma3"
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 16
N_FF = 128
# Gemma 3 1B's own numbers: the rendered --ctx-size (32768) is within the trained context.
CONTEXT_LENGTH = 32768
SLIDING_WINDOW = 512
# One local (sliding-window) layer, then one global layer: both attention kinds are exercised.
SLIDING_WINDOW_PATTERN = 2
VOCAB_SIZE = 512

PAD, EOS, BOS, UNK = 0, 1, 2, 3
START_OF_TURN, END_OF_TURN = 105, 106
FIRST_BYTE = 107

# Gemma 3's chat template (the one in its tokenizer_config.json): no system role, a system
# message is folded into the first user turn, "assistant" is spelled "model".
CHAT_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

SPACE = "\u2581"  # SentencePiece's word-boundary mark
WORDS = [
    "user", "model", "Hello", "hello", "Hi", "world", "the", "a", "is", "are", "you", "How",
    "what", "Gemma", "chat", "test", "Say", "one", "two", "three", "yes", "no", "ok",
]  # fmt: skip


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """(pieces, scores, token types) in id order."""
    T = gguf.TokenType
    pieces: list[str] = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]"]
    types: list[int] = [T.CONTROL, T.CONTROL, T.CONTROL, T.UNKNOWN, T.USER_DEFINED, T.USER_DEFINED]
    for i in range(START_OF_TURN - len(pieces)):
        pieces.append(f"<unused{i}>")
        types.append(T.UNUSED)
    pieces += ["<start_of_turn>", "<end_of_turn>"]
    types += [T.CONTROL, T.CONTROL]
    assert pieces.index("<start_of_turn>") == START_OF_TURN and len(pieces) == FIRST_BYTE
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    types += [T.BYTE] * 256
    singles = [SPACE] + [c for c in string.ascii_letters + string.digits + string.punctuation]
    words = [SPACE + w for w in WORDS] + WORDS
    normal = [p for p in dict.fromkeys(singles + words) if p not in pieces]
    room = VOCAB_SIZE - len(pieces)
    # Fill up to VOCAB_SIZE with two-letter pieces so merges happen, as in a real SPM vocab.
    pairs = (a + b for a in "etaoinshr" for b in "etaoinshr")
    while len(normal) < room:
        normal.append(next(pairs))
    normal = normal[:room]
    pieces += normal
    types += [T.NORMAL] * len(normal)
    # SPM merges the highest-scoring pair first: longer pieces score higher.
    scores = [0.0] * (len(pieces) - len(normal)) + [-1000.0 + 10.0 * len(p) - i * 1e-3 for i, p in enumerate(normal)]
    assert len(pieces) == len(scores) == len(types) == VOCAB_SIZE
    assert len(set(pieces)) == VOCAB_SIZE
    return pieces, scores, types


@dataclass(frozen=True)
class Shapes:
    """A Gemma 3 text model's numbers: what the GGUF's header declares and its tensors' shapes."""

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
        """(GGUF name, numpy shape (rows, cols) or (n,), is a matrix) of every tensor, in file order.
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
        return sum(int(np.prod(shape)) for _, shape, is_matrix in self.tensors() if is_matrix or norms)


SHAPES = Shapes(layers=N_LAYER, hidden=N_EMBD, heads=N_HEAD, kv_heads=N_HEAD_KV, head_dim=HEAD_DIM,
                intermediate=N_FF, vocab=VOCAB_SIZE, sliding_window=SLIDING_WINDOW,
                sliding_window_pattern=SLIDING_WINDOW_PATTERN, context=CONTEXT_LENGTH)  # fmt: skip


def random_f32(rng: np.random.Generator, rows: int, cols: int) -> tuple[np.ndarray, None]:
    """A matrix of normal weights (std 0.02), stored as f32 (no raw ggml type)."""
    return rng.normal(0.0, 0.02, size=(rows, cols)).astype(np.float32), None


def write(
    path: Path | str,
    seed: int = 0,
    name: str = "tiny-gemma-3",
    *,
    shapes: Shapes = SHAPES,
    arch: str = ARCH,
    file_type: gguf.LlamaFileType = gguf.LlamaFileType.ALL_F32,
    tokens: tuple[list[str], list[float], list[int]] | None = None,
    add_eos: bool = False,
    chat_template: str | None = CHAT_TEMPLATE,
    header: Callable[[gguf.GGUFWriter], None] = lambda w: None,
    tensors: list[tuple[str, tuple, bool]] | None = None,
    matrix: Callable[[np.random.Generator, int, int], tuple[np.ndarray, Any]] = random_f32,
) -> Path:
    """Write a Gemma 3 GGUF with random weights to `path` and return it: by default this file's tiny
    model. The others (the embedding model, the benchmark's Gemma 3 1B at q4_0) pass their shapes,
    architecture name, extra header keys (`header`, written after the sliding-window keys), tensor
    list (default `shapes.tensors()`), vocabulary (default `vocabulary()`) and matrix maker."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)

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
    header(w)
    w.add_file_type(file_type)

    pieces, scores, types = tokens if tokens is not None else vocabulary()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS)
    w.add_eos_token_id(EOS)
    w.add_unk_token_id(UNK)
    w.add_pad_token_id(PAD)
    w.add_add_bos_token(True)
    w.add_add_eos_token(add_eos)
    w.add_add_space_prefix(False)
    if chat_template is not None:
        w.add_chat_template(chat_template)

    for tensor, shape, is_matrix in shapes.tensors() if tensors is None else tensors:
        if is_matrix:
            data, raw_dtype = matrix(rng, *shape)
            w.add_tensor(tensor, data, raw_dtype=raw_dtype)
        else:  # Gemma's RMSNorm weights are stored with the +1 folded in
            w.add_tensor(tensor, (1.0 + rng.normal(0.0, 0.02, size=shape)).astype(np.float32))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
