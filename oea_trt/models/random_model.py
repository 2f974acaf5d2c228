"""Tiny random Qwen3-MoE models for tests and examples (needs transformers; no download)."""
from __future__ import annotations

import os
from typing import Optional

import torch

from oea_trt.data.tokenizer import VOCAB, save_hf_tokenizer
from oea_trt.integrations.hf.portable import add_v4_config_keys


def tiny_qwen3_moe(num_experts: int = 16, top_k: int = 4, num_layers: int = 2, hidden_size: int = 32,
                   moe_intermediate_size: int = 16, norm_topk_prob: bool = True, seed: int = 0,
                   experts_implementation: Optional[str] = None):
    """A randomly initialised Qwen3MoeForCausalLM over the character vocabulary (eval mode, fp32).

    Router weights are drawn wider than transformers' init (std 0.02 makes all router logits
    nearly equal, so top-k would hinge on rounding); std 1 gives clearly ranked experts.
    """
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(
        vocab_size=len(VOCAB), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        moe_intermediate_size=moe_intermediate_size, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=hidden_size // 4,
        num_experts=num_experts, num_experts_per_tok=top_k, norm_topk_prob=norm_topk_prob,
        max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Qwen3MoeForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                param.normal_(0.0, 1.0)
    if experts_implementation is not None:
        if hasattr(model, "set_experts_implementation"):
            model.set_experts_implementation(experts_implementation)
        elif experts_implementation != "eager":  # transformers 4.x only has its expert loop
            raise ValueError(f"transformers {__import__('transformers').__version__} has no experts "
                             f"implementation {experts_implementation!r}")
    return model.eval()


def save_tiny_model(directory: str, **kwargs) -> str:
    """tiny_qwen3_moe(**kwargs) saved with save_pretrained + the character tokenizer."""
    model = tiny_qwen3_moe(**kwargs)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    add_v4_config_keys(directory)
    save_hf_tokenizer(directory)
    return directory
