"""The synthetic corpus and the character tokenizer of the embedded model."""
import random

import pytest
import torch

from oea_trt.data import (DOMAINS, EVAL_SEED, TRAIN_SEED, VOCAB, CharTokenizer, char_sequences,
                          domain_text, sequence_domains, tokenized_sequences)


def test_same_seed_same_text_other_seed_other_text():
    a, da = char_sequences(14, 64, seed=5)
    b, db = char_sequences(14, 64, seed=5)
    c, _ = char_sequences(14, 64, seed=6)
    assert torch.equal(a, b) and da == db
    assert not torch.equal(a, c)
    assert a.shape == (14, 64) and a.dtype == torch.int64
    assert (a[:, 0] == CharTokenizer.bos_token_id).all()


def test_a_sequence_does_not_depend_on_how_many_are_drawn():
    full, labels = char_sequences(20, 48, TRAIN_SEED)
    part, part_labels = char_sequences(6, 48, TRAIN_SEED, start=9)
    assert torch.equal(part, full[9:15]) and part_labels == labels[9:15]


def test_every_block_of_sequences_holds_every_domain_once():
    labels = sequence_domains(5 * len(DOMAINS), EVAL_SEED)
    for block in range(5):
        chunk = labels[block * len(DOMAINS):(block + 1) * len(DOMAINS)]
        assert sorted(chunk) == sorted(DOMAINS)
    assert labels[: len(DOMAINS)] != sorted(DOMAINS)  # shuffled, so batches mix domains
    assert set(sequence_domains(10, 0, ["dna", "code"])) == {"dna", "code"}
    with pytest.raises(ValueError, match="unknown domain"):
        sequence_domains(4, 0, ["poetry"])


def test_domains_have_distinct_alphabets():
    """What lets experts specialise: each domain's character distribution differs."""
    chars = {d: set(domain_text(d, 0, 0, 2000)) for d in DOMAINS}
    assert chars["dna"] <= set("ACGT\n")
    assert chars["brackets"] <= set("()[]{}<>\n")
    assert chars["arithmetic"] <= set("0123456789+-*=\n")
    assert set("IVXLCDM=") & chars["roman"] and not (set("abc") & chars["roman"])
    for name in ("prose", "code", "json"):
        assert len(chars[name]) > 20


def test_generators_are_correct_where_checkable():
    rng = random.Random(3)
    for _ in range(200):
        line = DOMAINS["arithmetic"](rng).strip()
        lhs, rhs = line.split("=")
        assert eval(lhs) == int(rhs)  # noqa: S307 - digits and + - * only
        stack, pairs = [], {")": "(", "]": "[", "}": "{", ">": "<"}
        for ch in DOMAINS["brackets"](rng).strip():
            if ch in pairs:
                assert stack.pop() == pairs[ch]
            else:
                stack.append(ch)
        assert not stack
        roman, number = DOMAINS["roman"](rng).strip().split("=")
        values = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
        total = sum(-values[a] if values[a] < values[b] else values[a] for a, b in zip(roman, roman[1:] + "I"))
        assert total == int(number)


def test_char_tokenizer_round_trip():
    tok = CharTokenizer()
    text = domain_text("code", 1, 0, 300)
    ids = tok.encode(text)
    assert len(ids) == len(text) and max(ids) < tok.vocab_size == len(VOCAB)
    assert tok.decode(ids) == text
    assert tok.encode("é") == [tok.unk_token_id]


def test_tokenized_sequences_with_a_multi_char_tokenizer():
    """A tokenizer whose tokens span several characters still fills every row."""
    def pairs(text):
        return [hash(text[i:i + 2]) % 50 for i in range(0, len(text), 2)]

    ids, labels = tokenized_sequences(pairs, bos_token_id=None, count=7, length=40, seed=1)
    assert ids.shape == (7, 40) and len(labels) == 7


def test_hf_tokenizer_agrees_with_char_tokenizer(tmp_path):
    pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from oea_trt.data import save_hf_tokenizer

    save_hf_tokenizer(str(tmp_path))
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    tok = CharTokenizer()
    for domain in DOMAINS:
        text = domain_text(domain, 2, 0, 200) + "é\t"
        assert hf(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (1, 2, 0)
