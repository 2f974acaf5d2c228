"""Evaluation sequences: the synthetic corpus tokenized by the model's own tokenizer."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from oea_trt.data import EVAL_SEED, tokenized_sequences


def eval_sequences(tokenizer, count: int = 64, length: int = 128, seed: int = EVAL_SEED,
                   domains: Optional[Sequence[str]] = None) -> Tuple[torch.Tensor, List[str]]:
    """int64 [count, length] ids (the tokenizer's BOS first when it has one) and each row's domain."""
    def encode(text: str) -> List[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return tokenized_sequences(encode, getattr(tokenizer, "bos_token_id", None), count, length, seed, domains)
