"""The OEA routing rule: the one Python reference every kernel and integration is checked against.

Vectorized torch, no Python loop over tokens and no host synchronisation, so it runs on CPU
and CUDA and inside CUDA-graph capture. docs/oea-spec.md is the contract; the step numbers in
the comments below are that page's.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from oea_trt.routing.config import CONTEXT, DECODE, OEAConfig

_LOGIT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class RoutingResult(NamedTuple):
    """Output of a routing call.

    expert_ids: int32 [T, k_max], selected experts in ascending rank order, then fill.
    weights: float32 [T, k_max], 0 in fill slots.
    active_mask: bool [E], experts that at least one token selected (fill never counts).
    num_active: int32 0-d tensor, active_mask.sum(): the T of the paper, what sets latency.
    active_ready: None, or (routing kernel launched with signal=True) the int32 flag it set as
        soon as active_mask was final; the MoE call that directly follows on the same stream may
        start on it (oea_trt.moe, one-launch path) and clears it.
    """

    expert_ids: torch.Tensor
    weights: torch.Tensor
    active_mask: torch.Tensor
    num_active: torch.Tensor
    active_ready: Optional[torch.Tensor] = None


class RoutingInputError(ValueError):
    """Router logits or token kinds of the wrong shape, dtype or device."""


def check_inputs(
    router_logits: torch.Tensor, config: OEAConfig, token_kind: Optional[torch.Tensor]
) -> None:
    """Metadata-only checks (no device sync), shared by the reference and the kernel binding."""
    if not isinstance(router_logits, torch.Tensor):
        raise RoutingInputError(f"router_logits must be a torch.Tensor, got {type(router_logits).__name__}")
    if router_logits.dim() != 2:
        raise RoutingInputError(
            f"router_logits must be 2-D [tokens, num_experts], got shape {tuple(router_logits.shape)}"
        )
    if router_logits.shape[1] != config.num_experts:
        raise RoutingInputError(
            f"router_logits has {router_logits.shape[1]} experts in dim 1, config.num_experts="
            f"{config.num_experts}"
        )
    if router_logits.dtype not in _LOGIT_DTYPES:
        raise RoutingInputError(
            f"router_logits dtype must be float32, float16 or bfloat16, got {router_logits.dtype}"
        )
    if token_kind is None:
        return
    if not isinstance(token_kind, torch.Tensor):
        raise RoutingInputError(f"token_kind must be a torch.Tensor or None, got {type(token_kind).__name__}")
    if token_kind.shape != (router_logits.shape[0],):
        raise RoutingInputError(
            f"token_kind must have shape [{router_logits.shape[0]}] (one kind per token), got "
            f"{tuple(token_kind.shape)}"
        )
    if token_kind.dtype not in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8):
        raise RoutingInputError(f"token_kind must be an integer tensor (int32), got {token_kind.dtype}")
    if token_kind.device != router_logits.device:
        raise RoutingInputError(
            f"token_kind is on {token_kind.device} but router_logits on {router_logits.device}"
        )


def scores_and_ranking(router_logits: torch.Tensor):
    """Step 1: fp32 softmax scores and each token's expert ranking.

    NaN logits count as -inf; +inf counts as the largest finite float (so softmax stays
    defined). Ties in the ranking go to the lower expert index (stable sort of the logits).
    Returns (scores [T,E] fp32 with 0 for -inf, order [T,E] int64 expert ids by rank,
    finite_by_rank [T,E] bool: the expert at that rank may be selected).
    """
    x = router_logits.float()
    x = torch.nan_to_num(x, nan=float("-inf"), posinf=torch.finfo(torch.float32).max, neginf=float("-inf"))
    order = torch.sort(x, dim=-1, descending=True, stable=True).indices
    sorted_x = x.gather(-1, order)
    finite_by_rank = sorted_x > float("-inf")
    scores = torch.softmax(x, dim=-1)
    # A row with no finite logit has NaN scores; nothing in it can be selected anyway.
    scores = torch.nan_to_num(scores, nan=0.0)
    return scores, order, finite_by_rank


def _selection_to_outputs(
    selected_by_rank: torch.Tensor,
    order: torch.Tensor,
    scores: torch.Tensor,
    config: OEAConfig,
) -> RoutingResult:
    """Steps 6-7: compact each token's selection (a mask over ranks) into k_max slots."""
    T, E = order.shape
    width = config.k_max
    slot = torch.cumsum(selected_by_rank.to(torch.int32), dim=-1) - 1
    # Unselected ranks go to a spare column `width` that is dropped afterwards.
    slot = torch.where(selected_by_rank, slot, torch.full_like(slot, width)).to(torch.int64)
    ids = torch.full((T, width + 1), -1, dtype=torch.int64, device=order.device)
    ids.scatter_(1, slot, torch.where(selected_by_rank, order, torch.full_like(order, -1)))
    ids = ids[:, :width]
    valid = ids >= 0
    raw = torch.where(valid, scores.gather(1, ids.clamp(min=0)), torch.zeros((), device=ids.device))
    if config.renormalize:
        denom = raw.sum(dim=-1, keepdim=True)
        weights = torch.where(valid, raw / torch.where(denom > 0, denom, torch.ones_like(denom)), raw)
    else:
        weights = raw

    # Invalid slots land in a spare bin E, so fill never counts as an active expert.
    hits = torch.zeros(E + 1, dtype=torch.int32, device=order.device)
    hits.scatter_add_(0, torch.where(valid, ids, E).flatten(), torch.ones(ids.numel(), dtype=torch.int32, device=ids.device))
    active_mask = hits[:E] > 0
    num_active = active_mask.sum(dtype=torch.int32)

    if config.fill == "invalid":
        fill_ids = torch.full_like(ids, -1)
    elif config.fill == "num_experts":
        fill_ids = torch.full_like(ids, E)
    else:  # "top1": the token's first selection, else the batch's lowest active expert, else 0
        lowest_active = torch.argmax(active_mask.to(torch.int32))  # 0 when nothing is active
        first = torch.where(valid[:, :1], ids[:, :1], lowest_active)
        fill_ids = first.expand_as(ids)
    ids = torch.where(valid, ids, fill_ids).to(torch.int32)
    return RoutingResult(ids, weights.to(torch.float32), active_mask, num_active)


def _as_float32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


def _resolve_kinds(token_kind: Optional[torch.Tensor], T: int, device):
    """(is_decode, is_context) bool [T]. Values other than DECODE/CONTEXT are padding."""
    if token_kind is None:
        ones = torch.ones(T, dtype=torch.bool, device=device)
        return ones, torch.zeros_like(ones)
    return token_kind == DECODE, token_kind == CONTEXT


def effective_k0(config: OEAConfig, num_decode: torch.Tensor) -> torch.Tensor:
    """k0 after the schedule, as a 0-d int64 tensor (no host sync: num_decode stays on device)."""
    k0 = torch.full((), config.k0, dtype=torch.int64, device=num_decode.device)
    for min_tokens, scheduled in config.k0_schedule or ():  # sorted ascending: later wins
        k0 = torch.where(num_decode >= min_tokens, torch.full_like(k0, scheduled), k0)
    return k0


def oea_route(
    router_logits: torch.Tensor,
    config: OEAConfig,
    token_kind: Optional[torch.Tensor] = None,
) -> RoutingResult:
    """Route a batch with Opportunistic Expert Activation (the reference implementation).

    router_logits: [T, E] float32/float16/bfloat16. token_kind: optional int [T]
    (0 decode, 1 context, other = padding; default all decode).
    """
    check_inputs(router_logits, config, token_kind)
    T, E = router_logits.shape
    device = router_logits.device
    scores, order, finite = scores_and_ranking(router_logits)
    rank = torch.arange(E, device=device)  # 0-based rank r = paper's j - 1
    is_decode, is_context = _resolve_kinds(token_kind, T, device)

    # Step 2: baseline size n_i = min(k0, k_max, t_i).
    k0 = effective_k0(config, is_decode.sum())
    n = torch.clamp(k0, max=config.k_max).expand(T)
    if _as_float32(config.top_p) < 1.0:  # off when top_p rounds to 1.0f, as in the kernel
        # Mass is accumulated in float64 in rank order and compared with top_p rounded to
        # float32 (the width the kernel and the TensorRT plugin store), so CPU, CUDA and the
        # kernel agree (torch's own float32 cumsum accumulates differently on CPU and CUDA).
        mass = torch.cumsum(scores.gather(1, order).double(), dim=-1)
        reached = mass >= _as_float32(config.top_p)
        t = torch.where(reached.any(-1), torch.argmax(reached.to(torch.int32), dim=-1) + 1, E)
        n = torch.minimum(n, t)
    baseline = (rank < n[:, None]) & finite
    context_topk = (rank < config.top_k) & finite

    # Step 3: loaded set S_base, in expert space.
    loaders = baseline & is_decode[:, None]
    if config.piggyback_on_context:
        loaders = loaders | (context_topk & is_context[:, None])
    loaded_by_rank = torch.zeros((T, E), dtype=torch.bool, device=device)
    loaded_by_rank.scatter_(1, order, loaders)  # now indexed by expert id
    s_base = loaded_by_rank.any(dim=0)

    # Step 4: piggyback in rank order on experts already in S_base, capped at k_max.
    in_base = s_base[order]
    candidate = finite & (baseline | ((rank < config.max_rank) & in_base))
    decode_sel = candidate & (torch.cumsum(candidate.to(torch.int32), dim=-1) <= config.k_max)

    # Step 5: context tokens route vanilla top-k; padding selects nothing.
    selected = torch.where(is_decode[:, None], decode_sel, context_topk & is_context[:, None])
    return _selection_to_outputs(selected, order, scores, config)


def vanilla_route(
    router_logits: torch.Tensor,
    top_k: int,
    renormalize: bool = True,
    fill: str = "invalid",
) -> RoutingResult:
    """Qwen3's own routing (softmax fp32 -> top-k -> optional renormalize), same conventions
    (NaN handling, lower-index tie-break, outputs) as oea_route."""
    if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
        check_inputs(router_logits, OEAConfig.vanilla(1, 1), None)  # raises the shape error
    config = OEAConfig.vanilla(router_logits.shape[1], top_k, renormalize=renormalize, fill=fill)
    return oea_route(router_logits, config)


def topk_prune_route(
    router_logits: torch.Tensor,
    config: OEAConfig,
    token_kind: Optional[torch.Tensor] = None,
) -> RoutingResult:
    """Top-k0 pruning without piggybacking (the paper's ablation): decode tokens keep only
    their baseline B_i. Equals oea_route with max_rank limited so nothing is added."""
    return oea_route(router_logits, config.replace(max_rank=1), token_kind)
