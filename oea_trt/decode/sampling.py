"""Next-token choice inside the decode step: greedy, or temperature / top-k / top-p sampling,
with no host synchronisation so the choice is part of the captured CUDA graph.

Sampling draws by the Gumbel-max trick (argmax of logits + Gumbel noise is a draw from the
softmax), which needs only torch.rand: graph-safe on CUDA, where captured graphs advance the
default generator's offset on every replay. Greedy is argmax of float32 logits, as
transformers' generate takes it (first index on ties).
"""
from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class Sampler:
    temperature: float = 0.0   # 0 = greedy
    top_k: int = 0             # 0 = off
    top_p: float = 1.0         # 1 = off

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """int64 [B] token ids for logits [B, V]."""
        scores = logits.float()
        if self.greedy:
            return scores.argmax(dim=-1)
        scores = scores / self.temperature
        if self.top_k:
            kth = torch.topk(scores, min(self.top_k, scores.shape[-1]), dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if self.top_p < 1.0:
            ordered, order = torch.sort(scores, dim=-1, descending=True)
            probs = ordered.softmax(dim=-1)
            # drop a token once the mass before it already reaches top_p (the first always stays)
            drop = (probs.cumsum(dim=-1) - probs) >= self.top_p
            scores = scores.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
        uniform = torch.rand_like(scores).clamp_(min=torch.finfo(torch.float32).tiny)
        return (scores - torch.log(-torch.log(uniform))).argmax(dim=-1)
