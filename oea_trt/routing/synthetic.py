"""Synthetic router logits for simulations and benchmarks (how we measure: docs/moe-benchmark.md).

uniform: i.i.d. normal logits, what vLLM's benchmark_moe.py uses; distinct experts per batch
  follow E * (1 - (1 - k/E)^B).
skewed: real routers are concentrated (Qwen3-30B touched 48.8 distinct experts at batch 16 in
  the paper, not 82). Tokens come from a few latent topics that prefer overlapping expert
  subsets, on top of a global popularity bias; `concentration` is calibrated so vanilla top-8
  over 128 experts touches 49 +- 2 experts at batch 16 (tests/test_synthetic.py checks it).
"""
from __future__ import annotations

from typing import Optional

import torch

#: Calibrated for E=128, k=8 (see module doc); scales the shared structure against token noise.
SKEWED_CONCENTRATION = 2.8
SKEWED_TOPICS = 8


def uniform_logits(num_tokens: int, num_experts: int, seed: int = 0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(num_tokens, num_experts, generator=g).to(device=device, dtype=dtype)


class SkewedRouter:
    """A seeded 'model' of correlated routing: fixed topics and popularity, fresh tokens per call."""

    def __init__(self, num_experts: int, seed: int = 0, num_topics: int = SKEWED_TOPICS,
                 concentration: float = SKEWED_CONCENTRATION):
        g = torch.Generator().manual_seed(10_007 * seed + 1)
        self.num_experts = num_experts
        self.concentration = concentration
        self.popularity = torch.randn(num_experts, generator=g)
        self.topics = torch.randn(num_topics, num_experts, generator=g)

    def logits(self, num_tokens: int, seed: int = 0, dtype=torch.float32, device="cpu",
               topic_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        if topic_ids is None:
            topic_ids = torch.randint(len(self.topics), (num_tokens,), generator=g)
        structure = 0.5 * self.popularity + self.topics[topic_ids]
        noise = torch.randn(num_tokens, self.num_experts, generator=g)
        x = self.concentration * structure + noise
        return x.to(device=device, dtype=dtype)


def skewed_logits(num_tokens: int, num_experts: int, seed: int = 0, dtype=torch.float32, device="cpu",
                  router_seed: int = 0) -> torch.Tensor:
    return SkewedRouter(num_experts, seed=router_seed).logits(num_tokens, seed=seed, dtype=dtype, device=device)


GENERATORS = {"uniform": uniform_logits, "skewed": skewed_logits}


def expected_uniform_active(num_experts: int, top_k: int, batch: int) -> float:
    """Expected distinct experts when B tokens each pick top_k of E uniformly at random."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** batch)
