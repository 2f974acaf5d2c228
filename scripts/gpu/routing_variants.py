#!/usr/bin/env python3
"""Per-call latency of the routing kernel under one launch variant, for A/B runs.

The variant is --pdl (programmatic dependent launch on / off / auto) plus the experiment knobs
of plugin/oea_routing.cu in the environment (OEA_ROUTING_MAX_CLUSTER, OEA_ROUTING_WARPS_PER_CTA,
OEA_ROUTING_GENERAL, OEA_ROUTING_FORCE_MULTIBLOCK), which only a library built with
OEA_ROUTING_DEBUG_KNOBS reads: --library, by default that build of the package's CMake project
for this GPU (built once into the cache). The library reads the knobs once, so
scripts/gpu/kernel.sh and scripts/gpu/routing_sass_profile.sh run this once per variant. Same
measurement as benchmarks/bench_routing.py (100 calls per graph, 4 rotated skewed bf16 inputs,
median of 7), after checking the kernel against the reference on those inputs. Prints one
JSON line.
    OEA_ROUTING_WARPS_PER_CTA=16 python3 scripts/gpu/routing_variants.py --label w16 --tokens 1 16 64
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
from oea_trt.routing.library import build_library, current_arch, use_library  # noqa: E402
from oea_trt.routing.reference import oea_route  # noqa: E402
from oea_trt.routing.synthetic import skewed_logits  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--label", required=True)
    p.add_argument("--tokens", type=int, nargs="+", default=[1, 16, 32, 64, 256])
    p.add_argument("--k0", type=int, nargs="+", default=[3, 8])
    p.add_argument("--calls", type=int, default=100)
    p.add_argument("--pdl", choices=["auto", "on", "off"], default="auto",
                   help="programmatic dependent launch (auto: on where the GPU supports it)")
    p.add_argument("--library", help="liboea_routing.so to time (default: the debug-knob build for this GPU)")
    args = p.parse_args()
    library = use_library(args.library or build_library(current_arch(), debug_knobs=True))
    pdl = {"auto": None, "on": True, "off": False}[args.pdl]
    out = {"label": args.label, "library": str(library.path), "pdl": args.pdl,
           "env": {k: v for k, v in os.environ.items() if k.startswith("OEA_ROUTING")}, "us": {}, "errors": []}
    for T in args.tokens:
        copies = [skewed_logits(T, 128, seed=100 * T + c, dtype=torch.bfloat16, device="cuda") for c in range(4)]
        for k0 in args.k0:
            cfg = OEAConfig(num_experts=128, top_k=8, k0=k0)
            bad = [i for i, x in enumerate(copies)
                   if not torch.equal(route_kernel(x, cfg, pdl=pdl).expert_ids, oea_route(x, cfg).expert_ids)]
            if bad:
                out["errors"].append(f"T={T} k0={k0}: ids differ from the reference on inputs {bad}")
                continue

            def work(cfg=cfg):
                for i in range(args.calls):
                    route_kernel(copies[i % 4], cfg, pdl=pdl)

            graph = capture_graph(work)
            out["us"][f"{T}/{k0}"] = round(time_graph(graph, calls=args.calls, repeats=7, replays=3).median_us, 3)
            del graph
    print(json.dumps(out))
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
