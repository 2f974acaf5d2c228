#!/usr/bin/env python3
"""Kernel timeline of routing+MoE calls as a served model replays them: C back-to-back calls
(rotated weight copies, the routing kernel with its early active-set signal ahead of each MoE
call) captured in one CUDA graph, replayed under torch.profiler (CUPTI records each kernel
node). Prints, per case, each kernel's median start and end relative to its call's routing
kernel start, and the median period between calls: where a call's microseconds go (routing,
the gap to the first MoE kernel, each phase, the gaps between launches).
Qwen3-30B-A3B layer, skewed routing. Lab code for issue 20.
    python3 scripts/gpu/moe_timeline.py --batch 1 4 32 64 [--k0 8 3] [--config '{"down": "slots"}']
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from oea_trt.bench.moe_timing import RoutingBatch, layer_call, oea_config  # noqa: E402
from oea_trt.bench.routers import pick_router, route_for_moe  # noqa: E402
from oea_trt.bench.routing_inputs import SyntheticSource  # noqa: E402
from oea_trt.bench.timing import capture_graph  # noqa: E402
from oea_trt.moe import ExpertWeights  # noqa: E402
from oea_trt.moe.shapes import get_preset  # noqa: E402
from oea_trt.moe.triton.config import KernelConfig  # noqa: E402
from oea_trt.moe.tuned import config_for  # noqa: E402

MOE_KERNELS = ("gate_up", "down_kernel", "combine", "one_launch")


def kind(name: str) -> str:
    for k in MOE_KERNELS:
        if k in name:
            return k
    return "routing"


def timeline(events, calls):
    """Per-kernel-kind start/end offsets (us) from each call's routing start, and call periods."""
    events = sorted(events, key=lambda e: e[1])
    starts = [i for i, e in enumerate(events) if e[0] == "routing"]
    offsets, periods = {}, []
    for n, i in enumerate(starts):
        t0 = events[i][1]
        end = starts[n + 1] if n + 1 < len(starts) else len(events)
        if n + 1 < len(starts):
            periods.append(events[starts[n + 1]][1] - t0)
        for name, s, e in events[i:end]:
            offsets.setdefault(name, []).append((s - t0, e - t0))
    return offsets, periods


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 32, 64])
    p.add_argument("--k0", type=int, nargs="+", default=[8, 3])
    p.add_argument("--copies", type=int, default=12)
    p.add_argument("--replays", type=int, default=5)
    p.add_argument("--config", default=None, help="KernelConfig fields as JSON (default: the tuned config)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    shape = get_preset("qwen3-30b-a3b")
    weights = [ExpertWeights.random(shape, device="cuda", seed=s) for s in range(args.copies)]
    router = pick_router("kernel")
    source = SyntheticSource("skewed", shape.num_experts)
    config = KernelConfig.from_dict(json.loads(args.config)) if args.config else None
    fn = layer_call("triton", config)
    results = []
    for b in args.batch:
        batch = RoutingBatch(source, b, args.copies, shape.hidden_size, 0, "cuda", torch.bfloat16)
        for k0 in args.k0:
            cfg = oea_config(shape, k0)

            def work():
                for c in range(args.copies):
                    fn(batch.x[c], weights[c], route_for_moe(router, batch.logits[c], cfg))

            graph = capture_graph(work)
            for _ in range(3):
                graph.replay()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.replays):
                    graph.replay()
                torch.cuda.synchronize()
            events = [(kind(e.name), e.time_range.start, e.time_range.end) for e in prof.events()
                      if e.device_type.name == "CUDA" and e.time_range.end > e.time_range.start]
            offsets, periods = timeline(events, args.copies * args.replays)
            T = statistics.mean(int(route_for_moe(router, lg, cfg).num_active) for lg in batch.logits)
            used = config or config_for(batch.x[0], weights[0].w13, shape.top_k)
            row = {"batch": b, "k0": k0, "T": T, "floor_us_at_3.0TBps": T * shape.expert_bytes / 3.0e6,
                   "period_us": statistics.median(periods) if periods else None, "config": used.to_dict(),
                   "kernels": {k: {"n": len(v), "start_us": statistics.median(s for s, _ in v),
                                   "end_us": statistics.median(e for _, e in v),
                                   "dur_us": statistics.median(e - s for s, e in v)} for k, v in offsets.items()}}
            results.append(row)
            print(f"== B={b} k0={k0} T={T:.1f} period {row['period_us']:.1f} us "
                  f"(floor at 3.0 TB/s {row['floor_us_at_3.0TBps']:.1f}); {used.down}, gu {used.gu_block_n}x"
                  f"{used.gu_block_k} s{used.gu_stages}, dn {used.dn_block_n}x{used.dn_block_k}", flush=True)
            for k, v in sorted(row["kernels"].items(), key=lambda kv: kv[1]["start_us"]):
                print(f"   {k:12s} start {v['start_us']:6.1f}  end {v['end_us']:6.1f}  dur {v['dur_us']:6.1f}  (n={v['n']})")
            del graph
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
