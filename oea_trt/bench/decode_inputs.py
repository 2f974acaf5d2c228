"""The decode benchmark's prompts: the same seeded token ids for our rows and transformers' rows."""
from __future__ import annotations

import torch


def random_prompts(shape, batch: int, length: int, seed: int, device):
    """Random token ids [B, length] (seeded by batch and seed) and an all-ones mask."""
    g = torch.Generator().manual_seed(31_337 * (seed + 1) + batch)
    ids = torch.randint(shape.vocab_size, (batch, length), generator=g).to(device)
    return ids, torch.ones_like(ids)
