"""Fused MoE modules as create_moe builds them. Expert e scales its input by (e + 1), so a
layer's output tells which experts, with which weights, it computed."""
import os

import torch
from torch import nn


class MoE(nn.Module):
    def __init__(self, routing_method, num_experts, ep_size=1, layer_idx=None):
        super().__init__()
        self.routing_method = routing_method
        self.num_experts = num_experts
        self.num_slots = num_experts
        self.ep_size = ep_size
        self.layer_idx = layer_idx
        self.layer_load_balancer = None

    def compute(self, x, ids, weights):
        """Skips ids outside [0, num_experts), as the CUTLASS MoE does on one rank."""
        valid = (ids >= 0) & (ids < self.num_experts)
        scale = torch.where(valid, (ids + 1).float(), torch.zeros_like(weights)) * weights
        return x * scale.sum(dim=-1, keepdim=True)


class CutlassFusedMoE(MoE):
    def _supports_load_balancer(self):
        return True

    def forward(self, x, router_logits, **kwargs):
        ids, weights = self.routing_method.apply(router_logits)
        return self.compute(x, ids, weights)


class TRTLLMGenFusedMoE(MoE):
    """Routes inside its kernel (plain top-k) unless attention DP makes routing separate."""

    def __init__(self, *args, use_dp=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.use_dp = use_dp

    def _supports_load_balancer(self):
        return self.use_dp

    def forward(self, x, router_logits, **kwargs):
        values, ids = torch.topk(router_logits.float(), self.routing_method.experts_per_token, dim=-1)
        return self.compute(x, ids, torch.softmax(values, dim=-1))


class ConfigurableMoE(MoE):
    def __init__(self, backend, **kwargs):
        super().__init__(**kwargs)
        self.backend = backend

    def forward(self, x, router_logits, **kwargs):
        if self.backend._supports_load_balancer():
            ids, weights = self.routing_method.apply(router_logits)
            assert ids.shape[1] == self.routing_method.experts_per_token
            return self.backend.compute(x, ids, weights)
        return self.backend(x, router_logits)


BACKENDS = {"CUTLASS": CutlassFusedMoE, "TRTLLM": TRTLLMGenFusedMoE}


def create_moe(routing_method, num_experts, model_config, layer_idx=None):
    cls = BACKENDS[model_config.moe_backend]
    kwargs = dict(routing_method=routing_method, num_experts=num_experts, ep_size=model_config.ep_size,
                  layer_idx=layer_idx)
    extra = {"use_dp": model_config.use_dp} if cls is TRTLLMGenFusedMoE else {}
    if os.environ.get("ENABLE_CONFIGURABLE_MOE", "1") == "1":
        return ConfigurableMoE(backend=cls(**kwargs, **extra), **kwargs)
    return cls(**kwargs, **extra)
