#!/usr/bin/env python3
"""Generate text with OEA routing through the runtime API (oea_trt.runtime), anywhere:

  # an engine from `oea-trt build` (TensorRT-LLM 1.2.1 container; falls back to PyTorch elsewhere)
  python examples/generate.py /engines/qwen3-30b-a3b-oea --prompt "The capital of France is" --k0 4
  # a Hugging Face Qwen3-MoE directory with the pure-PyTorch runtime
  python examples/generate.py /models/Qwen3-30B-A3B --backend pytorch --k0 3 --compare-vanilla
  # no model at hand: a tiny random Qwen3-MoE (character tokenizer) written to a new DIR first
  python examples/generate.py --tiny /tmp/oea-tiny --k0 1 --compare-vanilla --device cpu

Every input is checked before a model loads (oea_trt.inputs, as in `oea-trt`); a bad one is
reported in one line with exit status 2, and --debug shows tracebacks.
"""
import json
import os
import sys
import time

from oea_trt.cli import HelpFormatter, Parser, add_debug_flag
from oea_trt.cli.failures import debug_from_env, run_reporting_failures
from oea_trt.cli.types import non_negative_float, positive_int
from oea_trt.inputs import InputError, StagedOutputs, check_output_dir, check_output_file
from oea_trt.inputs.generation import check_against_model, check_backend, check_generation_model, check_prompts
from oea_trt.runtime import BACKENDS, SamplingOptions, open_runtime

PROG = "generate.py"
DEFAULT_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Mixture-of-experts models route",
                   "1, 2, 3, 5, 8,", "Once upon a time", "SELECT * FROM", "The speed of light", "import torch"]


class Description(HelpFormatter):
    """Keeps the docstring's example lines as written."""

    def _fill_text(self, text, width, indent):
        return "".join(indent + line for line in text.splitlines(keepends=True))


def parse_args(argv=None):
    p = Parser(prog=PROG, description=__doc__, formatter_class=Description)
    p.add_argument("path", nargs="?", help="engine directory or Hugging Face Qwen3-MoE directory")
    p.add_argument("--tiny", metavar="DIR", help="write a tiny random Qwen3-MoE to DIR (new or empty) and use it")
    p.add_argument("--overwrite", action="store_true", help="let --tiny and --json replace what is already there")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto: the engine through TensorRT-LLM where it is installed, else PyTorch")
    p.add_argument("--prompt", action="append", help="prompt (repeatable; default: 8 built-in prompts)")
    p.add_argument("--k0", type=positive_int, help="override k0 at load (default: the engine's plan, or 3)")
    p.add_argument("--max-new-tokens", type=positive_int, default=32)
    p.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 = greedy")
    p.add_argument("--device", help="PyTorch backend device: cpu or cuda[:N] (default: cuda if available)")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("--compare-vanilla", action="store_true",
                   help="PyTorch backend: also run vanilla top-k and compare outputs and distinct experts")
    p.add_argument("--json", metavar="PATH", help="write prompts, outputs and routing statistics as JSON")
    add_debug_flag(p)
    args = p.parse_args(argv)
    if not args.path and not args.tiny:
        p.error("give a model/engine PATH or --tiny DIR")
    if args.path and args.tiny:
        p.error("give either a model/engine PATH or --tiny DIR, not both")
    return args


def check_tiny_dir(directory: str, overwrite: bool) -> None:
    check_output_dir(directory, "--tiny")
    if os.path.isdir(directory) and os.listdir(directory) and not overwrite:
        raise InputError(f"--tiny {directory} is not empty; give a new directory, pass --overwrite to replace "
                         f"its contents, or run on the model in it with `{PROG} {directory}`")


def check_arguments(args):
    """Everything checkable before a model loads, in the order a user would fix it."""
    prompts = check_prompts(args.prompt or DEFAULT_PROMPTS)
    if args.json:
        check_output_file(args.json, "--json", overwrite=args.overwrite)
    if args.tiny:
        check_tiny_dir(args.tiny, args.overwrite)
    check_backend(args.backend, args.device)
    return prompts


def save_tiny(directory: str, overwrite: bool) -> str:
    """A tiny random Qwen3-MoE with the character tokenizer, written all-or-nothing."""
    from oea_trt.models.random_model import save_tiny_model

    with StagedOutputs(overwrite=overwrite) as out:
        save_tiny_model(out.directory(directory))
    return directory


def mean_active(stats):
    values = [s["mean_active_experts"] for s in stats.values() if s["batches"]]
    return sum(values) / len(values) if values else float("nan")


def generate(args) -> int:
    prompts = check_arguments(args)
    if args.tiny:
        path = save_tiny(args.tiny, args.overwrite)
        print(f"wrote a tiny random Qwen3-MoE to {path}")
    else:
        path = args.path
    spec = check_generation_model(path, args.backend)
    check_against_model(spec, args.k0, args.max_new_tokens)
    opts = SamplingOptions(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    kwargs = {"chat": args.chat}
    if args.k0 is not None:
        kwargs["k0"] = args.k0
    if args.device and args.backend != "tensorrt-llm":
        kwargs["device"] = args.device
    report = {"path": path, "prompts": prompts}
    with open_runtime(path, backend=args.backend, **kwargs) as rt:
        t0 = time.perf_counter()
        outs = rt.generate(prompts, opts)
        report["seconds"] = time.perf_counter() - t0
        report["backend"] = rt.backend
        report["k0_by_layer"] = rt.routing.k0_by_layer() if rt.routing else None
        report["top_k"] = rt.routing.base.top_k if rt.routing else None
        print(f"backend={rt.backend}  k0 by layer: {report['k0_by_layer']}  ({report['seconds']:.2f}s)")
        for g in outs:
            print(f"--- {g.prompt!r}\n{g.text}")
        report["outputs"] = [g.text for g in outs]
        if hasattr(rt, "routing_stats"):
            report["oea_stats"] = {str(k): v for k, v in rt.routing_stats().items()}
    if args.compare_vanilla:
        if report["backend"] != "pytorch" or report["top_k"] is None:
            print("--compare-vanilla needs the PyTorch backend with OEA on (distinct experts are counted there)")
        else:
            vk = dict(kwargs, k0=report["top_k"])  # k0 = top_k is exactly vanilla top-k
            with open_runtime(path, backend="pytorch", **vk) as van:
                v_outs = van.generate(prompts, opts)
                report["vanilla_stats"] = {str(k): v for k, v in van.routing_stats().items()}
            same = sum(a.token_ids == b.token_ids for a, b in zip(outs, v_outs))
            report["same_as_vanilla"] = same
            print(f"distinct experts per step (mean over layers): OEA {mean_active(report['oea_stats']):.2f} vs "
                  f"vanilla {mean_active(report['vanilla_stats']):.2f}; {same}/{len(prompts)} outputs identical")
    if args.json:
        with StagedOutputs(overwrite=args.overwrite) as out, open(out.path(args.json), "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    return run_reporting_failures(lambda: generate(args), PROG, debug=args.debug or debug_from_env())


if __name__ == "__main__":
    sys.exit(main())
