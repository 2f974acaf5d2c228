"""The MoE layer as a plain PyTorch loop over experts: the oracle every fast path is checked against.

Semantics (Qwen3MoeSparseMoeBlock without the router): for every routing slot (token t,
slot j) whose expert id e lies in [0, E), add
    routing_weights[t, j] * down_e( silu(gate_e(x_t)) * up_e(x_t) )
to token t's output. Ids outside [0, E) are fill (-1 or E from the router) and skipped; a
slot that repeats an expert (the router's "top1" fill, weight 0) simply adds its weight.
Arithmetic is float32 from the bf16 inputs (the fast paths accumulate in fp32 too), so the
oracle carries no bf16 rounding of its own beyond the final cast.

Not fast and not CUDA-graph capturable (it asks the host which tokens each expert has).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def expert_mlp(x: torch.Tensor, w13_e: torch.Tensor, w2_e: torch.Tensor) -> torch.Tensor:
    """One SwiGLU expert. x [M, H]; w13_e [2I, H] (gate rows, then up rows); w2_e [H, I]."""
    inter = w2_e.shape[1]
    gate_up = x @ w13_e.t()
    return (F.silu(gate_up[:, :inter]) * gate_up[:, inter:]) @ w2_e.t()


def moe_reference(
    hidden_states: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    expert_ids: torch.Tensor,
    routing_weights: torch.Tensor,
    compute_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """hidden_states [T, H]; w13 [E, 2I, H]; w2 [E, H, I]; expert_ids int [T, k]; routing_weights
    [T, k]. Returns [T, H] in hidden_states.dtype."""
    num_experts = w13.shape[0]
    x = hidden_states.to(compute_dtype)
    out = torch.zeros(hidden_states.shape, dtype=compute_dtype, device=hidden_states.device)
    ids = expert_ids.long()
    for e in torch.unique(ids[(ids >= 0) & (ids < num_experts)]).tolist():
        token, slot = torch.nonzero(ids == e, as_tuple=True)
        y = expert_mlp(x[token], w13[e].to(compute_dtype), w2[e].to(compute_dtype))
        out.index_add_(0, token, y * routing_weights[token, slot].to(compute_dtype)[:, None])
    return out.to(hidden_states.dtype)
