#!/usr/bin/env python3
"""Side-by-side timing of KernelConfig candidates against the shipped (tuned) config, one
machine, one run: the 30B layer, skewed routing, vanilla and OEA k0=3, MoE only and
routing+MoE (the routing kernel with its early signal in the graph), CUDA-graph replay over
rotated weight copies, as `bench moe` times them. Each candidate is checked against the fp32
loop first. Lab code for issue 20 (which tiles and structures shorten small-T and B=32-64
calls); what wins goes to `oea-trt bench tune`'s candidates, not here.
    python3 scripts/gpu/tile_sweep.py --batch 1 4 64 --budget 400 --json out.json
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from oea_trt.bench.env import l2_bytes  # noqa: E402
from oea_trt.bench.moe_timing import layer_call  # noqa: E402
from oea_trt.bench.rotation import copies_needed, copies_that_fit  # noqa: E402
from oea_trt.bench.tune import check_config  # noqa: E402
from oea_trt.moe import ExpertWeights  # noqa: E402
from oea_trt.moe.shapes import get_preset  # noqa: E402
from sweep_cases import sweep_batches, time_row  # noqa: E402


def three(gu, dn, **kw):
    """A three-launch config from gate/up and down tiles (block_n, block_k, warps, stages)."""
    return dict(down="slots", gu_block_n=gu[0], gu_block_k=gu[1], gu_warps=gu[2], gu_stages=gu[3],
                dn_block_n=dn[0], dn_block_k=dn[1], dn_warps=dn[2], dn_stages=dn[3], programs_per_sm=None, **kw)


#: name -> changes to the shipped config; a batch tries the names listed for it in PLAN. (The
#: flattened-loop candidates, KernelConfig.flatten, ran at commit 0abd385 and were removed with
#: the option: benchmarks/results/tile_sweep_h100/.)
CANDIDATES = {
    "dn64x256s4": dict(dn_block_n=64, dn_block_k=256, dn_stages=4),
    "dn32x256s4": dict(dn_block_n=32, dn_block_k=256, dn_stages=4),
    "gu16x512s4": dict(gu_block_n=16, gu_block_k=512, gu_stages=4),
    "gu32x512s3": dict(gu_block_n=32, gu_block_k=512, gu_stages=3),
    "gu16x256s4": dict(gu_block_n=16, gu_block_k=256, gu_stages=4),
    "gu16x512+dn32x256": dict(gu_block_n=16, gu_block_k=512, gu_stages=4, dn_block_n=32, dn_block_k=256, dn_stages=4),
    "gu16x256+dn32x256": dict(gu_block_n=16, gu_block_k=256, gu_stages=4, dn_block_n=32, dn_block_k=256, dn_stages=4),
    "gu32x256+dn64x256": dict(gu_block_n=32, gu_block_k=256, gu_stages=3, dn_block_n=64, dn_block_k=256, dn_stages=4),
    "3L": three((32, 128, 4, 4), (64, 128, 4, 4)),
    "3L deep": three((16, 512, 4, 4), (32, 256, 4, 4)),
    "comb256": dict(combine_block_h=256),
    # dn_preload: each down program's first w2 tile loaded whole before it waits for gate/up
    "pre32": dict(dn_preload=True, dn_block_n=32, dn_warps=4, dn_stages=3),
    "pre32 s2": dict(dn_preload=True, dn_block_n=32, dn_warps=4, dn_stages=2),
    "pre64w8": dict(dn_preload=True, dn_block_n=64, dn_warps=8, dn_stages=3),
    "pre64w8 s2": dict(dn_preload=True, dn_block_n=64, dn_warps=8, dn_stages=2),
    "pre32 comb256": dict(dn_preload=True, dn_block_n=32, dn_warps=4, dn_stages=3, combine_block_h=256),
    "3L pre32": three((32, 128, 4, 4), (32, 256, 4, 3), dn_preload=True),
    "3L pre64w8 s2": three((32, 128, 4, 4), (64, 256, 8, 2), dn_preload=True),
    "3L gu32x256 pre32": three((32, 256, 4, 3), (32, 256, 4, 3), dn_preload=True),
    # gate/up tiles beside a preloaded down tile (the shipped B=1 config since the preload tune)
    "gu16x256s3": dict(gu_block_n=16, gu_block_k=256, gu_stages=3),
    "gu32x256s4": dict(gu_block_n=32, gu_block_k=256, gu_stages=4),
    "gu32x256w8": dict(gu_block_n=32, gu_block_k=256, gu_warps=8, gu_stages=3),
    "gu16x512s3": dict(gu_block_n=16, gu_block_k=512, gu_stages=3),
    "dn32 s2": dict(dn_stages=2),
    # handoff: a down item waits on its expert's gate/up counter, not on the whole gate/up kernel
    "handoff": dict(handoff=True),
    "no handoff": dict(handoff=False),
    "3L handoff": three((32, 128, 4, 4), (64, 128, 4, 4), handoff=True),
    "3L pre32 handoff": three((32, 128, 4, 4), (32, 256, 4, 3), dn_preload=True, handoff=True),
    "3L pre64w8 handoff": three((32, 128, 4, 4), (64, 256, 8, 2), dn_preload=True, handoff=True),
    "3L handoff dn128w8": three((32, 128, 4, 4), (128, 128, 8, 3), handoff=True),
    # more, shorter gate/up items or fewer programs: gate/up in more than one wave, so the hand-off
    # lets the first experts' down items run while later gate/up items stream (also gu16x256s4 above)
    "mp132": dict(max_programs=132),
    "3L handoff mp132": three((32, 128, 4, 4), (64, 128, 4, 4), handoff=True, max_programs=132),
    "3L handoff gu16x256": three((16, 256, 4, 4), (64, 128, 4, 4), handoff=True),
    # (The one-stage tiles, with and without w_evict_first / w_register_prefetch, ran at 962b957 and
    # were removed with those options: benchmarks/results/evict_first_h100/.)
}
PLAN = {  # no open candidates: each batch times the shipped config alone (earlier plans: git log of
    # this file; their results under benchmarks/results/, e.g. evict_first_h100/ and dn_prefetch_h100/)
    1: [], 4: [], 8: [], 16: [],
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=list(PLAN))
    p.add_argument("--budget", type=float, default=400.0, help="seconds; no new batch starts after this")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--names", nargs="+", default=None, choices=list(CANDIDATES),
                   help="these candidates at every batch instead of PLAN's")
    args = p.parse_args()
    t_start = time.time()
    shape = get_preset("qwen3-30b-a3b")
    free = torch.cuda.mem_get_info()[0]
    copies = copies_that_fit(copies_needed(shape.expert_bytes, l2_bytes()), shape.num_experts * shape.expert_bytes, free)
    weights = [ExpertWeights.random(shape, device="cuda", seed=c) for c in range(copies)]
    results = {"device": torch.cuda.get_device_name(), "rows": []}
    for b, router, batch, cases, shipped in sweep_batches(shape, weights, args.batch, args.budget, t_start, results):
        for name in ["shipped"] + (args.names or PLAN.get(b, [])):
            config = shipped if name == "shipped" else shipped.replace(**CANDIDATES[name])
            row = {"batch": b, "name": name, "config": config.to_dict()}
            try:
                if name != "shipped" and not check_config(shape, weights[0], b, config, 0):
                    raise RuntimeError("differs from the fp32 loop")
                time_row(row, layer_call("triton", config), batch, weights, router, cases, args.repeats)
            except Exception as exc:  # noqa: BLE001 (a candidate that does not compile or fit: say so, go on)
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                print(f"  {name:28s} ERROR {row['error']}", flush=True)
            results["rows"].append(row)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
    print(f"sweep: {time.time() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
