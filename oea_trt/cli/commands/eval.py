"""`oea-trt eval`: what OEA costs in quality on a real model, per batch size and k0."""
import math
from argparse import SUPPRESS
import os
import sys
import time

from oea_trt.cli import CLIError
from oea_trt.cli.types import integer, positive_int
from oea_trt.inputs import StagedOutputs, check_device, check_output_dir, check_output_file

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

#: What --output-dir receives.
RESULT_FILES = ("eval_results.json", "eval_pareto.png")


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
    p.add_argument("--seed", type=integer, default=SUPPRESS, help="corpus seed (default: the held-out evaluation seed)")
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
                   help="where eval_results.json and eval_pareto.png go (created if missing)")
    p.add_argument("--dump-traces", metavar="PATH", default=SUPPRESS,
                   help="also save the vanilla router logits of the evaluation sequences (see oea_trt.eval.traces)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results already in --output-dir and an existing --dump-traces file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def check_arguments(args):
    """Everything that can be checked without the model: sizes, domains, device, output paths."""
    if args.length < 2:
        raise CLIError(f"--length must be at least 2 (a next token to predict), got {args.length}")
    lcm = 1
    for b in args.batch:
        lcm = lcm * b // math.gcd(lcm, b)
    if args.sequences % lcm:
        raise CLIError(f"--sequences must be a multiple of every --batch value ({lcm}), got {args.sequences}")
    from oea_trt.data import domain_names

    try:
        domains = domain_names(args.domains)
    except ValueError as exc:
        raise CLIError(f"--domains: {exc}") from None
    device = check_device(args.device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.threads > cores:
        raise CLIError(f"--threads must be at most the {cores} CPU cores this process may use, got {args.threads}")
    check_output_dir(args.output_dir, "--output-dir", RESULT_FILES, overwrite=args.overwrite)
    if args.dump_traces:
        traces = os.path.abspath(args.dump_traces)
        output_dir = os.path.abspath(args.output_dir)
        if traces in {os.path.join(output_dir, f) for f in RESULT_FILES}:
            raise CLIError(f"--dump-traces {args.dump_traces} is one of the result files; choose another name")
        if not (os.path.dirname(traces) == output_dir and not os.path.exists(output_dir)):  # else created with it
            check_output_file(args.dump_traces, "--dump-traces", overwrite=args.overwrite)
    return domains, device


def check_model(args, spec):
    """The k0 values to evaluate, after checking every model-dependent argument against `spec`."""
    from oea_trt.routing.config import OEAConfig

    top_k = spec.top_k
    k0s = args.k0 or list(range(1, top_k))
    bad = [k for k in k0s if k > top_k]
    if bad:
        raise CLIError(f"--k0 values must be in [1, top_k={top_k}], got {bad[0]}")
    if spec.max_position_embeddings and args.length > spec.max_position_embeddings:
        raise CLIError(f"--length must be at most the model's max_position_embeddings="
                       f"{spec.max_position_embeddings} (positions beyond it are not trained), got {args.length}")
    options = oea_options(args)
    for k0 in k0s:  # max_rank / k_max against this model, before any work (ConfigError names the knob)
        OEAConfig(num_experts=spec.num_experts, top_k=top_k, k0=k0, renormalize=spec.norm_topk_prob, **options)
    return k0s


def oea_options(args) -> dict:
    return {k: v for k, v in (("max_rank", args.max_rank), ("k_max", args.k_max)) if v is not None}


def run(args) -> int:
    started = time.perf_counter()
    for optional in ("model", "k0", "domains", "seed", "dump_traces", "max_rank", "k_max"):
        if not hasattr(args, optional):  # SUPPRESS defaults keep "(default: None)" out of --help
            setattr(args, optional, None)
    domains, device = check_arguments(args)
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise CLIError("oea-trt eval needs transformers: pip install 'oea-trt[hf]'") from None
    import torch

    from oea_trt.data import EVAL_SEED
    from oea_trt.eval import (dump_traces, eval_sequences, evaluate, format_table, load_model,
                              oea_beats_pruning, pareto_plot, write_json)
    from oea_trt.eval.budget import check_eval_fits
    from oea_trt.eval.model import EMBEDDED_MODEL_DIR, model_spec
    from oea_trt.eval.progress import Progress
    from oea_trt.eval.report import verdict_counts
    from oea_trt.eval.sweep import forward_chunk
    from oea_trt.integrations.hf import moe_layers

    spec = model_spec(args.model)
    model_dir = EMBEDDED_MODEL_DIR if args.model is None else args.model
    k0s = check_model(args, spec)
    check_eval_fits(model_dir, spec, device=device, dtype=args.dtype, sequences=args.sequences, length=args.length,
                    chunk=forward_chunk(args.batch, args.forward_batch), traces=bool(args.dump_traces))

    torch.set_num_threads(args.threads)
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
    options = oea_options(args)
    if options:
        print(f"OEA options: {options}", flush=True)
    rows = evaluate(model, ids, batches=args.batch, k0s=k0s, prune=not args.no_prune,
                    forward_batch=args.forward_batch, progress=progress, oea_options=options)
    layer_rows = []
    if args.layer_sensitivity:
        from oea_trt.eval.layer_sensitivity import format_layer_table, layer_sensitivity

        layer_rows = layer_sensitivity(model, ids, batches=args.batch, k0s=k0s, forward_batch=args.forward_batch,
                                       progress=Progress(1, "layers", enabled=not args.quiet),
                                       oea_options=options)
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

    json_path, png_path = (os.path.join(args.output_dir, f) for f in RESULT_FILES)
    meta = {
        "model": name, "num_moe_layers": len(layers), "num_experts": num_experts, "top_k": top_k,
        "sequences": args.sequences, "length": args.length, "domains": domains, "seed": seed,
        "batches": args.batch, "k0": k0s, "oea_options": options, "device": device, "dtype": args.dtype,
        "seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "semantics": "decode batch t = t-th tokens of B sequences (all decode tokens); delta CE paired "
                     "per sequence vs vanilla, 95% percentile bootstrap over sequences; T = distinct experts "
                     "per decode batch, mean over batches, per layer",
    }
    if layer_rows:
        meta["layer_sensitivity"] = [r.as_dict() for r in layer_rows]
    notes = []
    with StagedOutputs(overwrite=args.overwrite) as out:  # all results or none, nothing half-written
        write_json(out.path(json_path), rows, meta)
        try:
            pareto_plot(rows, out.path(png_path),
                        title=f"OEA vs top-k0 pruning: {name} ({args.sequences}x{args.length} tokens)")
        except ImportError:
            notes.append("no plot: matplotlib is not installed; pip install 'oea-trt[plot]'")
        if args.dump_traces:
            dump_traces(model, ids, out.path(args.dump_traces), seq_domains, source=name)
    for path in out.written:
        print(f"wrote {path}")
    for note in notes:
        print(note)
    print(f"done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0
