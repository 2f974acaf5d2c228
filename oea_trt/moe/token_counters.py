"""Per-(token, tile) completion counters for the down kernel that finishes tokens itself
(KernelConfig.down == "slots_fused" in triton_kernel.py): int32, zero between calls.

Why a cached workspace: the kernel leaves every counter it incremented back at 0 (the program
that completes a count resets it), so no memset and no extra launch is needed per call, and a
CUDA graph can replay the call forever. The same lifetime rules as the one-launch kernel's
workspace (fused_kernel.workspace): one buffer per device, grown (never shrunk) when a call
needs more counters, and every buffer ever made is kept alive, because a graph captured with
one keeps using it. Calls that share a device must be stream-ordered (one stream, or graphs
replayed on one stream): two concurrent calls would count into the same counters.
"""
from __future__ import annotations

import threading
from typing import Dict, List

import torch

_COUNTERS: Dict[str, torch.Tensor] = {}
#: Every buffer ever made: a captured graph keeps using the one it was captured with.
_KEEP_ALIVE: List[torch.Tensor] = []
_LOCK = threading.Lock()
#: Smallest buffer (counters): 64 tokens x 32 hidden tiles, the 30B layer's decode batch.
_MIN_CAPACITY = 64 * 32


def counters(count: int, device: torch.device) -> torch.Tensor:
    """A zeroed int32 buffer of at least `count` counters on `device`, the same one call after
    call (while big enough). Refuses to allocate during CUDA-graph capture: the allocation
    would not be part of the graph's memory and the zeros would not be there at replay."""
    key = str(device)
    with _LOCK:
        buf = _COUNTERS.get(key)
        if buf is None or buf.numel() < count:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError(
                    f"the slots_fused MoE down kernel needs {count} token counters but none were made before this "
                    "CUDA-graph capture: call it once with at least as many tokens before capturing (the usual "
                    "warm-up run does)")
            capacity = max(_MIN_CAPACITY, 1 << max(0, count - 1).bit_length())
            buf = torch.zeros((capacity,), dtype=torch.int32, device=device)
            _COUNTERS[key] = buf
            _KEEP_ALIVE.append(buf)
        return buf


def all_zero() -> bool:
    """Every counter buffer is back at zero (what each call must leave behind); synchronizes."""
    for buf in _KEEP_ALIVE:
        if buf.is_cuda:
            torch.cuda.synchronize(buf.device)
        if int(torch.count_nonzero(buf)) != 0:
            return False
    return True
