"""torch.ops.oea_trt.route: the fused routing kernel as a torch custom op.

A registered op (with a fake implementation for shapes) is what lets the kernel run inside
torch.compile graphs and CUDA-graph capture: outputs and workspace come from torch's caching
allocator (graph-safe), the launch goes to torch's current stream, nothing syncs the host.
"""
from __future__ import annotations

import functools
from typing import List, Optional, Tuple

import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.routing.reference import RoutingResult, check_inputs
from oea_trt.routing.launch import route_into
from oea_trt.routing.signal import active_ready_flag
from oea_trt.routing.library import config_fields


@torch.library.custom_op("oea_trt::route", mutates_args=("active_ready",))
def _route_op(
    router_logits: torch.Tensor,
    token_kind: Optional[torch.Tensor],
    num_leading_context: int,
    num_experts: int,
    top_k: int,
    k0: int,
    k_max: int,
    max_rank: int,
    top_p: float,
    renormalize: bool,
    fill: int,
    piggyback_on_context: bool,
    schedule_min_decode: List[int],
    schedule_k0: List[int],
    active_ready: Optional[torch.Tensor],  # no default: torch 2.11's version bump indexes it in args
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    config = _config_from_fields(num_experts, top_k, k0, k_max, max_rank, top_p, renormalize, fill,
                                 piggyback_on_context, tuple(schedule_min_decode), tuple(schedule_k0))
    T = router_logits.shape[0]
    device = router_logits.device
    expert_ids = torch.empty((T, k_max), dtype=torch.int32, device=device)
    weights = torch.empty((T, k_max), dtype=torch.float32, device=device)
    active_mask = torch.empty((num_experts,), dtype=torch.bool, device=device)
    num_active = torch.empty((), dtype=torch.int32, device=device)
    route_into(router_logits, config, expert_ids, weights, active_mask, num_active, token_kind,
               num_leading_context, active_ready=active_ready)
    return expert_ids, weights, active_mask, num_active


@_route_op.register_fake
def _route_op_fake(router_logits, token_kind, num_leading_context, num_experts, top_k, k0, k_max, max_rank,
                   top_p, renormalize, fill, piggyback_on_context, schedule_min_decode, schedule_k0,
                   active_ready):
    T = router_logits.shape[0]
    return (
        router_logits.new_empty((T, k_max), dtype=torch.int32),
        router_logits.new_empty((T, k_max), dtype=torch.float32),
        router_logits.new_empty((num_experts,), dtype=torch.bool),
        router_logits.new_empty((), dtype=torch.int32),
    )


_FILL_NAMES = ("invalid", "num_experts", "top1")  # OEAConfig.fill_code order


@functools.lru_cache(maxsize=256)
def _config_from_fields(num_experts: int, top_k: int, k0: int, k_max: int, max_rank: int, top_p: float,
                        renormalize: bool, fill: int, piggyback_on_context: bool, schedule_min_decode: tuple,
                        schedule_k0: tuple) -> OEAConfig:
    return OEAConfig(num_experts=num_experts, top_k=top_k, k0=k0, k_max=k_max, max_rank=max_rank, top_p=top_p,
                     renormalize=renormalize, fill=_FILL_NAMES[fill], piggyback_on_context=piggyback_on_context,
                     k0_schedule=tuple(zip(schedule_min_decode, schedule_k0)) or None)


def publishes_early(config: OEAConfig) -> bool:
    """The kernel's active set is final before its rows: some k0 (the config's or its schedule's)
    leaves a piggyback phase (k0 < k_max). Phase 1 then selects k0 experts per token, phase 2
    the rest."""
    return config.k0 < config.k_max or any(k0 < config.k_max for _, k0 in (config.k0_schedule or ()))


def route_kernel(
    router_logits: torch.Tensor,
    config: OEAConfig,
    token_kind: Optional[torch.Tensor] = None,
    num_leading_context: int = 0,
    signal: bool = False,
) -> RoutingResult:
    """OEA routing with the fused CUDA kernel (CUDA tensors); same result as oea_route.
    signal: also set the device's active-set flag (signal.py) and return it as
    RoutingResult.active_ready, for the one-launch MoE call that directly follows; only where
    the routing has a piggyback phase (publishes_early): with plain top-k routing the active set
    is final no sooner than the rows, and starting on the flag measured slower (H100, 30B layer,
    skewed B=16 vanilla: +1.2 us in two runs; benchmarks/results/moe_one_launch_ab, runs 8-9)."""
    check_inputs(router_logits, config, token_kind)
    f = config_fields(config)
    schedule = f["schedule"]
    flag = active_ready_flag(router_logits.device) if signal and publishes_early(config) else None
    ids, weights, active_mask, num_active = torch.ops.oea_trt.route(
        router_logits, token_kind, int(num_leading_context), f["num_experts"], f["top_k"], f["k0"], f["k_max"],
        f["max_rank"], float(f["top_p"]), f["renormalize"], f["fill"], f["piggyback_on_context"],
        [m for m, _ in schedule], [k for _, k in schedule], flag)
    return RoutingResult(ids, weights, active_mask, num_active, flag)
