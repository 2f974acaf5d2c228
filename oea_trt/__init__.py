"""oea-trt: Opportunistic Expert Activation (batch-aware MoE routing) for TensorRT(-LLM).

Importing this package needs only torch: TensorRT, TensorRT-LLM, transformers and the CUDA
kernel are imported lazily by the modules that use them.
"""
__version__ = "0.1.0"

from .config import ConfigError, OEAConfig  # noqa: E402
from .routing import RoutingResult, oea_route, vanilla_route  # noqa: E402
from .dispatch import route  # noqa: E402,F401  (the CUDA kernel on CUDA tensors, else oea_route)

__all__ = ["__version__", "ConfigError", "OEAConfig", "RoutingResult", "oea_route", "route", "vanilla_route"]
