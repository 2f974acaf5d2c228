"""torch.ops.oea_trt.route: the fused routing kernel as a torch custom op.

A registered op (with a fake implementation for shapes) is what lets the kernel run inside
torch.compile graphs and CUDA-graph capture: outputs and workspace come from torch's caching
allocator (graph-safe), the launch goes to torch's current stream, nothing syncs the host.
The op's knob arguments are KernelParams.op_args(); its implementation turns them back into
the kernel's record through a cache, so a call neither rebuilds nor re-validates an OEAConfig.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.routing.launch import check_cuda, launch
from oea_trt.routing.params import kernel_params, params_from_op_args
from oea_trt.routing.reference import RoutingResult, check_inputs
from oea_trt.routing.signal import active_ready_flag


@torch.library.custom_op("oea_trt::route", mutates_args=("active_ready",))
def route_op(
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
    pdl: Optional[bool],
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel on inputs route_kernel has checked (only the device is checked here: the
    fake implementation, not this one, runs for meta tensors while tracing)."""
    check_cuda(router_logits)
    params = params_from_op_args(num_experts, top_k, k0, k_max, max_rank, top_p, renormalize, fill,
                                 piggyback_on_context, schedule_min_decode, schedule_k0)
    T = router_logits.shape[0]
    device = router_logits.device
    expert_ids = torch.empty((T, k_max), dtype=torch.int32, device=device)
    weights = torch.empty((T, k_max), dtype=torch.float32, device=device)
    active_mask = torch.empty((num_experts,), dtype=torch.bool, device=device)
    num_active = torch.empty((), dtype=torch.int32, device=device)
    launch(router_logits, params, expert_ids, weights, active_mask, num_active, token_kind, num_leading_context,
           None, active_ready, pdl)
    return expert_ids, weights, active_mask, num_active


@route_op.register_fake
def route_op_fake(router_logits, token_kind, num_leading_context, num_experts, top_k, k0, k_max, max_rank, top_p,
                  renormalize, fill, piggyback_on_context, schedule_min_decode, schedule_k0, active_ready, pdl):
    T = router_logits.shape[0]
    return (
        router_logits.new_empty((T, k_max), dtype=torch.int32),
        router_logits.new_empty((T, k_max), dtype=torch.float32),
        router_logits.new_empty((num_experts,), dtype=torch.bool),
        router_logits.new_empty((), dtype=torch.int32),
    )


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
    pdl: Optional[bool] = None,
) -> RoutingResult:
    """OEA routing with the fused CUDA kernel (CUDA tensors); same result as oea_route.

    signal: also set the device's active-set flag (signal.py) and return it as
    RoutingResult.active_ready, for the one-launch MoE call that directly follows; only where
    the routing has a piggyback phase (publishes_early): with plain top-k routing the active set
    is final no sooner than the rows, so a consumer gains nothing by starting on the flag.
    pdl: programmatic dependent launch (None: on where the GPU supports it, sm_90+)."""
    check_inputs(router_logits, config, token_kind)
    flag = active_ready_flag(router_logits.device) if signal and publishes_early(config) else None
    # While tracing, the record is built uncached: dynamo would skip the cache and warn.
    params = kernel_params.__wrapped__(config) if torch.compiler.is_compiling() else kernel_params(config)
    ids, weights, active_mask, num_active = torch.ops.oea_trt.route(
        router_logits, token_kind, int(num_leading_context), *params.op_args(), flag, pdl)
    return RoutingResult(ids, weights, active_mask, num_active, flag)
