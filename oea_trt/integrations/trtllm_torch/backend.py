"""OEA for TensorRT-LLM 1.2.1's PyTorch backend (its default: LLM(...), trtllm-serve).

- OEAMoeRoutingMethod: a BaseMoeRoutingMethod (tensorrt_llm/_torch/modules/fused_moe/routing.py)
  whose apply(router_logits) runs our torch custom op oea_trt::route (oea_trt.routing.dispatch.route)
  and returns (int32 [T, k_max] ids, fp32 [T, k_max] weights), unused slots = num_experts
  (the sentinel this backend's fused MoE skips). No host sync: apply() is captured in CUDA graphs.
- OEAQwen3MoeForCausalLM: TensorRT-LLM's Qwen3MoeForCausalLM
  (tensorrt_llm/_torch/models/modeling_qwen3_moe.py) with the routing method of every MoE
  layer replaced, registered with @register_auto_model("Qwen3MoeForCausalLM"): once this module
  is imported, it is the class TensorRT-LLM instantiates for Qwen3-MoE checkpoints (the last
  registration of a name wins).

Settings: oea_trt.integrations.trtllm_torch.settings.configure(k0=..., ...) before creating the LLM; they
travel in the environment (OEA_TRT_TORCH_ROUTING), so worker processes that import this module
build the same plan (docs/trtllm.md: TLLM_WORKER_USE_SINGLE_PROCESS=1, or import in workers).
Importing this module needs TensorRT-LLM.
"""
from __future__ import annotations

import torch
from tensorrt_llm._torch.models.modeling_qwen3_moe import Qwen3MoE, Qwen3MoeForCausalLM
from tensorrt_llm._torch.models.modeling_utils import register_auto_model
from tensorrt_llm._torch.modules.fused_moe.routing import BaseMoeRoutingMethod

from oea_trt.routing.config import OEAConfig
from oea_trt.integrations.trtllm_torch.settings import TORCH_FILL, configure, current_settings, route_packed_batch, routing_plan_for

__all__ = ["OEAMoeRoutingMethod", "OEAQwen3MoE", "OEAQwen3MoeForCausalLM", "configure", "current_settings",
           "install_oea"]


def _dispatch_route(router_logits: torch.Tensor, config: OEAConfig, token_kind):
    from oea_trt.routing.dispatch import route  # the CUDA kernel's torch op oea_trt::route

    return route(router_logits, config, token_kind)


class OEAMoeRoutingMethod(BaseMoeRoutingMethod):
    """OEA routing for one MoE layer. num_context_tokens is set by OEAQwen3MoE before each
    forward from the attention metadata."""

    def __init__(self, config: OEAConfig):
        super().__init__()
        if config.fill != TORCH_FILL:
            raise ValueError(f"the PyTorch backend needs fill={TORCH_FILL!r}, got {config.fill!r}")
        self.config = config
        self.top_k = config.k_max  # BaseMoeRoutingMethod.experts_per_token reads top_k
        self.num_context_tokens = 0

    def apply(self, router_logits: torch.Tensor):
        return route_packed_batch(router_logits, self.config, self.num_context_tokens, _dispatch_route)


class OEAQwen3MoE(Qwen3MoE):
    """Qwen3MoE that tells its routing method where the context tokens end."""

    def forward(self, hidden_states, attn_metadata, *args, **kwargs):
        self.experts.routing_method.num_context_tokens = int(getattr(attn_metadata, "num_ctx_tokens", 0) or 0)
        return super().forward(hidden_states, attn_metadata, *args, **kwargs)


def install_oea(moe: Qwen3MoE, config: OEAConfig, layer_idx: int) -> OEAMoeRoutingMethod:
    experts = moe.experts
    backend = type(experts).__name__
    if backend.startswith("TRTLLMGen"):
        # That backend routes inside its fused kernel from routing_method_type and never
        # calls apply(); OEA would be silently ignored.
        raise RuntimeError(
            f"layer {layer_idx}: MoE backend {backend} fuses routing into its kernel; use moe_backend "
            "CUTLASS (the Hopper default) for OEA"
        )
    method = OEAMoeRoutingMethod(config)
    experts.routing_method = method
    moe.__class__ = OEAQwen3MoE  # same module, new forward; parameters untouched
    return method


@register_auto_model("Qwen3MoeForCausalLM")
class OEAQwen3MoeForCausalLM(Qwen3MoeForCausalLM):
    def __init__(self, model_config):
        super().__init__(model_config)
        pretrained = model_config.pretrained_config
        self.oea_routing = routing_plan_for(pretrained)
        for idx, layer in enumerate(self.model.layers[: int(pretrained.num_hidden_layers)]):
            if isinstance(layer.mlp, Qwen3MoE):
                install_oea(layer.mlp, self.oea_routing.config_for_layer(idx), idx)
