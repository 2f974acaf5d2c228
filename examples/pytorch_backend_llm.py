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
import sys

from oea_trt.cli import HelpFormatter, Parser, add_debug_flag
from oea_trt.cli.failures import debug_from_env, run_reporting_failures
from oea_trt.cli.types import positive_int
from oea_trt.inputs import InputError, check_model_dir

PROG = "pytorch_backend_llm.py"


class Description(HelpFormatter):
    def _fill_text(self, text, width, indent):
        return "".join(indent + line for line in text.splitlines(keepends=True))


def parse_args(argv=None):
    p = Parser(prog=PROG, description=__doc__, formatter_class=Description)
    p.add_argument("model", help="Hugging Face Qwen3-MoE directory")
    p.add_argument("--k0", type=positive_int, default=3, help="baseline experts per decode token")
    p.add_argument("--tp-size", type=positive_int, default=1, help="tensor parallel size (GPUs)")
    p.add_argument("--max-tokens", type=positive_int, default=64, help="tokens to generate per prompt")
    p.add_argument("--prompt", action="append", help="prompt (repeatable)")
    add_debug_flag(p)
    return p.parse_args(argv)


def run(args) -> int:
    spec = check_model_dir(args.model, "MODEL", tokenizer=True)
    if args.k0 > spec.top_k:
        raise InputError(f"--k0 must be in [1, top_k={spec.top_k}] for this model, got {args.k0}")
    try:  # registers the OEA Qwen3-MoE class; needs TensorRT-LLM, so only once the inputs are good
        from oea_trt.integrations.trtllm_torch import backend as torch_backend
    except ImportError as exc:
        raise InputError(f"this example needs TensorRT-LLM 1.2.1 ({exc}); run it inside NVIDIA's "
                         "nvcr.io/nvidia/tensorrt-llm/release:1.2.1 container") from None

    from tensorrt_llm import LLM, SamplingParams

    llm = LLM(model=args.model, tensor_parallel_size=args.tp_size, **torch_backend.llm_kwargs(k0=args.k0))
    prompts = args.prompt or ["The capital of France is", "Mixture-of-experts models are fast because"]
    for out in llm.generate(prompts, SamplingParams(max_tokens=args.max_tokens)):
        print(f"--- {out.prompt!r}\n{out.outputs[0].text}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_reporting_failures(lambda: run(args), PROG, debug=args.debug or debug_from_env())


if __name__ == "__main__":
    sys.exit(main())
