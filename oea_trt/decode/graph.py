"""The whole decode step (forward, token choice, bookkeeping) and its CUDA-graph capture.

decode_step() reads and advances only the DecodeState's static buffers, so one captured graph
per (state, sampler, routing) replays every later step: the host enqueues replays and never
waits (no host synchronisation inside a step; capture would refuse one, and generate() runs its
replays under torch.cuda.set_sync_debug_mode("error") to catch any between them).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from oea_trt.decode.cache import DecodeState
from oea_trt.decode.model import DecodeModel
from oea_trt.decode.sampling import Sampler


def decode_step(model: DecodeModel, state: DecodeState, sampler: Sampler, pad_id: int,
                end_ids: Optional[torch.Tensor]) -> torch.Tensor:
    """One step for every row: logits of state.tokens, the next tokens (a finished row feeds
    pad_id, as transformers' generate does), recorded in state.generated and fed back; distinct
    experts per MoE layer recorded in state.active. Returns the logits [B, V]."""
    logits, active = model.decode_logits(state.tokens, state.cache_index, state.pad_start, state.cache)
    chosen = sampler(logits)
    if end_ids is not None:
        chosen = torch.where(state.finished, torch.full_like(chosen, pad_id), chosen)
        state.finished |= (chosen[:, None] == end_ids[None, :]).any(dim=-1)
    state.generated.index_copy_(1, state.step, chosen[:, None])
    if active:
        state.active.index_copy_(0, state.step, torch.stack(active).to(torch.int32)[None])
    state.tokens.copy_(chosen)
    state.cache_index.add_(1)
    state.step.add_(1)
    return logits


class StepGraph:
    """`step` captured as a CUDA graph over `state`'s buffers. One eager warm-up call first
    (on a side stream) compiles the Triton kernels for these shapes and makes the routing flag
    and the MoE kernel's workspace; the state is then restored, so capture changes nothing.
    replay() runs the next step; `logits` is the graph's output buffer."""

    def __init__(self, step: Callable[[], torch.Tensor], state: DecodeState, pool=None):
        snapshot = state.snapshot()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        state.restore(snapshot)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.logits = step()

    def replay(self) -> None:
        self.graph.replay()


class EagerStep:
    """The same interface without a graph (CPU, or graphs switched off)."""

    def __init__(self, step: Callable[[], torch.Tensor]):
        self.step = step
        self.logits = None

    def replay(self) -> None:
        self.logits = self.step()
