"""OEA settings in TensorRT-LLM's PyTorch backend, and the routing call it makes; no TensorRT-LLM needed.

How settings reach every worker process: TensorRT-LLM pickles the LLM arguments (llm_args) to
each executor worker, whether LLM(...) MPI-spawned it or it is another rank under
trtllm-llmapi-launch, and there ModelConfig.from_pretrained sets every entry of
llm_args.model_kwargs as an attribute of the model's pretrained config. The settings therefore
ride in model_kwargs[MODEL_KWARGS_KEY] and the OEA model reads them from its own config
(settings_of). The environment is no carrier: MPI-spawned workers see the parent's
environment as it was when MPI started, not what the parent set later.

Everything here is plain Python and torch, so CI checks it: the settings' form, the plan a
Qwen3-MoE config gets, and the exact routing call (context rows first).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Mapping, Optional

import torch

from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.routing.config import CONTEXT, DECODE, OEAConfig
from oea_trt.routing.reference import RoutingResult

#: The model_kwargs entry (hence the pretrained-config attribute) that holds the settings.
MODEL_KWARGS_KEY = "oea_routing"
#: The OEA knobs a user sets; everything else (E, k, renormalize) comes from the model.
SETTING_KEYS = ("k0", "k0_schedule", "layer_k0", "k_max", "max_rank", "top_p", "piggyback_on_context")
DEFAULT_K0 = 3

assert (CONTEXT, DECODE) == (1, 0), "token kinds below are built as (row < num_context_tokens)"


class SettingsMissing(RuntimeError):
    """The OEA model is being built without OEA settings in its config."""


def normalize_settings(settings: Mapping) -> dict:
    """The settings in the JSON-able form they travel in (k0 always present, layer keys as
    strings, schedule as lists). Unknown keys are an error; None values are dropped."""
    if not isinstance(settings, Mapping):
        raise ValueError(f"OEA settings must be a mapping of {list(SETTING_KEYS)}, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"unknown OEA setting(s) {unknown}; known: {list(SETTING_KEYS)}")
    clean = {k: v for k, v in settings.items() if v is not None}
    clean.setdefault("k0", DEFAULT_K0)
    if "layer_k0" in clean:
        clean["layer_k0"] = {str(int(k)): int(v) for k, v in clean["layer_k0"].items()}
    if "k0_schedule" in clean:
        clean["k0_schedule"] = [[int(a), int(b)] for a, b in clean["k0_schedule"]]
    return clean


def with_settings(model_kwargs: Optional[Mapping], settings: Mapping, carrier: Callable[[dict], dict] = dict) -> dict:
    """A copy of `model_kwargs` (TensorRT-LLM's LLM(..., model_kwargs=...)) that carries
    `settings`; `carrier` wraps the normalized settings (the backend passes a dict subclass
    whose unpickling imports it)."""
    out = dict(model_kwargs or {})
    if MODEL_KWARGS_KEY in out:
        raise ValueError(f"model_kwargs already has {MODEL_KWARGS_KEY!r}; pass the OEA settings once")
    out[MODEL_KWARGS_KEY] = carrier(normalize_settings(settings))
    return out


def settings_of(pretrained_config) -> dict:
    """The OEA settings a worker's model config carries; SettingsMissing says how to pass them."""
    raw = getattr(pretrained_config, MODEL_KWARGS_KEY, None)
    if raw is None:
        raise SettingsMissing(
            f"the OEA Qwen3-MoE model is being built without OEA settings (llm_args.model_kwargs"
            f"[{MODEL_KWARGS_KEY!r}] is absent), so it would not know its k0: create the LLM with "
            "LLM(model, **oea_trt.integrations.trtllm_torch.backend.llm_kwargs(k0=3)) or serve with "
            "python -m oea_trt.integrations.trtllm_torch.serve --oea-k0 3 serve MODEL"
        )
    return normalize_settings(raw)


def routing_plan_for(pretrained_config, moe_layers: Iterable[int], settings: Mapping) -> RoutingPlan:
    """The plan of a transformers Qwen3MoeConfig for the layers TensorRT-LLM built as MoE:
    E, k and renormalize (norm_topk_prob) from the model, the knobs from `settings`.

    moe_layers are taken from the built model, not from the HF rule (mlp_only_layers,
    decoder_sparse_step): TensorRT-LLM's Qwen3MoEDecoderLayer builds a Qwen3MoE in every layer."""
    s = normalize_settings(settings)
    layer_k0: Dict[int, int] = {int(k): int(v) for k, v in s.pop("layer_k0", {}).items()}
    schedule = s.pop("k0_schedule", None)
    base = OEAConfig(
        num_experts=int(pretrained_config.num_experts),
        top_k=int(pretrained_config.num_experts_per_tok),
        k0=int(s.pop("k0")),
        renormalize=bool(getattr(pretrained_config, "norm_topk_prob", False)),
        fill="num_experts",
        k0_schedule=tuple(tuple(p) for p in schedule) if schedule else None,
        **s,
    )
    return RoutingPlan(base=base, moe_layers=tuple(sorted(moe_layers)), layer_k0=layer_k0,
                       batch_split="host_request_types")


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
