"""Run the fused routing kernel on torch CUDA tensors, writing into caller-provided outputs.

route_into is the checked entry for direct callers: it checks the inputs (as the reference
does), the outputs' shapes, dtypes and devices and the workspace (no device sync), then
launches on torch's current stream and raises on a launch error. launch() is the same call
without the checks, for a caller that made them already (the torch op: route_kernel checks the
inputs once and the op allocates the outputs itself). Tests call route_into with poisoned
outputs so that a slot the kernel fails to write shows up.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.routing.library import cuda_error_text, load_library
from oea_trt.routing.params import LAUNCH_PDL, LOGITS_TYPE, KernelParams, kernel_params
from oea_trt.routing.reference import RoutingInputError, check_inputs


def token_kind_int32(token_kind: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """token_kind as contiguous int32 with the reference's meaning kept: int64 values outside
    int32 must stay padding, not wrap to decode/context."""
    if token_kind is None:
        return None
    if token_kind.dtype == torch.int64:
        token_kind = torch.where((token_kind == 0) | (token_kind == 1), token_kind, torch.full_like(token_kind, 2))
    return token_kind.to(torch.int32).contiguous()


@functools.lru_cache(maxsize=None)
def device_supports_pdl(device: torch.device) -> bool:
    """Programmatic dependent launch needs compute capability 9.0+ (Hopper)."""
    return torch.cuda.get_device_capability(device)[0] >= 9


def use_pdl(pdl: Optional[bool], device: torch.device) -> bool:
    """pdl None: on where the device supports it; True on a device without it is an error."""
    if pdl is None:
        return device_supports_pdl(device)
    if pdl and not device_supports_pdl(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(f"pdl=True needs a GPU of compute capability 9.0+ (programmatic dependent launch), {device} "
                         f"is {major}.{minor}: use pdl=None (on where supported) or pdl=False")
    return bool(pdl)


def workspace_bytes(config: OEAConfig, num_tokens: int) -> int:
    return load_library().workspace_size(kernel_params(config), num_tokens)


def check_cuda(router_logits: torch.Tensor) -> None:
    if not router_logits.is_cuda:
        raise RoutingInputError(f"the routing kernel needs CUDA tensors, router_logits is on {router_logits.device}")


def expect(tensor: torch.Tensor, name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise RoutingInputError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tuple(tensor.shape) != shape or tensor.dtype != dtype or tensor.device != device:
        raise RoutingInputError(
            f"{name} must be {dtype} {list(shape)} on {device}, got {tensor.dtype} {list(tensor.shape)} on {tensor.device}")
    if not tensor.is_contiguous():
        raise RoutingInputError(f"{name} must be contiguous")


def check_outputs(params: KernelParams, T: int, device: torch.device, expert_ids, weights, active_mask, num_active,
                  active_ready, workspace) -> None:
    expect(expert_ids, "expert_ids", (T, params.k_max), torch.int32, device)
    expect(weights, "weights", (T, params.k_max), torch.float32, device)
    if active_mask is not None:
        if active_mask.dtype not in (torch.bool, torch.uint8):
            raise RoutingInputError(f"active_mask must be bool or uint8, got {active_mask.dtype}")
        expect(active_mask, "active_mask", (params.num_experts,), active_mask.dtype, device)
    for name, flag in (("num_active", num_active), ("active_ready", active_ready)):
        if flag is not None:
            if flag.numel() != 1:
                raise RoutingInputError(f"{name} must hold one int32, got shape {list(flag.shape)}")
            expect(flag, name, tuple(flag.shape), torch.int32, device)
    if workspace is not None:
        needed = load_library().workspace_size(params, T)
        if workspace.device != device or workspace.numel() * workspace.element_size() < needed:
            raise RoutingInputError(
                f"workspace must hold {needed} bytes on {device}, got {workspace.numel() * workspace.element_size()} "
                f"bytes on {workspace.device}")


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
    active_ready: Optional[torch.Tensor] = None,
    pdl: Optional[bool] = None,
) -> None:
    """Route with the CUDA kernel into expert_ids int32 [T, k_max], weights fp32 [T, k_max],
    active_mask bool/uint8 [E] and num_active int32 (0-d or [1]).

    token_kind None: the first num_leading_context rows are context tokens, the rest decode
    (TensorRT-LLM's packed batch; 0 = all decode). workspace: uint8 CUDA tensor of at least
    workspace_bytes(config, T) bytes, allocated here when None. active_ready: int32 with one
    element, or None: the launch clears it, then sets it once active_mask and num_active are
    final, before the rows are written (plugin/oea_routing.h; the one-launch MoE kernel polls
    it to start streaming weights while the routing still runs). pdl: programmatic dependent
    launch (None: on where the GPU supports it, sm_90+).
    """
    check_inputs(router_logits, config, token_kind)
    check_cuda(router_logits)
    params = kernel_params(config)
    check_outputs(params, router_logits.shape[0], router_logits.device, expert_ids, weights, active_mask,
                  num_active, active_ready, workspace)
    launch(router_logits, params, expert_ids, weights, active_mask, num_active, token_kind, num_leading_context,
           workspace, active_ready, pdl)


def launch(router_logits: torch.Tensor, params: KernelParams, expert_ids: torch.Tensor, weights: torch.Tensor,
           active_mask: Optional[torch.Tensor], num_active: Optional[torch.Tensor], token_kind: Optional[torch.Tensor],
           num_leading_context: int, workspace: Optional[torch.Tensor], active_ready: Optional[torch.Tensor],
           pdl: Optional[bool]) -> None:
    """oea_route_launch on tensors the caller has checked (route_into's arguments)."""
    lib = load_library()
    T = router_logits.shape[0]
    device = router_logits.device
    logits = router_logits.contiguous()
    kinds = token_kind_int32(token_kind)
    if workspace is None:
        workspace = torch.empty(lib.workspace_size(params, T), dtype=torch.uint8, device=device)
    flags = LAUNCH_PDL if use_pdl(pdl, device) else 0
    with torch.cuda.device(device):
        stream = torch.cuda.current_stream(device).cuda_stream
        code = lib.launch(
            params, logits.data_ptr(), LOGITS_TYPE[str(logits.dtype).removeprefix("torch.")],
            kinds.data_ptr() if kinds is not None else 0, int(num_leading_context), T,
            expert_ids.data_ptr(), weights.data_ptr(),
            active_mask.data_ptr() if active_mask is not None else 0,
            num_active.data_ptr() if num_active is not None else 0,
            active_ready.data_ptr() if active_ready is not None else 0,
            workspace.data_ptr() if workspace.numel() else 0, workspace.numel() * workspace.element_size(),
            flags, stream)
    if code != 0:
        problem = lib.validate(params)
        detail = f" ({problem})" if problem else ""
        raise RuntimeError(f"oea_route_launch failed: {cuda_error_text(code)}{detail}")
