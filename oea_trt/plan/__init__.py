"""What a model's OEA routing is, independent of the framework that runs it.

    hf_config.py     a Hugging Face Qwen3-MoE config.json -> Qwen3MoeSpec (MoE layers, E, k, shapes)
    routing_plan.py  RoutingPlan: one OEAConfig + per-layer k0, as stored in checkpoint/engine configs
    config_file.py   oea_config.json, written next to every engine, read by every runtime and by
                     `oea-trt build --routing-config`
Used alike by the TensorRT-LLM integrations, the Python runtime and the Triton repository writer.
"""
from oea_trt.plan.hf_config import HFConfigError, Qwen3MoeSpec, qwen3_moe_spec
from oea_trt.plan.routing_plan import RoutingPlan, parse_layer_k0

__all__ = ["HFConfigError", "Qwen3MoeSpec", "RoutingPlan", "parse_layer_k0", "qwen3_moe_spec"]
