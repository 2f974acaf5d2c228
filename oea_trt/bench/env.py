"""Run metadata for benchmark JSON: what ran where, so a reader can tell two results apart."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import Optional

import torch


def _run(cmd, cwd: Optional[str] = None) -> Optional[str]:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(repo_dir: Optional[str] = None) -> dict:
    repo_dir = repo_dir or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.environ.get("OEA_GIT_COMMIT"):
        # The GPU box receives a copy of the working tree whose .git (if any) need not be the
        # sender's: the sender names the commit and whether the tree differed from it. (A stale
        # .git there once stamped results with an older commit.)
        commit = os.environ["OEA_GIT_COMMIT"]
        dirty = os.environ.get("OEA_GIT_DIRTY", "")
        return {"commit": commit, "dirty": dirty == "1" if dirty else None}
    commit = _run(["git", "rev-parse", "HEAD"], cwd=repo_dir)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir)
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def environment() -> dict:
    """GPU name/SMs/L2/memory, driver, torch/triton/CUDA versions, python, git commit, UTC time."""
    env = {
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "git": git_commit(),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": props.name,
            "sm_count": props.multi_processor_count,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "l2_bytes": getattr(props, "L2_cache_size", None),
        }
        env["driver"] = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        env["clocks"] = _run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw",
                              "--format=csv,noheader"])
    return env


def l2_bytes(default: int = 60 * 2**20) -> int:
    """The device's L2 size (H200: 60 MB), or `default` when torch does not say."""
    if torch.cuda.is_available():
        value = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", None)
        if value:
            return int(value)
    return default
