#!/usr/bin/env python3
"""Per-call latency of the routing kernel under the launch options in the environment
(OEA_ROUTING_PDL, OEA_ROUTING_MAX_CLUSTER, OEA_ROUTING_WARPS_PER_CTA, ...), for A/B runs.

Each option set needs its own process (the library reads its options once), so
scripts/gpu/kernel.sh and scripts/gpu/routing_sass_profile.sh run this once per variant. Same measurement as
benchmarks/bench_routing.py (100 calls per graph, 4 rotated skewed bf16 inputs, median of 7),
after checking the kernel against the reference on those inputs. Prints one JSON line.
    OEA_ROUTING_PDL=1 python3 scripts/gpu/routing_variants.py --label pdl --tokens 1 16 64
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from oea_trt.bench.timing import capture_graph, time_graph  # noqa: E402
from oea_trt.routing.config import OEAConfig  # noqa: E402
from oea_trt.routing.kernel import route_kernel  # noqa: E402
from oea_trt.routing.reference import oea_route  # noqa: E402
from oea_trt.routing.synthetic import skewed_logits  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", required=True)
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 32, 64, 256])
    p.add_argument("--k0", type=int, nargs="+", default=[3, 8])
    p.add_argument("--calls", type=int, default=100)
    args = p.parse_args()
    out = {"label": args.label, "env": {k: v for k, v in os.environ.items() if k.startswith("OEA_ROUTING")},
           "us": {}, "errors": []}
    for T in args.tokens:
        copies = [skewed_logits(T, 128, seed=100 * T + c, dtype=torch.bfloat16, device="cuda") for c in range(4)]
        for k0 in args.k0:
            cfg = OEAConfig(num_experts=128, top_k=8, k0=k0)
            bad = [i for i, x in enumerate(copies)
                   if not torch.equal(route_kernel(x, cfg).expert_ids, oea_route(x, cfg).expert_ids)]
            if bad:
                out["errors"].append(f"T={T} k0={k0}: ids differ from the reference on inputs {bad}")
                continue

            def work(cfg=cfg):
                for i in range(args.calls):
                    route_kernel(copies[i % 4], cfg)

            graph = capture_graph(work)
            out["us"][f"{T}/{k0}"] = round(time_graph(graph, calls=args.calls, repeats=7, replays=3).median_us, 3)
            del graph
    print(json.dumps(out))
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
