"""Load the OEA TensorRT plugin into a process that will deserialize OEA engines.

TensorRT-LLM engines do not embed plugins: every process that deserializes one must have the
OeaRouting creator registered first, under the name/version/namespace stored in the engine.
- This process (Python runners, scripts): load_plugin() -> IPluginRegistry.load_library of
  liboea_routing_trt.so (oea_trt.plugin_lib.load_library; a second call is a no-op).
- MPI ranks started with `mpirun -n N python script.py`: each rank runs the script, so each
  calls load_plugin() (do it before creating the runner).
- Processes that run no Python of ours (Triton's tensorrtllm backend, its orchestrator-mode
  executor workers, trtllmExecutorWorker): LD_PRELOAD the self-registering variant
  liboea_routing_trt_preload.so; worker_env() returns that environment (children inherit it).
"""
from __future__ import annotations

import os
from typing import Dict, Optional


def load_plugin(path: Optional[str] = None):
    """Register OeaRouting with TensorRT's plugin registry in this process; returns the creator.
    path: liboea_routing_trt.so (default: $OEA_TRT_PLUGIN_LIB, then the build directories)."""
    from ..trtllm.plugin_binding import load_plugin_library

    return load_plugin_library(path)


def preload_library() -> Optional[str]:
    from .. import plugin_lib

    found = plugin_lib.find_library(preload=True)
    return str(found) if found else None


def worker_env(k0: Optional[int] = None, k0_schedule=None, preload: Optional[str] = None) -> Dict[str, str]:
    """Environment for processes that load an OEA engine without our Python: LD_PRELOAD of the
    self-registering plugin library, plus the plugin's load-time k0 override when given."""
    from .. import plugin_lib

    lib = preload or preload_library()
    if not lib:
        raise FileNotFoundError(
            f"{plugin_lib.PRELOAD_LIBRARY_NAME} not found; build the plugin (scripts/check_plugin.sh) or pass its path"
        )
    env = {"LD_PRELOAD": lib + (os.pathsep + os.environ["LD_PRELOAD"] if os.environ.get("LD_PRELOAD") else "")}
    env.update(plugin_lib.k0_override_env(k0, k0_schedule))
    return env
