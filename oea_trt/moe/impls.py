"""The MoE layer's implementations, in one table: name -> what it is and how to call it.

moe_forward (layer.py), the benchmark (oea_trt/bench/moe.py), the CLI's --impl choices and the
report's labels all read IMPLS. Every entry runs one contract: run(x, weights, routing, config)
-> [T, H], with x [T, H], weights an ExpertWeights, routing a RoutingResult (fill ids outside
[0, E) skipped) and config a KernelConfig for our kernel (None: its default), None otherwise.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict


@dataclasses.dataclass(frozen=True)
class MoEImpl:
    name: str
    label: str  # the report's name for it
    description: str
    ours: bool  # our kernel: takes a KernelConfig, tuned per GPU and shape (oea_trt/moe/tuned.py)
    capturable: bool  # no host synchronisation: fits in a CUDA graph
    run: Callable


def _triton(x, weights, routing, config):
    from oea_trt.moe.triton import fused_moe

    return fused_moe(x, weights.w13, weights.w2, routing.expert_ids, routing.weights, routing.active_mask, config,
                     active_ready=routing.active_ready)


def _grouped_mm(x, weights, routing, config):
    from oea_trt.moe.grouped_mm import moe_grouped_mm

    return moe_grouped_mm(x, weights.w13, weights.w2, routing.expert_ids, routing.weights)


def _loop(x, weights, routing, config):
    from oea_trt.moe.reference import moe_reference

    return moe_reference(x, weights.w13, weights.w2, routing.expert_ids, routing.weights)


IMPLS: Dict[str, MoEImpl] = {i.name: i for i in (
    MoEImpl("triton", "Triton, expert-major",
            "our expert-major fused Triton kernel, deterministic: one launch (oea_trt/moe/triton/one_launch.py) or "
            "three (gate/up, down, combine, with programmatic dependent launch; three_launch.py), per the tuned "
            "or default KernelConfig", ours=True, capturable=True, run=_triton),
    MoEImpl("grouped_mm", "torch._grouped_mm", "PyTorch's grouped GEMM after a sort by expert, the library baseline "
            "(oea_trt/moe/grouped_mm.py)", ours=False, capturable=True, run=_grouped_mm),
    MoEImpl("loop", "PyTorch loop", "plain PyTorch loop over experts in fp32, the correctness oracle; asks the host "
            "which tokens each expert has, so never in a CUDA graph (oea_trt/moe/reference.py)", ours=False,
            capturable=False, run=_loop),
)}
#: Our kernels' names, in the order reports list them.
OURS = tuple(name for name, impl in IMPLS.items() if impl.ours)


def get_impl(name: str) -> MoEImpl:
    try:
        return IMPLS[name]
    except KeyError:
        raise ValueError(f"unknown MoE implementation {name!r}; choose one of: {', '.join(IMPLS)}") from None
