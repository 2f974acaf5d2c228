#!/usr/bin/env python3
"""OEA in TensorRT-LLM 1.2.1's PyTorch backend (the LLM API), inside NVIDIA's
tensorrt-llm/release:1.2.1 container:

  python examples/pytorch_backend_llm.py /models/Qwen3-30B-A3B --k0 3
  python examples/pytorch_backend_llm.py /models/Qwen3-235B-A22B --k0 5 --tp-size 8
  trtllm-llmapi-launch python examples/pytorch_backend_llm.py ...   (multi-node, under mpirun/srun)

Importing oea_trt.integrations.trtllm_torch.backend registers OEAQwen3MoeForCausalLM for the
architecture "Qwen3MoeForCausalLM" (every MoE layer's routing method becomes OEAMoeRoutingMethod,
running oea_trt::route); llm_kwargs(k0=...) puts the settings into the LLM arguments. TensorRT-LLM
hands both to every executor worker, spawned or launched, and a worker without the settings
refuses to build the model (docs/trtllm.md).
"""
import argparse

from oea_trt.integrations.trtllm_torch import backend  # registers the OEA Qwen3-MoE class (needs TensorRT-LLM)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="Hugging Face Qwen3-MoE directory")
    p.add_argument("--k0", type=int, default=3)
    p.add_argument("--tp-size", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompt", action="append")
    args = p.parse_args()

    from tensorrt_llm import LLM, SamplingParams

    llm = LLM(model=args.model, tensor_parallel_size=args.tp_size, **backend.llm_kwargs(k0=args.k0))
    prompts = args.prompt or ["The capital of France is", "Mixture-of-experts models are fast because"]
    for out in llm.generate(prompts, SamplingParams(max_tokens=args.max_tokens)):
        print(f"--- {out.prompt!r}\n{out.outputs[0].text}")


if __name__ == "__main__":
    main()
