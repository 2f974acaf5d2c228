"""The MoE decode layer benchmark: does fewer distinct experts T really mean less time?

For each model preset, routing mode (routing_inputs.MODES) and decode batch B, with vanilla
top-k routing and OEA at each k0 (how we measure: docs/moe-benchmark.md):
  * correctness first: every implementation (oea_trt.moe.IMPLS) against the fp32 loop, on
    fresh random inputs, before anything is timed;
  * CUDA-graph replay of C back-to-back calls, each on its own copy of the expert weights and
    its own routing draw (C copies keep a call from finding a previous call's experts in L2);
  * two figures per row: routing+MoE (routing inside the graph) and MoE only (routing done
    before capture); distinct experts T (mean of the C draws), effective TB/s, the floor
    T x expert_bytes / copy bandwidth measured in the same run, ratio to vanilla;
  * every call is moe_forward, so our kernel runs with the configs shipped for this GPU and
    layer shape (oea_trt/moe/tuned.py; `oea-trt bench tune` writes them), which the run
    records, against torch._grouped_mm (and the plain loop, eager) on the same inputs; CUDA-graph
    nodes per routing+MoE call of ours.
report_moe.py turns the result into markdown and plots.
"""
from __future__ import annotations

import dataclasses
import gc
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from oea_trt.bench.bandwidth import measure_bandwidth
from oea_trt.bench.env import environment, l2_bytes
from oea_trt.bench.moe_timing import (RoutingBatch, layer_call, oea_config, relative_errors, time_moe, time_routed,
                                      vanilla_config, MAX_TOL, RMS_TOL)
from oea_trt.bench.rotation import copies_needed, copies_that_fit
from oea_trt.bench.routers import Router, pick_router, route_for_moe
from oea_trt.bench.routing_inputs import MODES, TRACE, make_sources
from oea_trt.bench.timing import Timing, time_eager
from oea_trt.moe.impls import IMPLS, OURS
from oea_trt.moe.shapes import PRESETS, MoEShape, get_preset

ALL_PRESETS = tuple(PRESETS)


@dataclasses.dataclass
class MoEBenchSpec:
    presets: Sequence[str] = ALL_PRESETS
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
    modes: Sequence[str] = tuple(m for m in MODES if m != TRACE)
    k0s: Sequence[int] = (1, 2, 3, 4, 5, 6, 7)
    impls: Sequence[str] = tuple(IMPLS)
    baseline_k0s: Sequence[int] = (3,)  # grouped_mm also timed at these k0 (and vanilla)
    loop_batches: Sequence[int] = (1, 16)  # the plain loop is slow: vanilla, first mode only
    lite_presets: Sequence[str] = ()  # presets timed on fewer rows (lite_batches x lite_k0s)
    lite_batches: Sequence[int] = (1, 4, 16, 64)
    lite_k0s: Sequence[int] = (1, 3, 5)
    repeats: int = 5
    replays: int = 2
    copies: Optional[int] = None  # weight copies per preset (None: enough to defeat L2)
    trace_path: Optional[str] = None
    routing: str = "auto"  # auto | kernel | reference
    seed: int = 0
    device: str = "cuda"  # "cpu" only for tests of the flow (timing is then injected)
    dtype: str = "bfloat16"
    time_budget_s: Optional[float] = None  # stop starting new (mode, batch) blocks after this

    def out_of_time(self, t0: float) -> bool:
        return self.time_budget_s is not None and time.time() - t0 > self.time_budget_s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _log(msg: str) -> None:
    print(msg, flush=True)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _dtype(spec: MoEBenchSpec) -> torch.dtype:
    return getattr(torch, spec.dtype)


def check_correctness(shape: MoEShape, weights, router: Router, impls: Sequence[str], seed: int) -> dict:
    """Every impl, as moe_forward runs it, against the fp32 loop on fresh random inputs (seeds
    the timing never uses). Returns {impl: {"ok", "cases": [...]}}."""
    from oea_trt.moe.reference import moe_reference
    from oea_trt.routing.synthetic import SkewedRouter, uniform_logits

    E, H = shape.num_experts, shape.hidden_size
    skewed = SkewedRouter(E, seed=7)
    cases = [  # (B, logits source, routing config): vanilla, OEA, and both fill sentinels
        (1, "uniform", vanilla_config(shape)),
        (3, "skewed", oea_config(shape, 2, fill="top1")),
        (16, "skewed", oea_config(shape, 3)),
        (16, "uniform", oea_config(shape, 4, fill="num_experts")),
        (64, "skewed", vanilla_config(shape)),
        (64, "uniform", oea_config(shape, 3)),
    ]
    device, dtype = weights.w13.device, weights.w13.dtype
    g = torch.Generator(device=device).manual_seed(10_000 + seed)
    inputs = []
    for i, (B, mode, config) in enumerate(cases):
        logits = (uniform_logits(B, E, seed=90_000 + i) if mode == "uniform" else
                  skewed.logits(B, seed=90_000 + i)).to(device)
        x = torch.randn((B, H), generator=g, device=device, dtype=dtype)
        routing = router.route(logits, config)
        ref = moe_reference(x, weights.w13, weights.w2, routing.expert_ids, routing.weights)
        inputs.append((B, mode, config, x, routing, ref))
    report = {}
    for impl in impls:
        entry = {"ok": True, "cases": []}
        for B, mode, config, x, routing, ref in inputs:
            case = {"batch": B, "mode": mode, "k0": config.k0, "fill": config.fill}
            try:
                out = layer_call(impl)(x, weights, routing)
                _sync(device)
                max_err, rms_err = relative_errors(out, ref)
                case.update(max_err=max_err, rms_err=rms_err, ok=max_err <= MAX_TOL and rms_err <= RMS_TOL)
            except Exception as exc:  # noqa: BLE001 (recorded, the impl is then not timed)
                case.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
            entry["cases"].append(case)
            entry["ok"] &= case["ok"]
        report[impl] = entry
        worst = max((c.get("max_err", float("inf")) for c in entry["cases"]), default=float("nan"))
        _log(f"  correctness {impl:10s} {'ok' if entry['ok'] else 'FAILED'} (worst max-error {worst:.2e} of max|ref|)")
        for c in entry["cases"]:
            if not c["ok"]:
                _log(f"    failing case: {c}")
    return report


def kernel_configs(shape: MoEShape, batches: Sequence[int], spec: MoEBenchSpec) -> Tuple[Dict[int, object], str]:
    """({batch: the KernelConfig moe_forward runs our kernel with}, where they come from)."""
    from oea_trt.moe.triton.config import default_config
    from oea_trt.moe.tuned import config_path, cuda_device_name, tuned_config, tuned_configs

    args = (shape.num_experts, shape.hidden_size, shape.moe_intermediate_size, shape.top_k, spec.dtype)
    if torch.device(spec.device).type != "cuda":
        return ({b: default_config(b, shape.hidden_size, shape.moe_intermediate_size, shape.top_k, shape.num_experts)
                 for b in batches}, "heuristic default (not on CUDA)")
    name = cuda_device_name(torch.cuda.current_device())
    source = config_path(name, *args) if tuned_configs(name, *args) else f"heuristic default (no tuned file for {name})"
    return {b: tuned_config(b, *args[:4], spec.dtype, name) for b in batches}, source


def make_row(shape: MoEShape, mode: str, batch: int, variant: str, k0: Optional[int], impl: str, active: List[int],
             moe: Optional[Timing], total: Optional[Timing], bw, timing_kind: str = "graph") -> dict:
    """One result row: T from the routing draws, the floor, and the figures that were timed."""
    t_mean = sum(active) / len(active)
    weight_bytes = t_mean * shape.expert_bytes
    row = {"preset": shape.name, "mode": mode, "batch": batch, "variant": variant, "k0": k0, "impl": impl,
           "timing": timing_kind, "T": t_mean, "T_min": min(active), "T_max": max(active),
           "weight_bytes": weight_bytes, "floor_us": weight_bytes / (bw.copy_tb_s * 1e12) * 1e6,
           "moe_us": None, "total_us": None, "routing_us": None}
    if moe is not None:
        row.update(moe_us=moe.median_us, moe_spread=moe.spread,
                   moe_tb_s=weight_bytes / (moe.median_us * 1e-6) / 1e12)
        row.update(moe_pct_copy=row["moe_tb_s"] / bw.copy_tb_s, moe_pct_read=row["moe_tb_s"] / bw.read_tb_s)
    if total is not None:
        row.update(total_us=total.median_us, total_spread=total.spread,
                   total_tb_s=weight_bytes / (total.median_us * 1e-6) / 1e12)
        if moe is not None:
            row["routing_us"] = total.median_us - moe.median_us
    return row


def bench_preset(shape: MoEShape, spec: MoEBenchSpec, router: Router, bw,
                 run_start: Optional[float] = None) -> Tuple[dict, List[dict]]:
    from oea_trt.moe.layer import ExpertWeights

    t_start = time.time()
    free = torch.cuda.mem_get_info()[0] if torch.device(spec.device).type == "cuda" else 8 << 30
    bytes_per_copy = shape.num_experts * shape.expert_bytes
    wanted = spec.copies or copies_needed(shape.expert_bytes, l2_bytes())
    copies = copies_that_fit(wanted, bytes_per_copy, free)
    _log(f"== {shape.name}: E={shape.num_experts} top-{shape.top_k} H={shape.hidden_size} "
         f"I={shape.moe_intermediate_size}, expert {shape.expert_bytes / 1e6:.2f} MB, {copies} weight copies "
         f"({copies * bytes_per_copy / 1e9:.1f} GB)")
    weights = [ExpertWeights.random(shape, device=spec.device, dtype=_dtype(spec), seed=1_000 * spec.seed + c)
               for c in range(copies)]
    info = {"shape": dataclasses.asdict(shape), "expert_bytes": shape.expert_bytes, "copies": copies}
    configs, source = kernel_configs(shape, spec.batch_sizes, spec)
    info["kernel_configs"] = {"source": source, "by_batch": {str(b): c.to_dict() for b, c in configs.items()}}
    info["launches"] = {impl: sorted({c.launches for c in configs.values()}) for impl in OURS}
    _log(f"  our kernel's configs: {source}")

    impls = [i for i in spec.impls if i != "loop"]  # the loop is the reference itself
    info["correctness"] = check_correctness(shape, weights[0], router, impls, spec.seed)
    usable = {i for i in impls if info["correctness"][i]["ok"]}
    ours = {impl: layer_call(impl) for impl in OURS if impl in usable}

    lite = shape.name in spec.lite_presets
    batches = [b for b in spec.batch_sizes if not lite or b in spec.lite_batches]
    k0s = [k for k in spec.k0s if k < shape.top_k and (not lite or k in spec.lite_k0s)]
    if ours:
        info["graph_nodes"] = graph_nodes(shape, spec, router, weights, ours)
    sources = make_sources(spec.modes, shape.num_experts, spec.trace_path)
    rows: List[dict] = []
    variants = [("vanilla", None)] + [(f"k0={k}", k) for k in k0s] + [("vanilla#2", None)]
    run_start = run_start or t_start
    for mode, source in sources.items():
        for batch in batches:
            if spec.out_of_time(run_start):
                info.setdefault("skipped", []).append(f"{mode} B={batch}")
                continue
            b = RoutingBatch(source, batch, copies, shape.hidden_size, spec.seed, spec.device, _dtype(spec))
            for variant, k0 in variants:
                try:
                    bench_variant(shape, spec, router, bw, usable, mode, b, ours, weights, variant, k0, rows)
                except Exception as exc:  # noqa: BLE001 (one failing row must not lose the rest)
                    _log(f"  {mode:7s} B={batch:<3d} {variant:9s} FAILED: {type(exc).__name__}: {str(exc)[:300]}")
                    rows.append({"preset": shape.name, "mode": mode, "batch": batch, "variant": variant, "k0": k0,
                                 "impl": "error", "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            del b
    if info.get("skipped"):
        _log(f"  time budget of {spec.time_budget_s:.0f} s reached: skipped {', '.join(info['skipped'])}")
    add_ratios(rows)
    del weights
    gc.collect()
    if torch.device(spec.device).type == "cuda":
        torch.cuda.empty_cache()
    info["seconds"] = time.time() - t_start
    _log(f"== {shape.name} done in {info['seconds']:.0f} s")
    return info, rows


def bench_variant(shape, spec, router, bw, usable, mode, b: RoutingBatch, ours: Dict[str, Callable], weights,
                  variant, k0, rows) -> None:
    """Time one routing variant at one (mode, batch) with every usable impl; append rows."""
    config = vanilla_config(shape) if k0 is None else oea_config(shape, k0)
    routings = [router.route(lg, config) for lg in b.logits]
    active = [int(r.num_active) for r in routings]
    timing = dict(repeats=spec.repeats, replays=spec.replays)
    for impl, fn in ours.items():
        try:
            moe = time_moe(fn, b, weights, routings, **timing)
            total = time_routed(fn, b, weights, router, config, **timing)
        except Exception as exc:  # noqa: BLE001 (the other impls' rows still count)
            _log(f"  {mode:7s} B={b.batch:<3d} {variant:9s} {impl} FAILED: {type(exc).__name__}: {str(exc)[:300]}")
            rows.append({"preset": shape.name, "mode": mode, "batch": b.batch, "variant": variant, "k0": k0,
                         "impl": "error", "error": f"{impl}: {type(exc).__name__}: {str(exc)[:300]}"})
            continue
        rows.append(make_row(shape, mode, b.batch, variant, k0, impl, active, moe, total, bw))
        r = rows[-1]
        _log(f"  {mode:7s} B={b.batch:<3d} {variant:9s} T={r['T']:6.1f}  {impl:6s} routing+MoE {r['total_us']:8.1f} us"
             f"  MoE {r['moe_us']:8.1f} us  {r['moe_tb_s']:.2f} TB/s  floor {r['floor_us']:7.1f} us")
    if "grouped_mm" in usable and (k0 is None or k0 in spec.baseline_k0s) and variant != "vanilla#2":
        moe = time_moe(layer_call("grouped_mm"), b, weights, routings, **timing)
        rows.append(make_row(shape, mode, b.batch, variant, k0, "grouped_mm", active, moe, None, bw))
        _log(f"  {mode:7s} B={b.batch:<3d} {variant:9s} T={rows[-1]['T']:6.1f}  grouped_mm MoE "
             f"{moe.median_us:8.1f} us")
    if "loop" in spec.impls and variant == "vanilla" and mode == spec.modes[0] and b.batch in spec.loop_batches:
        loop = layer_call("loop")
        n = min(2, len(weights))
        t = time_eager(lambda: [loop(b.x[c], weights[c], routings[c]) for c in range(n)], calls=n,
                       repeats=spec.repeats, iters=1)
        rows.append(make_row(shape, mode, b.batch, variant, k0, "loop", active[:n], t, None, bw, "eager"))
        _log(f"  {mode:7s} B={b.batch:<3d} {variant:9s} loop (eager) MoE {t.median_us:8.1f} us")


def graph_nodes(shape, spec, router, weights, ours: Dict[str, Callable]) -> dict:
    """CUDA-graph nodes of one routing+MoE call and of the MoE alone, per kernel of ours
    (skewed B=16, OEA k0=3; graph_nodes.py). A failure is recorded, never raised."""
    from oea_trt.bench.graph_nodes import count_nodes

    logits = make_sources(["skewed"], shape.num_experts)["skewed"].draw(16, seed=4242).to(spec.device)
    x = torch.randn((16, shape.hidden_size), device=spec.device, dtype=_dtype(spec))
    config = oea_config(shape, 3)
    routing = router.route(logits, config)
    out = {}
    for impl, fn in ours.items():
        out[impl] = {"routing+moe": count_nodes(lambda: fn(x, weights[0], route_for_moe(router, logits, config))),
                     "moe": count_nodes(lambda: fn(x, weights[0], routing))}
        _log(f"  graph nodes per call, {impl}: routing+MoE {out[impl]['routing+moe']}, MoE {out[impl]['moe']}")
    return out


def add_ratios(rows: List[dict]) -> None:
    """ratio_total / ratio_moe: a row's time over vanilla's, same preset, mode, batch and impl."""
    base = {(r["preset"], r["mode"], r["batch"], r["impl"]): r for r in rows if r["variant"] == "vanilla"}
    for r in rows:
        if r["impl"] == "error":
            continue
        v = base.get((r["preset"], r["mode"], r["batch"], r["impl"]))
        for key in ("total", "moe"):
            mine, theirs = r.get(f"{key}_us"), v and v.get(f"{key}_us")
            r[f"ratio_{key}"] = mine / theirs if mine and theirs else None


def run_moe_benchmark(spec: MoEBenchSpec, on_progress: Optional[Callable[[dict], None]] = None) -> dict:
    """Run everything in `spec`; returns the results dict (write it with report_moe).
    on_progress(results) is called after each preset, so a run cut short keeps what it did."""
    if not torch.cuda.is_available():
        raise RuntimeError("the MoE benchmark needs a CUDA GPU (torch.cuda.is_available() is False)")
    t0 = time.time()
    env = environment()
    _log(f"GPU {env.get('gpu', {}).get('name')}, torch {env['torch']}, triton {env.get('triton')}, "
         f"commit {env['git']['commit']}")
    bw = measure_bandwidth()
    _log(f"bandwidth: copy {bw.copy_tb_s:.2f} TB/s, read {bw.read_tb_s:.2f} TB/s ({bw.nbytes / 2**30:.0f} GiB)")
    router = pick_router(spec.routing)
    _log(f"routing in the graph: {router.name} ({router.note})")
    results = {"env": env, "bandwidth": bw.to_dict(), "spec": spec.to_dict(),
               "routing": {"impl": router.name, "note": router.note}, "presets": {}, "rows": []}
    for name in spec.presets:
        shape = get_preset(name)
        if spec.out_of_time(t0):
            results["presets"][name] = {"skipped": "time budget reached before this preset"}
            _log(f"== {name}: skipped, time budget of {spec.time_budget_s:.0f} s reached")
            continue
        try:
            info, rows = bench_preset(shape, spec, router, bw, run_start=t0)
        except Exception as exc:  # noqa: BLE001 (one failing preset must not lose the others)
            _log(f"== {name} FAILED: {type(exc).__name__}: {exc}")
            info, rows = {"error": f"{type(exc).__name__}: {exc}"}, []
            gc.collect()
            torch.cuda.empty_cache()
        results["presets"][name] = info
        results["rows"].extend(rows)
        results["seconds"] = time.time() - t0
        if on_progress:
            on_progress(results)
    return results
