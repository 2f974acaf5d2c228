#!/usr/bin/env python3
"""OEA in TensorRT-LLM 1.2.1's PyTorch backend (the LLM API), inside NVIDIA's
tensorrt-llm/release:1.2.1 container:

  TLLM_WORKER_USE_SINGLE_PROCESS=1 python examples/pytorch_backend_llm.py /models/Qwen3-30B-A3B --k0 3

Importing oea_trt.integrations.trtllm_torch.backend registers OEAQwen3MoeForCausalLM for the architecture
"Qwen3MoeForCausalLM" (every MoE layer's routing method becomes OEAMoeRoutingMethod, running
oea_trt::route); configure() sets k0. TLLM_WORKER_USE_SINGLE_PROCESS=1 keeps the executor worker
in this process, where the registration happened.
"""
import argparse
import os

from oea_trt.integrations.trtllm_torch import backend as torch_backend  # registers the OEA Qwen3-MoE class (needs TensorRT-LLM)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="Hugging Face Qwen3-MoE directory")
    p.add_argument("--k0", type=int, default=3)
    p.add_argument("--tp-size", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt", action="append")
    args = p.parse_args()
    if args.tp_size == 1 and os.environ.get("TLLM_WORKER_USE_SINGLE_PROCESS") != "1":
        print("note: set TLLM_WORKER_USE_SINGLE_PROCESS=1 so the worker sees the OEA registration")
    torch_backend.configure(k0=args.k0)

    from tensorrt_llm import LLM, SamplingParams

    llm = LLM(model=args.model, tensor_parallel_size=args.tp_size)
    prompts = args.prompt or ["The capital of France is", "Mixture-of-experts models are fast because"]
    for out in llm.generate(prompts, SamplingParams(max_tokens=args.max_tokens)):
        print(f"--- {out.prompt!r}\n{out.outputs[0].text}")


if __name__ == "__main__":
    main()
