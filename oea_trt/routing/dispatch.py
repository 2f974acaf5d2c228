"""route(): OEA routing with the fused CUDA kernel on CUDA tensors, the torch reference elsewhere.

Both give the same result (the kernel is tested bit-exact for ids against oea_trt.routing.reference), so
callers need not care which ran. The kernel module (and liboea_routing.so) is imported only
when a CUDA tensor is routed.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.routing.reference import RoutingResult, oea_route

BACKENDS = ("auto", "kernel", "reference")

_kernel_problem: Optional[str] = None  # why "auto" fell back to the reference (None: not tried / fine)
_kernel_checked = False


def kernel_available() -> bool:
    """True when liboea_routing.so loads (found, or built once for this GPU). Warns once if not."""
    global _kernel_checked, _kernel_problem
    if not _kernel_checked:
        _kernel_checked = True
        try:
            from oea_trt.routing.kernel import load_library

            load_library()
        except Exception as exc:  # noqa: BLE001 (any reason means: use the reference)
            _kernel_problem = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"oea_trt: routing kernel unavailable, using the torch reference ({_kernel_problem})",
                          RuntimeWarning, stacklevel=3)
    return _kernel_problem is None


# torch.compile runs it once while tracing and keeps the answer as a constant (no graph break, even
# when the first call happens inside a compiled function). This is exactly what
# torch.compiler.assume_constant_result does; that function imports torch._dynamo (and with it
# triton, ~1 s), which importing oea_trt must not.
kernel_available._dynamo_marked_constant = True


def route(
    router_logits: torch.Tensor,
    config: OEAConfig,
    token_kind: Optional[torch.Tensor] = None,
    backend: str = "auto",
    signal: bool = False,
    pdl: Optional[bool] = None,
) -> RoutingResult:
    """Route a batch with OEA. backend: "auto" (kernel for CUDA tensors when it loads, else the
    reference), "kernel" (fail if it cannot run) or "reference" (oea_trt.routing.reference.oea_route).
    signal: the kernel also sets RoutingResult.active_ready, so the one-launch MoE call that
    directly follows on the same stream can start before the routing ends (no-op elsewhere).
    pdl: the kernel's programmatic dependent launch (None: on where the GPU supports it, sm_90+;
    no-op for the reference)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    on_cuda = isinstance(router_logits, torch.Tensor) and router_logits.is_cuda
    if backend == "kernel" or (backend == "auto" and on_cuda and kernel_available()):
        from oea_trt.routing.kernel import route_kernel

        return route_kernel(router_logits, config, token_kind, signal=signal, pdl=pdl)
    return oea_route(router_logits, config, token_kind)
