"""Find the Qwen3-MoE sparse blocks of a transformers model and read their routing shape.

transformers changed the block's layout between major versions, and OEA hooks a different
seam in each:
- "router" style (transformers 5.x): `block.gate` is a router module whose forward returns
  (router_logits, routing_weights, selected_experts) and `block.experts` is one fused module
  called as experts(hidden [N, H], top_k_index [N, k], top_k_weights [N, k]). OEA replaces the
  router's (weights, indices) output with a forward hook, so the experts code, whichever
  experts_implementation (eager / grouped_mm / batched_mm) is selected, runs unchanged.
- "linear" style (transformers 4.51-4.57): `block.gate` is an nn.Linear producing logits and
  the block's forward does softmax/top-k itself and loops over an nn.ModuleList of experts.
  OEA replaces that block's forward (on the instance only) with the same computation routed
  by OEA.
"""
from __future__ import annotations

import dataclasses
import re
from typing import List

import torch
from torch import nn

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclasses.dataclass
class MoELayer:
    """One sparse MoE block of the model."""

    index: int            # decoder layer index (model.layers[index].mlp)
    name: str             # module path, e.g. "model.layers.3.mlp"
    block: nn.Module
    num_experts: int      # E
    top_k: int            # k (num_experts_per_tok)
    norm_topk_prob: bool  # Qwen3's renormalization of the top-k weights
    style: str            # "router" (transformers 5.x) or "linear" (transformers 4.x)


def _is_qwen3_moe_block(module: nn.Module) -> bool:
    # Matched by class name so that importing this module never needs transformers, and so
    # that subclasses (e.g. a user's quantized variant) keep working.
    for cls in type(module).__mro__:
        if cls.__name__ == "Qwen3MoeSparseMoeBlock":
            return hasattr(module, "gate") and hasattr(module, "experts")
    return False


def _describe(name: str, block: nn.Module, ordinal: int) -> MoELayer:
    match = _LAYER_INDEX.search(name + ".")
    index = int(match.group(1)) if match else ordinal
    gate = block.gate
    if isinstance(gate, nn.Linear):
        # transformers 4.x keeps the routing knobs on the block itself.
        return MoELayer(index, name, block, int(block.num_experts), int(block.top_k),
                        bool(block.norm_topk_prob), "linear")
    missing = [a for a in ("num_experts", "top_k", "norm_topk_prob") if not hasattr(gate, a)]
    if missing:
        raise TypeError(
            f"{name}.gate ({type(gate).__name__}) has no {', '.join(missing)}: this transformers "
            "version structures Qwen3MoeSparseMoeBlock in a way oea_trt.integrations.hf does not know "
            "(supported: transformers 4.51+ nn.Linear gate, 5.x router module)"
        )
    return MoELayer(index, name, block, int(gate.num_experts), int(gate.top_k),
                    bool(gate.norm_topk_prob), "router")


def moe_layers(model: nn.Module) -> List[MoELayer]:
    """All Qwen3-MoE sparse blocks of `model`, in module order (dense MLP layers are skipped)."""
    found = []
    for name, module in model.named_modules():
        if _is_qwen3_moe_block(module):
            found.append(_describe(name, module, len(found)))
    if not found:
        raise TypeError(
            f"no Qwen3MoeSparseMoeBlock found in {type(model).__name__}: oea_trt.integrations.hf routes "
            "transformers Qwen3-MoE models (e.g. Qwen3MoeForCausalLM)"
        )
    indices = [layer.index for layer in found]
    if len(set(indices)) != len(indices):  # e.g. two towers both named layers.N: fall back to order
        for ordinal, layer in enumerate(found):
            layer.index = ordinal
    return found


def experts_loop(block: nn.Module, hidden: torch.Tensor, expert_ids: torch.Tensor,
                 weights: torch.Tensor) -> torch.Tensor:
    """transformers 4.x expert computation (ModuleList of MLPs), for the "linear" style only.

    Same order of operations as Qwen3MoeSparseMoeBlock.forward in 4.51-4.57, so routing with
    OEA off reproduces the unpatched block exactly. Slots holding weight 0 (OEA's "top1" fill)
    contribute exact zeros.
    """
    out = torch.zeros_like(hidden)
    expert_mask = nn.functional.one_hot(expert_ids, num_classes=block.num_experts).permute(2, 1, 0)
    expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
    for expert_idx in expert_hit:
        slot, token = torch.where(expert_mask[expert_idx].squeeze(0))
        current = hidden[None, token].reshape(-1, hidden.shape[-1])
        current = block.experts[expert_idx](current) * weights[token, slot, None]
        out.index_add_(0, token, current.to(hidden.dtype))
    return out
