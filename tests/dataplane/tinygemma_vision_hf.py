"""A tiny Gemma 3 image-text checkpoint with random weights, in Hugging Face format, for vLLM.

`write(dest, vllm_python)` (project venv) runs this file as a script in the vLLM venv, as
tinygemma_hf.write does, and writes what a real Gemma 3 4B+ checkpoint (google/gemma-3-4b-it)
has, in the same files and under the same names, only tiny:

- config.json: transformers' Gemma3Config (`gemma3`, Gemma3ForConditionalGeneration) with
  tinygemma_hf's text model as `text_config` and a SigLIP `vision_config`
  (`siglip_vision_model`): 56x56 pixels in 14x14 patches (a 4x4 grid), one layer, hidden size 64;
  the projector pools the grid 2x2 into MM_TOKENS_PER_IMAGE = 4 soft tokens per image;
  boi/eoi/image token indices at the ids the tokenizer gives the three image tokens;
- model.safetensors: random bfloat16 weights (seeded) under the names Google's Gemma 3 checkpoints
  use (`language_model.model.*`, `vision_tower.vision_model.*`, `multi_modal_projector.*`), the
  projector's matrix random too (transformers leaves it at zeros: every image would look the same);
- preprocessor_config.json: `image_processor_type: Gemma3ImageProcessor` as the real one says
  (transformers picks the backend, torchvision or PIL, at load: see test_vllm_vision.py),
  56x56, mean/std 0.5, `image_seq_length`; processor_config.json: `processor_class:
  Gemma3Processor` and `image_seq_length`; chat_template.json, the processor's copy of the template;
- the tokenizer of tinygemma_hf (tinygemma's vocabulary) with Gemma 3's image tokens
  `<start_of_image>`, `<end_of_image>` and `<image_soft_token>` as special tokens in three of
  the vocabulary's `<unusedN>` slots (real Gemma 3 has them at 255999, 256000 and 262144), named
  as `boi_token`, `eoi_token` and `image_token` in tokenizer_config.json as the real one does,
  and Gemma 3's chat template (tinygemma.CHAT_TEMPLATE: an image part becomes `<start_of_image>`);
  newline runs ("\\n" to four) as pieces in the next four slots (NEWLINES says why).

The script loads it back with transformers' own AutoConfig and AutoProcessor and runs the
processor on an image, so the soft-token expansion vLLM relies on is checked before vLLM starts.
"""

from __future__ import annotations

import json
import pathlib
import sys

IMAGE_SIZE = 56
PATCH_SIZE = 14
MM_TOKENS_PER_IMAGE = 4  # (56/14)^2 = 16 patches, pooled 2x2
VISION = {"hidden": 64, "heads": 2, "ff": 128, "layers": 1}
# The three image tokens, in the vocabulary's first <unusedN> slots (tinygemma.vocabulary: ids 6-8).
IMAGE_TOKENS = {"boi": "<start_of_image>", "eoi": "<end_of_image>", "image": "<image_soft_token>"}
# Runs of newlines as pieces, in the next four slots, as Gemma's vocabulary has them: vLLM's Gemma 3
# processor (gemma3_mm.py, _apply_token_matches) looks "\n" to "\n\n\n\n" up in the vocabulary to merge
# the "\n\n" around an image with its neighbours, and fails with a KeyError without them. (transformers
# 5.19's GemmaTokenizer rebuilds a BPE from tokenizer.json's vocabulary and merges; this Unigram file
# has no merges, so the tokenizer itself splits text into single characters and bytes.)
NEWLINES = ["\n" * n for n in range(1, 5)]


def _unused() -> list[int]:
    from tests.dataplane import tinygemma

    pieces, _, _ = tinygemma.vocabulary()
    return [i for i, p in enumerate(pieces) if p.startswith("<unused")]


def image_ids() -> dict[str, int]:
    """The ids of the image tokens: the first three `<unusedN>` ids of tinygemma's vocabulary."""
    return dict(zip(IMAGE_TOKENS, _unused()[:3]))


def write(dest: pathlib.Path, vllm_python: pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write the checkpoint into the directory `dest` with the vLLM venv's python; returns `dest`."""
    from tests.dataplane import tinygemma, tinygemma_hf

    ids = image_ids()
    spec = tinygemma_hf.tokenizer_spec(dest, seed)
    for name, token_id in ids.items():
        assert spec["pieces"][token_id].startswith("<unused"), spec["pieces"][token_id]
        spec["pieces"][token_id] = IMAGE_TOKENS[name]
    for token_id, piece in zip(_unused()[3:], NEWLINES):
        spec["pieces"][token_id] = piece
    spec["image_ids"] = ids
    spec["shape"] = {"layers": tinygemma.N_LAYER, "hidden": tinygemma.N_EMBD, "heads": tinygemma.N_HEAD,
                     "kv_heads": tinygemma.N_HEAD_KV, "head_dim": tinygemma_hf.HEAD_DIM, "ff": tinygemma.N_FF,
                     "sliding_window": tinygemma.SLIDING_WINDOW, "vocab": tinygemma.VOCAB_SIZE}  # fmt: skip
    tinygemma_hf.run_in_vllm_venv(__file__, spec, vllm_python, "the tiny image-text checkpoint")
    return dest


# ---- below runs INSIDE the vLLM venv ----


def _tokenizer(spec: dict, dest: pathlib.Path) -> None:
    """tinygemma_hf's tokenizer, plus the image tokens as special tokens at their ids."""
    import tinygemma_hf  # the same vocabulary, normalizer, byte fallback and turn tokens
    from tokenizers import AddedToken, Tokenizer

    tinygemma_hf._tokenizer(spec, dest)
    tok = Tokenizer.from_file(str(dest / "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in IMAGE_TOKENS.values()])
    for name, token in IMAGE_TOKENS.items():
        assert tok.token_to_id(token) == spec["image_ids"][name], (token, tok.token_to_id(token))
    tok.save(str(dest / "tokenizer.json"))
    named = {f"{name}_token": token for name, token in IMAGE_TOKENS.items()}
    config = json.loads((dest / "tokenizer_config.json").read_text())
    config |= named | {"extra_special_tokens": named, "processor_class": "Gemma3Processor"}
    (dest / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    special_map = json.loads((dest / "special_tokens_map.json").read_text())
    special_map |= named
    (dest / "special_tokens_map.json").write_text(json.dumps(special_map, indent=1))


def _model(spec: dict, dest: pathlib.Path) -> None:
    import torch
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GenerationConfig

    import tinygemma_hf

    ids, shape, image = spec["ids"], spec["shape"], spec["image_ids"]
    torch.manual_seed(spec["seed"])
    text = {
        "vocab_size": shape["vocab"], "hidden_size": shape["hidden"], "intermediate_size": shape["ff"],
        "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape["kv_heads"], "head_dim": shape["head_dim"],
        "query_pre_attn_scalar": shape["head_dim"], "max_position_embeddings": tinygemma_hf.MAX_POSITION_EMBEDDINGS,
        "sliding_window": shape["sliding_window"],
        "layer_types": ["sliding_attention", "full_attention"][: shape["layers"]],
    }  # fmt: skip
    vision = {
        "model_type": "siglip_vision_model", "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE,
        "hidden_size": VISION["hidden"], "num_attention_heads": VISION["heads"],
        "intermediate_size": VISION["ff"], "num_hidden_layers": VISION["layers"], "vision_use_head": False,
    }  # fmt: skip
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=MM_TOKENS_PER_IMAGE,
        boi_token_index=image["boi"],
        eoi_token_index=image["eoi"],
        image_token_index=image["image"],
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=[ids["eos"], ids["end_of_turn"]],
    )
    config.architectures = ["Gemma3ForConditionalGeneration"]
    model = Gemma3ForConditionalGeneration(config)
    # transformers 5.19 leaves the projector's matrix at zeros (Gemma3MultiModalProjector makes it
    # with torch.zeros and no init fills it): every image would then embed to the same zero vector.
    projection = model.model.multi_modal_projector.mm_input_projection_weight
    with torch.no_grad():
        projection.normal_(0.0, config.initializer_range)
    model = model.to(torch.bfloat16)
    model.save_pretrained(str(dest), safe_serialization=True)
    _real_names(dest / "model.safetensors")
    GenerationConfig(
        bos_token_id=ids["bos"], eos_token_id=[ids["eos"], ids["end_of_turn"]], pad_token_id=ids["pad"]
    ).save_pretrained(str(dest))


def _real_names(path: pathlib.Path) -> None:
    """transformers 5.19 writes the SigLIP tower as `vision_tower.*`; Google's Gemma 3 checkpoints
    (and vLLM's SiglipVisionModel) have `vision_tower.vision_model.*`: rename to theirs."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    renamed = {("vision_tower.vision_model." + k[len("vision_tower."):]
                if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") else k): v
               for k, v in tensors.items()}  # fmt: skip
    assert any(k.startswith("vision_tower.vision_model.embeddings.") for k in renamed), sorted(renamed)[:8]
    save_file(renamed, str(path), metadata={"format": "pt"})


def _processor(spec: dict, dest: pathlib.Path) -> None:
    """The processor files of a real Gemma 3 checkpoint, with the tiny image size."""
    preprocessor = {
        "image_processor_type": "Gemma3ImageProcessor",
        "processor_class": "Gemma3Processor",
        "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "do_pan_and_scan": None, "pan_and_scan_max_num_crops": None, "pan_and_scan_min_crop_size": None,
        "pan_and_scan_min_ratio_to_activate": None,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255, "resample": 2,
        "image_seq_length": MM_TOKENS_PER_IMAGE, "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    }  # fmt: skip
    (dest / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1))
    processor = {"image_seq_length": MM_TOKENS_PER_IMAGE, "processor_class": "Gemma3Processor"}
    (dest / "processor_config.json").write_text(json.dumps(processor, indent=1))
    # The processor's own copy of the template (the real repo has it in chat_template.json too).
    (dest / "chat_template.json").write_text(json.dumps({"chat_template": spec["chat_template"]}, indent=1))


def _check(dest: pathlib.Path, spec: dict) -> dict:
    """Load it back as vLLM does (AutoConfig, AutoProcessor) and expand an image part."""
    from PIL import Image
    from transformers import AutoConfig, AutoProcessor

    image = spec["image_ids"]
    config = AutoConfig.from_pretrained(str(dest))
    assert config.model_type == "gemma3" and config.vision_config.model_type == "siglip_vision_model", config
    processor = AutoProcessor.from_pretrained(str(dest))
    assert type(processor).__name__ == "Gemma3Processor", type(processor)
    assert processor.image_token_id == image["boi"], processor.image_token_id
    vocab = processor.tokenizer.get_vocab()
    assert all(run in vocab for run in NEWLINES), [run for run in NEWLINES if run not in vocab]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<start_of_image>What is it?" in text, repr(text)
    out = processor(text=text, images=[Image.new("RGB", (40, 30), (200, 30, 30))], return_tensors="pt")
    ids = out["input_ids"][0].tolist()
    assert ids.count(image["image"]) == MM_TOKENS_PER_IMAGE and ids.count(image["boi"]) == 1, ids
    assert tuple(out["pixel_values"].shape) == (1, 3, IMAGE_SIZE, IMAGE_SIZE), out["pixel_values"].shape
    return {"image_processor": type(processor.image_processor).__name__, "input_ids": ids}


def main() -> int:
    spec = json.load(sys.stdin)
    dest = pathlib.Path(spec["dest"])
    _tokenizer(spec, dest)
    _model(spec, dest)
    _processor(spec, dest)
    checked = _check(dest, spec)
    print(json.dumps({"files": sorted(p.name for p in dest.iterdir()), **checked}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
