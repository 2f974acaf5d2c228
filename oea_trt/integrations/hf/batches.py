"""Which tokens of one MoE call form one OEA batch, and what kind each token is.

Two ways to read a forward pass over input of shape [B, L]:
- "generate": the call IS one serving step. All B*L tokens are routed together. A call with
  L > 1 is a prefill (context tokens: vanilla top-k that also join the loaded set); a call with
  L == 1 is a decode step (B decode tokens). This is what `model.generate()` does, one call per
  step, so OEA sees exactly the batches a static-batching server would.
- "decode-sim": one forward over [B, L] emulates L decode steps of batch B, as in the paper's
  cross-entropy evaluation: the B tokens at position t form decode batch t (optionally split
  into groups of `decode_batch` sequences). Every real token is a decode token.
Padding (attention_mask == 0) is PADDING in both: it never enters the loaded set and its rows
contribute nothing (weight 0).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from oea_trt.routing.config import CONTEXT, DECODE, PADDING
from oea_trt.routing.reference import RoutingResult

MODES = ("decode-sim", "generate")

RouteFn = Callable[[torch.Tensor, torch.Tensor], RoutingResult]


def token_kinds(attention_mask: Optional[torch.Tensor], batch: int, length: int, mode: str,
                device: torch.device) -> torch.Tensor:
    """int32 [batch, length] token kinds for the current call.

    attention_mask: the model's 2-D mask [batch, past + length] (1 = real token) or None (all
    real). Only its last `length` columns describe the tokens of this call.
    """
    if attention_mask is None:
        real = torch.ones(batch, length, dtype=torch.bool, device=device)
    else:
        if attention_mask.dim() != 2:
            raise ValueError(
                "OEA reads padding from a 2-D attention_mask [batch, sequence]; got shape "
                f"{tuple(attention_mask.shape)} (pass the tokenizer's 2-D mask, not a 4-D one)"
            )
        if attention_mask.shape[0] != batch or attention_mask.shape[1] < length:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the MoE layer sees "
                f"[{batch}, {length}] tokens (expected [batch={batch}, >= {length}])"
            )
        real = attention_mask[:, -length:].to(device=device) != 0
    real_kind = DECODE if (mode == "decode-sim" or length == 1) else CONTEXT
    return torch.where(real, torch.full_like(real, real_kind, dtype=torch.int32),
                       torch.full_like(real, PADDING, dtype=torch.int32))


def route_call(router_logits: torch.Tensor, kinds: torch.Tensor, mode: str,
               decode_batch: Optional[int], k_max: int, route: RouteFn
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Route one MoE call batch by batch.

    router_logits: [B*L, E] in row-major [B, L] token order (how the block flattens them).
    kinds: int32 [B, L]. Returns (expert_ids int32 [B*L, k_max], weights fp32 [B*L, k_max],
    num_active int32 [num_batches], has_real bool [num_batches]) where a batch with no real
    token (all padding) has has_real False and must not count in statistics.
    """
    B, L = kinds.shape
    if mode == "generate":
        res = route(router_logits, kinds.reshape(-1))
        has_real = (kinds != PADDING).any().reshape(1)
        return res.expert_ids, res.weights, res.num_active.reshape(1), has_real
    if mode != "decode-sim":
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    E = router_logits.shape[-1]
    logits = router_logits.view(B, L, E)
    step = B if decode_batch is None else decode_batch
    ids = torch.empty(B, L, k_max, dtype=torch.int32, device=router_logits.device)
    weights = torch.empty(B, L, k_max, dtype=torch.float32, device=router_logits.device)
    active: List[torch.Tensor] = []
    real: List[torch.Tensor] = []
    for r0 in range(0, B, step):
        rows = slice(r0, min(r0 + step, B))
        kind_rows = kinds[rows]
        real.append((kind_rows != PADDING).any(0))
        for t in range(L):  # position t of these sequences = decode step t
            res = route(logits[rows, t], kind_rows[:, t])
            ids[rows, t] = res.expert_ids
            weights[rows, t] = res.weights
            active.append(res.num_active)
    return (ids.view(B * L, k_max), weights.view(B * L, k_max), torch.stack(active),
            torch.cat(real))


def selection_mask(expert_ids: torch.Tensor, weights: torch.Tensor, kinds: torch.Tensor,
                   num_experts: int) -> torch.Tensor:
    """bool [B, L, E]: the experts each token really selected (fill slots and padding excluded).

    OEA's "top1" fill repeats an id already in the row with weight 0; oea_trt.routing.stats.selected_mask
    is the one place that knows how to tell fill from selections.
    """
    from oea_trt.routing.config import OEAConfig
    from oea_trt.routing.stats import selected_mask

    B, L = kinds.shape
    fake_cfg = OEAConfig(num_experts=num_experts, top_k=1, k0=1, k_max=expert_ids.shape[-1],
                         fill="top1")
    result = RoutingResult(expert_ids, weights, None, None)  # only expert_ids is read
    slots = selected_mask(result, fake_cfg, kinds.reshape(-1))
    mask = torch.zeros(B * L, num_experts + 1, dtype=torch.bool, device=expert_ids.device)
    mask.scatter_(1, torch.where(slots, expert_ids.long(), num_experts), True)
    return mask[:, :num_experts].view(B, L, num_experts)


def active_experts_by_batch(selection: torch.Tensor, real: torch.Tensor, batch: int
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Distinct experts of each decode batch when the B sequences are cut into groups of `batch`.

    selection: bool [B, L, E]; real: bool [B, L]. Returns (sum over batches of T, number of
    batches with a real token), both 0-d tensors, so callers can accumulate without a sync.
    """
    B, L, E = selection.shape
    if B % batch:
        raise ValueError(f"cannot cut a forward batch of {B} sequences into decode batches of {batch}")
    groups = selection.view(B // batch, batch, L, E).any(1).sum(-1)  # [G, L]
    counted = real.view(B // batch, batch, L).any(1)
    return groups[counted].sum(), counted.sum()
