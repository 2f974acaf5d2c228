#!/usr/bin/env python3
"""The workload ncu profiles in scripts/gpu/moe_ncu.sh: one Qwen3-30B-A3B MoE layer call
(moe_forward with the tuned config for this GPU), skewed routing at one batch and k0, repeated
over 4 rotated weight copies. Lab code: ncu picks the kernels by name and skips the warm-up.
    python3 scripts/gpu/moe_ncu_driver.py --batch 64 --k0 3 [--calls 8]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from oea_trt.moe import ExpertWeights, moe_forward  # noqa: E402
from oea_trt.moe.shapes import get_preset  # noqa: E402
from oea_trt.moe.tuned import config_for  # noqa: E402
from oea_trt.routing.config import OEAConfig  # noqa: E402
from oea_trt.routing.reference import oea_route  # noqa: E402
from oea_trt.routing.synthetic import skewed_logits  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, default=64)
p.add_argument("--k0", type=int, default=8, help="8: vanilla")
p.add_argument("--calls", type=int, default=8)
args = p.parse_args()
shape = get_preset("qwen3-30b-a3b")
weights = [ExpertWeights.random(shape, device="cuda", seed=s) for s in range(4)]
config = OEAConfig(num_experts=128, top_k=8, k0=args.k0)
logits = skewed_logits(args.batch, 128, seed=5, dtype=torch.bfloat16, device="cuda")
routing = oea_route(logits, config)
x = torch.randn(args.batch, shape.hidden_size, device="cuda", dtype=torch.bfloat16)
print(f"B={args.batch} k0={args.k0} T={int(routing.num_active)} config={config_for(x, weights[0].w13, 8)}", flush=True)
for i in range(args.calls):
    moe_forward(x, weights[i % len(weights)], routing)
torch.cuda.synchronize()
