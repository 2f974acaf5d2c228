"""OEA for TensorRT-LLM 1.2.1's PyTorch backend (its default: LLM(...), trtllm-serve).

- OEAMoeRoutingMethod: a BaseMoeRoutingMethod (tensorrt_llm/_torch/modules/fused_moe/routing.py)
  whose apply(router_logits) runs our torch custom op oea_trt::route (oea_trt.dispatch.route)
  and returns (int32 [T, k_max] ids, fp32 [T, k_max] weights), unused slots = num_experts
  (the sentinel this backend's fused MoE skips). No host sync: apply() is captured in CUDA graphs.
- OEAQwen3MoeForCausalLM: TensorRT-LLM's Qwen3MoeForCausalLM
  (tensorrt_llm/_torch/models/modeling_qwen3_moe.py) with the routing method of every MoE
  layer replaced, registered with @register_auto_model("Qwen3MoeForCausalLM") so it is the
  class TensorRT-LLM instantiates for Qwen3-MoE checkpoints once this module is imported.

Settings: configure(k0=..., ...) before creating the LLM; they are also exported in the
environment variable OEA_TRT_TORCH_ROUTING so worker processes that import this module (see
docs/trtllm.md) build the same plan. Importing this module needs TensorRT-LLM.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import torch
from tensorrt_llm._torch.models.modeling_qwen3_moe import Qwen3MoE, Qwen3MoeForCausalLM
from tensorrt_llm._torch.models.modeling_utils import register_auto_model
from tensorrt_llm._torch.modules.fused_moe.routing import BaseMoeRoutingMethod

from ..config import CONTEXT, DECODE, OEAConfig
from .routing_plan import RoutingPlan

ENV_VAR = "OEA_TRT_TORCH_ROUTING"
#: The PyTorch backend's fused MoE skips slots holding num_experts.
TORCH_FILL = "num_experts"
assert (CONTEXT, DECODE) == (1, 0), "token_kind below is built as (row < num_context_tokens)"
_SETTING_KEYS = ("k0", "k0_schedule", "layer_k0", "k_max", "max_rank", "top_p", "piggyback_on_context")


def configure(**settings) -> dict:
    """Set the OEA knobs used by every Qwen3-MoE model built after this call (in this process
    and in child processes that import this module). Keys: k0, k0_schedule, layer_k0, k_max,
    max_rank, top_p, piggyback_on_context. Returns the stored settings."""
    unknown = sorted(set(settings) - set(_SETTING_KEYS))
    if unknown:
        raise ValueError(f"unknown OEA setting(s) {unknown}; known: {list(_SETTING_KEYS)}")
    clean = {k: v for k, v in settings.items() if v is not None}
    if "layer_k0" in clean:
        clean["layer_k0"] = {str(k): int(v) for k, v in clean["layer_k0"].items()}
    os.environ[ENV_VAR] = json.dumps(clean)
    return clean


def current_settings() -> dict:
    raw = os.environ.get(ENV_VAR)
    if not raw:
        return {}
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_VAR} must hold a JSON object of OEA settings ({exc.msg})") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{ENV_VAR} must hold a JSON object of OEA settings, got {type(settings).__name__}")
    return settings


def routing_plan_for(pretrained_config, num_layers: int, settings: Optional[dict] = None) -> RoutingPlan:
    """The plan for a transformers Qwen3MoeConfig: E, k and renormalize from the model,
    the knobs from `settings` (default: current_settings(); k0 defaults to 3)."""
    s = dict(current_settings() if settings is None else settings)
    layer_k0: Dict[int, int] = {int(k): int(v) for k, v in (s.pop("layer_k0", None) or {}).items()}
    schedule = s.pop("k0_schedule", None)
    base = OEAConfig(
        num_experts=int(pretrained_config.num_experts),
        top_k=int(pretrained_config.num_experts_per_tok),
        k0=int(s.pop("k0", 3)),
        renormalize=bool(getattr(pretrained_config, "norm_topk_prob", False)),
        fill=TORCH_FILL,
        k0_schedule=tuple(tuple(p) for p in schedule) if schedule else None,
        **s,
    )
    return RoutingPlan(base=base, moe_layers=tuple(range(num_layers)), layer_k0=layer_k0, batch_split="host_request_types")


class OEAMoeRoutingMethod(BaseMoeRoutingMethod):
    """OEA routing for one MoE layer. num_context_tokens is set by OEAQwen3MoE before each
    forward from the attention metadata (this backend orders context tokens first)."""

    def __init__(self, config: OEAConfig):
        super().__init__()
        if config.fill != TORCH_FILL:
            raise ValueError(f"the PyTorch backend needs fill={TORCH_FILL!r}, got {config.fill!r}")
        self.config = config
        self.top_k = config.k_max  # BaseMoeRoutingMethod.experts_per_token reads top_k
        self.num_context_tokens = 0

    def apply(self, router_logits: torch.Tensor):
        from ..dispatch import route

        num_tokens = router_logits.shape[0]
        token_kind = None
        if self.num_context_tokens:
            # Context rows come first. Built on device from a host int without any copy, so it
            # is also capture-safe (graphs are captured for generation-only batches, where
            # num_context_tokens is 0 and this branch is skipped). CONTEXT == 1, DECODE == 0.
            token_kind = (torch.arange(num_tokens, device=router_logits.device)
                          < self.num_context_tokens).to(torch.int32)
        result = route(router_logits, self.config, token_kind)
        return result.expert_ids, result.weights


class OEAQwen3MoE(Qwen3MoE):
    """Qwen3MoE that tells its routing method where context tokens end."""

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
    moe.__class__ = OEAQwen3MoE
    return method


@register_auto_model("Qwen3MoeForCausalLM")
class OEAQwen3MoeForCausalLM(Qwen3MoeForCausalLM):
    def __init__(self, model_config):
        super().__init__(model_config)
        pretrained = model_config.pretrained_config
        num_layers = int(pretrained.num_hidden_layers)
        self.oea_routing = routing_plan_for(pretrained, num_layers)
        for idx, layer in enumerate(self.model.layers[:num_layers]):
            if isinstance(layer.mlp, Qwen3MoE):
                install_oea(layer.mlp, self.oea_routing.config_for_layer(idx), idx)
