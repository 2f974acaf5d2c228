"""Refuse work that cannot fit in memory, before starting it, and say what would fit."""
from __future__ import annotations

import os
from typing import Callable, Optional, Union

from oea_trt.inputs.errors import InputError


def available_bytes(device: str = "cpu") -> Optional[int]:
    """Memory free for new allocations on `device` (None where the system does not say)."""
    if str(device).startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def check_fits(needed: float, what: str, fix: Union[str, Callable[[int], str]], device: str = "cpu",
               available: Optional[int] = None) -> None:
    """InputError when `needed` bytes exceed the memory available on `device`.

    what: the input that sizes the work ("--batch 1000000000"); fix: what would fit, or a
    function of the available bytes that says it."""
    free = available_bytes(device) if available is None else available
    if free is not None and needed > free:
        kind = "GPU memory" if str(device).startswith("cuda") else "memory"
        raise InputError(f"{what} needs about {format_bytes(needed)} of {kind}, {format_bytes(free)} is "
                         f"available; {fix(free) if callable(fix) else fix}")
