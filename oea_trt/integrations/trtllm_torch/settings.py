"""Settings and the routing step of OEA in TensorRT-LLM's PyTorch backend, without TensorRT-LLM.

torch_backend.py (which needs TensorRT-LLM) wires these into Qwen3MoeForCausalLM; everything
here is plain torch so CI checks it: the settings round trip through the environment (that is
how worker processes receive them), the plan a Qwen3-MoE config gets, and the exact routing
call (context rows first, fill = num_experts).
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional

import torch

from oea_trt.routing.config import CONTEXT, DECODE, OEAConfig
from oea_trt.routing.reference import RoutingResult
from oea_trt.plan.routing_plan import RoutingPlan

#: Where configure() puts the settings, so child processes that import torch_backend see them.
ENV_VAR = "OEA_TRT_TORCH_ROUTING"
#: The PyTorch backend's fused MoE skips slots holding num_experts.
TORCH_FILL = "num_experts"
SETTING_KEYS = ("k0", "k0_schedule", "layer_k0", "k_max", "max_rank", "top_p", "piggyback_on_context")
DEFAULT_K0 = 3

assert (CONTEXT, DECODE) == (1, 0), "token kinds below are built as (row < num_context_tokens)"


def configure(**settings) -> dict:
    """Set the OEA knobs for Qwen3-MoE models built after this call, in this process and in
    children (they inherit the environment). Keys: SETTING_KEYS. Returns what was stored."""
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"unknown OEA setting(s) {unknown}; known: {list(SETTING_KEYS)}")
    clean = {k: v for k, v in settings.items() if v is not None}
    if "layer_k0" in clean:
        clean["layer_k0"] = {str(k): int(v) for k, v in clean["layer_k0"].items()}
    if "k0_schedule" in clean:
        clean["k0_schedule"] = [list(p) for p in clean["k0_schedule"]]
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
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"{ENV_VAR} has unknown OEA setting(s) {unknown}; known: {list(SETTING_KEYS)}")
    return settings


def routing_plan_for(pretrained_config, settings: Optional[dict] = None) -> RoutingPlan:
    """The plan of a transformers Qwen3MoeConfig: E, k, renormalize (norm_topk_prob) and which
    layers are MoE from the model; the knobs from `settings` (default current_settings())."""
    s = dict(current_settings() if settings is None else settings)
    layer_k0: Dict[int, int] = {int(k): int(v) for k, v in (s.pop("layer_k0", None) or {}).items()}
    schedule = s.pop("k0_schedule", None)
    num_layers = int(pretrained_config.num_hidden_layers)
    mlp_only = set(getattr(pretrained_config, "mlp_only_layers", None) or [])
    step = int(getattr(pretrained_config, "decoder_sparse_step", 1) or 1)
    num_experts = int(pretrained_config.num_experts)
    moe_layers = tuple(i for i in range(num_layers) if i not in mlp_only and num_experts > 0 and (i + 1) % step == 0)
    base = OEAConfig(
        num_experts=num_experts,
        top_k=int(pretrained_config.num_experts_per_tok),
        k0=int(s.pop("k0", DEFAULT_K0)),
        renormalize=bool(getattr(pretrained_config, "norm_topk_prob", False)),
        fill=TORCH_FILL,
        k0_schedule=tuple(tuple(p) for p in schedule) if schedule else None,
        **s,
    )
    return RoutingPlan(base=base, moe_layers=moe_layers, layer_k0=layer_k0, batch_split="host_request_types")


RouteFn = Callable[[torch.Tensor, OEAConfig, Optional[torch.Tensor]], RoutingResult]


def route_packed_batch(router_logits: torch.Tensor, config: OEAConfig, num_context_tokens: int,
                       route: RouteFn):
    """One MoE call of the PyTorch backend: rows [0, num_context_tokens) are context tokens
    (this backend orders context requests first), the rest decode tokens. Returns (int32 ids,
    fp32 weights) [T, k_max]. The token kinds are built on device from a host int with no copy,
    so this is CUDA-graph safe (graphs are captured for generation-only batches: 0 context)."""
    token_kind = None
    if num_context_tokens:
        rows = torch.arange(router_logits.shape[0], device=router_logits.device)
        token_kind = (rows < num_context_tokens).to(torch.int32)  # CONTEXT = 1, DECODE = 0
    result = route(router_logits, config, token_kind)
    return result.expert_ids, result.weights
