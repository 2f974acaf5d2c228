"""Putting OEA routing into the MoE modules TensorRT-LLM's PyTorch backend built, and checking that
it takes effect. Duck-typed on TensorRT-LLM 1.2.1's module shapes, so CI checks it without
TensorRT-LLM (backend.py calls it with the real modules).

Where routing happens (tensorrt_llm/_torch/modules/fused_moe/):
- Qwen3MoE.experts comes from create_moe. With ENABLE_CONFIGURABLE_MOE (default "1") it is a
  ConfigurableMoE wrapping the computing backend in `.backend` (CUTLASS, TRTLLM-gen, DeepGEMM,
  CuteDSL); the wrapper calls its own routing_method.apply() only when
  backend._supports_load_balancer() is true ("separated routing"), otherwise the backend routes
  inside its fused kernel from routing_method_type and apply() never runs.
- Unwrapped, TRTLLMGenFusedMoE routes inside its kernel; the other fused MoEs call apply().
So the routing method is set on the wrapper and on its backend, a layer whose routing cannot
reach apply() is refused, and OEAQwen3MoE checks at run time that apply() did run.

What unused slots may hold: the CUTLASS and vanilla MoE on one expert-parallel rank skip ids
outside their expert range, so `num_experts` costs nothing there. With expert parallelism the
all-to-all dispatch sends a slot to rank expert_id // experts_per_rank (moeA2ADispatchKernel, no
range check) and a load balancer maps expert ids to slots; there every slot must hold a real
expert, so fill is `top1`: the token's first expert again, weight 0 (no new expert is loaded).
"""
from __future__ import annotations

import dataclasses

import torch

from oea_trt.routing.config import OEAConfig

#: Fused MoEs that skip ids outside their expert range when nothing redistributes them.
SKIPS_OUT_OF_RANGE_IDS = ("CutlassFusedMoE", "VanillaMoE")


@dataclasses.dataclass(frozen=True)
class MoESite:
    """One layer's MoE as TensorRT-LLM built it: `experts` is Qwen3MoE.experts, `compute` the
    module that runs the expert GEMMs (experts itself, or ConfigurableMoE.backend)."""

    experts: torch.nn.Module
    compute: torch.nn.Module

    @property
    def wrapped(self) -> bool:
        return self.compute is not self.experts

    @property
    def description(self) -> str:
        name = type(self.compute).__name__
        return f"{name} inside {type(self.experts).__name__}" if self.wrapped else name


def moe_site(experts: torch.nn.Module) -> MoESite:
    backend = getattr(experts, "backend", None)
    return MoESite(experts=experts, compute=backend if isinstance(backend, torch.nn.Module) else experts)


def routing_reaches_apply(site: MoESite) -> bool:
    """Whether the MoE computes its ids with routing_method.apply() (False: inside its kernel)."""
    if site.wrapped:
        separated = getattr(site.compute, "_supports_load_balancer", None)
        # A wrapper without the 1.2.1 switch: OEAQwen3MoE's run-time check decides.
        return True if separated is None else bool(separated())
    return not type(site.compute).__name__.startswith("TRTLLMGen")


def check_installable(site: MoESite, config: OEAConfig, layer_idx: int) -> None:
    """Raise when OEA could not take effect in this layer, saying what to change."""
    if not routing_reaches_apply(site):
        raise RuntimeError(
            f"layer {layer_idx}: MoE backend {site.description} routes inside its fused kernel and never "
            "calls routing_method.apply(), so OEA would be silently ignored; use the CUTLASS MoE backend "
            "(LLM(..., moe_config=MoeConfig(backend='CUTLASS')), the Hopper default)"
        )
    model_top_k = getattr(site.experts.routing_method, "experts_per_token", None)
    if model_top_k is not None and config.k_max != model_top_k:
        raise ValueError(
            f"layer {layer_idx}: k_max must equal the model's top_k={model_top_k} (TensorRT-LLM sized this "
            f"layer's buffers and communication for it), got {config.k_max}"
        )


def fill_for(site: MoESite) -> str:
    """What unused slots hold for this MoE (module docstring)."""
    experts = site.experts
    ep_size = int(getattr(experts, "ep_size", 1) or 1)
    balanced = getattr(experts, "layer_load_balancer", None) is not None
    num_experts = getattr(experts, "num_experts", None)
    redundant = getattr(experts, "num_slots", num_experts) != num_experts
    if ep_size == 1 and not balanced and not redundant and type(site.compute).__name__ in SKIPS_OUT_OF_RANGE_IDS:
        return "num_experts"
    return "top1"


def install_routing(site: MoESite, method: torch.nn.Module) -> None:
    """Make `method` the routing of this MoE: the wrapper calls it, and the backend reads it
    (experts_per_token, routing_method_type) when it builds its kernels' arguments."""
    site.experts.routing_method = method
    if site.wrapped:
        site.compute.routing_method = method


def check_routing_applied(calls: int, num_tokens: int, where: str) -> None:
    """Raise when a layer's forward over num_tokens > 0 tokens never called the OEA apply()."""
    if num_tokens > 0 and calls == 0:
        raise RuntimeError(
            f"{where}: the MoE ran over {num_tokens} tokens without calling the OEA routing method's "
            "apply(): its backend routes on its own and OEA would be silently ignored; use the CUTLASS "
            "MoE backend (LLM(..., moe_config=MoeConfig(backend='CUTLASS')))"
        )
