"""`oea-trt bench decode`: the arguments and the run of the end-to-end decode benchmark
(decode.py), hooked into `oea-trt bench` (oea_trt/cli/commands/bench.py) by add_decode."""
from __future__ import annotations

import argparse
import os

DESCRIPTION = (
    "Time per output token (TPOT) and tokens/s of a whole Qwen3-MoE model decoding on the fast path (our decoder, "
    "the routing kernel and our MoE kernel in every MoE layer, each step one CUDA-graph replay), vanilla routing "
    "vs OEA at each k0, for every batch B, with skewed (calibrated: ~49 distinct experts of 128 at B=16) and "
    "uniform routers. The model has the real Qwen3-30B-A3B shapes and random weights built on the GPU (~61 GB "
    "bf16: one 80 GB GPU). Also reports distinct experts per layer per step, the MoE share of the step, the "
    "memory floor, and transformers' own decode of the same weights. Writes results.json, report.md and "
    "tpot_vs_batch.png, rewritten after every block."
)


def add_decode(sub) -> None:
    from oea_trt.bench.decode import SHAPES
    from oea_trt.bench.decode_hf import MODES
    from oea_trt.cli.types import positive_int

    def k0(text: str) -> int:
        value = positive_int(text)
        if value > 7:
            raise argparse.ArgumentTypeError(f"expected k0 in 1..7 (vanilla is always timed), got {text!r}")
        return value

    p = sub.add_parser("decode", help="whole-model decode: TPOT vs batch, OEA vs vanilla vs transformers",
                       description=DESCRIPTION, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shape", choices=SHAPES, default=SHAPES[0], help="model shape (random weights)")
    p.add_argument("--layers", type=positive_int, default=argparse.SUPPRESS,
                   help="time only the first N layers (default: all)")
    p.add_argument("--batch", nargs="+", type=positive_int, default=[1, 4, 8, 16, 32, 64], metavar="B",
                   help="decode batch sizes")
    p.add_argument("--k0", nargs="+", type=k0, default=[3, 4, 5], help="OEA k0 values (vanilla always)")
    p.add_argument("--routers", nargs="+", choices=("skewed", "uniform"), default=["skewed", "uniform"],
                   help="router weights: skewed (calibrated like real routing) and/or uniform")
    p.add_argument("--prompt-length", type=positive_int, default=32, help="random prompt tokens per row")
    p.add_argument("--steps", type=positive_int, default=16, help="decode steps per timing sample")
    p.add_argument("--repeats", type=positive_int, default=5, help="timing samples per row (median reported)")
    p.add_argument("--hf", nargs="*", choices=MODES, default=list(MODES),
                   help="transformers baselines: eager (every B), oea (eager with OEA hooks) and compiled (static "
                        "cache, compiled by transformers' generate) at --hf-focus-batch; none: --hf with no value")
    p.add_argument("--hf-batch", nargs="+", type=positive_int, metavar="B", default=argparse.SUPPRESS,
                   help="batches of the transformers eager baseline (default: --batch)")
    p.add_argument("--hf-focus-batch", type=positive_int, default=16, metavar="B",
                   help="the batch of the headline targets and of the oea / compiled baselines")
    p.add_argument("--hf-steps", type=positive_int, default=8, help="decode steps per transformers timing")
    p.add_argument("--time-budget", type=positive_int, metavar="SECONDS", default=argparse.SUPPRESS,
                   help="start no new block (routers, batch) of our rows after this many seconds")
    p.add_argument("--hf-time-budget", type=positive_int, metavar="SECONDS", default=argparse.SUPPRESS,
                   help="then start no new transformers row after this many more seconds (the eager row at "
                        "--hf-focus-batch always runs)")
    p.add_argument("--seed", type=int, default=0, help="seed of weights, routers and prompts")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "decode"), metavar="DIR",
                   help="where results.json, report.md and tpot_vs_batch.png go")
    p.add_argument("--render", metavar="RESULTS_JSON", default=argparse.SUPPRESS,
                   help="re-render report.md and the plot from a results.json (no GPU needed)")
    p.set_defaults(_bench=run_decode, _prog=p.prog)


def run_decode(args) -> int:
    from oea_trt.bench.report_decode import summary, write_report
    from oea_trt.cli import CLIError

    for optional in ("layers", "hf_batch", "time_budget", "hf_time_budget", "render"):
        if not hasattr(args, optional):  # SUPPRESS keeps "(default: None)" out of --help
            setattr(args, optional, None)
    if args.render:
        from oea_trt.bench.report import read_results

        for path in write_report(read_results(args.render), args.out):
            print(f"wrote {path}")
        return 0
    import torch

    if not torch.cuda.is_available():
        raise CLIError("oea-trt bench decode needs a CUDA GPU (torch.cuda.is_available() is False); "
                       "use --render RESULTS_JSON to re-render earlier results")
    from oea_trt.bench.decode import DecodeBenchSpec, run_decode_benchmark

    batches = tuple(sorted(set(args.batch)))
    spec = DecodeBenchSpec(shape=args.shape, layers=args.layers, batch_sizes=batches,
                           k0s=tuple(sorted(set(args.k0))), routers=tuple(dict.fromkeys(args.routers)),
                           prompt_length=args.prompt_length, steps=args.steps, repeats=args.repeats,
                           hf=tuple(args.hf), hf_batches=tuple(sorted(set(args.hf_batch or batches))),
                           hf_focus_batch=args.hf_focus_batch, hf_steps=args.hf_steps,
                           time_budget_s=args.time_budget, hf_time_budget_s=args.hf_time_budget, seed=args.seed)
    results = run_decode_benchmark(spec, on_progress=lambda partial: write_report(partial, args.out))
    paths = write_report(results, args.out)
    print(summary(results))
    for path in paths:
        print(f"wrote {path}")
    return 0 if results["rows"] else 1
