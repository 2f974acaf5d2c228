"""The generate loop: prefill, then decode steps replayed from one CUDA graph per batch shape.

    engine = DecodeEngine(model)                       # graphs on CUDA, eager steps on the CPU
    result = engine.generate(input_ids, attention_mask, max_new_tokens=64, end_ids=[eos], pad_id=0)
    result.tokens, result.tpot_ms, result.tokens_per_s, result.active   # [steps, MoE layers]

Caches and graphs are kept per (batch, capacity): capacity (the cache's slots) is the prompt
length plus max_new_tokens rounded up to a power of two (>= 128), so calls of similar length
reuse one graph. The host looks at the device only every `check_every` steps (have all rows
ended? progress), never inside a burst of replays.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from typing import Callable, List, NamedTuple, Optional, Sequence

import torch

from oea_trt.decode.cache import DecodeState
from oea_trt.decode.graph import EagerStep, StepGraph, decode_step
from oea_trt.decode.model import DecodeModel
from oea_trt.decode.sampling import Sampler

#: progress(decode_steps_done, decode_steps_total, seconds_since_decode_start)
Progress = Callable[[int, int, float], None]


@dataclasses.dataclass
class DecodeResult:
    tokens: torch.Tensor          # int64 [B, n] on the CPU: the first from the prefill, then one per step
    finished: torch.Tensor        # bool [B]: rows that produced an end token
    prefill_s: float              # prompt to first token
    capture_s: float              # capturing the decode step's graph (0 when this shape already had one)
    decode_s: float               # the decode steps, host-timed after a device sync
    decode_steps: int
    active: torch.Tensor          # int32 [decode_steps, MoE layers]: distinct experts per layer and step
    prefill_active: torch.Tensor  # int32 [MoE layers]: distinct experts of the prefill batch
    graphs: bool                  # decode steps were CUDA-graph replays

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def tpot_ms(self) -> float:
        """Time per output token of one row (= one decode step), in milliseconds."""
        return self.decode_s / self.decode_steps * 1e3 if self.decode_steps else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.decode_steps / self.decode_s if self.decode_steps else float("nan")

    def mean_active(self) -> torch.Tensor:
        """float [MoE layers]: mean distinct experts per decode step."""
        return self.active.float().mean(0) if self.decode_steps else torch.full(self.prefill_active.shape, float("nan"))


class Prefilled(NamedTuple):
    state: DecodeState     # pointed at the first decode step
    first: torch.Tensor    # int64 [B]: the token chosen from the prefill's logits
    logits: torch.Tensor   # [B, V]: the last prompt position's logits
    active: List[torch.Tensor]  # int32 0-d per MoE layer: distinct experts of the prefill batch


def capacity_for(length: int, minimum: int = 128) -> int:
    return max(minimum, 1 << max(0, int(length) - 1).bit_length())


class DecodeEngine:
    """Runs generation on a DecodeModel. use_graphs: capture each decode step shape once and
    replay it (default: on CUDA). max_states: (batch, capacity) caches kept alive at once."""

    def __init__(self, model: DecodeModel, use_graphs: Optional[bool] = None, max_states: int = 4):
        on_cuda = model.device.type == "cuda"
        if use_graphs and not on_cuda:
            raise ValueError(f"CUDA graphs need the model on a CUDA device, it is on {model.device}")
        self.model = model
        self.use_graphs = on_cuda if use_graphs is None else bool(use_graphs)
        self.max_states = max_states
        self._states: "collections.OrderedDict[tuple, DecodeState]" = collections.OrderedDict()
        self._steps: dict = {}
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None

    def set_routing(self, routing) -> None:
        """Route with these configs from now on (drops the graphs captured with the old ones)."""
        self.model.set_routing(routing)
        self._steps.clear()

    # ---- pieces (the benchmark drives these directly) ------------------------------------------
    def state(self, batch: int, capacity: int) -> DecodeState:
        key = (batch, capacity)
        state = self._states.pop(key, None)
        if state is None:
            while len(self._states) >= self.max_states:
                old_key, _ = self._states.popitem(last=False)
                self._steps = {k: v for k, v in self._steps.items() if k[0] != old_key}
            state = DecodeState.allocate(self.model.shape, batch, capacity, self.model.device, self.model.dtype)
        self._states[key] = state  # most recently used last
        return state

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, capacity: int, sampler: Sampler,
                end_ids: Optional[torch.Tensor] = None) -> Prefilled:
        """Prefill into the (batch, capacity) state and point it at the first decode step."""
        B, L = input_ids.shape
        state = self.state(B, capacity)
        logits, active = self.model.prefill(input_ids, attention_mask, state.cache)
        first = sampler(logits)
        finished = (first[:, None] == end_ids[None, :]).any(-1) if end_ids is not None else None
        state.start(first, L, L - attention_mask.long().sum(-1), finished)
        return Prefilled(state, first, logits, active)

    def step_runner(self, state: DecodeState, sampler: Sampler, pad_id: int = 0,
                    end_ids: Optional[torch.Tensor] = None):
        """A StepGraph (or EagerStep) that advances `state` by one decode step per replay()."""
        def step():
            return decode_step(self.model, state, sampler, pad_id, end_ids)

        if not self.use_graphs:
            return EagerStep(step)
        ends = None if end_ids is None else tuple(end_ids.tolist())
        key = ((state.batch, state.capacity), id(state), sampler, pad_id, ends)
        runner = self._steps.get(key)
        if runner is None:
            if not self._steps:  # the old pool died with its last graph: capturing into it again asserts in torch
                self._pool = torch.cuda.graph_pool_handle()
            runner = self._steps[key] = StepGraph(step, state, pool=self._pool)
        return runner

    # ---- the loop ----------------------------------------------------------------------------
    def generate(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                 max_new_tokens: int = 64, sampler: Sampler = Sampler(), end_ids: Sequence[int] = (),
                 pad_id: int = 0, progress: Optional[Progress] = None, check_every: int = 16) -> DecodeResult:
        """Left-padded prompts input_ids [B, L] (attention_mask 1 = real token) -> up to
        max_new_tokens tokens per row, stopping early once every row produced an end token."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        device = self.model.device
        input_ids = input_ids.to(device)
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
        ends = torch.tensor(list(end_ids), dtype=torch.int64, device=device) if len(end_ids) else None
        B, L = input_ids.shape
        self._sync()
        t0 = time.perf_counter()
        state, first, _, prefill_active = self.prefill(input_ids, attention_mask, capacity_for(L + max_new_tokens),
                                                       sampler, ends)
        self._sync()
        t_prefill = time.perf_counter()
        runner = self.step_runner(state, sampler, pad_id, ends) if max_new_tokens > 1 else None  # captures once
        self._sync()
        t1 = time.perf_counter()
        total, done = max_new_tokens - 1, 0
        while done < total and not (ends is not None and bool(state.finished.all())):
            burst = min(check_every, total - done)
            with self._no_sync():
                for _ in range(burst):
                    runner.replay()
            done += burst
            if progress is not None:
                self._sync()
                progress(done, total, time.perf_counter() - t1)
        self._sync()
        t2 = time.perf_counter()
        tokens = torch.cat([first[:, None], state.generated[:, :done]], dim=1).cpu()
        empty = torch.zeros(0, dtype=torch.int32)
        return DecodeResult(tokens=tokens, finished=state.finished.cpu().clone(), prefill_s=t_prefill - t0,
                            capture_s=t1 - t_prefill, decode_s=t2 - t1,
                            decode_steps=done, active=state.active[:done].cpu().clone(),
                            prefill_active=torch.stack(prefill_active).to(torch.int32).cpu() if prefill_active else empty,
                            graphs=self.use_graphs)

    def _sync(self) -> None:
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)

    @contextlib.contextmanager
    def _no_sync(self):
        """Any host synchronisation while replays are enqueued is an error (CUDA only)."""
        if not self.use_graphs:
            yield
            return
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(previous)
