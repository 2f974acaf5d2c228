"""`oea-trt eval`: what OEA costs in quality on a real model, per batch size and k0."""
import math
from argparse import SUPPRESS
import os
import sys
import time

from oea_trt.cli import CLIError
from oea_trt.cli.types import positive_int

NAME = "eval"
ORDER = 30
HELP = "cross-entropy cost of OEA vs top-k0 pruning on a Qwen3-MoE model (default: the embedded one)"
DESCRIPTION = (
    "Evaluate next-token cross-entropy on simulated decode batches (the t-th tokens of B "
    "sequences form one batch, as in the OEA paper) with vanilla top-k routing, OEA and top-k0 "
    "pruning without piggybacking. Reports per (B, k0) the mean distinct experts T per layer and "
    "the change in cross-entropy vs vanilla with a 95% paired bootstrap interval; writes "
    "eval_results.json and a Pareto plot eval_pareto.png. Without --model it evaluates the small "
    "Qwen3-MoE LM shipped in the package on its synthetic multi-domain corpus."
)


def add_arguments(p):
    p.add_argument("--model", metavar="DIR", default=SUPPRESS,
                   help="local Hugging Face Qwen3-MoE directory (default: the embedded model)")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[4, 16, 64], metavar="B", help="decode batch sizes")
    p.add_argument("--k0", type=positive_int, nargs="+", metavar="K0", default=SUPPRESS,
                   help="baseline experts per token (default: 1..top_k-1)")
    p.add_argument("--sequences", type=positive_int, default=64, help="evaluation sequences (a multiple of every B)")
    p.add_argument("--length", type=positive_int, default=128, help="tokens per sequence (decode steps simulated)")
    p.add_argument("--domains", nargs="+", metavar="NAME", default=SUPPRESS,
                   help="corpus domains to draw sequences from (default: all)")
    p.add_argument("--seed", type=int, default=SUPPRESS, help="corpus seed (default: the held-out evaluation seed)")
    p.add_argument("--no-prune", action="store_true", help="skip the top-k0 pruning baseline")
    p.add_argument("--layer-sensitivity", action="store_true",
                   help="also OEA in one MoE layer at a time (others vanilla): delta CE per (layer, B, k0), "
                        "the input of `oea-trt advise` for per-layer k0 (layers x B x k0 more passes)")
    p.add_argument("--max-rank", type=positive_int, default=SUPPRESS,
                   help="deepest rank a token may piggyback on (default: E, the paper's choice)")
    p.add_argument("--k-max", type=positive_int, default=SUPPRESS,
                   help="most experts a token may hold after piggybacking (default: top_k)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="model compute dtype")
    p.add_argument("--forward-batch", type=positive_int, default=64, help="sequences per forward pass")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="torch CPU threads; the default eval is thousands of tiny routing calls and small "
                        "GEMMs, for which one thread is fastest and unaffected by other busy processes")
    p.add_argument("--output-dir", default="oea-eval", metavar="DIR",
                   help="where eval_results.json and eval_pareto.png go")
    p.add_argument("--dump-traces", metavar="PATH", default=SUPPRESS,
                   help="also save the vanilla router logits of the evaluation sequences (see oea_trt.eval.traces)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    started = time.perf_counter()
    for optional in ("model", "k0", "domains", "seed", "dump_traces", "max_rank", "k_max"):
        if not hasattr(args, optional):  # SUPPRESS defaults keep "(default: None)" out of --help
            setattr(args, optional, None)
    if args.length < 2:
        raise CLIError(f"--length must be at least 2 (a next token to predict), got {args.length}")
    lcm = 1
    for b in args.batch:
        lcm = lcm * b // math.gcd(lcm, b)
    if args.sequences % lcm:
        raise CLIError(f"--sequences must be a multiple of every --batch value ({lcm}), got {args.sequences}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise CLIError("oea-trt eval needs transformers: pip install 'oea-trt[hf]'") from None
    import torch

    from oea_trt.data import EVAL_SEED, domain_names
    from oea_trt.eval import (dump_traces, eval_sequences, evaluate, format_table, load_model,
                         oea_beats_pruning, pareto_plot, resolve_model_dir, write_json)
    from oea_trt.eval.report import verdict_counts
    from oea_trt.eval.model import pick_device, read_config
    from oea_trt.eval.progress import Progress
    from oea_trt.integrations.hf import moe_layers

    try:
        domains = domain_names(args.domains)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    model_dir = resolve_model_dir(args.model)
    config = read_config(model_dir)
    if config.get("model_type") != "qwen3_moe":
        raise CLIError(f"{model_dir} holds a {config.get('model_type')!r} model; oea-trt eval needs qwen3_moe")
    top_k = int(config.get("num_experts_per_tok", 8))
    k0s = args.k0 or list(range(1, top_k))
    bad = [k for k in k0s if k > top_k]
    if bad:
        raise CLIError(f"--k0 values must be in [1, top_k={top_k}], got {bad[0]}")
    model, tokenizer = load_model(model_dir, device=device, dtype=args.dtype)
    layers = moe_layers(model)
    top_k, num_experts = layers[0].top_k, layers[0].num_experts
    seed = EVAL_SEED if args.seed is None else args.seed
    ids, seq_domains = eval_sequences(tokenizer, args.sequences, args.length, seed, domains)
    name = "embedded" if args.model is None else model_dir
    print(f"model: {name} ({len(layers)} MoE layers, {num_experts} experts, top-{top_k}, "
          f"norm_topk_prob={layers[0].norm_topk_prob}); device {device}, {args.dtype}", flush=True)
    print(f"data: {args.sequences} sequences x {args.length} tokens from {len(domains)} domains "
          f"(seed {seed}); decode batches B={args.batch}; k0={k0s}", flush=True)

    progress = Progress(1, "eval", enabled=not args.quiet)
    oea_options = {k: v for k, v in (("max_rank", args.max_rank), ("k_max", args.k_max)) if v is not None}
    if oea_options:
        print(f"OEA options: {oea_options}", flush=True)
    rows = evaluate(model, ids, batches=args.batch, k0s=k0s, prune=not args.no_prune,
                    forward_batch=args.forward_batch, progress=progress, oea_options=oea_options)
    layer_rows = []
    if args.layer_sensitivity:
        from oea_trt.eval.layer_sensitivity import format_layer_table, layer_sensitivity

        layer_rows = layer_sensitivity(model, ids, batches=args.batch, k0s=k0s, forward_batch=args.forward_batch,
                                       progress=Progress(1, "layers", enabled=not args.quiet),
                                       oea_options=oea_options)
    print()
    print(format_table(rows))
    if layer_rows:
        print(format_layer_table(layer_rows))
    wins = oea_beats_pruning(rows)
    if wins:
        print(f"OEA's delta CE below pruning's: {sum(wins.values())}/{len(wins)} (B, k0) pairs"
              + ("" if all(wins.values()) else "; not at " + ", ".join(k for k, v in wins.items() if not v)))
        counts = verdict_counts(rows)
        print(f"OEA vs pruning, paired 95% CI: better at {counts['better']}, tie at {counts['tie']}, "
              f"worse at {counts['worse']} (B, k0) pairs")

    os.makedirs(args.output_dir, exist_ok=True)
    json_path = os.path.join(args.output_dir, "eval_results.json")
    png_path = os.path.join(args.output_dir, "eval_pareto.png")
    elapsed = time.perf_counter() - started
    meta = {
        "model": name, "num_moe_layers": len(layers), "num_experts": num_experts, "top_k": top_k,
        "sequences": args.sequences, "length": args.length, "domains": domains, "seed": seed,
        "batches": args.batch, "k0": k0s, "oea_options": oea_options, "device": device, "dtype": args.dtype,
        "seconds": round(elapsed, 1), "torch": torch.__version__, "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "semantics": "decode batch t = t-th tokens of B sequences (all decode tokens); delta CE paired "
                     "per sequence vs vanilla, 95% percentile bootstrap over sequences; T = distinct experts "
                     "per decode batch, mean over batches, per layer",
    }
    if layer_rows:
        meta["layer_sensitivity"] = [r.as_dict() for r in layer_rows]
    write_json(json_path, rows, meta)
    try:
        pareto_plot(rows, png_path, title=f"OEA vs top-k0 pruning: {name} ({args.sequences}x{args.length} tokens)")
        print(f"wrote {json_path} and {png_path}")
    except ImportError:
        print(f"wrote {json_path} (no plot: matplotlib is not installed; pip install 'oea-trt[plot]')")
    if args.dump_traces:
        dump_traces(model, ids, args.dump_traces, seq_domains, source=name)
        print(f"wrote router-logit traces {args.dump_traces}")
    print(f"done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0
