"""`trtllm-serve` with OEA routing for Qwen3-MoE (TensorRT-LLM's PyTorch backend):

    TLLM_WORKER_USE_SINGLE_PROCESS=1 python -m oea_trt.integrations.trtllm_torch.serve --oea-k0 3 serve /models/Qwen3-30B-A3B

Imports oea_trt.integrations.trtllm_torch.backend (which registers our Qwen3MoeForCausalLM over TensorRT-LLM's)
and stores the --oea-* settings in the environment, then hands the remaining arguments to
TensorRT-LLM's own trtllm-serve entry point (tensorrt_llm.commands.serve:main, a Click group).
The registration exists in this process: TLLM_WORKER_USE_SINGLE_PROCESS=1 keeps the executor
worker in it (single GPU). See docs/trtllm.md for multi-GPU.
"""
from __future__ import annotations

import argparse
import sys

from oea_trt.routing.config import parse_k0_schedule
from oea_trt.plan.routing_plan import parse_layer_k0


def split_args(argv):
    p = argparse.ArgumentParser(prog="python -m oea_trt.integrations.trtllm_torch.serve", add_help=False)
    p.add_argument("--oea-k0", type=int)
    p.add_argument("--oea-k0-schedule")
    p.add_argument("--oea-layer-k0", help="LAYERS:K0,... (e.g. 0-3:8,4-47:3)")
    p.add_argument("--oea-max-rank", type=int)
    return p.parse_known_args(argv)


def main(argv=None) -> int:
    ours, rest = split_args(sys.argv[1:] if argv is None else argv)
    from oea_trt.integrations.trtllm_torch import backend as torch_backend

    settings = {"k0": ours.oea_k0, "max_rank": ours.oea_max_rank}
    if ours.oea_k0_schedule:
        settings["k0_schedule"] = parse_k0_schedule(ours.oea_k0_schedule)
    if ours.oea_layer_k0:
        settings["layer_k0"] = parse_layer_k0(ours.oea_layer_k0, range(10_000))
    torch_backend.configure(**settings)
    from tensorrt_llm.commands.serve import main as trtllm_serve

    sys.argv = ["trtllm-serve", *rest]
    return trtllm_serve()


if __name__ == "__main__":
    sys.exit(main())
