"""`oea-trt simulate`: distinct experts and the memory-bound floor under OEA, no GPU needed."""
import json
import sys

from oea_trt.inputs import StagedOutputs, check_fits, check_output_file
from oea_trt.moe.shapes import PRESETS, MoEShape, get_preset
from oea_trt.routing.simulate import ROUTINGS, default_threads, format_rows, simulate
from oea_trt.cli import CLIError
from oea_trt.cli.types import integer, positive_float, positive_int

#: Seeds feed torch.Generator after scaling (seed * 1_000_003 + ...), which must stay in 64 bits.
MAX_SEED = 2**32 - 1

NAME = "simulate"
ORDER = 10
HELP = "route synthetic batches and tabulate distinct experts T and the per-layer latency floor"
DESCRIPTION = (
    "Route synthetic router logits (uniform, and a seeded skewed generator calibrated to real "
    "Qwen3 routing) with vanilla top-k and with OEA at each k0, and print the mean number of "
    "distinct experts T per batch, its change vs vanilla, and the memory-bound floor of one MoE "
    "layer (T x expert bytes / bandwidth)."
)


def add_arguments(p):
    p.add_argument("--model", default="qwen3-30b-a3b", choices=sorted(PRESETS),
                   help="model preset (MoE layer shape)")
    p.add_argument("--num-experts", type=positive_int, help="override the preset's number of experts E")
    p.add_argument("--top-k", type=positive_int, help="override the preset's experts per token k")
    p.add_argument("--hidden-size", type=positive_int, help="override the preset's hidden size")
    p.add_argument("--moe-intermediate-size", type=positive_int, help="override the preset's expert intermediate size")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1, 4, 16, 64], metavar="B",
                   help="decode batch sizes")
    p.add_argument("--k0", type=positive_int, nargs="+", default=None, metavar="K0",
                   help="OEA baseline experts per token (default: 1..top_k)")
    p.add_argument("--routing", nargs="+", choices=ROUTINGS, default=list(ROUTINGS), help="synthetic logit generators")
    p.add_argument("--trials", type=positive_int, default=200, help="random batches per table row")
    p.add_argument("--seed", type=integer, default=0, help=f"seed of the logit generators, in [0, {MAX_SEED}]")
    p.add_argument("--bandwidth", type=positive_float, default=4.3, metavar="TB/S",
                   help="HBM bandwidth for the floor (H200 device-to-device copy measured ~4.3 TB/s)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def logits_bytes(shape: MoEShape, batch: int, trials: int) -> int:
    """Memory one (routing, batch) row needs: every trial's float32 logits are generated up front,
    plus a few batch-sized temporaries while routing one of them."""
    return 4 * shape.num_experts * batch * (trials + 8)


def run(args) -> int:
    base = get_preset(args.model)
    overrides = {k: v for k, v in (("num_experts", args.num_experts), ("top_k", args.top_k),
                                   ("hidden_size", args.hidden_size),
                                   ("moe_intermediate_size", args.moe_intermediate_size)) if v is not None}
    shape = MoEShape(**{**base.__dict__, **overrides, "name": base.name + ("*" if overrides else "")})
    if shape.top_k > shape.num_experts:
        raise CLIError(f"--top-k must be in [1, num_experts={shape.num_experts}], got {shape.top_k}")
    k0s = args.k0 or list(range(1, shape.top_k + 1))
    bad = [k for k in k0s if k > shape.top_k]
    if bad:
        raise CLIError(f"--k0 values must be in [1, top_k={shape.top_k}], got {bad[0]}")
    if not 0 <= args.seed <= MAX_SEED:
        raise CLIError(f"--seed must be in [0, {MAX_SEED}], got {args.seed}")
    if args.json:
        check_output_file(args.json, "--json", overwrite=args.overwrite)
    biggest = max(args.batch)
    per_batch = logits_bytes(shape, 1, args.trials)
    check_fits(logits_bytes(shape, biggest, args.trials), f"--batch {biggest} with --trials {args.trials}",
               fix=lambda free: f"use --batch values up to about {max(1, free // per_batch)} or fewer --trials")
    default_threads()
    print(f"{shape.name}: E={shape.num_experts}, top-{shape.top_k}, expert {shape.hidden_size}x"
          f"{shape.moe_intermediate_size} SwiGLU = {shape.expert_bytes / 1e6:.2f} MB bf16; "
          f"floor at {args.bandwidth} TB/s; {args.trials} batches per row", flush=True)
    rows = simulate(shape, args.batch, k0s, args.routing, args.trials, args.seed, args.bandwidth,
                    progress=lambda m: print(f"  ... {m}", file=sys.stderr, flush=True))
    print(format_rows(rows))
    if args.json:
        with StagedOutputs(overwrite=args.overwrite) as out, open(out.path(args.json), "w") as f:
            json.dump({"model": shape.__dict__, "bandwidth_tb_s": args.bandwidth, "trials": args.trials,
                       "seed": args.seed, "rows": [r.as_dict() for r in rows]}, f, indent=2)
        print(f"wrote {args.json}")
    return 0
