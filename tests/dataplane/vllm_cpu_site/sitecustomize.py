"""Start-up hook for the vLLM CPU venv (Python's site.py imports `sitecustomize` from PYTHONPATH),
so that it runs in `vllm serve` and in every process vLLM starts (the engine core, and the model
registry's `python -m vllm.model_executor.models.registry` that inspects an architecture).

Why: vLLM 0.32's Gemma 3 image model (vllm/model_executor/models/gemma3_mm.py, line 10) imports
`Gemma3ImageProcessor` from transformers' submodule `models.gemma3.image_processing_gemma3`, the
torchvision backend, whose line 20 imports torchvision. The CPU venv has no torchvision (the
builds on PyPI are for another torch: scripts/vllm_venv.sh), so the import fails and vLLM cannot
even inspect Gemma3ForConditionalGeneration. transformers 5.19 itself copes: AutoImageProcessor
picks the PIL backend (Gemma3ImageProcessorPil) when torchvision is missing, and
`from transformers import Gemma3ImageProcessor` falls back to that class. vLLM only uses the
name as a type annotation; the object it gets is whatever AutoProcessor built.

What: only when torchvision cannot be found, the submodule's name resolves to a module holding
the PIL module's names, with `Gemma3ImageProcessor` bound to `Gemma3ImageProcessorPil` (what
transformers' own top-level fallback gives). Nothing else changes; with torchvision present
(as in the vllm/vllm-openai image) this file does nothing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

TORCHVISION_MODULE = "transformers.models.gemma3.image_processing_gemma3"
PIL_MODULE = "transformers.models.gemma3.image_processing_pil_gemma3"


class PilGemma3ImageProcessor(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves TORCHVISION_MODULE to PIL_MODULE's names (and nothing else)."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == TORCHVISION_MODULE else None

    def create_module(self, spec):
        return None  # the default module

    def exec_module(self, module) -> None:
        pil = importlib.import_module(PIL_MODULE)
        module.__dict__.update({k: v for k, v in vars(pil).items() if not k.startswith("__")})
        module.Gemma3ImageProcessor = pil.Gemma3ImageProcessorPil


if importlib.util.find_spec("torchvision") is None:
    sys.meta_path.insert(0, PilGemma3ImageProcessor())
