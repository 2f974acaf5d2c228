"""`oea-trt build`: Hugging Face Qwen3-MoE -> TensorRT-LLM engine with OEA routing."""
from __future__ import annotations

import importlib.util
import os
from argparse import SUPPRESS
from typing import Dict, Optional, Sequence

from oea_trt.cli import CLIError
from oea_trt.cli.types import fraction, positive_int
from oea_trt.inputs import check_int, check_model_dir, check_output_dir, parse_int, read_json
from oea_trt.integrations.trtllm.build_plan import DEFAULT_K0
from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.routing.config import parse_k0_schedule

#: The routing flags (argparse dests) a --routing-config plan replaces; none is set unless given.
ROUTING_FLAGS = ("k0", "k0_schedule", "layer_k0", "max_rank", "top_p", "no_piggyback_on_context", "all_decode")

NAME = "build"
ORDER = 30
HELP = "build a Qwen3-MoE TensorRT-LLM 1.2.1 engine whose MoE layers route with OEA"
DESCRIPTION = (
    "Convert a Hugging Face Qwen3-MoE directory to a TensorRT-LLM checkpoint, build an engine in "
    "which every MoE layer routes with the OEA plugin (decode tokens: OEA; context tokens: plain "
    "top-k joining the loaded set; weights renormalized iff the model's norm_topk_prob), and write "
    "oea_config.json next to the engine. The routing plan comes from the OEA routing flags, or whole "
    "from an oea_config.json (--routing-config: `oea-trt advise`'s, or an earlier build's). Needs "
    "TensorRT-LLM 1.2.1 (NVIDIA's release container) except with --dry-run, which prints the resolved "
    "plan: model facts, expert shapes and bytes, per-layer k0 and the exact commands."
)


def add_arguments(p):
    p.add_argument("hf_dir", metavar="HF_DIR", help="Hugging Face Qwen3-MoE model directory (config.json + safetensors)")
    p.add_argument("-o", "--output-dir", required=True, metavar="ENGINE_DIR", help="where the engine is written")
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="TensorRT-LLM checkpoint directory (default: ENGINE_DIR.ckpt)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
                   help="weight/activation dtype (auto: the model's torch_dtype)")
    p.add_argument("--tp-size", type=positive_int, default=1, help="tensor parallel size (GPUs)")
    p.add_argument("--ep-size", type=positive_int, default=1,
                   help="expert parallel size for the MoE layers (must divide tp-size; MoE tp = tp/ep)")
    p.add_argument("--max-batch-size", type=positive_int, default=64, help="most requests in flight")
    p.add_argument("--max-num-tokens", type=positive_int, default=8192,
                   help="most tokens in one engine step (context chunks + decode tokens)")
    p.add_argument("--max-input-len", type=positive_int, help="longest prompt (default: min(max-seq-len, max-num-tokens))")
    p.add_argument("--max-seq-len", type=positive_int, help="longest prompt+output (default: max_position_embeddings)")
    g = p.add_argument_group("OEA routing", "either --routing-config, or the flags after it (all optional)")
    g.add_argument("--routing-config", metavar="FILE", default=SUPPRESS,
                   help="take the whole routing plan (k0, k0 schedule, per-layer k0 and every other knob) from an "
                        "oea_config.json: the one `oea-trt advise` writes, or the one next to an engine (its "
                        "directory works too); it must be for this model")
    g.add_argument("--k0", type=positive_int, default=SUPPRESS,
                   help=f"baseline experts per decode token (default: {DEFAULT_K0}; paper: k0=3 kept Qwen3-30B-A3B "
                        "accuracy; k0=top_k is vanilla)")
    g.add_argument("--k0-schedule", metavar="MIN:K0,...", default=SUPPRESS,
                   help="k0 by number of decode tokens, e.g. 8:4,16:3 (below the smallest MIN, --k0 applies)")
    g.add_argument("--layer-k0", metavar="LAYERS:K0,...|FILE.json", default=SUPPRESS,
                   help="per-layer k0, e.g. 0-3:8,4-47:3, or a JSON file {\"layer\": k0}; other layers use --k0")
    g.add_argument("--max-rank", type=positive_int, default=SUPPRESS,
                   help="deepest rank a token may piggyback on (default: E)")
    g.add_argument("--top-p", type=fraction, default=SUPPRESS,
                   help="baseline also stops at this top-p mass (default: 1, off)")
    g.add_argument("--no-piggyback-on-context", action="store_true", default=SUPPRESS,
                   help="context tokens' experts do not join the loaded set")
    g.add_argument("--all-decode", action="store_true", default=SUPPRESS,
                   help="do not wire TensorRT-LLM's request types into the plugin; treat every row as decode")
    p.add_argument("--workers", type=positive_int, default=1, help="parallel conversion/build workers")
    p.add_argument("--plugin-library", metavar="SO",
                   help="liboea_routing_trt.so to build with (default: $OEA_TRT_PLUGIN_LIB, then the build directories)")
    p.add_argument("--trtllm-build-arg", action="append", default=[], metavar="ARG",
                   help="extra argument passed to trtllm-build (repeatable, e.g. --trtllm-build-arg=--multiple_profiles=enable)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved plan and commands; needs no TensorRT-LLM and no weights (config.json only)")
    p.add_argument("--overwrite", action="store_true",
                   help="build into a non-empty ENGINE_DIR / checkpoint directory, replacing what is there")


def layer_k0_argument(text: str, moe_layers: Sequence[int]) -> Dict[int, int]:
    """--layer-k0 as {layer: k0}. A JSON file is type-checked here (json.load makes 5.9 a float
    and true a bool, which int() would silently turn into k0 5 and 1), then goes through the
    same parser as the inline LAYERS:K0 form."""
    from oea_trt.plan.routing_plan import parse_layer_k0

    text = text.strip()
    if text.endswith(".json") or os.path.isfile(text):
        raw = read_json(text, "--layer-k0 file", dict)
        pairs = []
        for key, value in raw.items():
            layer = parse_int(key, f"--layer-k0 file {text}: layer key", lo=0)
            k0 = check_int(value, f"--layer-k0 file {text}: k0 of layer {key}", lo=1)
            pairs.append(f"{layer}:{k0}")
        if not pairs:
            raise CLIError(f"--layer-k0 file {text} names no layer; expected {{\"layer\": k0, ...}}")
        text = ",".join(pairs)
    return parse_layer_k0(text, moe_layers)


def check_outputs(args) -> None:
    """ENGINE_DIR and the checkpoint directory: creatable, and empty unless --overwrite (a real
    build writes into them; a dry run only needs them to be possible)."""
    checkpoint_dir = args.checkpoint_dir or (os.path.normpath(args.output_dir) + ".ckpt")
    for flag, path in (("--output-dir", args.output_dir), ("--checkpoint-dir", checkpoint_dir)):
        check_output_dir(path, flag)
        if not args.dry_run and not args.overwrite and os.path.isdir(path) and os.listdir(path):
            raise CLIError(f"{flag} {path} is not empty; pass --overwrite to build into it, or choose another "
                           "directory")
    if os.path.abspath(args.output_dir) == os.path.abspath(checkpoint_dir):
        raise CLIError(f"--checkpoint-dir must differ from --output-dir, both are {args.output_dir}")


def check_routing_flags(args) -> None:
    """--routing-config decides every routing knob: any routing flag beside it, even one at its
    default value, would be silently ignored, so it is refused."""
    given = ["--" + dest.replace("_", "-") for dest in ROUTING_FLAGS if hasattr(args, dest)]
    if hasattr(args, "routing_config") and given:
        raise CLIError(f"--routing-config sets the whole routing plan; drop {', '.join(given)} (or drop "
                       "--routing-config and give the routing flags alone)")


def routing_config_argument(args, spec) -> Optional[RoutingPlan]:
    """The plan of --routing-config (None without it), refused when it does not fit the model."""
    from oea_trt.integrations.trtllm.build_plan import routing_misfits
    from oea_trt.plan.config_file import read_routing_config

    path = getattr(args, "routing_config", None)
    if path is None:
        return None
    plan = read_routing_config(path, "--routing-config")
    misfits = routing_misfits(plan, spec)
    if misfits:
        raise CLIError(f"--routing-config {path} does not fit {args.hf_dir}: {'; '.join(misfits)}")
    return plan


def options_from_args(args):
    from oea_trt.integrations.trtllm.build_plan import BuildOptions

    check_routing_flags(args)
    spec = check_model_dir(args.hf_dir, "HF_DIR", weights=not args.dry_run)
    if args.plugin_library and not os.path.isfile(args.plugin_library):
        raise CLIError(f"--plugin-library {args.plugin_library} does not exist; build it with "
                       "scripts/check_plugin.sh or leave the flag out")
    routing = routing_config_argument(args, spec)
    k0_schedule = getattr(args, "k0_schedule", None)
    schedule = parse_k0_schedule(k0_schedule) if k0_schedule else None
    layer_k0 = None
    if getattr(args, "layer_k0", None):
        layer_k0 = layer_k0_argument(args.layer_k0, spec.moe_layers)
    extra = []
    for arg in args.trtllm_build_arg:
        extra.extend(arg.split("=", 1) if arg.startswith("--") and "=" in arg else [arg])
    return BuildOptions(
        hf_dir=args.hf_dir, output_dir=args.output_dir, checkpoint_dir=args.checkpoint_dir, dtype=args.dtype,
        tp_size=args.tp_size, ep_size=args.ep_size, max_batch_size=args.max_batch_size,
        max_num_tokens=args.max_num_tokens, max_input_len=args.max_input_len, max_seq_len=args.max_seq_len,
        k0=getattr(args, "k0", DEFAULT_K0), k0_schedule=schedule, layer_k0=layer_k0,
        max_rank=getattr(args, "max_rank", None), top_p=getattr(args, "top_p", 1.0),
        piggyback_on_context=not getattr(args, "no_piggyback_on_context", False),
        batch_split="all_decode" if getattr(args, "all_decode", False) else "host_request_types",
        workers=args.workers, extra_build_args=tuple(extra), plugin_library=args.plugin_library, routing=routing,
    )


def run(args) -> int:
    from oea_trt.integrations.trtllm.build import BuildError, build, require_tensorrt_llm

    try:
        check_outputs(args)
        if not args.dry_run and importlib.util.find_spec("tensorrt_llm") is None:
            require_tensorrt_llm()  # says where a real build runs, before asking for weights it cannot use here
        options = options_from_args(args)
        build(options, progress=lambda line: print(line, flush=True), dry_run=args.dry_run)
    except BuildError as exc:
        raise CLIError(str(exc).splitlines()[0]) from None
    return 0
