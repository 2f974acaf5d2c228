#!/usr/bin/env python3
"""A/B of the Triton MoE kernel's launch structure on the 30B layer: the three-launch path against
the one-launch path over a few tiles, with and without starting on the routing's published
active set, side by side with the same weights, routing draws and timing as the main benchmark
(CUDA-graph replay of C back-to-back calls over C weight copies; oea_trt/bench/moe_timing.py).

  slots+pdl         3 launches: gate/up, per-slot down, combine, with programmatic dependent launch
  one_launch+pdl .. 1 launch: gate/up and down items in one persistent grid, each token's tile
                    summed by its last finisher, over ONE_LAUNCH_VARIANTS [gate/up n x k, down n x k,
                    stages]; "after routing": early_active=False

--variants small_t (issue 20: where the time goes at small T): the shipped config and one launch
with narrow tiles, plus two phase rows per case: "routing only" (the routing kernel in the
graph, no MoE) and "MoE, nothing active" (the shipped kernel on a routing that selected no
expert: its fixed cost).

Each variant starts from the config shipped for this GPU and batch (oea_trt/moe/tuned.py, else the
heuristic) with the variant's changes on top. Cases (default): skewed routing B=16 vanilla and
OEA k0=3 (the routing+MoE ratio target), uniform B=16 vanilla; --batches / --k0 / --modes name
others (every mode x batch x (vanilla, k0...)). Every variant is checked against the
fp32 loop (bf16 tolerance) and for bit-identical repeats before it is timed; one failing is
reported and skipped. Per-kernel start/duration of one routing+MoE call (torch.profiler on a
graph replay) show the overlap PDL buys.

    python3 benchmarks/moe_ab.py --out out/moe_ab
    python3 benchmarks/moe_ab.py --out /tmp/ab --time-budget 60   # stop starting cases after 60 s
    python3 benchmarks/moe_ab.py --variants small_t --modes skewed --batches 1 2 4 8 16 32 64 --k0 3

Writes results.json and report.md (ratio k0=3 / vanilla per variant) into --out.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402

PRESET = "qwen3-30b-a3b"
#: (routing mode, batch, k0 or None for vanilla); the first two are the target's pair.
CASES = (("skewed", 16, None), ("skewed", 16, 3), ("uniform", 16, None))
#: One-launch variants: (name, KernelConfig changes).
def _ol(gu_n, gu_k, dn_n, dn_k, stages=4, per_sm=2, **more):
    return dict(gu_block_n=gu_n, gu_block_k=gu_k, dn_block_n=dn_n, dn_block_k=dn_k, gu_stages=stages,
                programs_per_sm=per_sm, **more)


ONE_LAUNCH_VARIANTS = (
    ("one_launch+pdl 2/SM [gu 32x128, dn 64x128, s4]", _ol(32, 128, 64, 128)),
    ("one_launch+pdl 2/SM after routing [gu 32x128, dn 64x128, s4]", _ol(32, 128, 64, 128, early_active=False)),
    ("one_launch+pdl 2/SM [gu 64x128, dn 64x128, s4]", _ol(64, 128, 64, 128)),
    ("one_launch+pdl 2/SM after routing [gu 64x128, dn 64x128, s4]", _ol(64, 128, 64, 128, early_active=False)),
)


#: Phase rows of --variants small_t (not KernelConfig variants: what they time is in run()).
ROUTING_ONLY, NOTHING_ACTIVE = "routing only", "MoE, nothing active"


def variants(kind: str = "launch", batch: int = 16):
    """[(name, KernelConfig changes)] in the order the report lists them. "launch": the 3-launch
    path with PDL, then the one-launch path with PDL over ONE_LAUNCH_VARIANTS. "small_t": the
    shipped config, and one launch with narrow gate/up and down tiles (more, shorter items where
    few experts are active). (The down items' L2 prefetch, 3 programs per SM, were measured
    here too and rejected: docs/what-we-tried.md.)"""
    if kind == "small_t":
        return [("shipped", {}), ("one_launch gu 16x256 dn 64", dict(down="one_launch", gu_block_n=16, gu_block_k=256,
                                                                     dn_block_n=64))]
    out = [("slots+pdl", dict(down="slots", pdl=True))]
    return out + [(name, dict(down="one_launch", pdl=True, **changes)) for name, changes in ONE_LAUNCH_VARIANTS]


def cases(args):
    """[(routing mode, batch, k0 or None)]: CASES, or every --modes x --batches x (vanilla, --k0)."""
    if not args.batches:
        return CASES
    return [(mode, b, k0) for mode in args.modes for b in args.batches for k0 in (None, *args.k0)]


def nothing_routed(batch: int, num_experts: int, top_k: int, device: str):
    """A RoutingResult that selected no expert (every slot fill -1): the MoE kernel's fixed cost."""
    from oea_trt import RoutingResult

    return RoutingResult(torch.full((batch, top_k), -1, dtype=torch.int32, device=device),
                         torch.zeros((batch, top_k), dtype=torch.float32, device=device),
                         torch.zeros((num_experts,), dtype=torch.bool, device=device),
                         torch.zeros((), dtype=torch.int32, device=device), None)


def kernel_config(shape, batch, changes):
    """The config shipped for this GPU, layer and batch (or the heuristic), with `changes` on top."""
    from oea_trt.moe.triton.config import default_config
    from oea_trt.moe.tuned import cuda_device_name, tuned_config

    args = (shape.num_experts, shape.hidden_size, shape.moe_intermediate_size, shape.top_k)
    if torch.cuda.is_available():
        base = tuned_config(batch, *args, torch.bfloat16, cuda_device_name(torch.cuda.current_device()))
    else:
        base = default_config(batch, shape.hidden_size, shape.moe_intermediate_size, shape.top_k, shape.num_experts)
    cfg = base.replace(**changes)
    if cfg.down == "one_launch" and cfg.block_m >= 64 and "gu_warps" not in changes:
        cfg = cfg.replace(gu_warps=8)  # a 64-token tile with both item kinds spills heavily at 4 warps
    return cfg


def _fn(cfg):
    from oea_trt.bench.moe_timing import layer_call

    return layer_call("triton", cfg)


def check(fn, x, weights, routing, routed=None):
    """(ok, max_err, rms_err, note): against the fp32 loop, two calls bit-identical, and (routed:
    a routing call that publishes its active set early, as timed) the same bits right after it."""
    from oea_trt.bench.moe_timing import relative_errors, within_tolerance
    from oea_trt.moe.reference import moe_reference

    out = fn(x, weights, routing)
    again = fn(x, weights, routing)
    after_routing = fn(x, weights, routed()) if routed is not None else out
    if x.is_cuda:
        torch.cuda.synchronize()
    ref = moe_reference(x, weights.w13, weights.w2, routing.expert_ids, routing.weights)
    max_err, rms_err = relative_errors(out, ref)
    same = bool(torch.equal(out, again))
    same_routed = bool(torch.equal(out, after_routing))
    ok = within_tolerance(out, ref) and same and same_routed
    note = "" if same else "two calls differ"
    if not same_routed:
        note = (note + "; " if note else "") + "differs right after a signalling routing call"
    return ok, max_err, rms_err, note


def kernel_timeline(work):
    """[{name, start_us, dur_us}] of the kernels of one replay of a graph of `work`, start
    relative to the first kernel's start (a negative gap = overlap). [] if the profiler saw none."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from oea_trt.bench.timing import capture_graph

    graph = capture_graph(work)
    graph.replay()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        graph.replay()
        torch.cuda.synchronize()
    kernels = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                     if e.device_type == DeviceType.CUDA and "memcpy" not in e.name.lower()
                     and "memset" not in e.name.lower())
    if not kernels:
        return []
    t0 = kernels[0][0]
    return [{"name": name[:60], "start_us": start - t0, "dur_us": end - start} for start, end, name in kernels]


def run(args, on_progress=None) -> dict:
    """Every case x variant; on_progress(results) after each case (a run cut short keeps it)."""
    from oea_trt.bench.bandwidth import measure_bandwidth
    from oea_trt.bench.env import environment, l2_bytes
    from oea_trt.bench.moe_timing import RoutingBatch, oea_config, time_moe, time_routed, vanilla_config
    from oea_trt.bench.rotation import copies_needed, copies_that_fit
    from oea_trt.bench.routers import pick_router, route_for_moe
    from oea_trt.bench.routing_inputs import make_sources
    from oea_trt.moe.layer import ExpertWeights
    from oea_trt.moe.shapes import get_preset

    t0 = time.time()
    env = environment()
    bw = measure_bandwidth(nbytes=2 << 30, repeats=5, device=args.device)
    router = pick_router(args.routing, device=args.device)
    print(f"GPU {env.get('gpu', {}).get('name')}, triton {env.get('triton')}, commit {env['git']['commit']}; "
          f"copy {bw.copy_tb_s:.2f} TB/s; routing: {router.name} ({router.note})", flush=True)
    shape = get_preset(PRESET)
    bytes_per_copy = shape.num_experts * shape.expert_bytes
    free = torch.cuda.mem_get_info()[0] if args.device == "cuda" else 8 << 30
    copies = copies_that_fit(args.copies or copies_needed(shape.expert_bytes, l2_bytes()), bytes_per_copy, free)
    dtype = getattr(torch, args.dtype)
    weights = [ExpertWeights.random(shape, device=args.device, dtype=dtype, seed=c) for c in range(copies)]
    timing = dict(repeats=args.repeats, replays=2)
    sources = make_sources(sorted({mode for mode, _, _ in cases(args)}), shape.num_experts)
    results = {"env": env, "bandwidth": bw.to_dict(), "routing": {"impl": router.name, "note": router.note},
               "preset": PRESET, "copies": copies, "variant_set": args.variants, "cases": [], "timelines": {},
               "skipped": []}
    for mode, batch, k0 in cases(args):
        case = f"{mode} B={batch} {'vanilla' if k0 is None else f'k0={k0}'}"
        if time.time() - t0 > args.time_budget:
            results["skipped"].append(case)
            print(f"== {case}: skipped (time budget {args.time_budget:.0f} s reached)", flush=True)
            continue
        config = vanilla_config(shape) if k0 is None else oea_config(shape, k0)
        b = RoutingBatch(sources[mode], batch, copies, shape.hidden_size, seed=0, device=args.device, dtype=dtype)
        routings = [router.route(lg, config) for lg in b.logits]
        active = [int(r.num_active) for r in routings]
        entry = {"mode": mode, "batch": batch, "k0": k0, "case": case, "T": sum(active) / len(active),
                 "floor_us": sum(active) / len(active) * shape.expert_bytes / (bw.copy_tb_s * 1e12) * 1e6,
                 "variants": {}}
        print(f"== {case}: T = {entry['T']:.1f}, floor {entry['floor_us']:.1f} us", flush=True)
        if args.variants == "small_t":
            entry["variants"].update(phase_rows(shape, b, weights, router, config, batch, timing))
        for name, changes in variants(args.variants, batch):
            cfg = kernel_config(shape, batch, changes)
            fn = _fn(cfg)
            row = {"config": cfg.to_dict(), "launches": cfg.launches}
            try:
                ok, max_err, rms_err, note = check(fn, b.x[0], weights[0], routings[0],
                                                   lambda: route_for_moe(router, b.logits[0], config))
                row.update(ok=ok, max_err=max_err, rms_err=rms_err, note=note)
                if ok:
                    moe = time_moe(fn, b, weights, routings, **timing)
                    total = time_routed(fn, b, weights, router, config, **timing)
                    row.update(moe_us=moe.median_us, moe_spread=moe.spread, total_us=total.median_us,
                               total_spread=total.spread)
            except Exception as exc:  # noqa: BLE001 (one broken variant must not lose the others)
                row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
            entry["variants"][name] = row
            if row.get("total_us"):
                print(f"  {name:34s} routing+MoE {row['total_us']:7.1f} us  MoE {row['moe_us']:7.1f} us"
                      f"  (max err {row['max_err']:.1e})", flush=True)
            else:
                print(f"  {name:34s} NOT TIMED: {row.get('error') or row.get('note') or 'failed the reference check'}"
                      f" (max err {row.get('max_err', float('nan')):.1e})", flush=True)
        results["cases"].append(entry)
        if mode == "skewed" and batch in ((1, 16, 64) if args.variants == "small_t" else (16,)) \
                and not args.no_timeline:
            results["timelines"][case] = timelines(shape, b, weights, router, config, args.variants)
        results["seconds"] = time.time() - t0
        if on_progress:
            on_progress(results)
    return results


def phase_rows(shape, b, weights, router, config, batch, timing) -> dict:
    """small_t's phase rows: the routing alone in the graph, and the shipped MoE on a routing
    that selected nothing (time_moe's figure is the kernel's fixed cost per call)."""
    from oea_trt.bench.moe_timing import time_moe, time_routed

    rows = {}
    try:
        t = time_routed(lambda x, w, r: None, b, weights, router, config, **timing)
        rows[ROUTING_ONLY] = {"ok": True, "total_us": t.median_us, "total_spread": t.spread, "launches": 1}
    except Exception as exc:  # noqa: BLE001 (a phase row is optional)
        rows[ROUTING_ONLY] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    try:
        empty = [nothing_routed(batch, shape.num_experts, shape.top_k, b.x[0].device.type) for _ in weights]
        t = time_moe(_fn(kernel_config(shape, batch, {})), b, weights, empty, **timing)
        rows[NOTHING_ACTIVE] = {"ok": True, "moe_us": t.median_us, "moe_spread": t.spread}
    except Exception as exc:  # noqa: BLE001
        rows[NOTHING_ACTIVE] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    for name, row in rows.items():
        value = row.get("total_us", row.get("moe_us"))
        print(f"  {name:34s} " + (f"{value:7.1f} us" if value is not None else f"FAILED {row.get('error')}"),
              flush=True)
    return rows


def timelines(shape, b, weights, router, config, kind="launch") -> dict:
    """Per-kernel timeline of one routing+MoE call, for one tile of each variant kind."""
    from oea_trt.bench.routers import route_for_moe

    out = {}
    for name, changes in variants(kind, b.batch):
        fn = _fn(kernel_config(shape, b.batch, changes))
        try:
            out[name] = kernel_timeline(lambda: fn(b.x[0], weights[0], route_for_moe(router, b.logits[0], config)))
        except Exception as exc:  # noqa: BLE001 (the timeline is optional)
            out[name] = [{"error": f"{type(exc).__name__}: {str(exc)[:200]}"}]
    return out


def _f(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def render_small_t(results) -> str:
    """One row per (case, variant): T, floor, MoE and routing+MoE in us and x floor, the k0 rows'
    ratio to vanilla (routing+MoE) for the same variant and batch."""
    lines = [f"# MoE, small T (issue 20): {results['preset']}, {results['env'].get('gpu', {}).get('name')}", "",
             f"commit {results['env']['git']['commit']}, triton {results['env'].get('triton')}, copy "
             f"{results['bandwidth']['copy_tb_s']:.2f} TB/s, routing in the graph: {results['routing']['impl']}, "
             f"{results['copies']} weight copies; CUDA-graph replay, median of the repeats, us per call. floor = "
             "T x expert bytes / copy bandwidth; x floor = time / floor.", "",
             "| case | T | floor | variant | MoE | x floor | routing+MoE | x floor | ratio to vanilla |",
             "| :--- | ---: | ---: | :--- | ---: | ---: | ---: | ---: | ---: |"]
    vanilla = {(c["mode"], c["batch"]): c for c in results["cases"] if c["k0"] is None}
    for c in results["cases"]:
        base = vanilla.get((c["mode"], c["batch"]))
        for name, row in c["variants"].items():
            moe, total = row.get("moe_us"), row.get("total_us")
            ratio = None
            if c["k0"] is not None and base and total and base["variants"].get(name, {}).get("total_us"):
                ratio = total / base["variants"][name]["total_us"]
            lines.append(f"| {c['case']} | {c['T']:.1f} | {c['floor_us']:.1f} | {name} | {_f(moe)} | "
                         f"{_f(moe / c['floor_us'], 2) if moe and name != NOTHING_ACTIVE else '-'} | {_f(total)} | "
                         f"{_f(total / c['floor_us'], 2) if total and name != ROUTING_ONLY else '-'} | "
                         f"{_f(ratio, 3)} |")
    return "\n".join(lines + _report_tail(results)) + "\n"


def render(results) -> str:
    if results.get("variant_set") == "small_t":
        return render_small_t(results)
    by_case = {c["case"]: c for c in results["cases"]}
    names = [n for n, _ in variants()]
    van, oea = by_case.get("skewed B=16 vanilla"), by_case.get("skewed B=16 k0=3")
    lines = [f"# MoE launch-structure A/B: {results['preset']}, {results['env'].get('gpu', {}).get('name')}", "",
             f"commit {results['env']['git']['commit']}, triton {results['env'].get('triton')}, copy "
             f"{results['bandwidth']['copy_tb_s']:.2f} TB/s, routing in the graph: {results['routing']['impl']}, "
             f"{results['copies']} weight copies; CUDA-graph replay, median of the repeats, us per call.", ""]
    if van and oea:
        lines.append(f"Skewed B=16: T {oea['T']:.1f} (k0=3) vs {van['T']:.1f} (vanilla); target ratio "
                     "(routing+MoE, k0=3 / vanilla) <= 0.55.")
        lines.append("")
    head = ["variant", "launches"]
    for c in results["cases"]:
        head += [f"{c['case']} routing+MoE", f"{c['case']} MoE"]
    if van and oea:
        head += ["ratio k0=3 (routing+MoE)", "ratio k0=3 (MoE)"]
    lines += ["| " + " | ".join(head) + " |", "|" + " :--- |" + " ---: |" * (len(head) - 1)]
    for name in names:
        cells = [name, str(next((c["variants"][name]["launches"] for c in results["cases"] if name in c["variants"]),
                                "-"))]
        for c in results["cases"]:
            row = c["variants"].get(name, {})
            cells += [_f(row.get("total_us")), _f(row.get("moe_us"))]
        if van and oea:
            v, o = van["variants"].get(name, {}), oea["variants"].get(name, {})
            for key in ("total_us", "moe_us"):
                cells.append(_f(o[key] / v[key], 3) if o.get(key) and v.get(key) else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + _report_tail(results)) + "\n"


def _report_tail(results) -> list:
    """The lines both reports end with: variants not timed, per-kernel timelines, skipped cases."""
    lines = []
    failed = [(c["case"], n, r) for c in results["cases"] for n, r in c["variants"].items() if not r.get("ok")]
    if failed:
        lines += ["", "Not timed (failed the check against the loop or a bit-identical repeat, or an error):"]
        lines += [f"- {case}, {n}: {r.get('error') or r.get('note') or ''} max err {_f(r.get('max_err'), 4)}"
                  for case, n, r in failed]
    for case, per in results.get("timelines", {}).items():
        lines += ["", f"## Kernels of one routing+MoE call, {case} (start offset / duration, us)", ""]
        for name, kernels in per.items():
            parts = [k.get("error") or f"{k['name'][:28]} {k['start_us']:+.1f}/{k['dur_us']:.1f}" for k in kernels]
            lines.append(f"- {name}: " + ("; ".join(parts) if parts else "(no kernels seen by the profiler)"))
    if results.get("skipped"):
        lines += ["", f"Skipped (time budget): {', '.join(results['skipped'])}"]
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.environ.get("RESULTS_DIR", "out"), "moe_ab"),
                   help="directory for results.json and report.md (default: $RESULTS_DIR/moe_ab)")
    p.add_argument("--time-budget", type=float, default=110.0,
                   help="seconds after which no new case is started (default 110)")
    p.add_argument("--repeats", type=int, default=5, help="timed samples per figure (median reported)")
    p.add_argument("--copies", type=int, default=None, help="weight copies (default: enough to defeat L2)")
    p.add_argument("--routing", choices=("auto", "kernel", "reference"), default="auto",
                   help="routing in the graph: the CUDA kernel if it works (auto), or insist / the torch reference")
    p.add_argument("--no-timeline", action="store_true", help="skip the per-kernel profiler timelines")
    p.add_argument("--variants", choices=("launch", "small_t"), default="launch",
                   help="launch: 3 launches vs one launch tiles (default); small_t: shipped vs narrow one-launch "
                        "tiles, with the routing-only and nothing-active phase rows")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help="cases: every --modes x --batches x (vanilla, --k0) instead of the default three")
    p.add_argument("--k0", type=int, nargs="+", default=[3], help="OEA k0 values of the --batches cases (default 3)")
    p.add_argument("--modes", nargs="+", choices=("skewed", "uniform"), default=["skewed"],
                   help="routing draws of the --batches cases (default skewed)")
    # A smoke test of the flow on the CPU (Triton's interpreter, fp16, injected timing) only.
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.time_budget <= 0 or args.repeats < 1 or (args.copies is not None and args.copies < 2):
        print("moe_ab: --time-budget must be > 0, --repeats >= 1 and --copies >= 2", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("moe_ab: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    results = run(args, on_progress=lambda r: write(r, args.out))
    print(write(results, args.out))
    return 0


def write(results, out_dir: str) -> str:
    """results.json and report.md into out_dir; returns the markdown."""
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    md = render(results)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(md)
    return md


if __name__ == "__main__":
    sys.exit(main())
