"""`trtllm-serve` with OEA routing for Qwen3-MoE (TensorRT-LLM's PyTorch backend):

    python -m oea_trt.integrations.trtllm_torch.serve --oea-k0 3 serve /models/Qwen3-30B-A3B --tp_size 2

Imports oea_trt.integrations.trtllm_torch.backend (which registers our Qwen3MoeForCausalLM over
TensorRT-LLM's; the executor proxy forwards that registration to every worker), writes the
--oea-* settings into model_kwargs of a copy of your --extra_llm_api_options YAML (trtllm-serve
merges that file's top-level keys into the LLM arguments, which reach every worker), then hands
the arguments to TensorRT-LLM's own entry point (tensorrt_llm.commands.serve:main, a Click group).
Only the `serve` subcommand is wrapped. Under trtllm-llmapi-launch put this command after the
launcher, like any trtllm-serve command.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import List, Sequence

from oea_trt.integrations.trtllm_torch.settings import normalize_settings, with_settings
from oea_trt.plan.routing_plan import parse_layer_k0
from oea_trt.routing.config import parse_k0_schedule

EXTRA_OPTIONS_FLAG = "--extra_llm_api_options"
OPTIONS_FILE = "oea_llm_api_options.yaml"


def split_args(argv):
    p = argparse.ArgumentParser(prog="python -m oea_trt.integrations.trtllm_torch.serve", add_help=False)
    p.add_argument("--oea-k0", type=int)
    p.add_argument("--oea-k0-schedule")
    p.add_argument("--oea-layer-k0", help="LAYERS:K0,... (e.g. 0-3:8,4-47:3)")
    p.add_argument("--oea-max-rank", type=int)
    return p.parse_known_args(argv)


def oea_settings(ours) -> dict:
    settings = {"k0": ours.oea_k0, "max_rank": ours.oea_max_rank}
    if ours.oea_k0_schedule:
        settings["k0_schedule"] = parse_k0_schedule(ours.oea_k0_schedule)
    if ours.oea_layer_k0:
        # Layers are checked against the layers TensorRT-LLM builds, in the worker.
        settings["layer_k0"] = parse_layer_k0(ours.oea_layer_k0, range(10_000))
    return normalize_settings(settings)


def serve_argv(rest: Sequence[str], settings: dict, directory) -> List[str]:
    """trtllm-serve's arguments with the OEA settings added to model_kwargs of a copy of the
    --extra_llm_api_options YAML (written to `directory`); the user's file is not changed."""
    import yaml

    rest = list(rest)
    if not rest or rest[0] != "serve":
        raise ValueError(f"only `trtllm-serve serve MODEL ...` is wrapped; got {' '.join(rest) or 'no command'}")
    user_file, kept = None, []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == EXTRA_OPTIONS_FLAG:
            if i + 1 >= len(rest):
                raise ValueError(f"{EXTRA_OPTIONS_FLAG} needs a YAML file path")
            user_file, i = rest[i + 1], i + 2
            continue
        if arg.startswith(EXTRA_OPTIONS_FLAG + "="):
            user_file = arg.split("=", 1)[1]
        else:
            kept.append(arg)
        i += 1
    options = {}
    if user_file:
        options = yaml.safe_load(Path(user_file).read_text()) or {}
        if not isinstance(options, dict):
            raise ValueError(f"{user_file} must hold a YAML mapping of LLM arguments")
    options["model_kwargs"] = with_settings(options.get("model_kwargs"), settings)
    path = Path(directory) / OPTIONS_FILE
    path.write_text(yaml.safe_dump(options, sort_keys=True))
    return kept + [EXTRA_OPTIONS_FLAG, str(path)]


def main(argv=None) -> int:
    ours, rest = split_args(sys.argv[1:] if argv is None else argv)
    settings = oea_settings(ours)
    from oea_trt.integrations.trtllm_torch import backend

    backend.check_registered()
    args = serve_argv(rest, settings, tempfile.mkdtemp(prefix="oea-trtllm-serve-"))
    from tensorrt_llm.commands.serve import main as trtllm_serve

    sys.argv = ["trtllm-serve", *args]
    return trtllm_serve()


if __name__ == "__main__":
    sys.exit(main())
