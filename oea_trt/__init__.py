"""oea-trt: Opportunistic Expert Activation (batch-aware MoE routing) for TensorRT(-LLM).

The public API in one place:
    OEAConfig, ConfigError        the rule's knobs, validated once (oea_trt.routing.config)
    route(logits, config)         OEA routing: the CUDA kernel on CUDA tensors, else the reference
    oea_route, vanilla_route      the Python reference of the rule (docs/oea-spec.md)
    RoutingResult                 what routing returns (ids, weights, active set, T)
    moe_forward, ExpertWeights    the decode MoE layer fed by a RoutingResult (oea_trt.moe)

Importing this package needs only torch: TensorRT, TensorRT-LLM, transformers, Triton and the
CUDA routing library are imported lazily by the modules that use them.
"""
__version__ = "0.1.0"

from oea_trt.routing import ConfigError, OEAConfig, RoutingResult, oea_route, route, vanilla_route  # noqa: E402
from oea_trt.moe import ExpertWeights, moe_forward  # noqa: E402

__all__ = ["__version__", "ConfigError", "ExpertWeights", "OEAConfig", "RoutingResult", "moe_forward", "oea_route",
           "route", "vanilla_route"]
