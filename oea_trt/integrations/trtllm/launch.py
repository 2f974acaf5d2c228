"""Run a TensorRT-LLM command on an OEA engine with the OEA plugin in every process it starts:

    python -m oea_trt.integrations.trtllm.launch ENGINE_DIR -- trtllm-serve ENGINE_DIR --backend tensorrt
    python -m oea_trt.integrations.trtllm.launch ENGINE_DIR -- python my_llm_api_script.py
    python -m oea_trt.integrations.trtllm.launch ENGINE_DIR [--k0 4] -- trtllm-bench --model M throughput --engine_dir ENGINE_DIR

TensorRT-LLM engines do not embed plugins. In the LLM API's TensorRT path
(tensorrt_llm._tensorrt_engine.LLM, trtllm-serve / trtllm-bench on an engine) the engine is
deserialized by executor workers that MPI spawns and that run none of the caller's code first;
TensorRT-LLM loads only its own plugin library there. What reaches them is the environment the
parent process started with (MPI spawns workers from the environment it captured at start-up;
fork and exec inherit it). So this launcher replaces itself with the command, LD_PRELOADing the
self-registering plugin library (liboea_routing_trt_preload.so, recorded in the engine's
oea_config.json): the command and every process it starts register OeaRouting before any
engine loads. A script can call require_preloaded() to refuse to create the LLM otherwise.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import List, Mapping, Optional

from oea_trt.plan.config_file import read_engine_config
from oea_trt.plugin import PRELOAD_LIBRARY_NAME, find_library, k0_override_env
from oea_trt.routing.config import ConfigError, parse_k0_schedule

MODULE = "oea_trt.integrations.trtllm.launch"


class PluginLaunchError(RuntimeError):
    """The plugin library for an engine's processes is missing or not loaded; says what to do."""


def preload_library_for(engine_dir: str, override: Optional[str] = None) -> Path:
    """The self-registering plugin library for `engine_dir`: `override`, else the one recorded in
    its oea_config.json when it still exists, else the repository's build directories."""
    if override:
        path = Path(override)
        if not path.is_file():
            raise PluginLaunchError(f"plugin library {override} does not exist")
        return path.resolve()
    recorded = (read_engine_config(engine_dir).get("plugin") or {}).get("preload_library")
    if recorded and Path(recorded).is_file():
        return Path(recorded).resolve()
    found = find_library(preload=True)
    if found is None:
        raise PluginLaunchError(
            f"{PRELOAD_LIBRARY_NAME} not found (oea_config.json of {engine_dir} records {recorded!r}): build it "
            f"with scripts/check_plugin.sh <TensorRT include dir>, or pass --plugin-library /path/to/{PRELOAD_LIBRARY_NAME}"
        )
    return found.resolve()


def launch_env(base_env: Mapping[str, str], library: Path, k0: Optional[int] = None, k0_schedule=None) -> dict:
    """`base_env` with `library` first in LD_PRELOAD (once) and the plugin's load-time k0 override."""
    env = dict(base_env)
    others = [p for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p and Path(p) != library]
    env["LD_PRELOAD"] = ":".join([str(library), *others])
    env.update(k0_override_env(k0, k0_schedule))
    return env


def is_preloaded(library: Path, maps: Path = Path("/proc/self/maps")) -> bool:
    """Whether `library` is mapped into this process (so it was in LD_PRELOAD at start-up)."""
    resolved = str(Path(library).resolve())
    return any(line.rstrip().endswith(resolved) for line in maps.read_text().splitlines())


def require_preloaded(engine_dir: str, preload_library: Optional[str] = None) -> Path:
    """Raise unless this process started with the engine's plugin library preloaded, which the
    executor workers it spawns need to deserialize the engine; returns the library."""
    library = preload_library_for(engine_dir, preload_library)
    if not is_preloaded(library):
        command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
        raise PluginLaunchError(
            f"{library.name} is not loaded in this process, so the TensorRT-LLM workers it starts cannot "
            f"deserialize the OEA engine {engine_dir}: start it as `python -m {MODULE} {shlex.quote(str(engine_dir))} "
            f"-- {command}`"
        )
    return library


def parse_args(argv: List[str]):
    if "--" not in argv:
        raise SystemExit(f"usage: python -m {MODULE} ENGINE_DIR [--plugin-library PATH] [--k0 N] "
                         "[--k0-schedule MIN:K0,...] -- COMMAND [ARGS...]")
    split = argv.index("--")
    p = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    p.add_argument("engine_dir")
    p.add_argument("--plugin-library", help=f"{PRELOAD_LIBRARY_NAME} (default: the one oea_config.json records)")
    p.add_argument("--k0", type=int, help="override every layer's k0 when the engine loads")
    p.add_argument("--k0-schedule", help="override the k0 schedule, e.g. 8:4,16:3 ('' removes it)")
    args = p.parse_args(argv[:split])
    args.command = argv[split + 1:]
    if not args.command:
        p.error("no command after --")
    return args


def main(argv=None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        library = preload_library_for(args.engine_dir, args.plugin_library)
        schedule = None if args.k0_schedule is None else (parse_k0_schedule(args.k0_schedule) if args.k0_schedule else ())
        env = launch_env(os.environ, library, args.k0, schedule)
    except (PluginLaunchError, FileNotFoundError, ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.execvpe(args.command[0], args.command, env)
    return 127  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
