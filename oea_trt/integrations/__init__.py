"""OEA inside other frameworks; each subpackage imports its framework lazily.

    hf/             transformers Qwen3-MoE models, patched in place (eval, the PyTorch runtime)
    trtllm/         TensorRT-LLM 1.2.1 engine backend: build plan, build, OEA MoE layer and model
    trtllm_torch/   TensorRT-LLM's PyTorch backend: the OEA routing method and its registration
    triton_server/  a Triton Inference Server model repository for an OEA engine
"""
