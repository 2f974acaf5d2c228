"""The active-set signal between the routing kernel and the one-launch MoE kernel.

One int32 flag per device, made once and kept (a captured CUDA graph keeps using the one it was
captured with). The routing kernel clears it before the next kernel in the stream may launch and
sets it once the batch's active set is final (active_ready of oea_route_launch, plugin/oea_routing.h);
the one-launch MoE kernel that follows polls it, so it streams the active experts' weights while
the routing still writes its rows, and clears it when done. Like the MoE kernel's workspace it
assumes one stream per device: route with signal=True only where the MoE call that consumes
the result follows directly on the same stream.
"""
from __future__ import annotations

import threading
from typing import Dict

import torch

_FLAGS: Dict[str, torch.Tensor] = {}
_LOCK = threading.Lock()


def active_ready_flag(device: torch.device) -> torch.Tensor:
    """The device's int32 [1] active-set flag (zeroed when made; never made during a capture)."""
    device = torch.device(device)
    key = str(device)
    with _LOCK:
        flag = _FLAGS.get(key)
        if flag is None:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError(f"the active-set flag for {device} must be made before a CUDA-graph capture: route "
                                   "once with signal=True before capturing (the usual warm-up run does)")
            flag = _FLAGS[key] = torch.zeros(1, dtype=torch.int32, device=device)
        return flag
