"""Which routing implementation a benchmark puts in its CUDA graph.

The fused CUDA routing kernel (oea_trt.route) is what a server would run; the torch
reference (oea_trt.routing.reference.oea_route) is graph-capturable too but launches dozens of small
kernels (tens of microseconds per call), so routing+MoE figures taken with it overstate the
fixed per-layer cost. The kernel is used only after it matched the reference on a sample.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import torch

import oea_trt
from oea_trt.routing.config import OEAConfig
from oea_trt.routing.reference import oea_route
from oea_trt.routing.synthetic import skewed_logits, uniform_logits


class Router(NamedTuple):
    name: str  # "kernel" or "reference"
    route: Callable  # route(router_logits, config) -> RoutingResult
    note: str  # why this one


def route_for_moe(router: Router, logits: torch.Tensor, config: OEAConfig):
    """router.route for a MoE call that follows directly on the same stream: the kernel also
    publishes its active set early (RoutingResult.active_ready), as a served model would route."""
    if router.name == "kernel":
        return router.route(logits, config, signal=True)
    return router.route(logits, config)


def _agrees(route: Callable, device: str) -> str:
    """'' when `route` matches the reference on a few batches, else what differed."""
    for num_tokens, logits_fn, k0 in ((16, skewed_logits, 3), (64, uniform_logits, 5), (1, uniform_logits, 8)):
        logits = logits_fn(num_tokens, 128, seed=num_tokens, device=device)
        config = OEAConfig(128, 8, k0)
        got, want = route(logits, config), oea_route(logits, config)
        if not torch.equal(got.expert_ids.cpu(), want.expert_ids.cpu()):
            return f"expert ids differ from the reference (T={num_tokens}, k0={k0})"
        if not torch.allclose(got.weights.cpu(), want.weights.cpu(), rtol=1e-5, atol=1e-6):
            return f"weights differ from the reference (T={num_tokens}, k0={k0})"
        if not torch.equal(got.active_mask.cpu().bool(), want.active_mask.cpu()):
            return f"active_mask differs from the reference (T={num_tokens}, k0={k0})"
    return ""


def _captures(route: Callable, device: str) -> str:
    """'' when `route` can be captured in a CUDA graph and replays onto new logits correctly."""
    logits = uniform_logits(32, 128, seed=1, device=device)
    config = OEAConfig(128, 8, 3)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        route(logits, config)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = route(logits, config)
    logits.copy_(uniform_logits(32, 128, seed=2, device=device))
    graph.replay()
    torch.cuda.synchronize()
    if not torch.equal(captured.expert_ids, oea_route(logits, config).expert_ids):
        return "its CUDA-graph replay on new logits differs from the reference"
    return ""


def pick_router(choice: str = "auto", device: str = "cuda") -> Router:
    """choice: "auto" (the kernel if it works, else the reference), "kernel" or "reference"."""
    reference = Router("reference", oea_route, "torch reference oea_trt.routing.reference.oea_route")
    if choice == "reference":
        return reference
    # route() falls back to the reference on its own when the kernel cannot load: ask for the
    # kernel explicitly, so that "kernel" in a report means the kernel ran.
    route = functools.partial(oea_trt.route, backend="kernel")
    try:
        problem = _agrees(route, device) or _captures(route, device)
    except Exception as exc:  # noqa: BLE001 (missing module, unbuilt library, launch error)
        problem = f"oea_trt.route(backend='kernel') unavailable: {type(exc).__name__}: {exc}"
    if problem:
        if choice == "kernel":
            raise RuntimeError(f"routing kernel requested but {problem}")
        return reference._replace(note=f"{reference.note} ({problem})")
    return Router("kernel", route,
                  "fused CUDA routing kernel via oea_trt.route, checked against the reference")
