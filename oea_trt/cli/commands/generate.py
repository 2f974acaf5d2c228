"""`oea-trt generate`: generate text with OEA routing through the runtime API, and say how fast."""
import argparse
import inspect
import json
import sys
import time

from oea_trt.cli import CLIError
from oea_trt.cli.types import fraction, integer, non_negative_float, non_negative_int, positive_int

NAME = "generate"
ORDER = 20
HELP = "generate text with OEA routing (default: the embedded model) and print TPOT and tokens/s"
DESCRIPTION = (
    "Generate continuations of the prompts for a batch of B rows through oea_trt.runtime: on a CUDA GPU the "
    "fast decode path (our decoder, the routing kernel and our MoE kernel in every MoE layer, each decode step "
    "one CUDA-graph replay), elsewhere transformers' generate() routed with OEA. Prints each row's text, then "
    "the time to first token, the time per output token (TPOT) and tokens/s of the decode steps, and the mean "
    "distinct experts per MoE layer per step. Without MODEL_DIR it runs the small Qwen3-MoE shipped in the "
    "package (a character-level model of a synthetic corpus)."
)
DEFAULT_PROMPTS = ["def fibonacci(n):", "12 + 30 = ", "The river", "{\"name\": "]


def add_arguments(p):
    from oea_trt.runtime import BACKENDS

    p.add_argument("model", nargs="?", metavar="MODEL_DIR", default=argparse.SUPPRESS,
                   help="Hugging Face Qwen3-MoE directory or `oea-trt build` engine directory (default: the "
                        "embedded model)")
    p.add_argument("--prompt", action="append", metavar="TEXT",
                   help="a prompt (repeatable; default: a few built-in prompts)")
    p.add_argument("--batch", type=positive_int, metavar="B",
                   help="rows to generate at once; the prompts are repeated in turn to fill them (default: one row "
                        "per prompt)")
    p.add_argument("--k0", type=positive_int, help="OEA baseline experts per token (default: the engine's plan, or 3)")
    p.add_argument("--vanilla", action="store_true", help="route plain top-k (the same path with k0 = top_k)")
    p.add_argument("--k0-schedule", metavar="MIN:K0,...",
                   help="k0 by number of decode tokens in the batch, e.g. 8:4,16:3 (smaller batches keep --k0)")
    p.add_argument("--layer-k0", metavar="LAYERS:K0,...", help="per-layer k0, e.g. 0-3:8,4-47:3, or a JSON file")
    p.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N", help="tokens to generate per row")
    p.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=fraction, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off)")
    p.add_argument("--seed", type=integer, help="sampling seed")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="pytorch: the fast decode path on CUDA, transformers on the CPU; pytorch-decode / "
                        "transformers force one")
    p.add_argument("--device", help="cpu or cuda[:N] (default: cuda when available)")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("--json", metavar="PATH", help="also write outputs, timing and routing statistics as JSON")
    p.add_argument("--overwrite", action="store_true", help="let --json replace a file that is already there")


def _rows(prompts, batch):
    if batch is None:
        return list(prompts)
    return [prompts[i % len(prompts)] for i in range(batch)]


def _progress(started: float):
    """A progress line on stderr for runs longer than two seconds, at most once a second."""
    last = [0.0]

    def show(done: int, total: int, elapsed: float) -> None:
        now = time.perf_counter()
        if now - started < 2.0 or now - last[0] < 1.0:
            return
        last[0] = now
        print(f"\r  decode step {done}/{total}  {elapsed / done * 1e3:.2f} ms/step", end="", file=sys.stderr, flush=True)
    return show


def run(args) -> int:
    from oea_trt.eval.model import EMBEDDED_MODEL_DIR
    from oea_trt.plan.routing_plan import parse_layer_k0
    from oea_trt.routing.config import parse_k0_schedule
    from oea_trt.runtime import SamplingOptions, open_runtime

    from oea_trt.inputs import StagedOutputs, check_output_file
    from oea_trt.inputs.generation import check_against_model, check_backend, check_generation_model, check_prompts

    path = getattr(args, "model", None) or EMBEDDED_MODEL_DIR
    if args.vanilla and (args.k0 or args.k0_schedule or args.layer_k0):
        raise CLIError("--vanilla routes plain top-k: leave out --k0, --k0-schedule and --layer-k0")
    prompts = _rows(check_prompts(args.prompt or DEFAULT_PROMPTS), args.batch)
    if args.json:
        check_output_file(args.json, "--json", overwrite=args.overwrite)
    check_backend(args.backend, args.device)
    check_against_model(check_generation_model(path, args.backend, "MODEL_DIR"), args.k0, args.max_new_tokens)
    options = SamplingOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, seed=args.seed)
    kwargs = {"chat": args.chat}
    if args.backend != "tensorrt-llm":
        kwargs.update(oea=not args.vanilla, device=args.device)
        if args.layer_k0:
            from oea_trt.plan.hf_config import qwen3_moe_spec
            from oea_trt.runtime.model_dir import resolve

            kwargs["layer_k0"] = parse_layer_k0(args.layer_k0, qwen3_moe_spec(resolve(path)[0]).moe_layers)
    elif args.vanilla or args.layer_k0:
        raise CLIError("--vanilla and --layer-k0 need a PyTorch backend (an engine's plan is fixed at build)")
    if args.k0 is not None:
        kwargs["k0"] = args.k0
    if args.k0_schedule:
        kwargs["k0_schedule"] = parse_k0_schedule(args.k0_schedule)
    loading = time.perf_counter()
    with open_runtime(path, backend=args.backend, **kwargs) as rt:
        where = getattr(rt, "implementation", rt.backend)
        routing = "vanilla top-k" if rt.routing is None else f"OEA k0 {_k0_summary(rt.routing)}"
        print(f"{path}: {where} ({time.perf_counter() - loading:.1f} s to load), {len(prompts)} rows, {routing}",
              flush=True)
        started = time.perf_counter()
        takes_progress = "progress" in inspect.signature(rt.generate).parameters
        outs = rt.generate(prompts, options, **({"progress": _progress(started)} if takes_progress else {}))
        if takes_progress and time.perf_counter() - started >= 2.0:
            print(file=sys.stderr)  # end the progress line
        for i, g in enumerate(outs):
            print(f"--- [{i}] {g.prompt!r}\n{g.text}")
        timing = getattr(rt, "last_timing", None)
        stats = rt.routing_stats() if hasattr(rt, "routing_stats") else {}
        if timing is not None:
            print(f"prefill {timing.prefill_s * 1e3:.1f} ms | decode {timing.decode_steps} steps: TPOT "
                  f"{timing.tpot_ms:.2f} ms, {timing.tokens_per_s:.0f} tokens/s (B={timing.batch})")
        means = [s["mean_active_experts"] for s in stats.values() if s.get("batches")]
        if means:
            print(f"distinct experts per MoE layer per batch: {sum(means) / len(means):.1f} (mean over "
                  f"{len(means)} layers)")
    if args.json:
        report = {"model": path, "backend": where, "prompts": prompts, "outputs": [g.text for g in outs],
                  "token_ids": [g.token_ids for g in outs], "timing": timing.to_dict() if timing else None,
                  "routing_stats": {str(k): v for k, v in stats.items()}}
        with StagedOutputs(overwrite=args.overwrite) as out:
            with open(out.path(args.json), "w") as f:
                json.dump(report, f, indent=1)
        print(f"wrote {args.json}")
    return 0


def _k0_summary(plan) -> str:
    """'3' when every layer has k0 3, else '8 on layers 0-3, 3 on layers 4-47'; then the schedule."""
    from oea_trt.plan.routing_plan import format_layer_ranges

    layers_of = {}
    for layer, k0 in sorted(plan.k0_by_layer().items()):
        layers_of.setdefault(k0, []).append(layer)
    text = str(next(iter(layers_of))) if len(layers_of) == 1 else ", ".join(
        f"{k0} on layers {format_layer_ranges(layers)}" for k0, layers in layers_of.items())
    schedule = plan.base.k0_schedule
    return text + (f" (schedule {', '.join(f'{m}:{k}' for m, k in schedule)})" if schedule else "")
