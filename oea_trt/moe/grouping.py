"""Alignment: routing slots sorted by expert, the contract between routing and a grouped GEMM.

Like vLLM's moe_align_block_size, but written for static shapes: every tensor here has a size
fixed by (tokens, k, E, align), never by the routing itself, and nothing asks the host, so the
step can be captured in a CUDA graph. Slots whose expert id lies outside [0, E) (the router's
fill, -1 or E) sort after every real slot and belong to no group.

Our Triton kernel does not use this module: it finds each expert's tokens itself (see
oea_trt/moe/triton/tiles.py). torch._grouped_mm needs it.
"""
from __future__ import annotations

from typing import NamedTuple

import torch


class ExpertGrouping(NamedTuple):
    """Routing slots (pairs token*k + slot) ordered by expert.

    rows: int64 [R], for each row of the grouped operand, the pair it holds, or -1 for a
        padding row (align > 1) or a fill slot past the last group. R = T*k + E*(align-1).
    offsets: int32 [E], cumulative END row of each expert's group (torch._grouped_mm's offs):
        expert e owns rows [offsets[e-1], offsets[e]) (offsets[-1] := 0).
    counts: int32 [E], real (unpadded) pairs per expert.
    active_mask: bool [E], counts > 0.
    """

    rows: torch.Tensor
    offsets: torch.Tensor
    counts: torch.Tensor
    active_mask: torch.Tensor


def expert_keys(expert_ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Flattened expert id per pair, with every fill id (outside [0, E)) mapped to E."""
    ids = expert_ids.reshape(-1).long()
    return torch.where((ids >= 0) & (ids < num_experts), ids, num_experts)


def pairs_per_expert(expert_ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """int32 [E]: routing slots per expert, fill skipped. (torch.bincount would ask the host
    for the largest id, which breaks CUDA-graph capture; a scatter into E+1 bins does not.)"""
    keys = expert_keys(expert_ids, num_experts)
    hits = torch.zeros(num_experts + 1, dtype=torch.int32, device=keys.device)
    hits.scatter_add_(0, keys, torch.ones_like(keys, dtype=torch.int32))
    return hits[:num_experts]


def active_mask_from_ids(expert_ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """bool [E]: experts some slot selects (what RoutingResult.active_mask holds)."""
    return pairs_per_expert(expert_ids, num_experts) > 0


def group_by_expert(expert_ids: torch.Tensor, num_experts: int, align: int = 1) -> ExpertGrouping:
    """Sort the routing slots of expert_ids [T, k] by expert, each group padded to a multiple
    of `align` rows (1 = no padding). Stable: within an expert, pairs keep token order."""
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    E = num_experts
    keys = expert_keys(expert_ids, E)
    num_pairs = keys.numel()
    device = keys.device
    order = torch.argsort(keys, stable=True)  # fill keys (== E) sort last
    counts = pairs_per_expert(expert_ids, E)
    padded = (counts + (align - 1)) // align * align
    ends = torch.cumsum(padded, 0, dtype=torch.int32)
    starts = ends - padded
    real_starts = torch.cumsum(counts, 0, dtype=torch.int32) - counts  # where e begins in `order`

    # Sorted position j of a real pair moves to starts[e] + (j - real_starts[e]); fill pairs
    # go to a spare row R that is dropped.
    sorted_keys = keys[order]
    real = sorted_keys < E
    e_of = sorted_keys.clamp(max=E - 1)
    j = torch.arange(num_pairs, device=device)
    dest = torch.where(real, starts[e_of].long() + (j - real_starts[e_of].long()), num_pairs + E * (align - 1))
    num_rows = num_pairs + E * (align - 1)
    rows = torch.full((num_rows + 1,), -1, dtype=torch.int64, device=device)
    rows.scatter_(0, dest, torch.where(real, order, -1))
    return ExpertGrouping(rows[:num_rows], ends, counts, counts > 0)
