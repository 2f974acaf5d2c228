"""OEA routing: the rule's config, its Python reference, and the one route() callers use.

    config.py     OEAConfig: every knob of docs/oea-spec.md, validated once
    reference.py  oea_route / vanilla_route / topk_prune_route: the rule in vectorized torch
    params.py     OEAConfig -> the kernel's parameter record (one conversion for every caller)
    library.py    find, build (CMake) and load liboea_routing.so
    launch.py     route_into: the CUDA kernel on torch tensors, into given outputs
    op.py         torch.ops.oea_trt.route and route_kernel (graph- and compile-safe)
    signal.py     the active-set flag the routing hands to the one-launch MoE kernel
    kernel.py     the kernel binding's public names
    dispatch.py   route(): the kernel on CUDA tensors, the reference elsewhere
    stats.py      what a routed batch costs (distinct experts) and keeps (experts per token)
    synthetic.py  router-logit generators (uniform, skewed) for simulations and benchmarks
    simulate.py   distinct experts under OEA vs vanilla on synthetic logits (`oea-trt simulate`)
Importing this package imports neither the kernel library nor Triton.
"""
from oea_trt.routing.config import CONTEXT, DECODE, FILL_MODES, PADDING, ConfigError, OEAConfig
from oea_trt.routing.dispatch import route
from oea_trt.routing.reference import (RoutingInputError, RoutingResult, oea_route, topk_prune_route,
                                       vanilla_route)

__all__ = ["CONTEXT", "DECODE", "FILL_MODES", "PADDING", "ConfigError", "OEAConfig", "RoutingInputError",
           "RoutingResult", "oea_route", "route", "topk_prune_route", "vanilla_route"]
