"""A tiny EmbeddingGemma-architecture model with random weights: a GGUF for llama-server, and a
Hugging Face checkpoint (sentence-transformers layout) for vLLM.

Nothing here is a real model: the vectors are noise. What is real is what the servers check and
run: the architecture (llama.cpp's `gemma-embedding`: Gemma 3 blocks with non-causal attention;
transformers' `Gemma3TextModel` with `use_bidirectional_attention`), mean pooling, and
EmbeddingGemma's two Dense projections after the pooling (768 -> 3072 -> 768), so the vectors
have the catalog's full size and vLLM can cut them to a Matryoshka size.
The vocabulary is tinygemma's, so both runtimes see the same pieces at the same ids.

Shapes: 2 layers, hidden 768 (EmbeddingGemma's, so the vectors have the catalog's full size), 4
heads of 32 (vLLM's CPU attention needs head sizes in multiples of 32), 2 KV heads, one
sliding-window layer then one global; context 2048 (EmbeddingGemma's); vocabulary 512.
"""

from __future__ import annotations

import json
import pathlib
import sys

N_LAYER = 2
N_EMBD = 768  # EmbeddingGemma's hidden size, and so its vectors' full size
N_HEAD = 4
N_HEAD_KV = 2
HEAD_DIM = 32
N_FF = 256
CONTEXT_LENGTH = 2048  # EmbeddingGemma's input limit (max_position_embeddings)
SLIDING_WINDOW = 512
# EmbeddingGemma's projections after pooling: 768 -> 3072 -> 768 (llama.cpp asserts the second
# gives back n_embd). The Matryoshka sizes (512, 256, 128) are prefixes of the 768.
DENSE_HIDDEN = 4 * N_EMBD
OUTPUT_DIM = N_EMBD


def write_gguf(path: pathlib.Path | str, seed: int = 0) -> pathlib.Path:
    """The GGUF (arch gemma-embedding, mean pooling, the two Dense layers) at `path`, written by
    tinygemma's writer with this file's shapes and no chat template."""
    import gguf

    from tests.dataplane import tinygemma

    shapes = tinygemma.Shapes(layers=N_LAYER, hidden=N_EMBD, heads=N_HEAD, kv_heads=N_HEAD_KV, head_dim=HEAD_DIM,
                              intermediate=N_FF, vocab=tinygemma.VOCAB_SIZE, sliding_window=SLIDING_WINDOW,
                              sliding_window_pattern=2, context=CONTEXT_LENGTH)  # fmt: skip

    def header(w: gguf.GGUFWriter) -> None:
        w.add_pooling_type(gguf.PoolingType.MEAN)
        w.add_dense_features_dims("dense_2", N_EMBD, DENSE_HIDDEN)
        w.add_dense_features_dims("dense_3", DENSE_HIDDEN, OUTPUT_DIM)

    names, M = gguf.TENSOR_NAMES, gguf.MODEL_TENSOR
    tensors = shapes.tensors()  # the embedding and the final norm, then the Dense layers, then the blocks
    tensors[2:2] = [(names[M.DENSE_2_OUT] + ".weight", (DENSE_HIDDEN, N_EMBD), True),
                    (names[M.DENSE_3_OUT] + ".weight", (OUTPUT_DIM, DENSE_HIDDEN), True)]  # fmt: skip
    return tinygemma.write(
        path, seed, "tiny-embeddinggemma", shapes=shapes,
        arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.GEMMA_EMBEDDING], header=header, tensors=tensors,
        add_eos=True,  # EmbeddingGemma's GGUF adds both (tokenizer.ggml.add_eos_token true)
        chat_template=None,
    )  # fmt: skip


def write_hf(dest: pathlib.Path, vllm_python: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """The checkpoint in the directory `dest`, written by this file run in the vLLM venv."""
    from tests.dataplane import tinygemma, tinygemma_hf

    spec = tinygemma_hf.tokenizer_spec(dest, seed) | {"vocab": tinygemma.VOCAB_SIZE}
    tinygemma_hf.run_in_vllm_venv(__file__, spec, vllm_python, "the tiny embedding checkpoint")
    return dest


# ---- below runs INSIDE the vLLM venv ----

ST = "sentence_transformers.models."


def _model(spec: dict, dest: pathlib.Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import Gemma3TextConfig, Gemma3TextModel

    ids = spec["ids"]
    torch.manual_seed(spec["seed"])
    config = Gemma3TextConfig(
        vocab_size=spec["vocab"], hidden_size=N_EMBD, intermediate_size=N_FF, num_hidden_layers=N_LAYER,
        num_attention_heads=N_HEAD, num_key_value_heads=N_HEAD_KV, head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM,
        max_position_embeddings=CONTEXT_LENGTH, sliding_window=SLIDING_WINDOW,
        layer_types=["sliding_attention", "full_attention"], use_bidirectional_attention=True,
        pad_token_id=ids["pad"], bos_token_id=ids["bos"], eos_token_id=ids["eos"],
    )  # fmt: skip
    config.architectures = ["Gemma3TextModel"]  # as google/embeddinggemma-300m's config.json
    Gemma3TextModel(config).to(torch.float32).save_pretrained(str(dest), safe_serialization=True)
    # The sentence-transformers pipeline of EmbeddingGemma: Transformer, mean Pooling, Dense, Dense, Normalize.
    modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Dense", "Dense"), ("3_Dense", "Dense"),
               ("4_Normalize", "Normalize")]  # fmt: skip
    (dest / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": path, "type": ST + kind} for i, (path, kind) in enumerate(modules)]))
    (dest / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": CONTEXT_LENGTH, "do_lower_case": False}))
    (dest / "1_Pooling").mkdir(exist_ok=True)
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": N_EMBD, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": False, "include_prompt": True}))
    for folder, (n_in, n_out) in (("2_Dense", (N_EMBD, DENSE_HIDDEN)), ("3_Dense", (DENSE_HIDDEN, OUTPUT_DIM))):
        (dest / folder).mkdir(exist_ok=True)
        (dest / folder / "config.json").write_text(json.dumps({
            "in_features": n_in, "out_features": n_out, "bias": False,
            "activation_function": "torch.nn.modules.linear.Identity"}))
        save_file({"linear.weight": torch.randn(n_out, n_in) * 0.02}, str(dest / folder / "model.safetensors"))
    (dest / "4_Normalize").mkdir(exist_ok=True)


def main() -> int:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import tinygemma_hf  # the tokenizer writer: the same vocabulary and special tokens

    spec = json.load(sys.stdin)
    dest = pathlib.Path(spec["dest"])
    tinygemma_hf._tokenizer(spec, dest)
    _model(spec, dest)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(dest))
    assert config.model_type == "gemma3_text" and config.use_bidirectional_attention, config
    print(json.dumps(sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
