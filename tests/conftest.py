"""Shared test setup: markers that skip with a reason where the hardware or stack is absent."""
import importlib.util
import os

import pytest
import torch

# Without a GPU, Triton kernels (oea_trt/moe) run in Triton's CPU interpreter. It must be chosen
# before anything imports triton (importing oea_trt can make torch import it), so here.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def pytest_collection_modifyitems(config, items):
    skips = {
        "gpu": (not torch.cuda.is_available(), "needs a CUDA GPU (run on the GPU box)"),
        "tensorrt": (not _has_module("tensorrt"), "needs the full TensorRT builder (tensorrt), absent here"),
        "trtllm": (not _has_module("tensorrt_llm"), "needs TensorRT-LLM 1.2.1 (tensorrt_llm), absent here"),
    }
    for item in items:
        for marker, (skip, reason) in skips.items():
            if skip and marker in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
