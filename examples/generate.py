#!/usr/bin/env python3
"""Generate text with OEA routing through the runtime API (oea_trt.runtime), anywhere:

  # an engine from `oea-trt build` (TensorRT-LLM 1.2.1 container; falls back to PyTorch elsewhere)
  python examples/generate.py /engines/qwen3-30b-a3b-oea --prompt "The capital of France is" --k0 4
  # a Hugging Face Qwen3-MoE directory with the pure-PyTorch runtime
  python examples/generate.py /models/Qwen3-30B-A3B --backend pytorch --k0 3 --compare-vanilla
  # no model at hand: a tiny random Qwen3-MoE (character tokenizer) written to DIR first
  python examples/generate.py --tiny /tmp/oea-tiny --k0 1 --compare-vanilla
"""
import argparse
import json
import sys
import time

from oea_trt.runtime import BACKENDS, SamplingOptions, open_runtime

DEFAULT_PROMPTS = ["The capital of France is", "def fibonacci(n):", "Mixture-of-experts models route",
                   "1, 2, 3, 5, 8,", "Once upon a time", "SELECT * FROM", "The speed of light", "import torch"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", nargs="?", help="engine directory or Hugging Face Qwen3-MoE directory")
    p.add_argument("--tiny", metavar="DIR", help="write a tiny random Qwen3-MoE to DIR and use it")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--prompt", action="append", help="prompt (repeatable; default: 8 built-in prompts)")
    p.add_argument("--k0", type=int, help="override k0 at load (default: the engine's plan, or 3)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--device", help="PyTorch backend device (default: cuda if available)")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("--compare-vanilla", action="store_true",
                   help="PyTorch backend: also run vanilla top-k and compare outputs and distinct experts")
    p.add_argument("--json", metavar="PATH", help="write prompts, outputs and routing statistics as JSON")
    args = p.parse_args(argv)
    if not args.path and not args.tiny:
        p.error("give a model/engine PATH or --tiny DIR")
    return args


def _save_tiny(directory):
    """A tiny random Qwen3-MoE with the character tokenizer (oea_trt.models.random_model when present)."""
    try:
        from oea_trt.models.random_model import save_tiny_model
    except ImportError:
        import torch
        from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

        from oea_trt.data import VOCAB, save_hf_tokenizer

        def save_tiny_model(d):
            torch.manual_seed(0)
            cfg = Qwen3MoeConfig(vocab_size=len(VOCAB), hidden_size=64, intermediate_size=128,
                                 moe_intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, head_dim=16, num_experts=16, num_experts_per_tok=4,
                                 norm_topk_prob=True, max_position_embeddings=256, pad_token_id=0,
                                 bos_token_id=1, eos_token_id=2)
            model = Qwen3MoeForCausalLM(cfg)
            with torch.no_grad():  # clearly ranked experts (the default init makes router logits ~equal)
                for name, param in model.named_parameters():
                    if name.endswith("mlp.gate.weight"):
                        param.normal_(0.0, 1.0)
            model.save_pretrained(d)
            save_hf_tokenizer(d)
            return d
    return save_tiny_model(directory)


def _mean_active(stats):
    values = [s["mean_active_experts"] for s in stats.values() if s["batches"]]
    return sum(values) / len(values) if values else float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    path = args.path
    if args.tiny:
        path = _save_tiny(args.tiny)
        print(f"wrote a tiny random Qwen3-MoE to {path}")
    prompts = args.prompt or DEFAULT_PROMPTS
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
            print(f"distinct experts per step (mean over layers): OEA {_mean_active(report['oea_stats']):.2f} vs "
                  f"vanilla {_mean_active(report['vanilla_stats']):.2f}; {same}/{len(prompts)} outputs identical")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
