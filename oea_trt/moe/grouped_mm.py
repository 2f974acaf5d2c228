"""The library baseline: the MoE layer on torch._grouped_mm, PyTorch's grouped GEMM.

torch._grouped_mm(mat_a, mat_b, offs=None, bias=None, out_dtype=None), 2-D x 3-D form:
mat_a [R, K] rows grouped by expert, mat_b [E, K, N], offs int32 [E] cumulative group ends.
On sm90/sm100 with bf16 it runs a CUTLASS grouped GEMM that reads offs on the device (no host
sync, graph capturable); elsewhere a loop that copies offs to the host. Its checks (PyTorch's
GroupedMMUtils.h): 16-byte aligned data pointers and strides, one of the last two strides 1,
int32 offs, no bias, output dtype = input dtype, fewer than 1024 groups. Groups need no
padding in rows for bf16; `align` pads them anyway for builds that want it.

The path is what a PyTorch user would write: alignment by sort (grouping.py), gather, one
grouped GEMM for gate+up, SiLU*mul, one for down, then each row weighted and put back at its
(token, slot) and every token's slots summed in slot order. Not index_add_: its fp32 atomics add
a token's rows in whatever order they land, so two runs of one prefill could differ in the last
bits and, through a later near tie of router logits, pick other experts.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from oea_trt.moe.grouping import group_by_expert


def has_grouped_mm() -> bool:
    return hasattr(torch, "_grouped_mm")


def moe_grouped_mm(
    hidden_states: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    expert_ids: torch.Tensor,
    routing_weights: torch.Tensor,
    align: int = 1,
) -> torch.Tensor:
    """Same contract as reference.moe_reference (fill ids skipped); returns [T, H]."""
    if not has_grouped_mm():
        raise RuntimeError(f"torch {torch.__version__} has no torch._grouped_mm (needs torch >= 2.8)")
    num_tokens, k = expert_ids.shape
    num_experts, two_inter, _ = w13.shape
    inter = two_inter // 2
    grouping = group_by_expert(expert_ids, num_experts, align)
    valid = grouping.rows >= 0
    pair = grouping.rows.clamp(min=0)
    token = pair // k
    x_rows = torch.where(valid[:, None], hidden_states[token], torch.zeros((), dtype=hidden_states.dtype,
                                                                           device=hidden_states.device))
    # mat_b must be [E, K, N]: the transposed views are column-major, which the kernel accepts.
    gate_up = torch._grouped_mm(x_rows, w13.transpose(1, 2), offs=grouping.offsets)
    act = F.silu(gate_up[:, :inter]) * gate_up[:, inter:]
    y = torch._grouped_mm(act.contiguous(), w2.transpose(1, 2), offs=grouping.offsets)
    # Rows past the last group are never written by the GEMM: select, never multiply, them away.
    w_rows = routing_weights.reshape(-1)[pair].float()
    contrib = y.float() * w_rows[:, None]
    # Row pair of (token, slot) goes to slots[pair]; padding rows all go to one spare row past
    # the end (the only index written twice), which is dropped.
    slots = torch.zeros((num_tokens * k + 1, hidden_states.shape[1]), dtype=torch.float32, device=y.device)
    slots.index_copy_(0, torch.where(valid, pair, num_tokens * k), contrib)
    return slots[:-1].view(num_tokens, k, -1).sum(dim=1).to(hidden_states.dtype)
