#!/usr/bin/env python3
"""MoE decode layer benchmark: the same code as `oea-trt bench moe` (oea_trt/bench/moe.py).

    python3 benchmarks/bench_moe.py --preset qwen3-30b-a3b --batch 1 16 64 --out /tmp/moe
    python3 benchmarks/bench_moe.py --help
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from oea_trt.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", "moe", *sys.argv[1:]]))
