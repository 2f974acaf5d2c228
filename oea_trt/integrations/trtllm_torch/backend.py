"""OEA for TensorRT-LLM 1.2.1's PyTorch backend (its default: LLM(...), trtllm-serve, trtllm-bench).

    from oea_trt.integrations.trtllm_torch.backend import llm_kwargs
    llm = LLM("/models/Qwen3-30B-A3B", tensor_parallel_size=2, **llm_kwargs(k0=3))

How every worker process gets OEA (LLM(...) runs its executor in MPI-spawned workers;
trtllm-llmapi-launch runs the other ranks as tensorrt_llm.llmapi.mgmn_worker_node):
- the model class: @register_auto_model("Qwen3MoeForCausalLM") puts OEAQwen3MoeForCausalLM in
  MODEL_CLASS_MAPPING when this module is imported. GenerationExecutorProxy submits
  worker_main(..., _torch_model_class_mapping=MODEL_CLASS_MAPPING) and worker_main updates the
  worker's mapping with it; our class travels by reference, so unpickling it imports this module.
- the settings: llm_kwargs() puts them in llm_args.model_kwargs (settings.py), which every
  worker applies to the model's pretrained config. They travel as a RoutingRequest, a dict
  defined here: any process that unpickles the LLM arguments imports this module, so the OEA
  class is registered there even where the class mapping would not be forwarded.
- the refusal: the OEA model will not build without settings (no silent default k0), will not
  install into a MoE whose routing never reaches apply() (install.py), and OEAQwen3MoE raises at
  the first forward of a layer whose MoE did not call apply().

Each MoE layer's routing_method becomes OEAMoeRoutingMethod, whose apply(router_logits) runs the
torch op oea_trt::route (oea_trt.routing.dispatch.route) and returns (int32 [T, k_max] ids, fp32
[T, k_max] weights); no host sync, as apply() is captured in CUDA graphs. Importing this module
needs TensorRT-LLM.
"""
from __future__ import annotations

import torch
from tensorrt_llm._torch.models.modeling_qwen3_moe import Qwen3MoE, Qwen3MoeForCausalLM
from tensorrt_llm._torch.models.modeling_utils import MODEL_CLASS_MAPPING, register_auto_model
from tensorrt_llm._torch.modules.fused_moe.routing import BaseMoeRoutingMethod

from oea_trt.integrations.trtllm_torch.install import (check_installable, check_routing_applied, fill_for,
                                                       install_routing, moe_site)
from oea_trt.integrations.trtllm_torch.settings import (route_packed_batch, routing_plan_for, settings_of,
                                                        with_settings)
from oea_trt.routing.config import OEAConfig

__all__ = ["OEAMoeRoutingMethod", "OEAQwen3MoE", "OEAQwen3MoeForCausalLM", "RoutingRequest", "check_registered",
           "install_oea", "llm_kwargs"]

ARCHITECTURE = "Qwen3MoeForCausalLM"


def dispatch_route(router_logits: torch.Tensor, config: OEAConfig, token_kind):
    from oea_trt.routing.dispatch import route  # the CUDA kernel's torch op oea_trt::route

    return route(router_logits, config, token_kind)


class RoutingRequest(dict):
    """The OEA settings inside llm_args.model_kwargs. A dict to TensorRT-LLM (JSON-able, copied,
    set on the pretrained config); pickled by reference to this class, so unpickling it in a
    worker imports this module and registers the OEA model there."""


class OEAMoeRoutingMethod(BaseMoeRoutingMethod):
    """OEA routing for one MoE layer. num_context_tokens is set by OEAQwen3MoE before each
    forward from the attention metadata; calls counts apply() for OEAQwen3MoE's check."""

    def __init__(self, config: OEAConfig):
        super().__init__()
        self.config = config
        self.top_k = config.k_max  # BaseMoeRoutingMethod.experts_per_token reads top_k
        self.num_context_tokens = 0
        self.calls = 0

    def apply(self, router_logits: torch.Tensor):
        self.calls += 1
        return route_packed_batch(router_logits, self.config, self.num_context_tokens, dispatch_route)


class OEAQwen3MoE(Qwen3MoE):
    """Qwen3MoE that tells its routing method where the context tokens end, and fails when
    its MoE ran without calling that routing method."""

    oea_layer: int

    def forward(self, hidden_states, attn_metadata, *args, **kwargs):
        method = self.experts.routing_method
        method.num_context_tokens = int(getattr(attn_metadata, "num_ctx_tokens", 0) or 0)
        calls = method.calls
        out = super().forward(hidden_states, attn_metadata, *args, **kwargs)
        num_tokens = hidden_states.numel() // hidden_states.shape[-1]
        check_routing_applied(method.calls - calls, num_tokens, f"layer {self.oea_layer} ({type(self.experts).__name__})")
        return out


def install_oea(moe: Qwen3MoE, config: OEAConfig, layer_idx: int) -> OEAMoeRoutingMethod:
    """Route one Qwen3MoE with OEA (in place; parameters untouched)."""
    site = moe_site(moe.experts)
    check_installable(site, config, layer_idx)
    method = OEAMoeRoutingMethod(config.replace(fill=fill_for(site)))
    install_routing(site, method)
    moe.__class__ = OEAQwen3MoE
    moe.oea_layer = layer_idx
    return method


@register_auto_model(ARCHITECTURE)
class OEAQwen3MoeForCausalLM(Qwen3MoeForCausalLM):
    def __init__(self, model_config):
        super().__init__(model_config)
        pretrained = model_config.pretrained_config
        settings = settings_of(pretrained)  # raises: no silent default in a worker
        layers = list(self.model.layers[: int(pretrained.num_hidden_layers)])
        moe_layers = [i for i, layer in enumerate(layers) if isinstance(getattr(layer, "mlp", None), Qwen3MoE)]
        self.oea_routing = routing_plan_for(pretrained, moe_layers, settings)
        for idx in moe_layers:
            install_oea(layers[idx].mlp, self.oea_routing.config_for_layer(idx), idx)


def check_registered() -> None:
    """Raise unless this process would build the OEA model for Qwen3-MoE checkpoints (its
    MODEL_CLASS_MAPPING is what the executor proxy forwards to the workers)."""
    registered = MODEL_CLASS_MAPPING.get(ARCHITECTURE)
    if registered is not OEAQwen3MoeForCausalLM:
        raise RuntimeError(
            f"{ARCHITECTURE} is registered to {getattr(registered, '__qualname__', registered)!r}, not the OEA "
            "model: something registered it after oea_trt.integrations.trtllm_torch.backend was imported; "
            "import this module last"
        )


def llm_kwargs(model_kwargs=None, **settings) -> dict:
    """Keyword arguments for TensorRT-LLM's LLM(...) that route every Qwen3-MoE layer with OEA in
    every worker. settings: k0, k0_schedule, layer_k0, k_max, max_rank, top_p,
    piggyback_on_context (settings.SETTING_KEYS); model_kwargs: your own, kept."""
    check_registered()
    return {"model_kwargs": with_settings(model_kwargs, settings, carrier=RoutingRequest)}
