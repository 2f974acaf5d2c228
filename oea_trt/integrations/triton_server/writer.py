"""Write a Triton model repository serving an OEA TensorRT-LLM engine, plus its launch script.

Layout of OUT:
  model_repository/{ensemble,preprocessing,tensorrt_llm,postprocessing}/config.pbtxt
  model_repository/{preprocessing,postprocessing}/1/model.py   (our Python models)
  model_repository/{ensemble,tensorrt_llm}/1/                  (version directories)
  launch_triton.sh   LD_PRELOADs the OEA plugin library, then execs tritonserver
Why LD_PRELOAD: TensorRT-LLM engines do not embed plugins and the tensorrtllm backend has no
parameter that loads extra plugin libraries, so the OEA creator must already be registered
when the backend deserializes the engine: the preload variant of the plugin library
(liboea_routing_trt_preload.so) registers its creator statically when it is loaded.
Child processes (orchestrator-mode executor workers) inherit the variable.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import stat
from pathlib import Path
from typing import Dict, Optional

from oea_trt.integrations.triton_server.models import RepoSettings, all_configs
from oea_trt.integrations.triton_server.pbtxt import render

MODEL_NAMES = ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing")
_PYTHON_MODELS = Path(__file__).with_name("python_models")
PLUGIN_ENV = "OEA_PLUGIN_LIBRARY"


class TritonRepoError(ValueError):
    """Bad input for the repository writer; the message says what would work."""


@dataclasses.dataclass
class EngineInfo:
    max_batch_size: Optional[int]
    max_input_len: Optional[int]  # longest prompt the engine takes (build_config.max_input_len)
    world_size: int
    oea: Optional[dict]          # oea_config.json content, when the engine has one


def engine_info(engine_dir: str) -> EngineInfo:
    """What the repository needs from a TensorRT-LLM engine directory's config.json."""
    cfg_path = os.path.join(engine_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise TritonRepoError(f"{engine_dir} is not a TensorRT-LLM engine directory (no config.json); "
                              "pass the output directory of `oea-trt build`")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except json.JSONDecodeError as exc:
        raise TritonRepoError(f"{cfg_path} is not valid JSON ({exc.msg})") from None
    build = cfg.get("build_config") or {}
    mapping = (cfg.get("pretrained_config") or {}).get("mapping") or {}
    world = int(mapping.get("world_size") or mapping.get("tp_size", 1) * mapping.get("pp_size", 1) or 1)
    oea = None
    oea_path = os.path.join(engine_dir, "oea_config.json")
    if os.path.isfile(oea_path):
        with open(oea_path) as f:
            oea = json.load(f)
    mbs, max_input = build.get("max_batch_size"), build.get("max_input_len")
    return EngineInfo(max_batch_size=int(mbs) if mbs else None, max_input_len=int(max_input) if max_input else None,
                      world_size=world, oea=oea)


def default_plugin_library(info: EngineInfo) -> Optional[str]:
    """The self-registering (LD_PRELOAD) plugin library recorded when the engine was built
    (oea_config.json), else the one oea_trt.plugin finds here; None if neither."""
    lib = ((info.oea or {}).get("plugin") or {}).get("preload_library")
    if lib:
        return lib
    from oea_trt.plugin import plugin_info

    return plugin_info().get("preload_library")


def launch_script(repo_dir: str, plugin_library: Optional[str], world_size: int, http_port: int,
                  grpc_port: int, metrics_port: int) -> str:
    default = shlex.quote(plugin_library) if plugin_library else '""'
    lines = [
        "#!/usr/bin/env bash",
        "# Launch Triton with the OEA TensorRT plugin preloaded (written by `oea-trt triton-repo`).",
        "# Run inside NVIDIA's Triton TensorRT-LLM container (tritonserver:<yy.mm>-trtllm-python-py3",
        "# matching TensorRT-LLM 1.2.1). Extra arguments go to tritonserver.",
        "set -euo pipefail",
        f"DEFAULT_PLUGIN={default}  # the library the engine was built with",
        f'PLUGIN="${{{PLUGIN_ENV}:-$DEFAULT_PLUGIN}}"',
        'if [ -z "$PLUGIN" ] || [ ! -f "$PLUGIN" ]; then',
        f'  echo "launch_triton.sh: OEA plugin library not found (\'$PLUGIN\'); set {PLUGIN_ENV}=/path/to/the .so" >&2',
        "  exit 2",
        "fi",
        '# The engine references the OEA plugin creator; the backend can only deserialize it if the',
        '# library registered the creator before the engine loads.',
        'export LD_PRELOAD="$PLUGIN${LD_PRELOAD:+:$LD_PRELOAD}"',
    ]
    if world_size > 1:
        lines += [
            f"# {world_size}-GPU engine: the backend spawns its executor workers (orchestrator mode);",
            "# they inherit LD_PRELOAD.",
            "export TRTLLM_ORCHESTRATOR=1",
        ]
    lines += [
        f"exec tritonserver --model-repository={shlex.quote(repo_dir)} --http-port={http_port} "
        f"--grpc-port={grpc_port} --metrics-port={metrics_port} \"$@\"",
        "",
    ]
    return "\n".join(lines)


def write_repository(out_dir: str, settings: RepoSettings, plugin_library: Optional[str] = None,
                     http_port: int = 8000, grpc_port: int = 8001, metrics_port: int = 8002,
                     force: bool = False) -> Dict[str, str]:
    """Write the repository and launch script; returns {what: path}."""
    if not os.path.isdir(settings.tokenizer_dir):
        raise TritonRepoError(f"tokenizer directory {settings.tokenizer_dir} does not exist; pass the HF model directory")
    if not 0.0 < settings.kv_cache_free_gpu_mem_fraction <= 1.0:
        raise TritonRepoError(
            f"kv-cache-free-gpu-mem-fraction must be in (0, 1], got {settings.kv_cache_free_gpu_mem_fraction}")
    for port in (http_port, grpc_port, metrics_port):
        if not 1 <= port <= 65535:
            raise TritonRepoError(f"ports must be in [1, 65535], got {port}")
    if len({http_port, grpc_port, metrics_port}) != 3:
        raise TritonRepoError(f"http, grpc and metrics ports must differ, got {http_port}/{grpc_port}/{metrics_port}")
    out = Path(out_dir)
    repo = out / "model_repository"
    if out.exists() and any(out.iterdir()):
        if not force:
            raise TritonRepoError(f"{out} is not empty; pass --overwrite to replace the repository in it")
        if repo.exists():
            shutil.rmtree(repo)
    written: Dict[str, str] = {}
    header = ("Written by oea-trt triton-repo for the OEA TensorRT-LLM engine\n"
              f"{settings.engine_dir}; edit with care, regenerate to change.")
    for name, config in all_configs(settings).items():
        model_dir = repo / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        path = model_dir / "config.pbtxt"
        path.write_text(render(config, header=header))
        written[f"{name}/config.pbtxt"] = str(path)
    for name in ("preprocessing", "postprocessing"):
        dst = repo / name / "1" / "model.py"
        shutil.copyfile(_PYTHON_MODELS / f"{name}.py", dst)
        written[f"{name}/1/model.py"] = str(dst)
    script = out / "launch_triton.sh"
    script.write_text(launch_script(str(repo.resolve()), plugin_library, settings.world_size,
                                    http_port, grpc_port, metrics_port))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    written["launch_triton.sh"] = str(script)
    return written
