"""Load the model to evaluate: the embedded one shipped in the package, or a local HF directory."""
from __future__ import annotations

import os
from typing import Optional

import torch

from oea_trt.inputs import InputError, check_device, check_model_dir
from oea_trt.plan.hf_config import Qwen3MoeSpec

#: The embedded Qwen3-MoE LM (trained by scripts/train_embedded.py; see TRAINING.md there).
EMBEDDED_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "models", "embedded")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_dir(path: Optional[str]) -> str:
    """The directory to load (None: the embedded model), checked by oea_trt.inputs.check_model_dir."""
    model_spec(path)
    return EMBEDDED_MODEL_DIR if path is None else path


def model_spec(path: Optional[str], what: str = "--model") -> Qwen3MoeSpec:
    """Qwen3MoeSpec of a model directory with weights and tokenizer (None: the embedded model)."""
    if path is None:
        if not os.path.isfile(os.path.join(EMBEDDED_MODEL_DIR, "model.safetensors")):
            raise InputError(f"the embedded model's weights are missing ({EMBEDDED_MODEL_DIR}/model.safetensors); "
                             "train them with scripts/gpu/train.sh or pass --model DIR")
        return check_model_dir(EMBEDDED_MODEL_DIR, "the embedded model", tokenizer=True)
    return check_model_dir(path, what, tokenizer=True)


def load_model(path: Optional[str] = None, device: str = "cpu", dtype: str = "float32"):
    """(model in eval mode, tokenizer) from a local directory (None: the embedded model)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ImportError("evaluating a model needs transformers: pip install 'oea-trt[hf]'") from exc
    if dtype not in DTYPES:
        raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path = resolve_model_dir(path)
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would clutter our output
    try:
        kwargs = {"dtype" if accepts_dtype() else "torch_dtype": DTYPES[dtype]}
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    model.to(device).eval()
    return model, tokenizer


def accepts_dtype() -> bool:
    # transformers 5 renamed from_pretrained(torch_dtype=) to dtype= (4.56+ accepts both).
    import transformers

    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    return (major, minor) >= (4, 56)


def pick_device(name: str) -> str:
    """auto, cpu or cuda[:N] (oea_trt.inputs.check_device)."""
    return check_device(name)
