"""A tiny Gemma 3 image projector GGUF (an "mmproj") with random weights, written with the `gguf` package.

It is what llama.cpp's multimodal loader (tools/mtmd/clip.cpp, b11434) reads for
`clip.projector_type` gemma3: a SigLIP vision tower (patch embedding as a convolution, learned
position embeddings, pre-norm transformer blocks with LayerNorm, biased q/k/v/out and a GELU MLP,
a post LayerNorm), then Gemma 3's projector: an average pool of the patch grid by
`scale_factor` per side, an RMS norm (`mm.soft_emb_norm`) and a linear map
(`mm.input_projection`) to the text model's embedding width. llama-server refuses a projector
whose output width differs from the text model's (mtmd.cpp), so PROJECTION_DIM is
tinygemma.N_EMBD.

Only the sizes are ours: a 56 px image in 14 px patches is a 4x4 grid, pooled 2x2 into 4 image
tokens (Gemma 3's own: 896 px, 14 px patches, pooled 4x4 into 256 tokens; clip.cpp reads the
pool from `clip.vision.projector.scale_factor` when it is not Gemma 3's 4). The image mean and
std are Gemma 3's (its preprocessor_config.json: 0.5 for each channel). Weights are random, so
what the text model makes of the image is noise; what is real is that the server loads it,
encodes an image with it and puts the image's tokens in the prompt.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from tests.dataplane import tinygemma

ARCH = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ]  # "clip", the architecture projector files carry
PROJECTOR_TYPE = gguf.VisionProjectorType.GEMMA3
IMAGE_SIZE = 56
PATCH_SIZE = 14
SCALE_FACTOR = 2  # the pool per side: (56 / 14) / 2 = 2 per side
N_EMBD = 32  # the vision tower's width
N_HEAD = 2
N_FF = 48  # not N_EMBD: clip.cpp swaps ffn up/down when ffn_down's input width equals N_EMBD
N_LAYER = 2
PROJECTION_DIM = tinygemma.N_EMBD
LAYER_NORM_EPS = 1e-6
IMAGE_MEAN = IMAGE_STD = (0.5, 0.5, 0.5)

PATCHES_PER_SIDE = IMAGE_SIZE // PATCH_SIZE
N_PATCHES = PATCHES_PER_SIDE**2
# What one image adds to the prompt, in tokens: the pooled grid.
IMAGE_TOKENS = (PATCHES_PER_SIDE // SCALE_FACTOR) ** 2


def tensors() -> list[tuple[str, tuple[int, ...]]]:
    """(GGUF name, numpy shape) of every tensor, in file order. numpy shapes are ggml's reversed:
    a linear layer's weight is (outputs, inputs); the patch convolution's (out, in, kh, kw)."""
    names, M = gguf.TENSOR_NAMES, gguf.MODEL_TENSOR
    e, ff = N_EMBD, N_FF
    out: list[tuple[str, tuple[int, ...]]] = [
        (names[M.V_ENC_EMBD_PATCH] + ".weight", (e, 3, PATCH_SIZE, PATCH_SIZE)),
        (names[M.V_ENC_EMBD_PATCH] + ".bias", (e,)),
        (names[M.V_ENC_EMBD_POS] + ".weight", (N_PATCHES, e)),
    ]
    for i in range(N_LAYER):
        for kind, shape in (
            (M.V_ENC_INPUT_NORM, (e,)),
            (M.V_ENC_ATTN_Q, (e, e)),
            (M.V_ENC_ATTN_K, (e, e)),
            (M.V_ENC_ATTN_V, (e, e)),
            (M.V_ENC_ATTN_O, (e, e)),
            (M.V_ENC_POST_ATTN_NORM, (e,)),
            (M.V_ENC_FFN_UP, (ff, e)),
            (M.V_ENC_FFN_DOWN, (e, ff)),
        ):
            base = names[kind].format(bid=i)
            out += [(base + ".weight", shape), (base + ".bias", shape[:1])]
    out += [
        (names[M.V_POST_NORM] + ".weight", (e,)),
        (names[M.V_POST_NORM] + ".bias", (e,)),
        (names[M.V_MM_SOFT_EMB_NORM] + ".weight", (e,)),
        # Gemma 3's projection matrix is stored (vision width, text width): clip.cpp transposes it.
        (names[M.V_MM_INP_PROJ] + ".weight", (e, PROJECTION_DIM)),
    ]
    return out


def write(path: Path | str, seed: int = 0, name: str = "tiny-gemma-3-mmproj") -> Path:
    """Write the projector to `path` and return it."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), ARCH)
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_clip_has_vision_encoder(True)
    w.add_clip_projector_type(PROJECTOR_TYPE)
    w.add_vision_projection_dim(PROJECTION_DIM)
    w.add_vision_image_size(IMAGE_SIZE)
    w.add_vision_patch_size(PATCH_SIZE)
    w.add_vision_embedding_length(N_EMBD)
    w.add_vision_feed_forward_length(N_FF)
    w.add_vision_block_count(N_LAYER)
    w.add_vision_head_count(N_HEAD)
    w.add_vision_attention_layernorm_eps(LAYER_NORM_EPS)
    w.add_vision_image_mean(list(IMAGE_MEAN))
    w.add_vision_image_std(list(IMAGE_STD))
    w.add_vision_use_gelu(True)  # SigLIP's MLP (gelu_pytorch_tanh)
    w.add_vision_projector_scale_factor(SCALE_FACTOR)
    for tensor, shape in tensors():
        if tensor.endswith(".weight") and len(shape) == 1:  # norm scales around 1
            data = 1.0 + rng.normal(0.0, 0.02, size=shape)
        else:
            data = rng.normal(0.0, 0.02, size=shape)
        w.add_tensor(tensor, data.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
