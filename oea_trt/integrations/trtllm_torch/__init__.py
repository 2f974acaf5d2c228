"""TensorRT-LLM's PyTorch backend with OEA routing.

    settings.py  the routing settings a process serves with, and packed-batch routing (no TensorRT-LLM needed)
    backend.py   OEAMoeRoutingMethod + the Qwen3MoeForCausalLM registration (needs TensorRT-LLM)
    serve.py     `trtllm-serve` with the registration loaded (needs TensorRT-LLM)
"""
