"""Synchronisation between the programs of our MoE kernels: the waits they spin in (device code)
and the int32 workspace that holds their tickets and counters (host side). Users: the one-launch
kernel (one_launch.py: tickets, per-expert and per-token counters) and the three-launch path
with the per-expert hand-off (three_launch.py, config.handoff: per-expert counters).

The workspace: one per device, kept forever, every word zero between calls (the last program out
of the kernel that used it resets what it used), so a call needs no memset and no extra launch.
The two users lay it out differently; each leaves it zeroed, and their calls never overlap.
Calls of these paths that share a device must be stream-ordered (one stream, or graphs replayed
on one stream), as two concurrent calls would share it.
"""
from __future__ import annotations

import threading
from typing import Dict, List, Optional

import torch
import triton
import triton.language as tl

from oea_trt.moe.triton.config import next_pow2

# ---- device code -------------------------------------------------------------------------


@triton.jit
def wait_for_active_set(ready_ptr, SPINS: tl.constexpr, USE_PDL: tl.constexpr):
    """EARLY_ACTIVE: spin until the routing kernel has published the batch's active set (its
    active_ready flag, acquire; the routing clears it before this kernel can launch and sets it
    once active_mask is final), then a CTA barrier. A flag that never comes within SPINS polls
    (one no routing launch was given) falls back to griddepcontrol.wait: slower, never wrong.
    (Without PDL this kernel starts after the routing kernel has finished: nothing to wait for.)"""
    seen = tl.atomic_add(ready_ptr, 0, sem="acquire")
    spins = 0
    while (seen == 0) & (spins < SPINS):
        seen = tl.atomic_add(ready_ptr, 0, sem="acquire")
        spins += 1
    tl.debug_barrier()
    if USE_PDL:
        if seen == 0:
            tl.extra.cuda.gdc_wait()


@triton.jit
def clear_active_flag(ready_ptr, passed_ptr):
    """After wait_for_active_set: the last program to get here clears the flag before it lets the
    next kernel launch (at its last item, which in a small batch is its first; the branch on the
    old value makes the program wait until the clear is done at L2): a second MoE call on the
    same routing output can then never see this call's flag, only wait properly (the fallback).
    passed_ptr counts the programs past the wait; the kernel's last program out zeroes it."""
    if tl.atomic_add(passed_ptr, 1, sem="relaxed") == tl.num_programs(0) - 1:
        if tl.atomic_xchg(ready_ptr, 0, sem="relaxed") < 0:  # never: the flag is 0 or 1
            tl.debug_barrier()


@triton.jit
def start_after_routing(ready_ptr, passed_ptr, USE_PDL: tl.constexpr, EARLY_ACTIVE: tl.constexpr):
    """The one-launch kernel's first step. EARLY_ACTIVE: started while the routing kernel still
    runs, it waits for the published active set and clears the flag (then only the active set,
    and x, written before the routing in stream order, may be read until griddepcontrol.wait,
    which the kernel passes before it reads expert_ids or weights). Otherwise, with PDL, it may
    start while the routing kernel drains: wait for its memory and for whatever wrote x."""
    if EARLY_ACTIVE:
        wait_for_active_set(ready_ptr, 1024, USE_PDL)
        clear_active_flag(ready_ptr, passed_ptr)
    elif USE_PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def wait_for_count(counter_ptr, target):
    """Spin until *counter_ptr >= target (acquire), then a CTA barrier: every thread's later
    reads see what the releasing programs wrote before counting."""
    seen = tl.atomic_add(counter_ptr, 0, sem="acquire")
    while seen < target:
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire")
    tl.debug_barrier()


# ---- host side ---------------------------------------------------------------------------

_SYNC: Dict[str, torch.Tensor] = {}
#: Every workspace ever made: a captured graph keeps using the one it was captured with.
_KEEP_ALIVE: List[torch.Tensor] = []
_LOCK = threading.Lock()


def sync_workspace(words: int, device: torch.device) -> torch.Tensor:
    """A zeroed int32 buffer of at least `words`, one per device, grown (never during a CUDA-graph
    capture) when a call needs more; the kernel leaves it zeroed. One per device, not per stream:
    a graph is usually captured on another stream than its warm-up call ran on."""
    key = _key(device)
    with _LOCK:
        buf = _SYNC.get(key)
        if buf is None or buf.numel() < words:
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                raise RuntimeError(
                    f"the MoE kernel needs a {words}-word synchronisation workspace on {device} but none was made before "
                    "this CUDA-graph capture: call the layer once with at least this many tokens before capturing "
                    "(the usual warm-up run does)")
            buf = torch.zeros(max(4096, next_pow2(words)), dtype=torch.int32, device=device)
            _SYNC[key] = buf
            _KEEP_ALIVE.append(buf)
        return buf


def workspace(device: torch.device) -> Optional[torch.Tensor]:
    """The device's current synchronisation workspace (None before the first call there); every
    word is zero between calls."""
    with _LOCK:
        return _SYNC.get(_key(device))


def _key(device) -> str:
    """One key per physical device: "cuda" and "cuda:0" (the current device) are the same one."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)
