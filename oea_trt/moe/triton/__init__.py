"""Our expert-major fused SwiGLU MoE for decode, in Triton: each active expert's weights are read
from HBM once per call and multiplied against ALL tokens routed to it.

Why expert-major: at decode sizes (<= 64 tokens) a MoE layer is memory-bound; its time is the
bytes of the distinct active experts T over HBM bandwidth, which is what OEA shrinks. A
token-major kernel (vLLM's small-batch path) re-reads an expert once per token that picked it.

  config.py        KernelConfig, the heuristic default, fitting a config to a shape (no triton)
  tiles.py         the work items (device code) both paths share
  launch.py        persistent launches of one wave; whether programmatic dependent launch works
  three_launch.py  down="slots": gate/up, down, combine kernels
  one_launch.py    down="one_launch": every work item in one persistent launch
  sync.py          the spin waits and the synchronisation workspace (one launch; the hand-off)
fused_moe() below checks the inputs and picks the path from the config. The kernel modules are
imported on first call, so reading a KernelConfig does not import triton.
"""
from __future__ import annotations

from typing import Optional

import torch

from oea_trt.moe.triton.config import KernelConfig, default_config, fitted

__all__ = ["KernelConfig", "default_config", "fitted", "fused_moe", "check_inputs"]


def fused_moe(
    hidden_states: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    expert_ids: torch.Tensor,
    routing_weights: torch.Tensor,
    active_mask: Optional[torch.Tensor] = None,
    config: Optional[KernelConfig] = None,
    active_ready: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """hidden_states [T, H]; w13 [E, 2I, H] (gate rows then up rows); w2 [E, H, I];
    expert_ids int32 [T, k]; routing_weights float32 [T, k]; active_mask bool [E] (the
    routing's; computed from expert_ids when None). Returns [T, H] in hidden_states.dtype.
    config: tiles and path (default: default_config's heuristic); fitted to the shape here.
    active_ready: RoutingResult.active_ready of the routing call that produced these outputs,
    launched right before this call on the same stream with hidden_states already written
    (route_kernel(..., signal=True)); the one-launch path then starts while the routing runs.
    Calls on one device must be stream-ordered (one stream, or graphs replayed on one stream):
    the one-launch path and the three-launch hand-off share a per-device workspace (sync.py)."""
    from oea_trt.moe.triton.launch import pdl_supported

    num_tokens, k = expert_ids.shape
    num_experts, two_inter, hidden = w13.shape
    inter = two_inter // 2
    check_inputs(hidden_states, w13, w2, expert_ids, routing_weights, active_mask)
    if active_ready is not None and (active_ready.dtype != torch.int32 or active_ready.numel() != 1
                                     or active_ready.device != hidden_states.device):
        raise ValueError(f"active_ready must be one int32 on {hidden_states.device} (RoutingResult.active_ready), got "
                         f"{active_ready.dtype} {tuple(active_ready.shape)} on {active_ready.device}")
    out = torch.empty((num_tokens, hidden), dtype=hidden_states.dtype, device=hidden_states.device)
    if num_tokens == 0:
        return out
    if active_mask is None:  # then active_ready cannot belong to it: the routing's own mask only
        from oea_trt.moe.grouping import active_mask_from_ids

        active_mask, active_ready = active_mask_from_ids(expert_ids, num_experts), None
    cfg = fitted(config or default_config(num_tokens, hidden, inter, k, num_experts), num_tokens, hidden, inter)
    use_pdl = pdl_supported(hidden_states.device) if cfg.pdl is None else bool(cfg.pdl)
    if use_pdl and not pdl_supported(hidden_states.device):
        raise ValueError("KernelConfig.pdl=True needs a CUDA device of compute capability 9.0+ and compiled "
                         "kernels (not TRITON_INTERPRET=1); use pdl=None (automatic) or False")
    args = (hidden_states, w13, w2, expert_ids.contiguous(), routing_weights.contiguous(),
            active_mask.contiguous().view(torch.uint8), out, cfg, use_pdl)
    if cfg.down == "one_launch":
        from oea_trt.moe.triton import one_launch

        one_launch.launch(*args, active_ready=active_ready)
    else:
        from oea_trt.moe.triton import three_launch

        three_launch.launch(*args)
    return out


def check_inputs(x, w13, w2, expert_ids, routing_weights, active_mask) -> None:
    """Shapes, strides and dtypes fused_moe needs; a ValueError says what was wrong."""
    E, two_inter, H = w13.shape
    if x.dim() != 2 or x.shape[1] != H or x.stride(1) != 1:
        raise ValueError(f"hidden_states must be [T, {H}] with unit stride in dim 1, got {tuple(x.shape)} "
                         f"strides {x.stride()}")
    if w2.shape != (E, H, two_inter // 2) or not (w13.is_contiguous() and w2.is_contiguous()):
        raise ValueError(f"w2 must be a contiguous [E={E}, H={H}, I={two_inter // 2}] tensor and w13 contiguous, "
                         f"got w2 {tuple(w2.shape)}")
    if x.dtype != w13.dtype or w2.dtype != w13.dtype:
        raise ValueError(f"hidden_states, w13 and w2 must share one dtype, got {x.dtype}, {w13.dtype}, {w2.dtype}")
    if expert_ids.dtype != torch.int32 or routing_weights.dtype != torch.float32:
        raise ValueError(f"expert_ids must be int32 and routing_weights float32 (the routing's output), got "
                         f"{expert_ids.dtype} and {routing_weights.dtype}")
    if routing_weights.shape != expert_ids.shape or expert_ids.shape[0] != x.shape[0]:
        raise ValueError(f"expert_ids {tuple(expert_ids.shape)} and routing_weights {tuple(routing_weights.shape)} "
                         f"must both be [T={x.shape[0]}, k]")
    if active_mask is not None and (active_mask.shape != (E,) or active_mask.dtype != torch.bool):
        raise ValueError(f"active_mask must be bool [E={E}], got {active_mask.dtype} {tuple(active_mask.shape)}")
