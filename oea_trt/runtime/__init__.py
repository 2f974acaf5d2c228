"""Python runtime API: one interface over an OEA TensorRT-LLM engine and the PyTorch runtimes.

    from oea_trt.runtime import open_runtime, SamplingOptions
    rt = open_runtime("/engines/qwen3-30b-oea", k0=4)   # engine if TensorRT-LLM is here, else PyTorch
    for g in rt.generate(["Hello"], SamplingOptions(max_new_tokens=32)):
        print(g.text)
    print(rt.last_timing.tpot_ms)                      # PyTorch runtimes: TPOT of the last call

EngineRuntime (engine.py)        TensorRT-LLM 1.2.1 ModelRunnerCpp over an `oea-trt build` engine
DecodeRuntime (fast_decode.py)   oea_trt.decode: our decoder, routing and MoE kernels, CUDA-graph steps
HFRuntime (torch_fallback.py)    transformers Qwen3-MoE + oea_trt.integrations.hf routing (the CPU path)
model_dir.py                     which HF directory and routing plan a path means (both PyTorch runtimes)
load_plugin / worker_env (oea_trt.plugin)  registering the OEA plugin in this process / in workers
Backends: "pytorch" is DecodeRuntime on CUDA and HFRuntime elsewhere; "pytorch-decode" and
"transformers" name one of them. Importing this package imports neither TensorRT-LLM nor transformers.
"""
from __future__ import annotations

import importlib.util
import os

from oea_trt.runtime.base import Generation, GenerationTiming, SamplingOptions
from oea_trt.plugin import load_plugin, worker_env

BACKENDS = ("auto", "tensorrt-llm", "pytorch", "pytorch-decode", "transformers")


def tensorrt_llm_available() -> bool:
    try:
        return importlib.util.find_spec("tensorrt_llm") is not None
    except (ImportError, ValueError):
        return False


def open_runtime(path: str, backend: str = "auto", **kwargs):
    """Open `path` (an `oea-trt build` engine directory or an HF Qwen3-MoE directory).

    backend "auto": the engine through TensorRT-LLM when path is an engine directory and
    TensorRT-LLM is importable, else "pytorch" (for an engine directory it loads the HF model
    named in oea_config.json, with the engine's routing plan). "pytorch": the fast decode path
    (DecodeRuntime) when the model goes to a CUDA device (device= or the default), else the
    transformers path (HFRuntime). kwargs: the runtime's open() options (k0, oea, device, ...)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    is_engine = os.path.isfile(os.path.join(path, "oea_config.json")) and os.path.isfile(os.path.join(path, "config.json")) \
        and any(name.endswith(".engine") for name in os.listdir(path))
    if backend == "tensorrt-llm" or (backend == "auto" and is_engine and tensorrt_llm_available()):
        if not is_engine:
            raise ValueError(f"{path} is not an OEA engine directory (config.json, *.engine, oea_config.json)")
        from oea_trt.runtime.engine import EngineRuntime

        return EngineRuntime.open(path, **kwargs)
    if backend in ("auto", "pytorch"):
        backend = "pytorch-decode" if _cuda_device(kwargs.get("device")) else "transformers"
    if backend == "pytorch-decode":
        from oea_trt.runtime.fast_decode import DecodeRuntime

        return DecodeRuntime.open(path, **kwargs)
    from oea_trt.runtime.torch_fallback import HFRuntime

    return HFRuntime.open(path, **kwargs)


def _cuda_device(device) -> bool:
    import torch

    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


__all__ = ["BACKENDS", "Generation", "GenerationTiming", "SamplingOptions", "load_plugin", "open_runtime", "tensorrt_llm_available",
           "worker_env"]
