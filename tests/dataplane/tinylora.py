"""A tiny random PEFT LoRA adapter for the tiny Gemma 3 (tinygemma_hf.py), as PEFT saves one.

`write(dest, vllm_python, ...)` (project venv) runs this file as a script in the vLLM venv, where
torch and safetensors are. It writes what `peft`'s `save_pretrained` writes for a LoRA on
Gemma3ForCausalLM (checked against PEFT's layout: `base_model.model.<module>.lora_A.weight` of
r x in_features, `lora_B.weight` of out_features x r, in the base's dtype):
- adapter_config.json: peft_type LORA, task_type CAUSAL_LM, r, lora_alpha, target_modules (every
  linear layer of the decoder: q, k, v, o, gate, up, down), base_model_name_or_path;
- adapter_model.safetensors: random bfloat16 A and B (seeded; B not zero, so the adapter changes
  what the model computes).
"""

from __future__ import annotations

import json
import pathlib
import sys

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write(dest: pathlib.Path, vllm_python: pathlib.Path, base: str, rank: int = 8, seed: int = 0) -> pathlib.Path:
    from tests.dataplane import tinygemma, tinygemma_hf

    spec = {"dest": str(dest), "seed": seed, "rank": rank, "base": base,
            "layers": tinygemma.N_LAYER, "hidden": tinygemma.N_EMBD, "ff": tinygemma.N_FF,
            "q": tinygemma.N_HEAD * tinygemma_hf.HEAD_DIM, "kv": tinygemma.N_HEAD_KV * tinygemma_hf.HEAD_DIM}  # fmt: skip
    tinygemma_hf.run_in_vllm_venv(__file__, spec, vllm_python, "the tiny LoRA", timeout=300)
    return dest


def _main() -> None:
    import torch
    from safetensors.torch import save_file

    spec = json.load(sys.stdin)
    torch.manual_seed(spec["seed"])
    d, q, kv, ff, r = spec["hidden"], spec["q"], spec["kv"], spec["ff"], spec["rank"]
    shapes = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
              "gate_proj": (d, ff), "up_proj": (d, ff), "down_proj": (ff, d)}  # fmt: skip
    tensors = {}
    for layer in range(spec["layers"]):
        for name, (fan_in, fan_out) in shapes.items():
            part = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            prefix = f"base_model.model.model.layers.{layer}.{part}.{name}"
            tensors[f"{prefix}.lora_A.weight"] = (torch.randn(r, fan_in) * 0.02).to(torch.bfloat16)
            tensors[f"{prefix}.lora_B.weight"] = (torch.randn(fan_out, r) * 0.02).to(torch.bfloat16)
    dest = pathlib.Path(spec["dest"])
    save_file(tensors, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 2 * r, "lora_dropout": 0.0,
              "bias": "none", "target_modules": list(TARGETS), "base_model_name_or_path": spec["base"],
              "fan_in_fan_out": False, "inference_mode": True, "modules_to_save": None}  # fmt: skip
    (dest / "adapter_config.json").write_text(json.dumps(config, indent=2))


if __name__ == "__main__":
    _main()


def write_gguf(path: pathlib.Path, rank: int = 8, seed: int = 0) -> pathlib.Path:
    """The LoRA as llama.cpp's convert_lora_to_gguf.py writes one, for the tiny GGUF (tinygemma.py):
    general.type `adapter`, adapter.type `lora`, adapter.lora.alpha, and per linear layer
    `blk.N.<tensor>.weight.lora_a` (ggml {n_in, r}) and `.lora_b` (ggml {r, n_out}), in f32 as the base."""
    import gguf
    import numpy as np

    from tests.dataplane import tinygemma as tg

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), tg.ARCH)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(2 * rank))
    q, kv, d, ff = tg.N_HEAD * tg.HEAD_DIM, tg.N_HEAD_KV * tg.HEAD_DIM, tg.N_EMBD, tg.N_FF
    M = gguf.MODEL_TENSOR
    shapes = {M.ATTN_Q: (d, q), M.ATTN_K: (d, kv), M.ATTN_V: (d, kv), M.ATTN_OUT: (q, d),
              M.FFN_GATE: (d, ff), M.FFN_UP: (d, ff), M.FFN_DOWN: (ff, d)}  # fmt: skip
    for layer in range(tg.N_LAYER):
        for tensor, (fan_in, fan_out) in shapes.items():
            name = gguf.TENSOR_NAMES[tensor].format(bid=layer) + ".weight"
            w.add_tensor(name + ".lora_a", rng.normal(0.0, 0.02, size=(rank, fan_in)).astype(np.float32))
            w.add_tensor(name + ".lora_b", rng.normal(0.0, 0.02, size=(fan_out, rank)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
