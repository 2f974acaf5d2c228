"""TensorRT-LLM 1.2.1 engine backend integration of OEA routing.

Plain (no TensorRT-LLM needed; CI tests them):
  build_plan     BuildOptions -> BuildPlan (what `oea-trt build --dry-run` prints)
  launch         runs a command on an engine with the OEA plugin preloaded in all its processes
  (the model facts, routing plan and oea_config.json live in oea_trt.plan; the plugin door is oea_trt.plugin)
Need TensorRT-LLM (import them explicitly; `import oea_trt.integrations.trtllm` never does):
  build          the build itself (convert, patch config, trtllm-build, oea_config.json)
  layer, model   OEAMixtureOfExperts and OEAQwenForCausalLM for the TensorRT engine backend
  model_cls_file the file trtllm-build --model_cls_file loads
The PyTorch backend is oea_trt.integrations.trtllm_torch.
"""
from oea_trt.integrations.trtllm.build_plan import BuildOptions, BuildPlan, BuildPlanError, make_plan
from oea_trt.plan.hf_config import HFConfigError, Qwen3MoeSpec, qwen3_moe_spec
from oea_trt.plan.routing_plan import RoutingPlan, parse_layer_k0

__all__ = ["BuildOptions", "BuildPlan", "BuildPlanError", "HFConfigError", "Qwen3MoeSpec", "RoutingPlan",
           "make_plan", "parse_layer_k0", "qwen3_moe_spec"]
