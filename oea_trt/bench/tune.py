"""`oea-trt bench tune`: search our MoE kernel's tiles and launch structure per (GPU, layer shape,
batch) and write the winners as the tuned-config files the library reads (oea_trt/moe/tuned.py).

Per preset and batch: CUDA-graph time of C back-to-back calls over C weight copies (no call
finds its experts in L2). By default each call is routing+MoE, the fused routing kernel in the
graph ahead of the MoE as a served model runs them (TuneSpec.timing "routed"): the MoE kernel
then starts on the routing's published active set, and tiles that win with the routing done
ahead of the graph can lose there (H200, B=8 and 16, k0=3: 8.6-9.4 us of routing+MoE over MoE
only with the MoE-only winner, 2.4-5.4 at other batches;
benchmarks/results/moe_floor_rows_h200/). "moe" times the MoE alone, on routing done before
capture; "routed" falls back to it, and says so, where the routing kernel cannot run. The
objective (TuneSpec.objective) is a list of routings whose times a candidate sums: by default
uniform vanilla routing, the most distinct experts a batch of that size touches, plus skewed OEA
k0=3, so the tiles also serve the small active sets OEA produces. A coordinate search starts
from the heuristic default and varies one aspect at a time (candidate_steps): gate/up tiles,
then the three-launch path's down tiles, then the one-launch path's tiles, then the three-launch
path's per-expert hand-off on or off, and again from the new best where a round changed it
(TUNE_ROUNDS). A change is kept only
where it is faster by more than TUNE_MARGIN: the 3-repeat timings spread by about a percent, and
a noise-level win on one routing mix must not decide the tiles of all of them. Each winner is
checked against the fp32 loop on fresh inputs before it is written.

Writes <output_dir>/<GPU>/E.._H.._I.._k.._<dtype>.json per preset (the package's layout) and
<output_dir>/tune_results.json (every candidate's time, the run's environment); --install also
writes the files into the package (oea_trt/moe/tuned_configs/).
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from oea_trt.bench.moe_timing import (RoutingBatch, layer_call, oea_config, time_moe, time_routed, vanilla_config,
                                      within_tolerance)
from oea_trt.bench.routers import Router, pick_router
from oea_trt.bench.routing_inputs import SyntheticSource
from oea_trt.moe.shapes import PRESETS, MoEShape, get_preset
from oea_trt.moe.triton.config import KernelConfig, default_config

ALL_PRESETS = tuple(PRESETS)
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
#: Gate/up tiles tried: (block_n, block_k, warps, stages). Narrow tiles give more programs when
#: few experts are active; fewer stages let more programs share an SM when the token tile is wide;
#: 8 warps keep more loads in flight per program where a wide token tile leaves few programs.
GATE_UP_CANDIDATES = ((32, 128, 4, 3), (32, 256, 4, 3), (64, 128, 4, 4), (64, 128, 8, 3))
#: The three-launch path's down tiles: (block_n, block_k, warps, stages, dn_preload, handoff). A
#: preloaded tile (each down program's first w2 tile read whole while gate/up still streams) pays
#: where few experts are active (H100, B=1 k0=3: 16.6 against 19.1 us; benchmarks/results/
#: preload_three_launch_h100/) and costs where a program takes many down items. The per-expert
#: hand-off pays with streamed tiles (B=32 and 64: 2-4%) and costs with preloaded ones (B=1 k0=3:
#: 18.0 against 16.5 us; benchmarks/results/handoff_h100/); the hand-off step tries the other.
DOWN_CANDIDATES = ((64, 128, 4, 3, False, True), (128, 64, 4, 4, False, True), (128, 128, 8, 3, False, True),
                   (32, 256, 4, 3, True, False), (64, 256, 8, 2, True, False))
#: The one-launch path: KernelConfig changes. gu_warps / gu_stages apply to the whole kernel.
ONE_LAUNCH_CANDIDATES = (dict(gu_block_n=32, gu_block_k=128, dn_block_n=64, dn_block_k=128, gu_stages=4,
                              programs_per_sm=2),
                         dict(gu_block_n=32, gu_block_k=128, dn_block_n=128, dn_block_k=128, gu_stages=4,
                              programs_per_sm=2),
                         # Narrow gate/up items: twice the items when OEA leaves few experts active.
                         dict(gu_block_n=16, gu_block_k=256, dn_block_n=64, dn_block_k=128, gu_stages=4,
                              programs_per_sm=2))
#: The default objective: (routing mode, k0 or None for vanilla) whose times a candidate sums.
DEFAULT_OBJECTIVE = (("uniform", None), ("skewed", 3))
#: What one timed call is: "routed" (routing kernel + MoE in one graph) or "moe" (the MoE alone).
TIMINGS = ("routed", "moe")
DEFAULT_TIMING = "routed"
#: A candidate replaces the best config only where it is faster by more than this fraction.
TUNE_MARGIN = 0.01
#: Rounds of the coordinate search (a round that changes nothing ends it).
TUNE_ROUNDS = 2


def candidate_steps() -> List[List[Callable[[KernelConfig], KernelConfig]]]:
    """The search's steps, each a list of changes (config -> config) of the best config so far."""
    gate_up = [lambda c, n=n, k=k, w=w, s=s: c.replace(gu_block_n=n, gu_block_k=k, gu_warps=w, gu_stages=s)
               for n, k, w, s in GATE_UP_CANDIDATES]
    down = [lambda c, n=n, k=k, w=w, s=s, p=p, h=h: c.replace(down="slots", dn_block_n=n, dn_block_k=k, dn_warps=w,
                                                              dn_stages=s, dn_preload=p, handoff=h)
            for n, k, w, s, p, h in DOWN_CANDIDATES]
    # 8 warps for a 64-token tile of the one-launch kernel, which spills heavily at 4.
    one_launch = [lambda c, t=t: c.replace(down="one_launch", dn_preload=False, handoff=False,
                                           gu_warps=8 if c.block_m >= 64 else 4, **t)
                  for t in ONE_LAUNCH_CANDIDATES]
    # The per-expert hand-off on or off (three launches only; on one launch it changes nothing).
    handoff = [lambda c: c.replace(handoff=not c.handoff) if c.down == "slots" else c]
    return [gate_up, down, one_launch, handoff]


def coordinate_search(start, steps, measure: Callable[[object], float], margin: float = TUNE_MARGIN,
                      rounds: int = TUNE_ROUNDS):
    """Each step varies one aspect (change(config) -> config) of the best config so far; a
    candidate replaces the best only where measure() says it is faster by more than `margin`
    (a fraction), so a noise-level win never moves the tiles off `start`. Where a round moved
    the best config, the steps run again from it (at most `rounds` rounds): a change found in a
    later step can make an earlier step's candidates win (B=1 on an H100: the preloaded down
    tiles of step 2 want step 1's wider gate/up tiles). No config is measured twice.
    Returns (best, us)."""
    times = {}

    def timed(cfg) -> float:
        if cfg not in times:
            times[cfg] = measure(cfg)
        return times[cfg]

    best, best_us = start, timed(start)
    for _ in range(rounds):
        before = best
        for step in steps:
            base = best
            for change in step:
                cfg = change(base)
                if cfg != best and (us := timed(cfg)) < best_us * (1.0 - margin):
                    best, best_us = cfg, us
        if best == before:
            break
    return best, best_us


@dataclasses.dataclass
class TuneSpec:
    presets: Sequence[str] = ALL_PRESETS
    batches: Sequence[int] = DEFAULT_BATCHES
    preset_batches: Dict[str, Sequence[int]] = dataclasses.field(default_factory=dict)  # per-preset override
    repeats: int = 3
    copies: Optional[int] = None  # weight copies (None: enough to defeat L2)
    output_dir: str = os.path.join("benchmarks", "results", "tuned")
    install_dir: Optional[str] = None  # also write the files here (the package's tuned_configs/)
    time_budget_s: Optional[float] = None  # start no new (preset, batch) after this
    seed: int = 0
    objective: Sequence[Tuple[str, Optional[int]]] = DEFAULT_OBJECTIVE  # (routing mode, k0 or None), times summed
    timing: str = DEFAULT_TIMING  # one of TIMINGS
    rounds: int = TUNE_ROUNDS  # of the coordinate search
    device: str = "cuda"  # "cpu" only for tests of the flow (timing is then injected)
    dtype: str = "bfloat16"

    def batches_of(self, preset: str) -> Sequence[int]:
        return self.preset_batches.get(preset, self.batches)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _log(msg: str) -> None:
    print(msg, flush=True)


def tune_batch(shape: MoEShape, weights: Sequence, batch: int, spec: TuneSpec,
               router: Optional[Router] = None) -> Tuple[KernelConfig, float, list]:
    """Coordinate search at one batch. router: time routing+MoE with it in the graph, or None:
    the MoE alone. Returns (best config, us per call summed over spec.objective's routings,
    [(config dict, that sum or the error that kept a candidate from running)])."""
    from oea_trt.routing.reference import oea_route

    cases = []
    for mode, k0 in spec.objective:
        inputs = RoutingBatch(SyntheticSource(mode, shape.num_experts), batch, len(weights), shape.hidden_size,
                              spec.seed + 17, spec.device, getattr(torch, spec.dtype))
        config = vanilla_config(shape) if k0 is None else oea_config(shape, k0)
        cases.append((inputs, config, [oea_route(lg, config) for lg in inputs.logits]))
    tried = []

    def time_case(fn, inputs, config, routings) -> float:
        if router is None:
            return time_moe(fn, inputs, weights, routings, repeats=spec.repeats, replays=1).median_us
        return time_routed(fn, inputs, weights, router, config, repeats=spec.repeats, replays=1).median_us

    def measure(cfg: KernelConfig) -> float:
        try:
            us = sum(time_case(layer_call("triton", cfg), *case) for case in cases)
        except Exception as exc:  # noqa: BLE001 (e.g. out of shared memory: skip the candidate)
            tried.append((cfg.to_dict(), f"{type(exc).__name__}: {str(exc)[:200]}"))
            return math.inf
        tried.append((cfg.to_dict(), us))
        return us

    start = default_config(batch, shape.hidden_size, shape.moe_intermediate_size, shape.top_k, shape.num_experts)
    best, best_us = coordinate_search(start, candidate_steps(), measure, rounds=spec.rounds)
    return best, best_us, tried


def check_config(shape: MoEShape, weights, batch: int, config: KernelConfig, seed: int) -> bool:
    """config against the fp32 loop on fresh skewed OEA routing (k0=3) at `batch`."""
    from oea_trt.moe.reference import moe_reference
    from oea_trt.routing.reference import oea_route
    from oea_trt.routing.synthetic import SkewedRouter

    device, dtype = weights.w13.device, weights.w13.dtype
    logits = SkewedRouter(shape.num_experts, seed=3).logits(batch, seed=50_000 + seed + batch).to(device)
    routing = oea_route(logits, oea_config(shape, min(3, shape.top_k), fill="top1"))
    g = torch.Generator(device=device).manual_seed(60_000 + seed + batch)
    x = torch.randn((batch, shape.hidden_size), generator=g, device=device, dtype=dtype)
    out = layer_call("triton", config)(x, weights, routing)
    return within_tolerance(out, moe_reference(x, weights.w13, weights.w2, routing.expert_ids, routing.weights))


def timing_router(spec: TuneSpec) -> Tuple[Optional[Router], str]:
    """(the router tune_batch puts in the graph, or None for MoE-only timing; what the timing is,
    in words). "routed" needs the fused routing kernel: the torch reference in the graph would
    add tens of microseconds of small kernels, which no served model runs."""
    if spec.timing not in TIMINGS:
        raise ValueError(f"TuneSpec.timing must be one of {TIMINGS}, got {spec.timing!r}")
    if spec.timing == "moe":
        return None, "MoE only (routing done before capture)"
    router = pick_router("auto", spec.device)
    if router.name != "kernel":
        return None, f"MoE only: routed timing needs the routing kernel, and {router.note}"
    return router, "routing+MoE (the fused routing kernel in the graph)"


def tune_preset(shape: MoEShape, spec: TuneSpec, run_start: float) -> dict:
    """{"configs": {batch: KernelConfig}, "batches": {batch: what was tried}, "skipped": [...]}."""
    from oea_trt.bench.env import l2_bytes
    from oea_trt.bench.rotation import copies_needed, copies_that_fit
    from oea_trt.moe.layer import ExpertWeights

    bytes_per_copy = shape.num_experts * shape.expert_bytes
    free = torch.cuda.mem_get_info()[0] if torch.device(spec.device).type == "cuda" else 8 << 30
    copies = copies_that_fit(spec.copies or copies_needed(shape.expert_bytes, l2_bytes()), bytes_per_copy, free)
    weights = [ExpertWeights.random(shape, device=spec.device, dtype=getattr(torch, spec.dtype), seed=c)
               for c in range(copies)]
    _log(f"== tune {shape.name}: E={shape.num_experts} top-{shape.top_k} H={shape.hidden_size} "
         f"I={shape.moe_intermediate_size}, {copies} weight copies")
    router, timing = timing_router(spec)
    _log(f"  timing: {timing}")
    info = {"copies": copies, "timing": timing, "configs": {}, "batches": {}, "skipped": []}
    for batch in spec.batches_of(shape.name):
        if spec.time_budget_s is not None and time.time() - run_start > spec.time_budget_s:
            info["skipped"].append(batch)
            continue
        t0 = time.time()
        best, us, tried = tune_batch(shape, weights, batch, spec, router)
        ok = math.isfinite(us) and check_config(shape, weights[0], batch, best, spec.seed)
        info["batches"][str(batch)] = {"best": best.to_dict(), "best_us": us, "correct": ok, "tried": tried,
                                       "seconds": time.time() - t0}
        if ok:
            info["configs"][batch] = best
        _log(f"  B={batch:<3d} {us:8.1f} us/call  {'ok' if ok else 'FAILED the reference check: not written'}  "
             f"{best.launches} launch{'es' if best.launches > 1 else ''}, {_short(best)}  ({time.time() - t0:.0f} s)")
    if info["skipped"]:
        _log(f"  time budget of {spec.time_budget_s:.0f} s reached: skipped B={info['skipped']}")
    del weights
    if torch.device(spec.device).type == "cuda":
        torch.cuda.empty_cache()
    return info


def _short(cfg: KernelConfig) -> str:
    text = (f"gate/up {cfg.gu_block_n}x{cfg.gu_block_k} w{cfg.gu_warps} s{cfg.gu_stages}, "
            f"down {cfg.dn_block_n}x{cfg.dn_block_k}")
    if cfg.down == "slots":
        return (text + f" w{cfg.dn_warps} s{cfg.dn_stages}{' preloaded' if cfg.dn_preload else ''}"
                f"{', hand-off' if cfg.handoff else ''}")
    return text + f", {cfg.programs_per_sm}/SM"


def run_tune(spec: TuneSpec, device_name: Optional[str] = None) -> dict:
    """Tune every preset in spec; write the files (see module doc). device_name: the GPU the
    files are for (default: the CUDA device's name). Returns the run's results."""
    from oea_trt.bench.env import environment
    from oea_trt.bench.report import write_json
    from oea_trt.moe.tuned import config_path, merge_tuned, write_tuned

    if device_name is None:
        if not torch.cuda.is_available():
            raise RuntimeError("tuning needs a CUDA GPU (torch.cuda.is_available() is False)")
        device_name = torch.cuda.get_device_name()
    t0 = time.time()
    results = {"env": environment(), "device_name": device_name, "spec": spec.to_dict(), "presets": {}}
    _log(f"tuning for {device_name}")
    for name in spec.presets:
        shape = get_preset(name)
        info = tune_preset(shape, spec, t0)
        entry = {k: v for k, v in info.items() if k != "configs"}
        if info["configs"]:
            args = (device_name, shape.num_experts, shape.hidden_size, shape.moe_intermediate_size, shape.top_k,
                    spec.dtype)
            entry["file"] = write_tuned(config_path(*args, root=spec.output_dir), info["configs"])
            if spec.install_dir:
                entry["installed"], kept = merge_tuned(config_path(*args, root=spec.install_dir), info["configs"])
                if kept:
                    _log(f"  {name}: installed file keeps its configs of batches {kept} (not tuned in this run)")
        results["presets"][name] = entry
        results["seconds"] = time.time() - t0
        write_json(os.path.join(spec.output_dir, "tune_results.json"), results)
    return results
