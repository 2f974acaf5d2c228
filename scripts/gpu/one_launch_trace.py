#!/usr/bin/env python3
"""Where the one-launch MoE kernel's time goes (issue 5): a per-item and per-program timeline of
one routing+MoE call (the kernel's TRACE mode: %globaltimer at each item's start, after a down
item's wait for its expert's gate/up rows, and at its end), for the 30B layer at skewed B=16
(vanilla and k0=3) and uniform B=64, over a few configs.

    python3 scripts/gpu/one_launch_trace.py --out out/one_launch_trace

Writes summary.json (per case and config: span, first item start, gate/up phase end, waits,
tail, busy fraction, effective TB/s) and one PNG per case (items in flight over time by kind).
The traced call follows several untraced back-to-back calls and, right before it, its routing
call (publishing its active set early, as the benchmark routes), as in the benchmark.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

CASES = (("skewed", 16, None), ("skewed", 16, 3))
_TILES = dict(gu_block_n=32, gu_block_k=128, dn_block_n=64, dn_block_k=128, programs_per_sm=2)
CONFIGS = {  # name -> KernelConfig changes
    "2/SM": _TILES,
    "2/SM after routing": dict(_TILES, early_active=False),
}


def summarize(rows, items, programs, gate_up_items, item_bytes):
    """Numbers from a trace (ns -> us, relative to the first program's launch)."""
    it = rows[:items]
    it = it[it[:, 0] >= 0]
    pr = rows[items:items + programs]
    pr = pr[pr[:, 0] >= 0]
    t0 = int(pr[:, 1].min())
    us = lambda t: (t - t0) / 1e3  # noqa: E731
    is_gu = torch.arange(rows.shape[0])[:items][rows[:items, 0] >= 0] < gate_up_items
    start, ready, end = it[:, 1], it[:, 2], it[:, 3]
    wait = (ready - start).double() / 1e3
    total_bytes = float(sum(item_bytes[0] if g else item_bytes[1] for g in is_gu.tolist()))
    span = us(int(pr[:, 3].max()))
    busy = float((end - ready).double().sum() / 1e3)
    ends = torch.sort(end).values
    return {
        "programs": int(pr.shape[0]), "items": int(it.shape[0]), "span_us": span,
        "last_entered_us": us(int(pr[:, 2].max())), "first_item_us": us(int(start.min())),
        "gate_up_done_us": us(int(end[is_gu].max())) if bool(is_gu.any()) else None,
        "first_down_us": us(int(start[~is_gu].min())) if bool((~is_gu).any()) else None,
        "down_wait_total_us": float(wait[~is_gu].sum()), "down_waits_over_1us": int((wait[~is_gu] > 1).sum()),
        "max_wait_us": float(wait.max()),
        "gu_item_us_median": float(((end - ready)[is_gu].double() / 1e3).median()) if bool(is_gu.any()) else None,
        "dn_item_us_median": float(((end - ready)[~is_gu].double() / 1e3).median()) if bool((~is_gu).any()) else None,
        "tail_us_last_10pct_items": us(int(ends[-1])) - us(int(ends[int(len(ends) * 0.9)])),
        "busy_fraction": busy / (span * int(pr.shape[0])),
        "effective_tb_s": total_bytes / (span * 1e-6) / 1e12,
        "exit_spread_us": us(int(pr[:, 3].max())) - us(int(pr[:, 3].min())),
    }


def in_flight(rows, items, programs, gate_up_items, step_ns=500):
    it = rows[:items]
    ok = it[:, 0] >= 0
    idx = torch.arange(items)[ok]
    it = it[ok]
    pr = rows[items:items + programs]
    t0 = int(pr[pr[:, 0] >= 0][:, 1].min())
    t1 = int(it[:, 3].max())
    ts = torch.arange(t0, t1 + step_ns, step_ns)
    gu = idx < gate_up_items
    act = lambda m: ((it[m, 2][None, :] <= ts[:, None]) & (it[m, 3][None, :] > ts[:, None])).sum(1)  # noqa: E731
    wt = ((it[~gu, 1][None, :] <= ts[:, None]) & (it[~gu, 2][None, :] > ts[:, None])).sum(1)
    return ((ts - t0) / 1e3).tolist(), act(gu).tolist(), act(~gu).tolist(), wt.tolist()


def bandwidth(rows, items, programs, gate_up_items, item_bytes, step_ns=500):
    """TB/s over time: each item's weight bytes spread evenly over its run (inputs ready -> done),
    so a dip shows where the kernel stops streaming (the hand-off, the tail)."""
    it = rows[:items]
    ok = it[:, 0] >= 0
    idx = torch.arange(items)[ok]
    it = it[ok].double()
    pr = rows[items:items + programs]
    t0 = float(pr[pr[:, 0] >= 0][:, 1].min())
    t1 = float(it[:, 3].max())
    edges = torch.arange(t0, t1 + step_ns, step_ns, dtype=torch.float64)
    nbytes = torch.where(idx < gate_up_items, float(item_bytes[0]), float(item_bytes[1])).double()
    start, end = it[:, 2], torch.maximum(it[:, 3], it[:, 2] + 1)
    rate = nbytes / (end - start)  # bytes per ns
    lo, hi = edges[:-1, None], edges[1:, None]
    overlap = (torch.minimum(hi, end[None, :]) - torch.maximum(lo, start[None, :])).clamp(min=0)
    tb_s = (overlap * rate[None, :]).sum(1) / step_ns * 1e9 / 1e12
    return ((edges[:-1] - t0) / 1e3).tolist(), tb_s.tolist()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.environ.get("RESULTS_DIR", "out"), "one_launch_trace"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("one_launch_trace: needs a CUDA GPU", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    from oea_trt.bench.moe import _Batch, _oea, _vanilla
    from oea_trt.bench.routers import pick_router, route_for_moe
    from oea_trt.bench.routing_inputs import make_sources
    from oea_trt.moe.triton import one_launch
    from oea_trt.moe.layer import ExpertWeights
    from oea_trt.moe.triton.three_launch import default_config, fitted, fused_moe
    from oea_trt.moe.shapes import get_preset

    shape = get_preset("qwen3-30b-a3b")
    H, I, E, k = shape.hidden_size, shape.moe_intermediate_size, shape.num_experts, shape.top_k
    copies = 4
    weights = [ExpertWeights.random(shape, device="cuda", seed=c) for c in range(copies)]
    router = pick_router("auto", device="cuda")
    sources = make_sources(["skewed", "uniform"], E)
    summary = {}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for mode, batch, k0 in CASES:
        case = f"{mode} B={batch} {'vanilla' if k0 is None else f'k0={k0}'}"
        config = _vanilla(shape) if k0 is None else _oea(shape, k0)
        b = _Batch(sources[mode], batch, copies, H, seed=0, device="cuda", dtype=torch.bfloat16)
        fig, axes = plt.subplots(len(CONFIGS), 1, figsize=(10, 2.6 * len(CONFIGS)), sharex=True)
        for ax, (name, changes) in zip(axes, CONFIGS.items()):
            cfg = default_config(batch, H, I, k, E).replace(down="one_launch", pdl=True, **changes)
            if cfg.block_m >= 64 or batch >= 64:
                cfg = cfg.replace(gu_warps=8)
            cfg = fitted(cfg, batch, H, I)
            routings = [router.route(lg, config) for lg in b.logits]
            for c in range(copies):  # warm-up and compile, back to back
                fused_moe(b.x[c], weights[c].w13, weights[c].w2, routings[c].expert_ids, routings[c].weights,
                          routings[c].active_mask, cfg)
            T = int(routings[-1].num_active)
            gate_up_items = T * (I // cfg.gu_block_n)
            max_items = min(E, batch * k) * (I // cfg.gu_block_n + H // cfg.dn_block_n)
            programs = torch.cuda.get_device_properties(0).multi_processor_count * 16
            trace = one_launch.Trace(max_items, programs, "cuda")
            out = torch.empty_like(b.x[-1])
            # The traced call, right after untraced ones and its own routing call (as in the
            # benchmark's back-to-back routing+MoE graph).
            for c in range(copies - 1):
                fused_moe(b.x[c], weights[c].w13, weights[c].w2, routings[c].expert_ids, routings[c].weights,
                          routings[c].active_mask, cfg)
            r = route_for_moe(router, b.logits[-1], config)
            one_launch.launch(b.x[-1], weights[-1].w13, weights[-1].w2, r.expert_ids, r.weights,
                              r.active_mask.view(torch.uint8), out, cfg, True, trace=trace,
                              active_ready=r.active_ready)
            torch.cuda.synchronize()
            rows = trace.rows.cpu()
            item_bytes = (2 * cfg.gu_block_n * H * 2, cfg.dn_block_n * I * 2)
            s = summarize(rows, max_items, programs, gate_up_items, item_bytes)
            s.update(T=T, floor_bytes=T * shape.expert_bytes, config=cfg.to_dict())
            summary.setdefault(case, {})[name] = s
            print(f"{case:22s} {name:10s} " + ", ".join(f"{key} {val:.1f}" if isinstance(val, float) else
                                                       f"{key} {val}" for key, val in s.items() if key != "config"),
                  flush=True)
            ts, gu, dn, wt = in_flight(rows, max_items, programs, gate_up_items)
            ax.plot(ts, gu, label="gate/up items streaming")
            ax.plot(ts, dn, label="down items streaming")
            ax.plot(ts, wt, label="down items waiting", linestyle=":")
            ax.set_title(f"{name}: span {s['span_us']:.1f} us, {s['effective_tb_s']:.2f} TB/s", fontsize=9)
            ax.set_ylabel("items")
            bx = ax.twinx()
            bts, tb_s = bandwidth(rows, max_items, programs, gate_up_items, item_bytes)
            bx.plot(bts, tb_s, color="black", linewidth=0.8, label="TB/s (right axis)")
            bx.set_ylabel("TB/s")
            bx.set_ylim(0, 4.5)
            torch.save({"rows": rows, "items": max_items, "programs": programs, "gate_up_items": gate_up_items,
                        "item_bytes": item_bytes}, os.path.join(
                args.out, f"{case}_{name}".replace(" ", "_").replace("=", "").replace("/", "-") + ".pt"))
        axes[0].legend(fontsize=8)
        axes[-1].set_xlabel("us since the first program launched")
        fig.suptitle(f"one-launch MoE kernel, qwen3-30b-a3b, {case}, T={T}")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, case.replace(" ", "_").replace("=", "") + ".png"), dpi=80)
        plt.close(fig)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
