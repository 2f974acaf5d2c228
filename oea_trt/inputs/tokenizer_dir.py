"""Check a directory that should hold a Hugging Face tokenizer, without loading it."""
from __future__ import annotations

import os

from oea_trt.inputs.errors import InputError
from oea_trt.inputs.json_file import read_json

#: Any one of these makes AutoTokenizer.from_pretrained() able to build a tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_tokenizer_dir(path: str, what: str = "tokenizer directory") -> str:
    """`path` if it holds tokenizer files (and any JSON among them parses); else InputError."""
    if not os.path.exists(path):
        raise InputError(f"{what} {path} does not exist; pass the Hugging Face model directory "
                         "(the one with tokenizer.json)")
    if not os.path.isdir(path):
        raise InputError(f"{what} {path} is a file; pass the Hugging Face model directory that holds it")
    present = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(path, name))]
    if not present:
        raise InputError(f"{what} {path} has no tokenizer ({', '.join(TOKENIZER_FILES)}); pass the Hugging "
                         "Face model directory the model was converted from")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json"):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            read_json(file, what, dict)
    return path
