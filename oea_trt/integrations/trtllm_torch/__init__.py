"""TensorRT-LLM's PyTorch backend with OEA routing.

    settings.py  the settings as they travel in llm_args.model_kwargs, the plan, packed-batch routing
    install.py   putting OEA into the MoE modules TensorRT-LLM built, and the checks that it took
    backend.py   OEAMoeRoutingMethod, the Qwen3MoeForCausalLM registration, llm_kwargs() (needs TensorRT-LLM)
    serve.py     `trtllm-serve` with the registration loaded and the settings in its LLM arguments
settings.py and install.py need no TensorRT-LLM; CI tests them.
"""
