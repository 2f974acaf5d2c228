"""Load the model to evaluate: the embedded one shipped in the package, or a local HF directory."""
from __future__ import annotations

import os
from typing import Optional

import torch

#: The embedded Qwen3-MoE LM (trained by scripts/train_embedded.py; see TRAINING.md there).
EMBEDDED_MODEL_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "models", "embedded")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_dir(path: Optional[str]) -> str:
    """The directory to load; clear errors for what is missing."""
    if path is None:
        path = EMBEDDED_MODEL_DIR
        if not os.path.isfile(os.path.join(path, "model.safetensors")):
            raise FileNotFoundError(
                f"the embedded model's weights are missing ({path}/model.safetensors); train them "
                "with scripts/gpu/train.sh or pass --model DIR"
            )
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory {path!r} does not exist (expected a local Hugging Face "
                                "Qwen3-MoE directory with config.json and *.safetensors)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(f"{path!r} has no config.json: not a Hugging Face model directory")
    return path


def load_model(path: Optional[str] = None, device: str = "cpu", dtype: str = "float32"):
    """(model in eval mode, tokenizer) from a local directory (None: the embedded model)."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ImportError("evaluating a model needs transformers: pip install 'oea-trt[hf]'") from exc
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    path = resolve_model_dir(path)
    model_type = read_config(path).get("model_type")
    if model_type != "qwen3_moe":
        raise ValueError(f"{path!r} holds a {model_type!r} model; oea-trt eval needs a qwen3_moe model")
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would clutter our output
    try:
        kwargs = {"dtype" if _accepts_dtype() else "torch_dtype": _DTYPES[dtype]}
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    model.to(device).eval()
    return model, tokenizer


def read_config(path: str) -> dict:
    """config.json of a model directory (to validate arguments before loading weights)."""
    import json

    with open(os.path.join(path, "config.json")) as f:
        return json.load(f)


def _accepts_dtype() -> bool:
    # transformers 5 renamed from_pretrained(torch_dtype=) to dtype= (4.56+ accepts both).
    import transformers

    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    return (major, minor) >= (4, 56)


def pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU (use --device cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return name
