"""Launching the persistent MoE kernels: a grid of one wave (the programs that are resident at
once), and whether programmatic dependent launch works on a device.

Persistent: a fixed grid walks work items whose number comes from the device (the routing's
active experts), so the grid is fixed for CUDA graphs yet no program is launched per inactive
expert.
"""
from __future__ import annotations

import os
import threading
from typing import Dict, Optional

import torch
import triton

#: (kernel, compile-time arguments, dtype, device, programs per SM) -> programs of one wave.
_WAVE: Dict[tuple, int] = {}
_WAVE_LOCK = threading.Lock()
#: Programs of a "wave" in Triton's CPU interpreter: a few, so each walks several work items.
INTERPRETER_WAVE = 3


def interpreted() -> bool:
    """Kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1, read by Triton at import)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch works here: a CUDA device of compute capability 9.0+
    (Hopper) and compiled kernels (Triton's interpreter has no grid dependency control)."""
    if interpreted() or device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


def launch_persistent(kernel, max_items: int, max_programs: Optional[int], args: tuple, kwargs: dict,
                      programs_per_sm: Optional[int] = None) -> None:
    """Launch a persistent kernel on min(max_items, one wave) programs, or on
    min(max_items, max_programs) where max_programs is given. One wave = SMs x programs resident
    per SM (at most programs_per_sm), from the compiled kernel's registers and shared memory
    (asked once per specialisation, before any CUDA-graph capture since the first call compiles)."""
    if max_programs is not None:
        programs = max_programs
    else:
        key = (kernel.fn.__name__, tuple(sorted(kwargs.items())), args[0].dtype, args[0].device, programs_per_sm)
        with _WAVE_LOCK:
            wave = _WAVE.get(key)
        if wave is None:
            wave = one_wave(kernel, args, kwargs, programs_per_sm)
            with _WAVE_LOCK:
                _WAVE[key] = wave
        programs = wave
    kernel[(max(1, min(max_items, programs)),)](*args, **kwargs)


def one_wave(kernel, args: tuple, kwargs: dict, programs_per_sm: Optional[int] = None) -> int:
    """Programs of `kernel` (compiled for args, kwargs) resident at once on args[0]'s device."""
    if interpreted():
        return INTERPRETER_WAVE
    compiled = kernel.warmup(*args, grid=(1,), **kwargs)
    if hasattr(compiled, "result"):  # Triton's asynchronous compile mode hands back a future
        compiled = compiled.result()
    compiled._init_handles()  # loads the binary: n_regs is known from here on
    device = args[0].device.index if args[0].device.index is not None else torch.cuda.current_device()
    props = triton.runtime.driver.active.utils.get_device_properties(device)
    warps = compiled.metadata.num_warps
    regs_per_warp = -(-max(1, compiled.n_regs) * 32 // 256) * 256  # allocated in 256-register units
    by_regs = props["max_num_regs"] // (regs_per_warp * warps)
    # The SM's shared memory is the per-block opt-in limit plus 1 KB; each block reserves 1 KB.
    by_smem = (props["max_shared_mem"] + 1024) // (compiled.metadata.shared + 1024)
    per_sm = max(1, min(by_regs, by_smem, 64 // warps, 32, programs_per_sm or 32))
    return props["multiprocessor_count"] * per_sm
