"""oea_config.json: what an engine directory was built with, written next to the engine.

Runtimes read it to know the routing plan and which plugin library the engine needs (the
plugin is not embedded in TensorRT-LLM engines), tools read it to report settings, and
`oea-trt build --routing-config` builds again with the plan it holds (`oea-trt advise` writes
one in the same format). Plain Python so it can be written by the builder and read anywhere.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Optional

from oea_trt import __version__
from oea_trt.inputs.errors import InputError
from oea_trt.inputs.json_file import read_json
from oea_trt.plan.routing_plan import RoutingPlan
from oea_trt.routing.config import ConfigError

FILE_NAME = "oea_config.json"
FORMAT = "oea-trt/engine-config/1"


def git_commit() -> Optional[str]:
    """The source tree's commit (None outside a git checkout, e.g. an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def plugin_identity(library: Optional[str] = None) -> dict:
    """Name/version/namespace/library of the OEA TensorRT plugin, from oea_trt.plugin (the
    plugin's one source of truth). Loading nothing: only reads what the module declares.
    `library`: the getCreators library the build used; its preload sibling is recorded with it."""
    from oea_trt.plugin import PRELOAD_LIBRARY_NAME, plugin_info

    info = plugin_info()
    if library:
        path = Path(library).resolve()
        info["library"] = str(path)
        if (path.parent / PRELOAD_LIBRARY_NAME).is_file():
            info["preload_library"] = str(path.parent / PRELOAD_LIBRARY_NAME)
    return info


def engine_config_dict(routing: RoutingPlan, build: dict, model: dict, trtllm_version: Optional[str] = None,
                       plugin_library: Optional[str] = None) -> dict:
    return {
        "format": FORMAT,
        "routing": routing.to_dict(),
        "plugin": plugin_identity(plugin_library),
        "oea_trt_version": __version__,
        "git_commit": git_commit(),
        "tensorrt_llm_version": trtllm_version,
        "model": model,
        "build": build,
    }


def write_engine_config(engine_dir: str, content: dict) -> str:
    path = os.path.join(engine_dir, FILE_NAME)
    os.makedirs(engine_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_engine_config(engine_dir: str) -> dict:
    """oea_config.json of an engine directory; FileNotFoundError with a hint when absent."""
    path = os.path.join(engine_dir, FILE_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: {engine_dir} was not built by `oea-trt build` (or the file was removed)"
        )
    with open(path) as f:
        content = json.load(f)
    if content.get("format") != FORMAT:
        raise ValueError(f"{path} has format {content.get('format')!r}, expected {FORMAT!r}")
    return content


def routing_from_engine_config(content: dict) -> RoutingPlan:
    return RoutingPlan.from_dict(content["routing"])


def read_routing_config(path: str, what: str = "routing config") -> RoutingPlan:
    """The routing plan of an oea_config.json given by a user: the file, or a directory holding
    one (an engine directory, an advice directory). InputError naming the file for anything
    that is not such a file with a well-formed plan."""
    if os.path.isdir(path):
        inner = os.path.join(path, FILE_NAME)
        if not os.path.isfile(inner):
            raise InputError(f"{what} {path} is a directory without {FILE_NAME}; pass the {FILE_NAME} of "
                             "`oea-trt advise` or of an engine built by `oea-trt build`")
        path = inner
    content = read_json(path, what, dict)
    if content.get("format") != FORMAT:
        found = f"format {content['format']!r}" if "format" in content else "no \"format\""
        raise InputError(f"{what} {path} has {found}, expected format {FORMAT!r} (the {FILE_NAME} that "
                         "`oea-trt advise` or `oea-trt build` writes)")
    if not isinstance(content.get("routing"), dict):
        raise InputError(f"{what} {path} has no routing plan (an object under \"routing\")")
    try:
        return routing_from_engine_config(content)
    except ConfigError as exc:
        raise InputError(f"{what} {path}: {exc}") from None
