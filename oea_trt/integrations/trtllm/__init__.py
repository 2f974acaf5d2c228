"""TensorRT-LLM 1.2.1 integration of OEA routing.

Plain (no TensorRT-LLM needed; CI tests them):
  hf_config      Hugging Face Qwen3-MoE config.json -> Qwen3MoeSpec (MoE layers, E, k, shapes)
  routing_plan   RoutingPlan: shared OEAConfig + per-layer k0, stored in checkpoint/engine configs
  build_plan     BuildOptions -> BuildPlan (what `oea-trt build --dry-run` prints)
  oea_config_file  oea_config.json written next to every engine
  plugin_binding the one door to oea_trt.plugin (plugin name, fields, library loading)
Need TensorRT-LLM (import them explicitly; `import oea_trt.integrations.trtllm` never does):
  build          the build itself (convert, patch config, trtllm-build, oea_config.json)
  layer, model   OEAMixtureOfExperts and OEAQwenForCausalLM for the TensorRT engine backend
  model_cls_file the file trtllm-build --model_cls_file loads
  torch_backend  OEAMoeRoutingMethod + the Qwen3MoeForCausalLM registration for the PyTorch backend
"""
from oea_trt.integrations.trtllm.build_plan import BuildOptions, BuildPlan, BuildPlanError, make_plan
from oea_trt.plan.hf_config import HFConfigError, Qwen3MoeSpec, qwen3_moe_spec
from oea_trt.plan.routing_plan import RoutingPlan, parse_layer_k0

__all__ = ["BuildOptions", "BuildPlan", "BuildPlanError", "HFConfigError", "Qwen3MoeSpec", "RoutingPlan",
           "make_plan", "parse_layer_k0", "qwen3_moe_spec"]
