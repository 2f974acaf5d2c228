"""A Hugging Face Qwen3-MoE checkpoint directory -> DecodeModel.

transformers loads the checkpoint (any of its formats: per-expert tensors of 4.x checkpoints
are merged into [E, 2I, H] stacks by transformers 5.x at load), then the decoder takes the
loaded tensors over (weights.from_hf: experts, norms and embeddings shared, q/k/v fused) and the
transformers module is dropped.
"""
from __future__ import annotations

import torch

from oea_trt.decode.model import DecodeModel, RoutingSpec
from oea_trt.decode.weights import from_hf


def load_hf_model(path: str, routing: RoutingSpec = None, device=None, dtype=None, model=None,
                  **model_options) -> DecodeModel:
    """path: a transformers Qwen3-MoE directory. device: default cuda when available. dtype:
    default the checkpoint's (bf16 for Qwen3). model: an already loaded transformers model of
    `path` (moved to device). model_options: DecodeModel's keyword options (fused, ...)."""
    from transformers import AutoModelForCausalLM

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if model is None:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype if dtype is not None else "auto")
    elif dtype is not None:
        model = model.to(dtype)
    model = model.to(device).eval()
    shape, weights = from_hf(model)
    return DecodeModel(shape, weights, routing, **model_options)

