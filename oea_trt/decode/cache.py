"""Static decode state: the KV cache and the small device buffers one decode step reads and
advances. Every tensor is allocated once per (batch, capacity) and updated in place, so a CUDA
graph captured over a step stays valid for every later step.

Rows are left-padded prompts: row b's tokens occupy cache slots [pad_start[b], cache_index),
all rows write their next token at the same slot cache_index, and row b's RoPE position there
is cache_index - pad_start[b] (transformers' positions from the attention mask's cumsum).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from oea_trt.decode.shape import ModelShape


class KVCache:
    """Keys and values of every layer: k, v [layers, B, Hkv, capacity, D], zeroed (a slot
    nothing wrote must be finite: masked attention still multiplies it by zero)."""

    def __init__(self, shape: ModelShape, batch: int, capacity: int, device, dtype):
        dims = (shape.num_layers, batch, shape.num_kv_heads, capacity, shape.head_dim)
        self.k = torch.zeros(dims, device=device, dtype=dtype)
        self.v = torch.zeros(dims, device=device, dtype=dtype)

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


@dataclasses.dataclass
class DecodeState:
    """One batch's decode buffers (all on the model's device).

    tokens [B] int64: the tokens the next step feeds in.
    cache_index [1] int64: the cache slot the next step writes.
    pad_start [B] int64: first real slot of each row.
    finished [B] bool: rows that produced an end token (they keep decoding pad tokens, as
        transformers' generate does, so the batch keeps its shape).
    step [1] int64: decode steps taken; the column of `generated` the next step fills.
    generated [B, max_steps] int64: the tokens each step produced.
    active [max_steps, moe_layers] int32: distinct experts of each MoE layer at each step.
    """

    cache: KVCache
    tokens: torch.Tensor
    cache_index: torch.Tensor
    pad_start: torch.Tensor
    finished: torch.Tensor
    step: torch.Tensor
    generated: torch.Tensor
    active: torch.Tensor

    @classmethod
    def allocate(cls, shape: ModelShape, batch: int, capacity: int, device, dtype,
                 max_steps: Optional[int] = None) -> "DecodeState":
        device = torch.device(device)
        max_steps = capacity if max_steps is None else max_steps
        zeros = lambda *dims, dtype=torch.int64: torch.zeros(dims, dtype=dtype, device=device)  # noqa: E731
        return cls(cache=KVCache(shape, batch, capacity, device, dtype), tokens=zeros(batch),
                   cache_index=zeros(1), pad_start=zeros(batch), finished=zeros(batch, dtype=torch.bool),
                   step=zeros(1), generated=zeros(batch, max_steps),
                   active=zeros(max_steps, max(1, len(shape.moe_layers)), dtype=torch.int32))

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]

    @property
    def capacity(self) -> int:
        return self.cache.capacity

    @property
    def max_steps(self) -> int:
        return self.generated.shape[1]

    def start(self, first_tokens: torch.Tensor, prompt_length: int, pad_start: torch.Tensor,
              finished: Optional[torch.Tensor] = None) -> None:
        """Point the buffers at the first decode step after a prefill of prompt_length slots."""
        self.tokens.copy_(first_tokens)
        self.cache_index.fill_(prompt_length)
        self.pad_start.copy_(pad_start)
        if finished is None:
            self.finished.zero_()
        else:
            self.finished.copy_(finished)
        self.step.zero_()

    def snapshot(self) -> dict:
        """Copies of the small buffers a step advances (the cache slot it writes is rewritten
        by the next real step, so a warm-up step is undone by restore())."""
        return {name: getattr(self, name).clone() for name in ("tokens", "cache_index", "finished", "step")}

    def restore(self, snapshot: dict) -> None:
        for name, value in snapshot.items():
            getattr(self, name).copy_(value)
