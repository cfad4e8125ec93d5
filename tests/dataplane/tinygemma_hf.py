"""A tiny Gemma 3 checkpoint with random weights, in Hugging Face format, for vLLM.

`write(dest, vllm_python)` (project venv) runs this file as a script in the vLLM venv, where
torch, transformers and tokenizers are, with the vocabulary of tinygemma.py (the GGUF's, so
both runtimes see the same pieces at the same ids) and Gemma 3's chat template on stdin.

What the script writes, as a real Gemma 3 text checkpoint has it:
- config.json: transformers' Gemma3TextConfig (`gemma3_text`, Gemma3ForCausalLM), 2 layers,
  hidden size 64, vocab 512, head size 32, one sliding-window layer then one global layer;
- model.safetensors: random bfloat16 weights (seeded);
- generation_config.json: Gemma 3's stop tokens (<eos> and <end_of_turn>);
- tokenizer.json: a SentencePiece-style unigram model with byte fallback, `<bos>` prepended,
  Gemma's special tokens (<pad>, <eos>, <bos>, <unk>, <start_of_turn>, <end_of_turn>) at
  Gemma 3's ids; tokenizer_config.json with the chat template and the special tokens.

Nothing here is a real model: what vLLM checks at start-up (architecture, shapes, dtype,
context length, tokenizer, chat template) is real; the generated text is noise.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

# Not Gemma 3 1B's 32768: larger than the plans' --max-model-len, so that the length vLLM
# reports can only come from the flag, never from the checkpoint's own default.
MAX_POSITION_EMBEDDINGS = 131072
# vLLM's CPU attention takes head sizes in multiples of 32 (CPUAttentionBackend), not the GGUF's 16.
HEAD_DIM = 32
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]


def tokenizer_spec(dest: pathlib.Path, seed: int) -> dict:
    """What `_tokenizer` reads (tinygemma's vocabulary, chat template and special ids), with the
    destination and the seed: the part of the spec every tiny checkpoint shares."""
    from tests.dataplane import tinygemma

    pieces, scores, _ = tinygemma.vocabulary()
    return {
        "dest": str(dest),
        "seed": seed,
        "pieces": pieces,
        "scores": scores,
        "chat_template": tinygemma.CHAT_TEMPLATE,
        "ids": {"pad": tinygemma.PAD, "eos": tinygemma.EOS, "bos": tinygemma.BOS, "unk": tinygemma.UNK,
                "start_of_turn": tinygemma.START_OF_TURN, "end_of_turn": tinygemma.END_OF_TURN},
    }  # fmt: skip


def run_in_vllm_venv(script: str, spec: dict, vllm_python: pathlib.Path, what: str, timeout: int = 600) -> None:
    """Run `script` with the vLLM venv's python, `spec` as JSON on stdin, offline; raise with its stderr
    if it fails. `spec["dest"]` is made first."""
    pathlib.Path(spec["dest"]).mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(vllm_python), script], input=json.dumps(spec), capture_output=True, text=True, timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"writing {what} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")


def write(dest: pathlib.Path, vllm_python: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write the checkpoint into the directory `dest` with the vLLM venv's python; returns `dest`."""
    from tests.dataplane import tinygemma

    spec = tokenizer_spec(dest, seed) | {
        "shape": {"layers": tinygemma.N_LAYER, "hidden": tinygemma.N_EMBD, "heads": tinygemma.N_HEAD,
                  "kv_heads": tinygemma.N_HEAD_KV, "head_dim": HEAD_DIM, "ff": tinygemma.N_FF,
                  "sliding_window": tinygemma.SLIDING_WINDOW, "vocab": tinygemma.VOCAB_SIZE},
    }  # fmt: skip
    run_in_vllm_venv(__file__, spec, vllm_python, "the tiny HF checkpoint")
    return dest


# ---- below runs INSIDE the vLLM venv ----


def _tokenizer(spec: dict, dest: pathlib.Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    ids = spec["ids"]
    pieces = spec["pieces"]
    assert pieces[ids["bos"]] == "<bos>" and pieces[ids["start_of_turn"]] == "<start_of_turn>", pieces[:8]
    tok = Tokenizer(models.Unigram(list(zip(pieces, spec["scores"])), unk_id=ids["unk"], byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", ids["bos"])]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    for token in SPECIAL:  # already in the vocabulary: the added tokens keep Gemma's ids
        assert tok.token_to_id(token) == pieces.index(token), token
    tok.save(str(dest / "tokenizer.json"))
    config = {
        "tokenizer_class": "GemmaTokenizer",
        "bos_token": "<bos>",
        "eos_token": "<eos>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": MAX_POSITION_EMBEDDINGS,
        "chat_template": spec["chat_template"],
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    special_map = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
                   "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}  # fmt: skip
    (dest / "special_tokens_map.json").write_text(json.dumps(special_map, indent=1))


def _model(spec: dict, dest: pathlib.Path) -> None:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

    ids, shape = spec["ids"], spec["shape"]
    torch.manual_seed(spec["seed"])
    config = Gemma3TextConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["ff"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
        head_dim=shape["head_dim"],
        query_pre_attn_scalar=shape["head_dim"],
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        sliding_window=shape["sliding_window"],
        layer_types=["sliding_attention", "full_attention"][: shape["layers"]],
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=[ids["eos"], ids["end_of_turn"]],
        tie_word_embeddings=True,
    )
    config.architectures = ["Gemma3ForCausalLM"]
    model = Gemma3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(dest), safe_serialization=True)
    GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=[ids["eos"], ids["end_of_turn"]], pad_token_id=ids["pad"]
    ).save_pretrained(str(dest))


def _check(dest: pathlib.Path, spec: dict) -> None:
    """Load it back as vLLM will (AutoTokenizer, AutoConfig) and check the template and ids."""
    from transformers import AutoConfig, AutoTokenizer

    ids = spec["ids"]
    assert AutoConfig.from_pretrained(str(dest)).model_type == "gemma3_text"
    tok = AutoTokenizer.from_pretrained(str(dest))
    text = tok.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n", repr(text)
    encoded = tok(text, add_special_tokens=False)["input_ids"]
    assert encoded[:2] == [ids["bos"], ids["start_of_turn"]] and ids["end_of_turn"] in encoded, encoded
    assert tok("Hello")["input_ids"][0] == ids["bos"], tok("Hello")


def main() -> int:
    spec = json.load(sys.stdin)
    dest = pathlib.Path(spec["dest"])
    _tokenizer(spec, dest)
    _model(spec, dest)
    _check(dest, spec)
    print(json.dumps(sorted(p.name for p in dest.iterdir())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
