"""Pieces every MoE timing shares (the benchmark, the tuner, benchmarks/moe_ab.py): the static
inputs of one (routing source, batch), CUDA-graph timing of C back-to-back calls over C weight
copies, routing configs, and the error measure against the fp32 loop.

A call is fn(x, weights, routing) -> [T, H]; layer_call() makes one of moe_forward.
"""
from __future__ import annotations

from typing import Callable, Sequence, Tuple

import torch

from oea_trt.bench.routers import Router, route_for_moe
from oea_trt.bench.timing import Timing, time_in_graph
from oea_trt.moe.layer import moe_forward
from oea_trt.moe.shapes import MoEShape
from oea_trt.routing.config import OEAConfig

#: bf16 tolerance against the fp32 loop: max error within 2% of the output's largest magnitude,
#: RMS error within 1% of its RMS (bf16 keeps ~3 significant digits; the intermediate and the
#: output are rounded to bf16).
MAX_TOL, RMS_TOL = 2e-2, 1e-2


def layer_call(impl: str, config=None) -> Callable:
    """fn(x, weights, routing) -> moe_forward(x, weights, routing, impl=impl, config=config)."""
    return lambda x, weights, routing: moe_forward(x, weights, routing, impl=impl, config=config)


def vanilla_config(shape: MoEShape) -> OEAConfig:
    return OEAConfig.vanilla(shape.num_experts, shape.top_k)


def oea_config(shape: MoEShape, k0: int, **kw) -> OEAConfig:
    return OEAConfig(shape.num_experts, shape.top_k, k0, **kw)


def relative_errors(out: torch.Tensor, ref: torch.Tensor) -> Tuple[float, float]:
    """(max abs error / max |ref|, rms error / rms ref)."""
    out, ref = out.float(), ref.float()
    diff = out - ref
    max_ref = ref.abs().max().clamp(min=1e-12)
    rms_ref = ref.pow(2).mean().sqrt().clamp(min=1e-12)
    return float(diff.abs().max() / max_ref), float(diff.pow(2).mean().sqrt() / rms_ref)


def within_tolerance(out: torch.Tensor, ref: torch.Tensor) -> bool:
    max_err, rms_err = relative_errors(out, ref)
    return max_err <= MAX_TOL and rms_err <= RMS_TOL


class RoutingBatch:
    """Static device inputs of one (routing source, batch): C router-logit draws and C
    hidden-state batches (one per weight copy)."""

    def __init__(self, source, batch: int, copies: int, hidden: int, seed: int, device: str, dtype: torch.dtype):
        self.batch = batch
        self.logits = [source.draw(batch, seed=1_000 * batch + c + 100_000 * seed).to(device) for c in range(copies)]
        g = torch.Generator(device=device).manual_seed(seed * 7919 + batch)
        self.x = [torch.randn((batch, hidden), generator=g, device=device, dtype=dtype) for _ in range(copies)]


def time_moe(fn: Callable, batch: RoutingBatch, weights: Sequence, routings: Sequence, repeats: int = 5,
             replays: int = 2) -> Timing:
    """MoE only: routing done before capture; one graph of C calls, call c on copy c."""
    def work():
        for c in range(len(weights)):
            fn(batch.x[c], weights[c], routings[c])

    return time_in_graph(work, calls=len(weights), repeats=repeats, replays=replays)


def time_routed(fn: Callable, batch: RoutingBatch, weights: Sequence, router: Router, config: OEAConfig,
                repeats: int = 5, replays: int = 2) -> Timing:
    """Routing+MoE: each call routes its logits in the graph, then runs the MoE on the result."""
    def work():
        for c in range(len(weights)):
            fn(batch.x[c], weights[c], route_for_moe(router, batch.logits[c], config))

    return time_in_graph(work, calls=len(weights), repeats=repeats, replays=replays)
