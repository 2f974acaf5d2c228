"""What a runtime path means for the PyTorch runtimes: the Hugging Face model directory to load
and the routing plan to use (an engine directory names its HF directory and carries its plan in
oea_config.json; a plain HF directory gets the default plan, k0 = 3 on every MoE layer)."""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

from oea_trt.plan.config_file import FILE_NAME, read_engine_config, routing_from_engine_config
from oea_trt.plan.hf_config import qwen3_moe_spec
from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.routing.config import OEAConfig

DEFAULT_K0 = 3


def default_routing(hf_dir: str, k0: Optional[int] = None, k0_schedule=None,
                    layer_k0: Optional[Dict[int, int]] = None) -> RoutingPlan:
    spec = qwen3_moe_spec(hf_dir)
    base = OEAConfig(num_experts=spec.num_experts, top_k=spec.top_k, k0=DEFAULT_K0 if k0 is None else k0,
                     renormalize=spec.norm_topk_prob, k0_schedule=k0_schedule)
    return RoutingPlan(base=base, moe_layers=tuple(spec.moe_layers), layer_k0=dict(layer_k0 or {}))


def resolve(path: str, routing: Optional[RoutingPlan] = None, k0: Optional[int] = None, k0_schedule=None,
            layer_k0: Optional[Dict[int, int]] = None) -> Tuple[str, RoutingPlan]:
    """(HF directory, routing plan) for `path`; k0 / k0_schedule / layer_k0 override the plan."""
    hf_dir = path
    if os.path.isfile(os.path.join(path, FILE_NAME)):
        content = read_engine_config(path)
        hf_dir = (content.get("model") or {}).get("hf_dir") or path
        routing = routing or routing_from_engine_config(content)
    if routing is None:
        routing = default_routing(hf_dir, k0, k0_schedule, layer_k0)
    elif k0 is not None or k0_schedule is not None or layer_k0 is not None:
        routing = routing.with_k0(k0=k0, layer_k0=layer_k0, k0_schedule=k0_schedule)
    return hf_dir, routing


def load_tokenizer(hf_dir: str):
    """The model's tokenizer, left-padding (generation continues from every row's right end)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
