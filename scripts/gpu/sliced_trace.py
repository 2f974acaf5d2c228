#!/usr/bin/env python3
"""Lab probe (issue 20), not product code: where one call of the sliced MoE kernel spends its time.

A copy of oea_trt.moe.triton.sliced.sliced_kernel (no PDL, no early start: the call runs alone
after a call on another weight copy) that stamps %globaltimer (one clock for every SM) when each
program starts and when each work item begins and ends, with the SM it ran on. The item code is
the product's (slice_item, reduce_item). Per case it prints and writes (JSON) the phases: launch
to first item, the slice items' span and per-item durations, the wait for the last slice item,
the reduce items, and the bytes streamed per us over the call.

    python3 scripts/gpu/sliced_trace.py --out /tmp/trace --batches 1 4 --k0 3
    python3 scripts/gpu/sliced_trace.py --plot /tmp/trace/sliced_trace.pt --out docs/img   # no GPU needed
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from oea_trt.moe.triton.sliced import reduce_item, reduce_tile, slice_item  # noqa: E402
from oea_trt.moe.triton.tiles import active_experts, nth_active  # noqa: E402


@triton.jit
def _now():
    return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [tl.full((), 0, tl.int32)],
                                     dtype=tl.int64, is_pure=False, pack=1)


@triton.jit
def _smid():
    return tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [tl.full((), 0, tl.int32)],
                                     dtype=tl.int32, is_pure=False, pack=1)


@triton.jit(do_not_specialize=["num_tokens"])
def traced_kernel(x_ptr, w13_ptr, w2_ptr, expert_ids_ptr, weights_ptr, active_mask_ptr, part_ptr, out_ptr,
                  sync_ptr, trace_ptr, prog_ptr, num_tokens, stride_x, stride_out,
                  H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                  K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                  SL: tl.constexpr, S_PAD: tl.constexpr, GU_K: tl.constexpr, DN_N: tl.constexpr,
                  RED_N: tl.constexpr):
    tl.store(prog_ptr + tl.program_id(0) * 2, _now())
    tl.store(prog_ptr + tl.program_id(0) * 2 + 1, _smid().to(tl.int64))
    S: tl.constexpr = I // SL
    H_TILES: tl.constexpr = H // RED_N
    rank, active, num_active = active_experts(active_mask_ptr, E, E_PAD)
    slice_items = num_active * S
    total = slice_items + num_tokens * H_TILES
    w = tl.atomic_add(sync_ptr, 1, sem="relaxed")
    while w < total:
        following = tl.atomic_add(sync_ptr, 1, sem="relaxed")
        t0 = _now()
        if w < slice_items:
            expert = nth_active(rank, active, w // S, E_PAD)
            slice_item(x_ptr, w13_ptr, w2_ptr, expert_ids_ptr, weights_ptr, part_ptr, expert, w % S, num_tokens,
                       stride_x, H, I, K, K_PAD, BLOCK_M, SL, GU_K, DN_N, False, False)
            tl.debug_barrier()
            tl.atomic_add(sync_ptr + 3, 1, sem="release")
        else:
            r = w - slice_items
            reduce_item(expert_ids_ptr, part_ptr, out_ptr, sync_ptr + 3, slice_items, r // H_TILES, r % H_TILES,
                        stride_out, active, H, I, E, E_PAD, K, K_PAD, SL, S_PAD, RED_N)
        tl.store(trace_ptr + w * 4, t0)
        tl.store(trace_ptr + w * 4 + 1, _now())
        tl.store(trace_ptr + w * 4 + 2, _smid().to(tl.int64))
        tl.store(trace_ptr + w * 4 + 3, tl.program_id(0).to(tl.int64))
        w = following
    if tl.atomic_add(sync_ptr + 1, 1, sem="acq_rel") == tl.num_programs(0) - 1:
        tl.store(sync_ptr, 0)
        tl.store(sync_ptr + 1, 0)
        tl.store(sync_ptr + 3, 0)


def trace_call(x, w, r, cfg, programs):
    """One traced call: (items [n, 4] ns/ns/sm/program, programs [p, 2] start ns/sm, slice items)."""
    T, k = r.expert_ids.shape
    E, two_i, H = w.w13.shape
    inter = two_i // 2
    slices = inter // cfg.gu_block_n
    red_n = reduce_tile(cfg.dn_block_n, slices, cfg.gu_warps)
    n_active = int(r.active_mask.sum())
    total = n_active * slices + T * (H // red_n)
    sync = torch.zeros(8, dtype=torch.int32, device="cuda")
    trace = torch.zeros((total, 4), dtype=torch.int64, device="cuda")
    progs = torch.zeros((programs, 2), dtype=torch.int64, device="cuda")
    part = torch.empty((T * k * slices, H), dtype=torch.float32, device="cuda")
    out = torch.empty_like(x)
    traced_kernel[(programs,)](
        x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask.view(torch.uint8), part, out, sync, trace, progs, T,
        x.stride(0), out.stride(0), H=H, I=inter, E=E, E_PAD=triton.next_power_of_2(E), K=k,
        K_PAD=triton.next_power_of_2(k), BLOCK_M=cfg.block_m, SL=cfg.gu_block_n,
        S_PAD=triton.next_power_of_2(slices), GU_K=cfg.gu_block_k, DN_N=cfg.dn_block_n, RED_N=red_n,
        num_warps=cfg.gu_warps, num_stages=cfg.gu_stages)
    torch.cuda.synchronize()
    return trace.cpu(), progs.cpu(), n_active * slices, out


def summarize(trace, progs, n_slice, expert_bytes, n_active):
    t0 = int(progs[:, 0].min())
    us = lambda v: (int(v) - t0) / 1000.0  # noqa: E731
    sl, red = trace[:n_slice], trace[n_slice:]
    dur = (sl[:, 1] - sl[:, 0]).double() / 1000.0
    end = int(trace[:, 1].max())
    out = {
        "programs": int(progs.shape[0]), "last_program_start_us": us(progs[:, 0].max()),
        "first_item_us": us(trace[:, 0].min()), "slice_items": n_slice,
        "slice_last_start_us": us(sl[:, 0].max()) if n_slice else None,
        "slice_end_us": us(sl[:, 1].max()) if n_slice else None,
        "slice_item_us_median": float(dur.median()) if n_slice else None,
        "slice_item_us_min": float(dur.min()) if n_slice else None,
        "slice_item_us_max": float(dur.max()) if n_slice else None,
        "reduce_items": int(red.shape[0]), "reduce_first_start_us": us(red[:, 0].min()) if len(red) else None,
        "reduce_end_us": us(red[:, 1].max()) if len(red) else None,
        "call_us": (end - t0) / 1000.0,
        "slice_items_per_sm_max": int(torch.bincount(sl[:, 2]).max()) if n_slice else 0,
    }
    span = (int(sl[:, 1].max()) - int(sl[:, 0].min())) / 1000.0 if n_slice else 0
    out["slice_phase_tb_s"] = n_active * expert_bytes / (span * 1e-6) / 1e12 if span else None
    return out


def plot(raw_path: str, out_dir: str) -> None:
    """One PNG per traced case: each item a bar on its program's row (slice items blue, reduce
    items orange), time from the first program's start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw = torch.load(raw_path)
    os.makedirs(out_dir, exist_ok=True)
    for name, case in raw.items():
        trace, progs, n_slice = case["trace"], case["progs"], case["n_slice"]
        t0 = int(progs[:, 0].min())
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for i, (begin, end, _, prog) in enumerate(trace.tolist()):
            ax.barh(prog, (end - begin) / 1000.0, left=(begin - t0) / 1000.0, height=0.8,
                    color="tab:blue" if i < n_slice else "tab:orange")
        ax.scatter((progs[:, 0] - t0).double() / 1000.0, range(progs.shape[0]), s=1, color="k", label="program start")
        ax.set_xlabel("us from the first program's start")
        ax.set_ylabel("program")
        ax.set_title(f"sliced kernel, 30B layer, {name}: slice items (blue), reduce items (orange)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, "sliced_trace_" + name.replace(" ", "_").replace("=", "") + ".png"), dpi=110)
        plt.close(fig)


def main(argv=None) -> int:
    from oea_trt import OEAConfig, oea_route
    from oea_trt.moe import ExpertWeights
    from oea_trt.moe.shapes import get_preset
    from oea_trt.moe.triton import default_config, fitted
    from oea_trt.routing.synthetic import SkewedRouter

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--plot", metavar="PT", help="draw the timelines of a saved sliced_trace.pt into --out (CPU)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--k0", type=int, nargs="+", default=[3])
    p.add_argument("--tiles", type=int, nargs=3, action="append", default=None,
                   metavar=("SLICE", "GU_K", "DN_N"), help="slice width, gate/up K step, down step (repeatable)")
    p.add_argument("--programs-per-sm", type=int, default=2)
    args = p.parse_args(argv)
    if args.plot:
        plot(args.plot, args.out)
        return 0
    tiles = args.tiles or [[16, 256, 128], [32, 128, 128]]
    shape = get_preset("qwen3-30b-a3b")
    copies = [ExpertWeights.random(shape, device="cuda", seed=c) for c in range(4)]  # 4 x 1.2 GB > L2
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    os.makedirs(args.out, exist_ok=True)
    results = {"gpu": torch.cuda.get_device_name(), "cases": []}
    raw = {}
    for batch in args.batches:
        logits = SkewedRouter(shape.num_experts).logits(batch, seed=batch).cuda()
        x = torch.randn(batch, shape.hidden_size, device="cuda", dtype=torch.bfloat16)
        for k0 in [None] + args.k0:
            cfg_r = OEAConfig(shape.num_experts, shape.top_k, k0 if k0 is not None else shape.top_k)
            r = oea_route(logits, cfg_r)
            for sl, gk, dn in tiles:
                cfg = fitted(default_config(batch, shape.hidden_size, shape.moe_intermediate_size, shape.top_k,
                                            shape.num_experts).replace(down="sliced", gu_block_n=sl, gu_block_k=gk,
                                                                       dn_block_n=dn, gu_stages=4),
                             batch, shape.hidden_size, shape.moe_intermediate_size, top_k=shape.top_k)
                runs = []
                for rep in range(4):  # each call on the next weight copy: none finds its experts in L2
                    trace, progs, n_slice, _ = trace_call(x, copies[rep % 4], r, cfg, sms * args.programs_per_sm)
                    if rep:
                        runs.append(summarize(trace, progs, n_slice, shape.expert_bytes, int(r.active_mask.sum())))
                best = min(runs, key=lambda s: s["call_us"])
                case = {"batch": batch, "k0": k0, "T": int(r.active_mask.sum()), "tiles": [sl, gk, dn], **best,
                        "call_us_all": [s["call_us"] for s in runs]}
                results["cases"].append(case)
                print(json.dumps(case), flush=True)
                raw[f"B{batch} k0={k0} {sl}x{gk} dn{dn}"] = {"trace": trace, "progs": progs, "n_slice": n_slice}
    torch.save(raw, os.path.join(args.out, "sliced_trace.pt"))  # the last call of each case, for plots
    with open(os.path.join(args.out, "sliced_trace.json"), "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
