"""Check a torch device name before any model is loaded onto it."""
from __future__ import annotations

import re

from oea_trt.inputs.errors import InputError

_CUDA = re.compile(r"^cuda(?::(\d+))?$")


def check_device(name: str, what: str = "--device") -> str:
    """"auto" -> "cuda" if torch sees a GPU else "cpu"; "cpu"; "cuda" or "cuda:N" only where
    that GPU exists."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    match = _CUDA.match(str(name))
    if not match:
        raise InputError(f"{what} must be auto, cpu or cuda[:N], got {name!r}")
    if not torch.cuda.is_available():
        raise InputError(f"{what} {name} was asked for but torch sees no CUDA GPU (this torch is "
                         f"{torch.__version__}); use --device cpu")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise InputError(f"{what} {name}: torch sees {torch.cuda.device_count()} GPU(s), cuda:0 to "
                         f"cuda:{torch.cuda.device_count() - 1}")
    return name
