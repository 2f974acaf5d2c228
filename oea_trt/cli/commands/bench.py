"""`oea-trt bench <what>`: GPU benchmarks. `moe` times the MoE decode layer (routing+MoE) under
vanilla and OEA routing and compares our kernel with torch._grouped_mm; `tune` searches our
kernel's configs per GPU and layer shape and writes the files the library reads; `decode` times
whole-model decode steps (TPOT, tokens/s) of our CUDA-graph path against transformers. Each command is
one add_<what>(subparsers) + run_<what>(args) pair below; the code they run lives in oea_trt/bench/."""
import argparse
import os
import sys

from oea_trt.cli import CLIError
from oea_trt.cli.types import positive_int

NAME = "bench"
ORDER = 50
HELP = ("GPU benchmarks (moe: the MoE decode layer, OEA vs vanilla, our kernel vs torch._grouped_mm; "
        "tune: our MoE kernel's configs for this GPU; decode: TPOT and tokens/s of the whole model)")
DESCRIPTION = (
    "Benchmarks that need a CUDA GPU. They time in CUDA-graph replay with weights rotated beyond L2, "
    "measure copy and read bandwidth in the same run, check every implementation against the "
    "Python reference first, and write results.json, report.md and PNG plots."
)


def add_arguments(p):
    from oea_trt.bench.decode_cli import add_decode

    sub = p.add_subparsers(dest="what", metavar="WHAT", parser_class=type(p))
    add_moe(sub)
    add_tune(sub)
    add_decode(sub)


def run(args) -> int:
    if not getattr(args, "what", None):
        raise CLIError("name a benchmark: oea-trt bench moe|tune|decode (see oea-trt bench --help)")
    return args._bench(args)


# ---- moe ------------------------------------------------------------------------------------


def _k0(text: str) -> int:
    value = positive_int(text)
    if value > 7:
        raise argparse.ArgumentTypeError(f"expected k0 in 1..7 (k0=8 is vanilla, always timed), got {text!r}")
    return value


MOE_DESCRIPTION = (
    "Time one Qwen3-MoE decode layer (SwiGLU experts, bf16) fed by vanilla top-k and by OEA routing at each "
    "k0: routing+MoE latency in CUDA-graph replay, distinct experts T, effective TB/s, the floor "
    "T x expert_bytes / copy bandwidth, ratio to vanilla; our expert-major Triton kernel vs "
    "torch._grouped_mm vs a plain loop, each checked against the loop first. Our kernel runs with the configs "
    "tuned for this GPU (oea-trt bench tune), else its heuristic default; the report says which. Prints progress; "
    "the full default sweep takes a few minutes."
)


def add_moe(sub) -> None:
    from oea_trt.bench.moe import ALL_PRESETS
    from oea_trt.bench.routing_inputs import MODES
    from oea_trt.moe.impls import IMPLS

    p = sub.add_parser("moe", help="MoE decode layer: routing+MoE latency vs distinct experts, OEA vs vanilla",
                       description=MOE_DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", nargs="+", choices=ALL_PRESETS, default=list(ALL_PRESETS),
                   help="layer shapes (235b-a22b: full experts on one GPU; -tp8: one tensor-parallel shard)")
    p.add_argument("--batch", nargs="+", type=positive_int, default=[1, 2, 4, 8, 16, 32, 64], metavar="B",
                   help="decode batch sizes (tokens per call)")
    p.add_argument("--routing", nargs="+", choices=MODES, default=list(MODES),
                   help="router logits: uniform random, skewed (calibrated: vanilla T=49 at B=16), and recorded "
                        "from a model (--trace; default: the embedded Qwen3-MoE's, 128 experts)")
    p.add_argument("--trace", metavar="PATH", default=argparse.SUPPRESS,  # help names the real default
                   help="router logits recorded from a model, [layers, tokens, E] in .pt or .npz, e.g. by "
                        "`oea-trt eval --dump-traces` (adds 'trace'; default: the embedded model's "
                        "oea_trt/models/embedded/router_traces.pt)")
    p.add_argument("--k0", nargs="+", type=_k0, default=list(range(1, 8)), help="OEA k0 values (vanilla always)")
    p.add_argument("--impl", nargs="+", choices=list(IMPLS), default=list(IMPLS),
                   help="implementations to check and time: " + "; ".join(f"{i.name}: {i.description}"
                                                                          for i in IMPLS.values()))
    p.add_argument("--baseline-k0", nargs="*", type=_k0, default=[3],
                   help="k0 values at which torch._grouped_mm is timed too (it always is at vanilla)")
    p.add_argument("--lite-preset", nargs="*", choices=ALL_PRESETS, default=[], metavar="PRESET",
                   help="presets timed on fewer rows (B 1 4 16 64, k0 1 3 5) to save time")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per row (median reported, >= 5)")
    p.add_argument("--copies", type=positive_int, help="weight copies to rotate (default: enough to defeat L2)")
    p.add_argument("--routing-impl", choices=("auto", "kernel", "reference"), default="auto",
                   help="routing inside the graph: the CUDA kernel (oea_trt.routing.dispatch) or the torch reference")
    p.add_argument("--time-budget", type=positive_int, metavar="SECONDS",
                   help="start no new (preset, routing, batch) block after this many seconds; what ran is reported")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, hidden states and routing draws")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "moe"), metavar="DIR",
                   help="where results.json, report.md and the PNG plots go")
    p.add_argument("--render", metavar="RESULTS_JSON",
                   help="re-render report.md and plots from an earlier results.json (no GPU needed)")
    p.set_defaults(_bench=run_moe, _prog=p.prog)


def run_moe(args) -> int:
    from oea_trt.bench.report_moe import summary, write_report

    if args.render:
        from oea_trt.bench.report import read_results

        for path in write_report(read_results(args.render), args.out):
            print(f"wrote {path}")
        return 0
    spec = moe_spec(args)
    import torch

    if not torch.cuda.is_available():
        raise CLIError("oea-trt bench moe needs a CUDA GPU (torch.cuda.is_available() is False); "
                       "use --render RESULTS_JSON to re-render earlier results")
    from oea_trt.moe.impls import OURS

    if set(OURS) & set(spec.impls):
        try:
            import triton  # noqa: F401
        except ImportError:
            raise CLIError(f"--impl {'/'.join(OURS)} need the triton package (pip install triton), or leave them "
                           "out") from None
    from oea_trt.bench.moe import run_moe_benchmark

    results = run_moe_benchmark(spec, on_progress=lambda partial: write_report(partial, args.out))
    paths = write_report(results, args.out)
    print(summary(results))
    for path in paths:
        print(f"wrote {path}")
    return 0 if results["rows"] else 1


def moe_spec(args):
    """The MoEBenchSpec of parsed `bench moe` arguments; CLIError where the trace does not fit them."""
    from oea_trt.bench.moe import MoEBenchSpec
    from oea_trt.bench.routing_inputs import TRACE, TraceError, load_trace, trace_sequence_shape

    user_trace = getattr(args, "trace", None)  # absent unless given (default=SUPPRESS)
    modes = list(dict.fromkeys(args.routing + ([TRACE] if user_trace else [])))
    trace = None
    if TRACE in modes:
        from oea_trt.models.embedded import ROUTER_TRACES

        trace = user_trace or ROUTER_TRACES
        try:
            logits = load_trace(trace)
            sequences = trace_sequence_shape(trace, logits.shape[1])
        except TraceError as exc:
            raise CLIError(str(exc)) from None
        from oea_trt.moe.shapes import get_preset

        wrong = [p for p in args.preset if get_preset(p).num_experts != logits.shape[-1]]
        if wrong:
            raise CLIError(f"trace {trace} has {logits.shape[-1]} experts per row but preset {wrong[0]} has "
                           f"{get_preset(wrong[0]).num_experts}: record the trace from a model with that many experts")
        # A decode batch is one token of each of B requests: B distinct sequences where the file has them.
        available, unit = (sequences[0], "sequences") if sequences else (logits.shape[1], "tokens per layer")
        if available < max(args.batch):
            raise CLIError(f"trace {trace} has {available} {unit}; --batch {max(args.batch)} needs as many")
    if args.repeats < 5:
        print("note: fewer than 5 repeats; the project's benchmarks report the median of >= 5", file=sys.stderr)
    return MoEBenchSpec(presets=tuple(args.preset), batch_sizes=tuple(sorted(set(args.batch))), modes=tuple(modes),
                        k0s=tuple(sorted(set(args.k0))), impls=tuple(args.impl),
                        baseline_k0s=tuple(args.baseline_k0), repeats=args.repeats, copies=args.copies,
                        lite_presets=tuple(args.lite_preset), trace_path=trace,
                        routing=args.routing_impl, seed=args.seed,
                        time_budget_s=args.time_budget)


# ---- tune -----------------------------------------------------------------------------------

TUNE_DESCRIPTION = (
    "Search our Triton MoE kernel's tiles and launch structure (one launch or three) for this GPU, per layer "
    "preset and decode batch: CUDA-graph time of routing+MoE (the fused routing kernel in the graph, as a served "
    "model runs; --timing moe for the MoE alone) summed over the --objective routings, coordinate search from the "
    "heuristic default, each winner checked against the fp32 loop. Writes one JSON per preset, "
    "<output-dir>/<GPU>/E.._H.._I.._k.._<dtype>.json ({batch: KernelConfig fields}), and tune_results.json; "
    "--install also writes them into the package (oea_trt/moe/tuned_configs/), where moe_forward and "
    "`oea-trt bench moe` read them; an installed file keeps its configs of the batches not tuned in this run."
)


def add_tune(sub) -> None:
    from oea_trt.bench.tune import (ALL_PRESETS, DEFAULT_BATCHES, DEFAULT_OBJECTIVE, DEFAULT_TIMING, TIMINGS,
                                    TUNE_ROUNDS)

    p = sub.add_parser("tune", help="tune our MoE kernel's configs for this GPU and write the files the library reads",
                       description=TUNE_DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", nargs="+", choices=ALL_PRESETS, default=list(ALL_PRESETS), help="layer shapes")
    p.add_argument("--batch", nargs="+", type=positive_int, default=list(DEFAULT_BATCHES), metavar="B",
                   help="decode batch sizes to tune (other batches take the nearest tuned one)")
    p.add_argument("--preset-batch", nargs="+", default=[], metavar="PRESET=B,B",
                   help="batch sizes for one preset instead of --batch, e.g. qwen3-235b-a22b=1,16,64")
    p.add_argument("--repeats", type=positive_int, default=3, help="timed repeats per candidate (median)")
    p.add_argument("--copies", type=positive_int, help="weight copies to rotate (default: enough to defeat L2)")
    p.add_argument("--time-budget", type=positive_int, metavar="SECONDS",
                   help="start no new (preset, batch) search after this many seconds; what was tuned is written")
    p.add_argument("--output-dir", default=os.path.join("benchmarks", "results", "tuned"), metavar="DIR",
                   help="where the tuned-config files and tune_results.json go")
    p.add_argument("--install", action="store_true",
                   help="also write the files into the package's tuned_configs/ (commit them to ship them); batches "
                        "not tuned in this run keep the configs they had there")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, hidden states and routing draws")
    p.add_argument("--objective", nargs="+", metavar="MODE:K0",
                   default=[f"{mode}:{'vanilla' if k0 is None else k0}" for mode, k0 in DEFAULT_OBJECTIVE],
                   help="routings whose times a candidate sums: MODE uniform or skewed, K0 an OEA k0 or 'vanilla' "
                        "(the default's skewed:3 makes the tiles also serve OEA's small active sets)")
    p.add_argument("--timing", choices=TIMINGS, default=DEFAULT_TIMING,
                   help="routed: each call is the fused routing kernel + the MoE in one graph, as a served model "
                        "runs (falls back to moe, and says so, where the routing kernel cannot run); moe: the MoE "
                        "alone, routing done before capture")
    p.add_argument("--rounds", type=positive_int, default=TUNE_ROUNDS,
                   help="rounds of the coordinate search: a round that moved the best config runs every step "
                        "again from it (a round that changes nothing ends the search)")
    p.set_defaults(_bench=run_tune, _prog=p.prog)


def _objective(items) -> tuple:
    """--objective MODE:K0 ... -> ((mode, k0 or None), ...)."""
    out = []
    for item in items:
        mode, sep, k0 = item.partition(":")
        if not sep or mode not in ("uniform", "skewed") or not (k0 == "vanilla" or k0.isdigit() and int(k0) >= 1):
            raise CLIError(f"--objective takes MODE:K0 with MODE uniform or skewed and K0 a positive k0 or 'vanilla', "
                           f"got {item!r}")
        out.append((mode, None if k0 == "vanilla" else int(k0)))
    return tuple(out)


def _preset_batches(items, presets) -> dict:
    out = {}
    for item in items:
        name, sep, batches = item.partition("=")
        if not sep or name not in presets:
            raise CLIError(f"--preset-batch takes PRESET=B,B with PRESET one of {', '.join(presets)}, got {item!r}")
        try:
            out[name] = tuple(positive_int(b) for b in batches.split(","))
        except argparse.ArgumentTypeError as exc:
            raise CLIError(f"--preset-batch {item!r}: {exc}") from None
    return out


def run_tune(args) -> int:
    from oea_trt.bench.tune import ALL_PRESETS, TuneSpec
    from oea_trt.moe.tuned import TUNED_DIR

    preset_batches = _preset_batches(args.preset_batch, ALL_PRESETS)
    objective = _objective(args.objective)
    import torch

    if not torch.cuda.is_available():
        raise CLIError("oea-trt bench tune needs a CUDA GPU (torch.cuda.is_available() is False): tuned configs "
                       "are per GPU model")
    from oea_trt.bench.tune import run_tune as tune

    spec = TuneSpec(presets=tuple(args.preset), batches=tuple(sorted(set(args.batch))), preset_batches=preset_batches,
                    repeats=args.repeats, copies=args.copies, output_dir=args.output_dir,
                    install_dir=TUNED_DIR if args.install else None, time_budget_s=args.time_budget, seed=args.seed,
                    objective=objective, timing=args.timing, rounds=args.rounds)
    results = tune(spec)
    written = [(name, p) for name, entry in results["presets"].items() for p in (entry.get("file"),
                                                                                 entry.get("installed")) if p]
    for name, path in written:
        print(f"wrote {path} ({name})")
    print(f"wrote {os.path.join(args.output_dir, 'tune_results.json')}")
    return 0 if written else 1
