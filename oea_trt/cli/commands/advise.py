"""`oea-trt advise`: a quality budget and a latency model in, a k0 schedule and per-layer k0 out."""
import argparse
import os
import sys
import time
from argparse import SUPPRESS

from oea_trt.cli import CLIError
from oea_trt.cli.types import positive_float, positive_int
from oea_trt.moe.shapes import PRESETS

NAME = "advise"
ORDER = 35
HELP = "choose the k0 schedule and per-layer k0 that minimise MoE time within a quality budget"
DESCRIPTION = (
    "Join the cross-entropy cost of OEA per (B, k0), and per layer, measured by `oea-trt eval` "
    "(use --layer-sensitivity for per-layer k0) with a latency model of one MoE layer (the "
    "committed MoE benchmark fit for a GPU and layer shape, your own `oea-trt bench moe` results, "
    "or the memory-bound floor), and print the k0 schedule (MIN:K0,...) and per-layer k0 that "
    "minimise the expected MoE time over the batch sizes that matter with delta CE within the "
    "budget at each of them: predicted T, latency and delta CE per batch size, the exact "
    "`oea-trt build` flags, advice.json, oea_config.json (and layer_k0.json), and a Pareto plot. "
    "--check evaluates the advised plan on the model and compares it with the prediction."
)


def budget_pairs(text: str):
    """"4:0.002,16:0.005" -> {4: 0.002, 16: 0.005}."""
    out = {}
    for item in text.split(","):
        left, sep, right = item.strip().partition(":")
        try:
            batch, budget = int(left), float(right)
        except ValueError:
            batch, budget = 0, -1.0
        if not sep or batch < 1 or not budget >= 0:
            raise argparse.ArgumentTypeError(f"expected B:NATS pairs like 4:0.002,16:0.005, got {item.strip()!r}")
        out[batch] = budget
    return out


def batch_weight(text: str):
    """"16" -> (16, None); "16:0.5" -> (16, 0.5)."""
    left, sep, right = text.partition(":")
    try:
        batch = int(left)
        weight = float(right) if sep else None
    except ValueError:
        batch, weight = 0, None
    if batch < 1 or (sep and not (weight is not None and weight > 0)):
        raise argparse.ArgumentTypeError(f"expected B or B:WEIGHT (a positive batch size and share), got {text!r}")
    return batch, weight


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def add_arguments(p):
    p.add_argument("eval_results", metavar="EVAL_RESULTS",
                   help="eval_results.json of `oea-trt eval` (with --layer-sensitivity for per-layer k0)")
    q = p.add_argument_group("quality budget and batch sizes")
    q.add_argument("--budget", type=non_negative_float, metavar="NATS", default=SUPPRESS,
                   help="max delta cross-entropy vs vanilla (nats/token) at every batch size")
    q.add_argument("--budget-per-batch", type=budget_pairs, metavar="B:NATS,...", default=SUPPRESS,
                   help="max delta CE per batch size (overrides --budget for those B)")
    q.add_argument("--batch", type=batch_weight, nargs="+", metavar="B[:WEIGHT]", default=SUPPRESS,
                   help="batch sizes that matter, each optionally with its share of decode steps "
                        "(default: every evaluated B, equal shares)")
    q.add_argument("--bound", choices=("mean", "upper"), default="mean",
                   help="hold the budget on the mean delta CE or on the upper end of its 95%% interval")
    q.add_argument("--no-per-layer", action="store_true", help="advise one k0 per batch size only")
    q.add_argument("--min-gain", type=non_negative_float, default=0.01, metavar="FRACTION",
                   help="use per-layer k0 only if it saves at least this share of the expected MoE time")
    q.add_argument("--additivity", choices=("calibrated", "plain"), default="calibrated",
                   help="predict a per-layer k0 vector by the sum of single-layer effects scaled by how much the "
                        "eval's all-layer rows exceed their sums (calibrated), or by the plain sum")
    lat = p.add_argument_group("latency model: the committed MoE benchmark fit (H100, Qwen3-30B-A3B layer) "
                               "unless one of these says otherwise")
    lat.add_argument("--gpu", default="h100", help="GPU of the committed MoE benchmark fit (h100, h200)")
    lat.add_argument("--layer-shape", default="qwen3-30b-a3b", choices=sorted(PRESETS),
                     help="MoE layer shape of the latency model")
    lat.add_argument("--bench-results", metavar="PATH", default=SUPPRESS,
                     help="a results.json of `oea-trt bench moe` (your GPU) instead of the committed fit")
    lat.add_argument("--floor-bandwidth", type=positive_float, metavar="TB/S", default=SUPPRESS,
                     help="no GPU figures: the memory-bound floor T x expert_bytes / bandwidth")
    p.add_argument("--model", metavar="DIR", default=SUPPRESS,
                   help="the Hugging Face model directory the plan is for (default: the evaluated model)")
    p.add_argument("-o", "--output-dir", default="oea-advice", metavar="DIR",
                   help="where advice.json, oea_config.json, layer_k0.json and advise_pareto.png go")
    p.add_argument("--overwrite", action="store_true", help="replace those files where they are already there")
    c = p.add_argument_group("checking the advice")
    c.add_argument("--check", action="store_true",
                   help="evaluate the advised plan on the model (the eval's sequences) and compare with the prediction")
    c.add_argument("--check-seed", type=int, nargs="+", default=SUPPRESS, metavar="SEED",
                   help="corpus seed(s) of the check's sequences, one check each (default: the eval's seed; "
                        "another seed = fresh sequences the advice was not chosen on)")
    c.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] for --check")
    c.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads for --check")
    c.add_argument("--quiet", action="store_true", help="no progress bar")


def _latency(args):
    from oea_trt.advise.latency import available_fits, benchmark_model, floor_model, from_bench_results
    from oea_trt.moe.shapes import get_preset

    if args.bench_results and args.floor_bandwidth:
        raise CLIError("--bench-results and --floor-bandwidth are two latency models: pass one")
    if args.floor_bandwidth:
        return floor_model(get_preset(args.layer_shape), args.floor_bandwidth)
    if args.bench_results:
        return from_bench_results(args.bench_results, args.layer_shape)
    fits = available_fits()
    if args.gpu.lower() not in fits:
        raise CLIError(f"--gpu: no committed MoE benchmark fit for {args.gpu!r}; available: {', '.join(fits)} "
                       "(or --bench-results PATH, or --floor-bandwidth TB/S)")
    return benchmark_model(args.gpu, args.layer_shape)


def _weights_and_budgets(args, table):
    pairs = args.batch or [(b, None) for b in table.batches]
    batches = [b for b, _ in pairs]
    if len(set(batches)) != len(batches):
        raise CLIError(f"--batch names a batch size twice: {batches}")
    given = [w for _, w in pairs if w is not None]
    if given and len(given) != len(pairs):
        raise CLIError("--batch: give a weight to every batch size (B:WEIGHT) or to none")
    raw = {b: (w if w is not None else 1.0) for b, w in pairs}
    total = sum(raw.values())
    weights = {b: w / total for b, w in raw.items()}
    per = args.budget_per_batch or {}
    extra = sorted(set(per) - set(weights))
    if extra:
        raise CLIError(f"--budget-per-batch names B={extra}, which are not among the batch sizes {sorted(weights)}")
    budgets = {}
    for b in weights:
        if b in per:
            budgets[b] = per[b]
        elif args.budget is not None:
            budgets[b] = args.budget
        else:
            raise CLIError(f"no quality budget for B={b}: pass --budget NATS (every batch size) "
                           "or --budget-per-batch B:NATS,...")
    return weights, budgets


def _model_dir(args, table) -> str:
    from oea_trt.advise.quality import model_reference
    from oea_trt.eval.model import EMBEDDED_MODEL_DIR

    if args.model:
        path = args.model
    else:
        ref = model_reference(table)
        if ref is None:
            raise CLIError("the eval results do not name the evaluated model: pass --model DIR")
        path = EMBEDDED_MODEL_DIR if ref == "embedded" else ref
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise CLIError(f"model directory {path!r} has no config.json (pass --model DIR, the evaluated model)")
    return path


def run(args) -> int:
    started = time.perf_counter()
    for optional in ("budget", "budget_per_batch", "batch", "bench_results", "floor_bandwidth", "model",
                     "check_seed"):
        if not hasattr(args, optional):  # SUPPRESS defaults keep "(default: None)" out of --help
            setattr(args, optional, None)
    if args.check_seed and not args.check:
        raise CLIError("--check-seed needs --check")
    from oea_trt.advise.outputs import (ADVICE_FILE, CONFIG_FILE, LAYER_K0_FILE, PLOT_FILE, advice_dict,
                                        build_command, build_flags, relative_if_inside, routing_config_flags,
                                        routing_plan, write_outputs)
    from oea_trt.inputs import StagedOutputs, check_output_dir

    check_output_dir(args.output_dir, "--output-dir", files=(ADVICE_FILE, CONFIG_FILE, LAYER_K0_FILE, PLOT_FILE),
                     overwrite=args.overwrite)
    from oea_trt.advise.quality import additivity, load_quality
    from oea_trt.advise.report import format_additivity, format_advice, format_plan, pareto_plot
    from oea_trt.advise.search import advise
    from oea_trt.plan.hf_config import qwen3_moe_spec

    table = load_quality(args.eval_results)
    weights, budgets = _weights_and_budgets(args, table)
    latency = _latency(args)
    model_dir = _model_dir(args, table)
    spec = qwen3_moe_spec(model_dir)
    meta = table.meta
    print(f"quality: {args.eval_results} ({meta.get('model')}, {meta.get('sequences')} sequences x "
          f"{meta.get('length')} tokens, seed {meta.get('seed')}; per-layer sensitivity: "
          f"{'yes' if table.has_layers else 'no'})")
    print(f"latency: {latency.description}")
    advice = advise(table, latency, budgets, weights, bound=args.bound, per_layer=not args.no_per_layer,
                    additivity=args.additivity, min_gain=args.min_gain)
    plan = routing_plan(advice, spec)
    hf_dir = relative_if_inside(model_dir)
    flags = build_flags(advice, os.path.join(args.output_dir, "layer_k0.json"))
    command = build_command(hf_dir, flags)
    adds = additivity(table)
    print()
    print(format_advice(advice))
    print(format_plan(advice, flags, command), end="")
    print(f"or the whole plan in one flag:\n  {build_command(hf_dir, routing_config_flags(args.output_dir))}\n")
    if adds:
        print(format_additivity(adds))
    inputs = {"eval_results": args.eval_results, "model": hf_dir, "weights": weights, "budgets": budgets,
              "bound": args.bound, "per_layer": not args.no_per_layer, "additivity": args.additivity,
              "min_gain": args.min_gain}
    content = advice_dict(advice, latency, flags, command, inputs, adds)
    if args.check:
        content["check"] = _check(args, table, model_dir, plan, advice, latency)
    notes = []
    with StagedOutputs(overwrite=args.overwrite) as out:  # every file or none, nothing half-written
        write_outputs(args.output_dir, advice, plan, hf_dir, flags, content, path_for=out.path)
        try:
            checked = {r["batch"]: (r["layer_us"], r["measured_delta_ce"], *r["measured_ci"])
                       for r in content["check"][0]["rows"]} if args.check else None
            pareto_plot(advice, table, latency, out.path(os.path.join(args.output_dir, PLOT_FILE)), measured=checked,
                        title=f"{meta.get('model')}: advised operating points; latency: {latency.description}")
        except ImportError:
            notes.append("no plot: matplotlib is not installed (pip install 'oea-trt[plot]')")
    written = out.written
    for note in notes:
        print(note)
    print("wrote " + ", ".join(written))
    print(f"done in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


def _check(args, table, model_dir, plan, advice, latency) -> list:
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise CLIError("--check evaluates the model and needs transformers: pip install 'oea-trt[hf]'") from None
    import torch

    from oea_trt.advise.check import check_plan, check_summary, format_check
    from oea_trt.data import TRAIN_SEED
    from oea_trt.eval import eval_sequences, load_model
    from oea_trt.eval.model import pick_device
    from oea_trt.eval.progress import Progress

    meta = table.meta
    seeds = args.check_seed or [meta.get("seed")]
    if meta.get("model") == "embedded" and TRAIN_SEED in seeds:
        raise CLIError(f"--check-seed {TRAIN_SEED} is the embedded model's training corpus seed; choose another")
    torch.set_num_threads(args.threads)
    model, tokenizer = load_model(model_dir, device=pick_device(args.device), dtype=meta.get("dtype", "float32"))
    checks = []
    for seed in seeds:
        ids, _ = eval_sequences(tokenizer, meta["sequences"], meta["length"], seed, meta.get("domains"))
        rows = check_plan(model, ids, plan, advice, latency, forward_batch=64,
                          progress=Progress(1, "check", enabled=not args.quiet))
        same = seed == meta.get("seed")
        label = (f"the eval's {meta['sequences']} sequences, seed {seed}" if same
                 else f"{meta['sequences']} fresh sequences, seed {seed}")
        print()
        print(format_check(rows, label))
        summary = check_summary(rows)
        print(f"largest |measured - predicted| delta CE: {summary['max_abs_error']:.4f} nats/token; "
              f"mean within budget at every B: {summary['all_within_budget']}; "
              f"upper end of the interval within budget at every B: {summary['all_upper_within_budget']}")
        checks.append({"seed": seed, "same_sequences_as_eval": same, "rows": [r.as_dict() for r in rows], **summary})
    return checks
