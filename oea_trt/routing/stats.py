"""Routing statistics for tools and benchmarks: what a batch costs (distinct experts) and how
many experts each token kept."""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import torch

from oea_trt.routing.config import CONTEXT, DECODE, OEAConfig
from oea_trt.routing.reference import RoutingResult


@dataclasses.dataclass
class RoutingStats:
    num_tokens: int
    active_experts: int            # T of the paper: distinct experts the batch loads
    experts_per_token: torch.Tensor  # int32 [num_tokens], selected (non-fill) experts per token
    mean_experts_per_token: float  # over decode and context tokens (padding excluded)
    experts_per_token_histogram: Dict[int, int]

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["experts_per_token"] = self.experts_per_token.tolist()
        return d


def selected_mask(result: RoutingResult, config: OEAConfig, token_kind: Optional[torch.Tensor] = None) -> torch.Tensor:
    """bool [T, k_max]: which slots hold a real selection (not fill).

    Selected experts within a row are distinct, so under fill="top1" a slot that repeats an
    earlier id of its row is fill. A row that selected nothing under "top1" (a decode token whose
    logits are all NaN) is indistinguishable from one selection; padding rows are known from
    token_kind.
    """
    ids = result.expert_ids.long()
    in_range = (ids >= 0) & (ids < config.num_experts)
    if config.fill == "top1":
        repeats = (ids[:, 1:, None] == ids[:, None, :-1]).tril().any(-1)
        in_range[:, 1:] &= ~repeats
    if token_kind is not None:
        in_range &= ((token_kind == DECODE) | (token_kind == CONTEXT))[:, None]
    return in_range


def routing_stats(result: RoutingResult, config: OEAConfig, token_kind: Optional[torch.Tensor] = None) -> RoutingStats:
    """Summarise one routing call (syncs with the device: for tools, not for hot paths)."""
    per_token = selected_mask(result, config, token_kind).sum(-1).to(torch.int32).cpu()
    if token_kind is not None:
        real = ((token_kind == DECODE) | (token_kind == CONTEXT)).cpu()
    else:
        real = torch.ones(per_token.shape[0], dtype=torch.bool)
    counts = per_token[real]
    hist = {int(v): int(c) for v, c in zip(*torch.unique(counts, return_counts=True))} if counts.numel() else {}
    return RoutingStats(
        num_tokens=int(per_token.shape[0]),
        active_experts=int(result.num_active),
        experts_per_token=per_token,
        mean_experts_per_token=float(counts.float().mean()) if counts.numel() else 0.0,
        experts_per_token_histogram=hist,
    )
