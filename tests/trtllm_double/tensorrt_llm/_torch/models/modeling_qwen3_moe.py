"""Qwen3MoE in every decoder layer, whatever mlp_only_layers says (as TensorRT-LLM builds it)."""
import torch
from torch import nn

from ..modules.fused_moe.create_moe import create_moe
from ..modules.fused_moe.routing import RenormalizeMoeRoutingMethod
from .modeling_utils import register_auto_model


class Qwen3MoE(nn.Module):
    def __init__(self, model_config, layer_idx=None):
        super().__init__()
        config = model_config.pretrained_config
        generator = torch.Generator().manual_seed(1000 + (layer_idx or 0))
        self.gate = nn.Parameter(torch.randn(config.num_experts, config.hidden_size, generator=generator),
                                 requires_grad=False)
        self.experts = create_moe(RenormalizeMoeRoutingMethod(config.num_experts_per_tok), config.num_experts,
                                  model_config, layer_idx=layer_idx)

    def forward(self, hidden_states, attn_metadata, all_reduce_params=None, do_finalize=True, lora_params=None):
        return self.experts(hidden_states, hidden_states @ self.gate.t())


class Qwen3MoEDecoderLayer(nn.Module):
    def __init__(self, model_config, layer_idx):
        super().__init__()
        self.mlp = Qwen3MoE(model_config, layer_idx=layer_idx)


class Qwen3MoEModel(nn.Module):
    def __init__(self, model_config):
        super().__init__()
        n = model_config.pretrained_config.num_hidden_layers
        self.layers = nn.ModuleList([Qwen3MoEDecoderLayer(model_config, i) for i in range(n)])


@register_auto_model("Qwen3MoeForCausalLM")
class Qwen3MoeForCausalLM(nn.Module):
    def __init__(self, model_config):
        super().__init__()
        self.model_config = model_config
        self.model = Qwen3MoEModel(model_config)

    def forward(self, hidden_states, attn_metadata):
        for layer in self.model.layers:
            hidden_states = layer.mlp(hidden_states, attn_metadata)
        return hidden_states
