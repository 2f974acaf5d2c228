"""Synthetic multi-domain corpus and the character tokenizer of the embedded model.

    from oea_trt.data import char_sequences, DOMAINS
    ids, domains = char_sequences(count=64, length=128, seed=EVAL_SEED)   # int64 [64, 128]
"""
from oea_trt.data.corpus import (EVAL_SEED, TRAIN_SEED, char_sequence_rows, char_sequences, domain_names, domain_text,
                     sequence_domains, tokenized_sequences)
from oea_trt.data.domains import DOMAINS
from oea_trt.data.tokenizer import VOCAB, CharTokenizer, save_hf_tokenizer

__all__ = ["DOMAINS", "EVAL_SEED", "TRAIN_SEED", "VOCAB", "CharTokenizer", "char_sequence_rows", "char_sequences",
           "domain_names", "domain_text", "save_hf_tokenizer", "sequence_domains", "tokenized_sequences"]
