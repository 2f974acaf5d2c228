"""`oea-trt bench <what>`: GPU benchmarks. `moe` times the MoE decode layer (routing+MoE) under
vanilla and OEA routing and compares our kernel with torch._grouped_mm. Each benchmark is one
add_<what>(subparsers) + run_<what>(args) pair below; the code they run lives in oea_trt/bench/."""
import argparse
import os
import sys

from oea_trt.cli import CLIError
from oea_trt.cli.types import positive_int

NAME = "bench"
ORDER = 50
HELP = "GPU benchmarks (moe: the MoE decode layer, OEA vs vanilla, our kernel vs torch._grouped_mm)"
DESCRIPTION = (
    "Benchmarks that need a CUDA GPU. They time in CUDA-graph replay with weights rotated beyond L2, "
    "measure copy and read bandwidth in the same run, check every implementation against the "
    "Python reference first, and write results.json, report.md and PNG plots."
)


def add_arguments(p):
    from oea_trt.bench.decode_cli import add_decode

    sub = p.add_subparsers(dest="what", metavar="WHAT", parser_class=type(p))
    add_moe(sub)
    add_decode(sub)


def run(args) -> int:
    if not getattr(args, "what", None):
        raise CLIError("name a benchmark: oea-trt bench moe (see oea-trt bench --help)")
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
    "torch._grouped_mm vs a plain loop, each checked against the loop first. Prints progress; the full "
    "default sweep takes a few minutes on an H200."
)


def add_moe(sub) -> None:
    from oea_trt.bench.moe import ALL_PRESETS

    p = sub.add_parser("moe", help="MoE decode layer: routing+MoE latency vs distinct experts, OEA vs vanilla",
                       description=MOE_DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", nargs="+", choices=ALL_PRESETS, default=list(ALL_PRESETS),
                   help="layer shapes (235b-a22b: full experts on one GPU; -tp8: one tensor-parallel shard)")
    p.add_argument("--batch", nargs="+", type=positive_int, default=[1, 2, 4, 8, 16, 32, 64], metavar="B",
                   help="decode batch sizes (tokens per call)")
    p.add_argument("--routing", nargs="+", choices=("uniform", "skewed", "trace"),
                   default=["uniform", "skewed", "trace"],
                   help="router logits: uniform random, skewed (calibrated: vanilla T=49 at B=16), and recorded "
                        "from a model (--trace; default: the embedded Qwen3-MoE's, 128 experts)")
    p.add_argument("--trace", metavar="PATH", default=argparse.SUPPRESS,  # help names the real default
                   help="router logits recorded from a model, [layers, tokens, E] in .pt or .npz, e.g. by "
                        "`oea-trt eval --dump-traces` (adds 'trace'; default: the embedded model's "
                        "oea_trt/models/embedded/router_traces.pt)")
    p.add_argument("--k0", nargs="+", type=_k0, default=list(range(1, 8)), help="OEA k0 values (vanilla always)")
    p.add_argument("--impl", nargs="+", choices=("fused", "triton", "grouped_mm", "loop"),
                   default=["fused", "triton", "grouped_mm", "loop"],
                   help="implementations to check and time (fused: ours, one launch with fp32 atomic sums; triton: "
                        "ours, deterministic, one launch or three (gate/up, down, combine, with programmatic "
                        "dependent launch), the tuner picks per batch)")
    p.add_argument("--baseline-k0", nargs="*", type=_k0, default=[3],
                   help="k0 values at which torch._grouped_mm is timed too (it always is at vanilla)")
    p.add_argument("--lite-preset", nargs="*", choices=ALL_PRESETS, default=[], metavar="PRESET",
                   help="presets timed on fewer rows (B 1 4 16 64, k0 1 3 5) to save time")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed repeats per row (median reported, >= 5)")
    p.add_argument("--copies", type=positive_int, help="weight copies to rotate (default: enough to defeat L2)")
    p.add_argument("--no-tune", action="store_true", help="skip the kernel tile search, use the heuristic tiles")
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
        import json

        try:
            with open(args.render) as f:
                results = json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise CLIError(f"cannot read results {args.render}: {exc}") from None
        for path in write_report(results, args.out):
            print(f"wrote {path}")
        return 0
    spec = _moe_spec(args)
    import torch

    if not torch.cuda.is_available():
        raise CLIError("oea-trt bench moe needs a CUDA GPU (torch.cuda.is_available() is False); "
                       "use --render RESULTS_JSON to re-render earlier results")
    if {"fused", "triton"} & set(spec.impls):
        try:
            import triton  # noqa: F401
        except ImportError:
            raise CLIError("--impl fused/triton need the triton package (pip install triton), or leave them out") from None
    from oea_trt.bench.moe import run_moe_benchmark

    results = run_moe_benchmark(spec, on_progress=lambda partial: write_report(partial, args.out))
    paths = write_report(results, args.out)
    print(summary(results))
    for path in paths:
        print(f"wrote {path}")
    return 0 if results["rows"] else 1


def _moe_spec(args):
    from oea_trt.bench.moe import MoEBenchSpec
    from oea_trt.bench.routing_inputs import TraceError, load_trace, trace_sequence_shape

    user_trace = getattr(args, "trace", None)  # absent unless given (default=SUPPRESS)
    modes = list(dict.fromkeys(args.routing + (["trace"] if user_trace else [])))
    trace = None
    if "trace" in modes:
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
                        lite_presets=tuple(args.lite_preset), tune=not args.no_tune, trace_path=trace,
                        routing=args.routing_impl, seed=args.seed,
                        time_budget_s=args.time_budget)
