#!/usr/bin/env python3
"""Calls the routing kernel a few times at one batch size, for ncu to profile one launch.
    ncu -k regex:oea_route --launch-skip 4 --launch-count 1 python3 scripts/gpu/routing_profile.py --tokens 16
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from oea_trt.routing.config import OEAConfig  # noqa: E402
from oea_trt.routing.kernel import route_kernel  # noqa: E402
from oea_trt.routing.synthetic import skewed_logits  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--tokens", type=int, default=16)
p.add_argument("--k0", type=int, default=3)
args = p.parse_args()
x = skewed_logits(args.tokens, 128, seed=7, dtype=torch.bfloat16, device="cuda")
cfg = OEAConfig(num_experts=128, top_k=8, k0=args.k0)
for _ in range(8):
    route_kernel(x, cfg)
torch.cuda.synchronize()
