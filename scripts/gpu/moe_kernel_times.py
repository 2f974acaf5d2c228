#!/usr/bin/env python3
"""Per-kernel GPU durations of one routing+MoE layer call (torch.profiler / CUPTI), to see where
the fixed cost of the layer goes: routing, gate/up, down, combine, and the gaps between them.
Qwen3-30B-A3B layer, skewed routing, B=16, vanilla and OEA k0=3; eager launches over 12 rotated
weight copies (no call finds its experts in L2). Prints one table per case.
    python3 scripts/gpu/moe_kernel_times.py [--impl triton] [--batch 16]
"""
import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from oea_trt.routing.config import OEAConfig  # noqa: E402
from oea_trt.routing.dispatch import route  # noqa: E402
from oea_trt.moe import IMPLS, ExpertWeights, moe_forward  # noqa: E402
from oea_trt.moe.shapes import get_preset  # noqa: E402
from oea_trt.routing.synthetic import skewed_logits  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--impl", default="triton", choices=list(IMPLS))
p.add_argument("--batch", type=int, default=16)
p.add_argument("--copies", type=int, default=12)
args = p.parse_args()
shape = get_preset("qwen3-30b-a3b")
weights = [ExpertWeights.random(shape, device="cuda", seed=s) for s in range(args.copies)]
x = torch.randn(args.batch, shape.hidden_size, device="cuda", dtype=torch.bfloat16)
for k0 in (8, 3):
    cfg = OEAConfig(num_experts=128, top_k=8, k0=k0)
    logits = [skewed_logits(args.batch, 128, seed=c, dtype=torch.bfloat16, device="cuda") for c in range(args.copies)]

    def call(i):
        r = route(logits[i], cfg)
        return moe_forward(x, weights[i], r, impl=args.impl), r

    for i in range(args.copies):
        call(i)
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for rep in range(3):
            for i in range(args.copies):
                call(i)
        torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type.name == "CUDA"]
    dur = collections.defaultdict(list)
    for e in events:
        dur[e.name[:60]].append(e.device_time if hasattr(e, "device_time") else e.cuda_time)
    T = sum(int(route(lg, cfg).num_active) for lg in logits) / len(logits)
    print(f"== k0={k0} ({'vanilla' if k0 == 8 else 'OEA'}), B={args.batch}, mean T={T:.1f}, "
          f"floor at 4.26 TB/s = {T * shape.expert_bytes / 4.26e6:.1f} us")
    total = 0.0
    for name, ds in sorted(dur.items(), key=lambda kv: -sum(kv[1])):
        avg = sum(ds) / len(ds)
        total += avg * len(ds) / (3 * args.copies)
        print(f"  {name:60s} n={len(ds):4d} avg {avg:8.2f} us")
    print(f"  sum of kernel time per call: {total:.1f} us")
