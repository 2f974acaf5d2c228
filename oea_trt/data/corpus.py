"""Deterministic sequences from the synthetic domains, for training and for evaluation.

A sequence is one domain's documents packed back to back and cut to a fixed length, so a
sequence has one "topic" and a batch of sequences mixes topics (as a serving batch mixes
requests). Text depends only on (seed, domain, index): random.Random seeded with a string is
stable across Python processes and versions (it hashes the string with SHA-512).
"""
from __future__ import annotations

import random
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from oea_trt.data.domains import DOMAINS
from oea_trt.data.tokenizer import CharTokenizer

#: Seeds of the embedded model's training corpus and of the default evaluation set (disjoint).
TRAIN_SEED = 1234
EVAL_SEED = 98765

#: No real tokenizer needs more characters than this per token of the synthetic corpus.
MAX_CHARS_PER_TOKEN = 64


def domain_names(domains: Optional[Sequence[str]] = None) -> List[str]:
    if domains is None:
        return list(DOMAINS)
    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; known: {', '.join(DOMAINS)}")
    if not domains:
        raise ValueError(f"at least one domain is needed; known: {', '.join(DOMAINS)}")
    return list(domains)


def domain_text(domain: str, seed: int, index: int, min_chars: int) -> str:
    """At least `min_chars` characters of `domain`, the same for the same (seed, domain, index)."""
    rng = random.Random(f"{seed}:{domain}:{index}")
    make = DOMAINS[domain]
    parts, n = [], 0
    while n < min_chars:
        doc = make(rng)
        parts.append(doc)
        n += len(doc)
    return "".join(parts)


def sequence_domains(count: int, seed: int, domains: Optional[Sequence[str]] = None) -> List[str]:
    """Domain of sequences 0..count-1: every block of len(domains) consecutive sequences holds
    each domain once, in a seeded order, so a decode batch mixes domains; sequence i's domain
    does not depend on `count`."""
    names = domain_names(domains)
    labels: List[str] = []
    for block in range((count + len(names) - 1) // len(names)):
        order = list(names)
        random.Random(f"{seed}:order:{block}").shuffle(order)
        labels.extend(order)
    return labels[:count]


def char_sequence_rows(count: int, length: int, seed: int, domains: Optional[Sequence[str]] = None,
                       start: int = 0) -> Tuple[List[List[int]], List[str]]:
    """Rows start..start+count of the character-tokenized corpus as lists of ids: each row is
    <bos> + one domain's text, and row i is the same however many rows are asked for."""
    tok = CharTokenizer()
    labels = sequence_domains(start + count, seed, domains)[start:]
    rows = []
    for i, domain in enumerate(labels, start=start):
        ids = [tok.bos_token_id] + tok.encode(domain_text(domain, seed, i, length))
        rows.append(ids[:length])
    return rows, labels


def char_sequences(count: int, length: int, seed: int, domains: Optional[Sequence[str]] = None,
                   start: int = 0) -> Tuple[torch.Tensor, List[str]]:
    """int64 [count, length] token ids for the embedded model's character tokenizer (see
    char_sequence_rows) and each row's domain."""
    rows, labels = char_sequence_rows(count, length, seed, domains, start)
    return torch.tensor(rows, dtype=torch.int64), labels


def tokenized_sequences(encode: Callable[[str], List[int]], bos_token_id: Optional[int], count: int,
                        length: int, seed: int, domains: Optional[Sequence[str]] = None
                        ) -> Tuple[torch.Tensor, List[str]]:
    """Like char_sequences, for any tokenizer: `encode(text) -> ids` (no special tokens)."""
    labels = sequence_domains(count, seed, domains)
    rows = []
    for i, domain in enumerate(labels):
        chars = length
        while True:  # a token covers at least one character, usually more: grow until enough
            ids = ([] if bos_token_id is None else [bos_token_id]) + list(encode(domain_text(domain, seed, i, chars)))
            if len(ids) >= length:
                break
            if chars >= MAX_CHARS_PER_TOKEN * length:  # a tokenizer that drops the text would loop forever
                raise ValueError(f"the tokenizer turned {chars} characters of the {domain!r} domain into only "
                                 f"{len(ids)} tokens (needed {length}); is it the model's own tokenizer?")
            chars *= 2
        rows.append(ids[:length])
    return torch.tensor(rows, dtype=torch.int64), labels
