"""The MoE decode layer benchmark: does fewer distinct experts T really mean less time?

For each model preset, routing mode (uniform, skewed, trace) and decode batch B, with vanilla
top-k routing and OEA at each k0, on the H200 (docs: ../shared/docs/benchmarking.md):
  * correctness first: our Triton kernel and torch._grouped_mm against the per-expert loop,
    on fresh random inputs, before anything is timed;
  * CUDA-graph replay of C back-to-back calls, each on its own copy of the expert weights and
    its own routing draw (C copies keep a call from finding a previous call's experts in L2);
  * two figures per row: routing+MoE (routing inside the graph) and MoE only (routing done
    before capture); distinct experts T (mean of the C draws), effective TB/s, the floor
    T x expert_bytes / copy bandwidth measured in the same run, ratio to vanilla;
  * our kernels side by side, "fused" (the whole layer in one launch, fp32 atomic sums) and
    "triton" (deterministic: one launch or three, gate/up, down, combine, with programmatic
    dependent launch; the tuner tries both), and
    both vs torch._grouped_mm (and the plain loop, eager), on the
    same inputs; CUDA-graph nodes per routing+MoE call of each.
report_moe.py turns the result into markdown and plots.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.moe.shapes import MoEShape, get_preset
from oea_trt.bench.bandwidth import measure_bandwidth
from oea_trt.bench.env import environment, l2_bytes
from oea_trt.bench.rotation import copies_needed, copies_that_fit
from oea_trt.bench.routers import Router, pick_router, route_for_moe
from oea_trt.bench.routing_inputs import make_sources
from oea_trt.bench.timing import Timing, time_eager, time_in_graph

ALL_PRESETS = ("qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-235b-a22b-tp8")
#: Tile candidates tried by the tuner (block_n, block_k, warps, stages), one kernel at a time.
#: Narrow tiles give more programs when few experts are active; fewer stages let more programs
#: share an SM when the token tile is wide (B=64). scripts/check_moe_kernels.py --candidates
#: compiles them all for sm_90 without a GPU.
#: Trimmed to the tiles that won somewhere in the first H200 runs (benchmarks/results/moe.json),
#: so the side-by-side run has time for the one-launch kernel's search too.
GATE_UP_CANDIDATES = ((32, 128, 4, 3), (32, 256, 4, 3), (64, 128, 4, 4))
#: The down + combine kernel (down="combine", 2 launches): (block_n hidden rows per program,
#: block_k, warps, stages). 16 rows: 128 programs at H=2048; 32 rows: 128 at H=4096. NOT tried
#: by the tuner: on the H200 the 2-launch path was 1.4-2.3x slower per routing+MoE call than
#: the per-slot down + combine kernels (benchmarks/moe_ab.py; triton_kernel.py's module doc), so
#: the benchmark's time budget is not spent on it. scripts/check_moe_kernels.py --candidates still compiles these tiles.
DOWN_COMBINE_CANDIDATES = ((16, 256, 4, 5), (16, 128, 4, 8), (32, 256, 4, 4))
#: The per-slot down kernel (down="slots", 3 launches, the default), the tiles that won in the
#: first runs.
DOWN_CANDIDATES = ((64, 128, 4, 3), (128, 64, 4, 4))
#: One-launch kernel (fused_kernel.py) tiles: (block_i, block_k, block_h, warps, stages). None
#: of them spills registers at block_m 16, 32 or 64 (scripts/check_moe_kernels.py --candidates).
FUSED_CANDIDATES = ((16, 256, 128, 4, 4), (16, 128, 128, 4, 4), (32, 128, 128, 4, 4), (32, 128, 128, 8, 4),
                    (32, 128, 256, 8, 3), (64, 64, 128, 8, 4))
#: The triton kernel's one-launch path (down="one_launch"): KernelConfig changes the tuner tries
#: (the two best of the H100 A/B, benchmarks/moe_ab.py). gu_warps / gu_stages apply to the whole
#: kernel.
ONE_LAUNCH_CANDIDATES = (dict(gu_block_n=32, gu_block_k=128, dn_block_n=64, dn_block_k=128, gu_stages=4,
                              programs_per_sm=2),
                         dict(gu_block_n=32, gu_block_k=128, dn_block_n=128, dn_block_k=128, gu_stages=4,
                              programs_per_sm=2))
#: The tuner keeps its current tiles unless a candidate is faster by more than this fraction.
#: Its 3-repeat timings spread by ~0.5-1%: on the H100 at f4d3575 (30B, B=16) the 64-wide gate/up
#: tiles won by 0.5% (255.7 against 256.9 us, uniform vanilla, MoE only), and the same tiles cost
#: OEA k0=3 1.4 us of routing+MoE with vanilla unchanged (benchmarks/results/moe_one_launch_ab,
#: run 10): a noise-level win on one routing mix must not decide the tiles of all of them.
TUNE_MARGIN = 0.01
#: Our two kernels, in the order the report lists them.
OURS = ("fused", "triton")
#: bf16 tolerance against the fp32 loop: max error within 2% of the output's largest magnitude,
#: RMS error within 1% of its RMS (bf16 keeps ~3 significant digits; the intermediate and the
#: output are rounded to bf16).
MAX_TOL, RMS_TOL = 2e-2, 1e-2


@dataclasses.dataclass
class MoEBenchSpec:
    presets: Sequence[str] = ALL_PRESETS
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)
    modes: Sequence[str] = ("uniform", "skewed")
    k0s: Sequence[int] = (1, 2, 3, 4, 5, 6, 7)
    impls: Sequence[str] = ("fused", "triton", "grouped_mm", "loop")
    baseline_k0s: Sequence[int] = (3,)  # grouped_mm also timed at these k0 (and vanilla)
    loop_batches: Sequence[int] = (1, 16)  # the plain loop is slow: vanilla, first mode only
    tune_batches: Sequence[int] = (1, 16, 64)  # kernel tiles tuned here; other B use the nearest
    lite_presets: Sequence[str] = ()  # presets timed on fewer rows (lite_batches x lite_k0s)
    lite_batches: Sequence[int] = (1, 4, 16, 64)
    lite_k0s: Sequence[int] = (1, 3, 5)
    repeats: int = 5
    replays: int = 2
    copies: Optional[int] = None  # weight copies per preset (None: enough to defeat L2)
    tune: bool = True
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


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _dtype(spec: "MoEBenchSpec") -> torch.dtype:
    return getattr(torch, spec.dtype)


def _errors(out: torch.Tensor, ref: torch.Tensor) -> Tuple[float, float]:
    """(max abs error / max |ref|, rms error / rms ref)."""
    out, ref = out.float(), ref.float()
    diff = out - ref
    max_ref = ref.abs().max().clamp(min=1e-12)
    rms_ref = ref.pow(2).mean().sqrt().clamp(min=1e-12)
    return float(diff.abs().max() / max_ref), float(diff.pow(2).mean().sqrt() / rms_ref)


def _vanilla(shape: MoEShape) -> OEAConfig:
    return OEAConfig.vanilla(shape.num_experts, shape.top_k)


def _oea(shape: MoEShape, k0: int, **kw) -> OEAConfig:
    return OEAConfig(shape.num_experts, shape.top_k, k0, **kw)


# ---- the implementations under test, with one calling convention ---------------------------


def _impl_fn(impl: str, kernel_config=None, align: int = 1) -> Callable:
    """fn(x, weights, routing) -> [T, H]."""
    if impl == "fused":
        from oea_trt.moe.fused_kernel import fused_moe as fused

        layout = kernel_config.w2_layout if kernel_config is not None else "hi"
        return lambda x, w, r: fused(x, w.w13, w.down(layout), r.expert_ids, r.weights, r.active_mask, kernel_config)
    if impl == "triton":
        from oea_trt.moe.triton.three_launch import fused_moe

        return lambda x, w, r: fused_moe(x, w.w13, w.w2, r.expert_ids, r.weights, r.active_mask, kernel_config,
                                         active_ready=r.active_ready)
    if impl == "grouped_mm":
        from oea_trt.moe.grouped_mm import moe_grouped_mm

        return lambda x, w, r: moe_grouped_mm(x, w.w13, w.w2, r.expert_ids, r.weights, align=align)
    if impl == "loop":
        from oea_trt.moe.reference import moe_reference

        return lambda x, w, r: moe_reference(x, w.w13, w.w2, r.expert_ids, r.weights, compute_dtype=x.dtype)
    raise ValueError(f"unknown impl {impl!r}")


def check_correctness(shape: MoEShape, weights, router: Router, impls: Sequence[str], seed: int,
                      kernel_configs: Dict[str, Dict[int, object]] = None) -> dict:
    """Every impl against the fp32 loop on fresh random inputs (seeds the timing never uses).
    kernel_configs: impl -> {batch: config} (default tiles where absent).
    Returns {impl: {"ok", "cases": [...], "align"?}}."""
    from oea_trt.moe.reference import moe_reference
    from oea_trt.routing.synthetic import SkewedRouter, uniform_logits

    E, H = shape.num_experts, shape.hidden_size
    skewed = SkewedRouter(E, seed=7)
    cases = [  # (B, logits source, routing config): vanilla, OEA, and both fill sentinels
        (1, "uniform", _vanilla(shape)),
        (3, "skewed", _oea(shape, 2, fill="top1")),
        (16, "skewed", _oea(shape, 3)),
        (16, "uniform", _oea(shape, 4, fill="num_experts")),
        (64, "skewed", _vanilla(shape)),
        (64, "uniform", _oea(shape, 3)),
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
        aligns = (1, 16) if impl == "grouped_mm" else (1,)
        for align in aligns:
            entry = {"ok": True, "cases": []}
            if impl == "grouped_mm":
                entry["align"] = align
            for B, mode, config, x, routing, ref in inputs:
                cfg = (kernel_configs or {}).get(impl, {}).get(B)
                case = {"batch": B, "mode": mode, "k0": config.k0, "fill": config.fill}
                try:
                    out = _impl_fn(impl, cfg, align)(x, weights, routing)
                    _sync(str(device))
                    max_err, rms_err = _errors(out, ref)
                    case.update(max_err=max_err, rms_err=rms_err, ok=max_err <= MAX_TOL and rms_err <= RMS_TOL)
                except Exception as exc:  # noqa: BLE001 (recorded, the impl is then not timed)
                    case.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
                entry["cases"].append(case)
                entry["ok"] &= case["ok"]
            report[impl] = entry
            if entry["ok"]:
                break
        status = "ok" if report[impl]["ok"] else "FAILED"
        worst = max((c.get("max_err", float("inf")) for c in report[impl]["cases"]), default=float("nan"))
        _log(f"  correctness {impl:10s} {status} (worst max-error {worst:.2e} of max|ref|)")
        if not report[impl]["ok"]:
            for c in report[impl]["cases"]:
                if not c["ok"]:
                    _log(f"    failing case: {c}")
    return report


# ---- one timed row -------------------------------------------------------------------------


class _Batch:
    """Static device inputs of one (mode, B): C routing draws and C hidden-state batches."""

    def __init__(self, source, batch: int, copies: int, hidden: int, seed: int, device: str, dtype: torch.dtype):
        self.batch = batch
        self.logits = [source.draw(batch, seed=1_000 * batch + c + 100_000 * seed).to(device) for c in range(copies)]
        g = torch.Generator(device=device).manual_seed(seed * 7919 + batch)
        self.x = [torch.randn((batch, hidden), generator=g, device=device, dtype=dtype) for _ in range(copies)]


def _time_moe(fn, batch: _Batch, weights, routings, spec: MoEBenchSpec) -> Timing:
    C = len(weights)

    def work():
        for c in range(C):
            fn(batch.x[c], weights[c], routings[c])

    return time_in_graph(work, calls=C, repeats=spec.repeats, replays=spec.replays)


def _time_routed(fn, batch: _Batch, weights, router: Router, config: OEAConfig, spec: MoEBenchSpec) -> Timing:
    C = len(weights)

    def work():
        for c in range(C):
            fn(batch.x[c], weights[c], route_for_moe(router, batch.logits[c], config))

    return time_in_graph(work, calls=C, repeats=spec.repeats, replays=spec.replays)


def _row(shape: MoEShape, mode: str, batch: int, variant: str, k0: Optional[int], impl: str,
         active: List[int], moe: Optional[Timing], total: Optional[Timing], bw, timing_kind: str = "graph") -> dict:
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


# ---- tuning ----------------------------------------------------------------------------------


def tune_kernel(shape: MoEShape, weights, router: Router, batch: int, spec: MoEBenchSpec, impl: str = "triton"):
    """Coordinate search over one kernel's tiles, MoE-only graph time on uniform vanilla routing
    at `batch`. "triton": GATE_UP tiles, then DOWN tiles (the 3-launch path; PDL stays on where
    supported, see below). "fused": FUSED_CANDIDATES, then the [E, I, H]
    down layout, then programmatic dependent launch; a change is kept only if it is faster by more
    than TUNE_MARGIN. Returns (best config, us, [(config, us or error)])."""
    from oea_trt.bench.routing_inputs import UniformSource

    b = _Batch(UniformSource(shape.num_experts), batch, len(weights), shape.hidden_size, spec.seed + 17,
               spec.device, _dtype(spec))
    routings = [router.route(lg, _vanilla(shape)) for lg in b.logits]
    tried = []

    def measure(cfg) -> float:
        try:
            us = _time_moe(_impl_fn(impl, cfg), b, weights, routings,
                           dataclasses.replace(spec, repeats=3, replays=1)).median_us
            tried.append((cfg.to_dict(), us))
            return us
        except Exception as exc:  # noqa: BLE001 (e.g. out of shared memory: skip the candidate)
            tried.append((cfg.to_dict(), f"{type(exc).__name__}: {str(exc)[:200]}"))
            return math.inf

    args = (batch, shape.hidden_size, shape.moe_intermediate_size, shape.top_k, shape.num_experts)
    if impl == "fused":
        from oea_trt.moe.fused_kernel import default_config

        best = default_config(*args)
        steps = [[lambda c, i=i, k=k, h=h, w=w, s=s: c.replace(block_i=i, block_k=k, block_h=h, warps=w, stages=s)
                  for i, k, h, w, s in FUSED_CANDIDATES],
                 [lambda c: c.replace(w2_layout="ih")] if weights[0].w2_t is not None else [],
                 [lambda c: c.replace(pdl=True)]]
    else:
        from oea_trt.moe.triton.three_launch import default_config

        # Gate/up tiles, then the per-slot down kernel's tiles (the 3-launch path). The 2-launch
        # down + combine kernel is not tried (slower, see DOWN_COMBINE_CANDIDATES). Nor is PDL
        # off: in the H200 A/B (30B layer) PDL saved 0.9-1.6 us per routing+MoE call, mostly by
        # starting gate/up while the routing kernel drains, which this MoE-only timing cannot
        # see; MoE-only it moved by -0.9..+3.0 us, about this 3-repeat search's noise. Each try
        # would also compile three more kernels per batch.
        best = default_config(*args)
        steps = [[lambda c, n=n, k=k, w=w, s=s: c.replace(gu_block_n=n, gu_block_k=k, gu_warps=w, gu_stages=s)
                  for n, k, w, s in GATE_UP_CANDIDATES],
                 [lambda c, n=n, k=k, w=w, s=s: c.replace(down="slots", dn_block_n=n, dn_block_k=k, dn_warps=w,
                                                          dn_stages=s)
                  for n, k, w, s in DOWN_CANDIDATES],
                 # Then the one-launch path over its own tiles (8 warps for a 64-token tile, which
                 # spills heavily at 4): it wins where the three launches' fixed cost dominates.
                 [lambda c, t=t: c.replace(down="one_launch", gu_warps=8 if c.block_m >= 64 else 4, **t)
                  for t in ONE_LAUNCH_CANDIDATES]]
    best, best_us = coordinate_search(best, steps, measure)
    return best, best_us, tried


def coordinate_search(start, steps, measure: Callable[[object], float], margin: float = TUNE_MARGIN):
    """Each step varies one aspect (change(config) -> config) of the best config so far; a
    candidate replaces the best only where measure() says it is faster by more than `margin`
    (a fraction), so a noise-level win never moves the tiles off `start`. Returns (best, us)."""
    best, best_us = start, measure(start)
    for step in steps:
        base = best
        for change in step:
            cfg = change(base)
            if cfg != best and (us := measure(cfg)) < best_us * (1.0 - margin):
                best, best_us = cfg, us
    return best, best_us


def _triton_launches(shape: MoEShape, batches: Sequence[int], tuned: Dict[int, object]) -> List[int]:
    """Kernel launches per call of impl "triton" over `batches` (3 with the per-slot down kernel,
    the default and all the tuner tries; 2 with the optional down + combine kernel), from the
    tuned configs or, where none, the default."""
    from oea_trt.moe.triton.three_launch import default_config

    return sorted({(_config_for(b, tuned) or default_config(b, shape.hidden_size, shape.moe_intermediate_size,
                                                            shape.top_k, shape.num_experts)).launches
                   for b in batches})


def _config_for(batch: int, tuned: Dict[int, object]):
    if not tuned:
        return None
    nearest = min(tuned, key=lambda b: (abs(math.log2(b) - math.log2(batch)), -b))
    return tuned[nearest]


# ---- one preset ------------------------------------------------------------------------------


def bench_preset(shape: MoEShape, spec: MoEBenchSpec, router: Router, bw,
                 run_start: Optional[float] = None) -> Tuple[dict, List[dict]]:
    from oea_trt.moe.layer import ExpertWeights

    t_start = time.time()
    free = torch.cuda.mem_get_info()[0] if torch.device(spec.device).type == "cuda" else 8 << 30
    # The one-launch kernel may read down_proj transposed: a third more bytes per copy.
    with_w2_t = "fused" in spec.impls
    bytes_per_copy = shape.num_experts * shape.expert_bytes * (4 if with_w2_t else 3) // 3
    wanted = spec.copies or copies_needed(shape.expert_bytes, l2_bytes())
    copies = copies_that_fit(wanted, bytes_per_copy, free)
    _log(f"== {shape.name}: E={shape.num_experts} top-{shape.top_k} H={shape.hidden_size} "
         f"I={shape.moe_intermediate_size}, expert {shape.expert_bytes / 1e6:.2f} MB, {copies} weight copies "
         f"({copies * bytes_per_copy / 1e9:.1f} GB)")
    weights = [ExpertWeights.random(shape, device=spec.device, dtype=_dtype(spec), seed=1_000 * spec.seed + c)
               for c in range(copies)]
    if with_w2_t:
        weights = [w.with_down_transposed() for w in weights]
    info = {"shape": dataclasses.asdict(shape), "expert_bytes": shape.expert_bytes, "copies": copies}

    impls = [i for i in spec.impls if i != "loop"]
    info["correctness"] = check_correctness(shape, weights[0], router, impls, spec.seed)
    usable = {i for i in impls if info["correctness"][i]["ok"]}
    align = info["correctness"].get("grouped_mm", {}).get("align", 1)

    tuned: Dict[str, Dict[int, object]] = {impl: {} for impl in OURS}
    for impl in [i for i in OURS if i in usable and spec.tune]:
        info.setdefault("tuning", {})[impl] = {}
        for b in spec.tune_batches:
            cfg, us, tried = tune_kernel(shape, weights, router, b, spec, impl)
            tuned[impl][b] = cfg
            info["tuning"][impl][str(b)] = {"best": cfg.to_dict(), "best_us": us, "tried": tried}
            _log(f"  tuned {impl} B={b}: {us:.1f} us/call with {cfg}")
        recheck = check_correctness(shape, weights[0], router, [impl], spec.seed + 1,
                                    kernel_configs={impl: {b: _config_for(b, tuned[impl]) for b in (1, 3, 16, 64)}})
        info["correctness"][f"{impl}_tuned"] = recheck[impl]
        if not recheck[impl]["ok"]:
            _log(f"  tuned {impl} tiles FAILED the correctness re-check: timing with default tiles")
            tuned[impl] = {}
    info["kernel_configs"] = {impl: {str(b): (_config_for(b, tuned[impl]).to_dict() if tuned[impl] else None)
                                     for b in spec.batch_sizes} for impl in OURS}
    info["launches"] = {"triton": _triton_launches(shape, spec.batch_sizes, tuned["triton"])}

    lite = shape.name in spec.lite_presets
    batches = [b for b in spec.batch_sizes if not lite or b in spec.lite_batches]
    k0s = [k for k in spec.k0s if k < shape.top_k and (not lite or k in spec.lite_k0s)]
    if "fused" in usable or "triton" in usable:
        info["graph_nodes"] = _graph_nodes(shape, spec, router, weights, usable, tuned)
    sources = make_sources(spec.modes, shape.num_experts, spec.trace_path)
    rows: List[dict] = []
    variants = [("vanilla", None)] + [(f"k0={k}", k) for k in k0s] + [("vanilla#2", None)]
    run_start = run_start or t_start
    for mode, source in sources.items():
        for batch in batches:
            if spec.out_of_time(run_start):
                info.setdefault("skipped", []).append(f"{mode} B={batch}")
                continue
            b = _Batch(source, batch, copies, shape.hidden_size, spec.seed, spec.device, _dtype(spec))
            ours = {impl: _impl_fn(impl, _config_for(batch, tuned[impl])) for impl in OURS if impl in usable}
            for variant, k0 in variants:
                try:
                    _bench_variant(shape, spec, router, bw, usable, align, mode, batch, b, ours, weights, copies,
                                   variant, k0, rows)
                except Exception as exc:  # noqa: BLE001 (one failing row must not lose the rest)
                    _log(f"  {mode:7s} B={batch:<3d} {variant:9s} FAILED: {type(exc).__name__}: {str(exc)[:300]}")
                    rows.append({"preset": shape.name, "mode": mode, "batch": batch, "variant": variant, "k0": k0,
                                 "impl": "error", "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            del b
    if info.get("skipped"):
        _log(f"  time budget of {spec.time_budget_s:.0f} s reached: skipped {', '.join(info['skipped'])}")
    _add_ratios(rows)
    del weights
    gc.collect()
    if torch.device(spec.device).type == "cuda":
        torch.cuda.empty_cache()
    info["seconds"] = time.time() - t_start
    _log(f"== {shape.name} done in {info['seconds']:.0f} s")
    return info, rows


def _bench_variant(shape, spec, router, bw, usable, align, mode, batch, b, ours, weights, copies, variant, k0,
                   rows) -> None:
    """Time one routing variant at one (mode, batch) with every usable impl; append rows."""
    config = _vanilla(shape) if k0 is None else _oea(shape, k0)
    routings = [router.route(lg, config) for lg in b.logits]
    active = [int(r.num_active) for r in routings]
    for impl, fn in ours.items():
        try:
            moe = _time_moe(fn, b, weights, routings, spec)
            total = _time_routed(fn, b, weights, router, config, spec)
        except Exception as exc:  # noqa: BLE001 (the other kernel's row still counts)
            _log(f"  {mode:7s} B={batch:<3d} {variant:9s} {impl} FAILED: {type(exc).__name__}: {str(exc)[:300]}")
            rows.append({"preset": shape.name, "mode": mode, "batch": batch, "variant": variant, "k0": k0,
                         "impl": "error", "error": f"{impl}: {type(exc).__name__}: {str(exc)[:300]}"})
            continue
        rows.append(_row(shape, mode, batch, variant, k0, impl, active, moe, total, bw))
        r = rows[-1]
        _log(f"  {mode:7s} B={batch:<3d} {variant:9s} T={r['T']:6.1f}  {impl:6s} routing+MoE {r['total_us']:8.1f} us"
             f"  MoE {r['moe_us']:8.1f} us  {r['moe_tb_s']:.2f} TB/s  floor {r['floor_us']:7.1f} us")
    if "grouped_mm" in usable and (k0 is None or k0 in spec.baseline_k0s) and variant != "vanilla#2":
        moe = _time_moe(_impl_fn("grouped_mm", align=align), b, weights, routings, spec)
        rows.append(_row(shape, mode, batch, variant, k0, "grouped_mm", active, moe, None, bw))
        _log(f"  {mode:7s} B={batch:<3d} {variant:9s} T={rows[-1]['T']:6.1f}  grouped_mm MoE "
             f"{moe.median_us:8.1f} us")
    if ("loop" in spec.impls and variant == "vanilla" and mode == spec.modes[0]
            and batch in spec.loop_batches):
        loop = _impl_fn("loop")
        n = min(2, copies)
        t = time_eager(lambda: [loop(b.x[c], weights[c], routings[c]) for c in range(n)], calls=n,
                       repeats=spec.repeats, iters=1)
        rows.append(_row(shape, mode, batch, variant, k0, "loop", active[:n], t, None, bw, "eager"))
        _log(f"  {mode:7s} B={batch:<3d} {variant:9s} loop (eager) MoE {t.median_us:8.1f} us")


def _graph_nodes(shape, spec, router, weights, usable, tuned) -> dict:
    """CUDA-graph nodes of one routing+MoE call and of the MoE alone, per kernel of ours
    (skewed B=16, OEA k0=3; graph_nodes.py). A failure is recorded, never raised."""
    from oea_trt.bench.graph_nodes import count_nodes
    from oea_trt.bench.routing_inputs import make_sources as sources_for

    logits = sources_for(["skewed"], shape.num_experts)["skewed"].draw(16, seed=4242).to(spec.device)
    x = torch.randn((16, shape.hidden_size), device=spec.device, dtype=_dtype(spec))
    config = _oea(shape, 3)
    routing = router.route(logits, config)
    out = {}
    for impl in [i for i in OURS if i in usable]:
        fn = _impl_fn(impl, _config_for(16, tuned[impl]))
        out[impl] = {"routing+moe": count_nodes(lambda: fn(x, weights[0], route_for_moe(router, logits, config))),
                     "moe": count_nodes(lambda: fn(x, weights[0], routing))}
        _log(f"  graph nodes per call, {impl}: routing+MoE {out[impl]['routing+moe']}, MoE {out[impl]['moe']}")
    return out


def _add_ratios(rows: List[dict]) -> None:
    """ratio_total / ratio_moe: a row's time over vanilla's, same preset, mode, batch and impl."""
    base = {(r["preset"], r["mode"], r["batch"], r["impl"]): r for r in rows if r["variant"] == "vanilla"}
    for r in rows:
        if r["impl"] == "error":
            continue
        v = base.get((r["preset"], r["mode"], r["batch"], r["impl"]))
        for key in ("total", "moe"):
            mine, theirs = r.get(f"{key}_us"), v and v.get(f"{key}_us")
            r[f"ratio_{key}"] = mine / theirs if mine and theirs else None


# ---- the whole run ---------------------------------------------------------------------------


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
