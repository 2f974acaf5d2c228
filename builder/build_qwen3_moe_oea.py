#!/usr/bin/env python3
"""Build a Qwen3-MoE TensorRT-LLM 1.2.1 engine with OEA routing.

A thin script over the one implementation (oea_trt.integrations.trtllm.build, the same code as
`oea-trt build`): it accepts exactly the `oea-trt build` arguments, e.g.

  python builder/build_qwen3_moe_oea.py /models/Qwen3-30B-A3B -o /engines/qwen3-30b-oea --k0 3 --dry-run
"""
import sys

from oea_trt.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
