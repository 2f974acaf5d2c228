"""Run the fused routing kernel on torch CUDA tensors, writing into caller-provided outputs.

route_into is the thin layer between torch and oea_route_launch: it checks shapes, dtypes and
devices (no device sync), launches on torch's current stream and raises on a launch error.
The torch custom op (op.py) allocates the outputs and calls it; tests call it directly with
poisoned outputs so that a slot the kernel fails to write shows up.
"""
from __future__ import annotations

from typing import Optional

import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.routing.reference import RoutingInputError, check_inputs
from oea_trt.routing.library import LOGITS_TYPE, OeaRoutingParams, cuda_error_text, load_library, params_for


def token_kind_int32(token_kind: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """token_kind as contiguous int32 with the reference's meaning kept: int64 values outside
    int32 must stay padding, not wrap to decode/context."""
    if token_kind is None:
        return None
    if token_kind.dtype == torch.int64:
        token_kind = torch.where((token_kind == 0) | (token_kind == 1), token_kind, torch.full_like(token_kind, 2))
    return token_kind.to(torch.int32).contiguous()


def _expect(tensor: torch.Tensor, name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise RoutingInputError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != shape or tensor.dtype != dtype or tensor.device != device:
        raise RoutingInputError(
            f"{name} must be {dtype} {list(shape)} on {device}, got {tensor.dtype} {list(tensor.shape)} on {tensor.device}")
    if not tensor.is_contiguous():
        raise RoutingInputError(f"{name} must be contiguous")


def workspace_bytes(config: OEAConfig, num_tokens: int) -> int:
    return load_library().workspace_size(params_for(config), num_tokens)


def route_into(
    router_logits: torch.Tensor,
    config: OEAConfig,
    expert_ids: torch.Tensor,
    weights: torch.Tensor,
    active_mask: Optional[torch.Tensor] = None,
    num_active: Optional[torch.Tensor] = None,
    token_kind: Optional[torch.Tensor] = None,
    num_leading_context: int = 0,
    workspace: Optional[torch.Tensor] = None,
    params: Optional[OeaRoutingParams] = None,
    active_ready: Optional[torch.Tensor] = None,
) -> None:
    """Route with the CUDA kernel into expert_ids int32 [T, k_max], weights fp32 [T, k_max],
    active_mask bool/uint8 [E] and num_active int32 (0-d or [1]).

    token_kind None: the first num_leading_context rows are context tokens, the rest decode
    (TensorRT-LLM's packed batch; 0 = all decode). workspace: uint8 CUDA tensor of at least
    workspace_bytes(config, T) bytes, allocated here when None. active_ready: int32 with one
    element, or None: the launch clears it, then sets it once active_mask and num_active are
    final, before the rows are written (oea_route_launch_signal in plugin/oea_routing.h; the
    one-launch MoE kernel polls it to start streaming weights while the routing still runs).
    """
    check_inputs(router_logits, config, token_kind)
    if not router_logits.is_cuda:
        raise RoutingInputError(f"the routing kernel needs CUDA tensors, router_logits is on {router_logits.device}")
    lib = load_library()
    params = params if params is not None else params_for(config)
    T, E = router_logits.shape
    device = router_logits.device
    logits = router_logits.contiguous()
    kinds = token_kind_int32(token_kind)
    _expect(expert_ids, "expert_ids", (T, config.k_max), torch.int32, device)
    _expect(weights, "weights", (T, config.k_max), torch.float32, device)
    if active_mask is not None:
        if active_mask.dtype not in (torch.bool, torch.uint8):
            raise RoutingInputError(f"active_mask must be bool or uint8, got {active_mask.dtype}")
        _expect(active_mask, "active_mask", (E,), active_mask.dtype, device)
    if num_active is not None:
        if num_active.numel() != 1:
            raise RoutingInputError(f"num_active must hold one int32, got shape {list(num_active.shape)}")
        _expect(num_active, "num_active", tuple(num_active.shape), torch.int32, device)
    if active_ready is not None:
        if active_ready.numel() != 1:
            raise RoutingInputError(f"active_ready must hold one int32, got shape {list(active_ready.shape)}")
        _expect(active_ready, "active_ready", tuple(active_ready.shape), torch.int32, device)
    needed = lib.workspace_size(params, T)
    if workspace is None:
        workspace = torch.empty(needed, dtype=torch.uint8, device=device)
    elif workspace.device != device or workspace.numel() * workspace.element_size() < needed:
        raise RoutingInputError(
            f"workspace must hold {needed} bytes on {device}, got {workspace.numel() * workspace.element_size()} "
            f"bytes on {workspace.device}")
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        code = lib.launch(
            params, logits.data_ptr(), LOGITS_TYPE[str(logits.dtype).removeprefix("torch.")],
            kinds.data_ptr() if kinds is not None else 0, int(num_leading_context), T,
            expert_ids.data_ptr(), weights.data_ptr(),
            active_mask.data_ptr() if active_mask is not None else 0,
            num_active.data_ptr() if num_active is not None else 0,
            workspace.data_ptr() if workspace.numel() else 0, workspace.numel() * workspace.element_size(), stream,
            active_ready.data_ptr() if active_ready is not None else 0)
    if code != 0:
        problem = lib.validate(params)
        detail = f" ({problem})" if problem else ""
        raise RuntimeError(f"oea_route_launch failed: {cuda_error_text(code)}{detail}")
