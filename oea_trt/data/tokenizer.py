"""The embedded model's character-level tokenizer: 4 special tokens, newline and printable ASCII.

One character is one token, so the synthetic corpus needs no trained vocabulary and the model's
embedding stays tiny. The same vocabulary is exported as a Hugging Face tokenizer
(save_hf_tokenizer) so that AutoTokenizer.from_pretrained() loads the shipped model directory.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))
VOCAB: List[str] = list(SPECIAL_TOKENS) + list(CHARACTERS)


class CharTokenizer:
    """encode(text) -> ids, decode(ids) -> text; unknown characters map to <unk>."""

    vocab = VOCAB
    pad_token_id, bos_token_id, eos_token_id, unk_token_id = 0, 1, 2, 3

    def __init__(self) -> None:
        self._index: Dict[str, int] = {tok: i for i, tok in enumerate(VOCAB)}

    @property
    def vocab_size(self) -> int:
        return len(VOCAB)

    def encode(self, text: str) -> List[int]:
        index, unk = self._index, self.unk_token_id
        return [index.get(ch, unk) for ch in text]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if i < len(SPECIAL_TOKENS):
                if not skip_special_tokens:
                    out.append(VOCAB[i])
            elif i < len(VOCAB):
                out.append(VOCAB[i])
        return "".join(out)


def save_hf_tokenizer(directory: str) -> None:
    """Write tokenizer.json / tokenizer_config.json for AutoTokenizer (needs `tokenizers` and
    `transformers`): a word-level model over single characters, so it agrees with CharTokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token=UNK))
    # Oniguruma's (?m) is "dot matches newline", so every character is its own piece.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, unk_token=UNK)
    os.makedirs(directory, exist_ok=True)
    fast.save_pretrained(directory)
    # transformers 5 writes its own class name ("TokenizersBackend"), unknown to 4.x; the 4.x
    # name is an alias in 5.x, so it loads everywhere.
    path = os.path.join(directory, "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
