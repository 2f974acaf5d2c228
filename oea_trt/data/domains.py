"""Generators of the synthetic corpus's domains: each returns one short document (ending "\\n").

The domains differ in alphabet and structure (digits and operators, indented code, English
prose, bracket strings, JSON records, DNA, Roman numerals), so a small MoE trained on their mix
routes them to different experts, and a decode batch that mixes domains spreads over many
experts: the situation OEA targets. Every generator draws only from the random.Random it is
given, so a seed fixes the corpus.
"""
from __future__ import annotations

import random
from typing import Callable, Dict

_NOUNS = ("cat dog bird fox river stone tree house road child teacher farmer ship garden "
          "letter window city mountain lamp song").split()
_ADJS = "small old quiet red bright cold tall green happy dark".split()
_VERBS = "sees finds likes follows paints carries watches builds opens hears".split()
_PREPS = "near under behind beside over".split()
_NAMES = "ada bob cleo dan eve finn gus hana ivo jun kai lena mio nora omar pia".split()
_TAGS = "red blue new old fast slow big hot".split()
_IDENTS = "items values data nums xs rows scores parts".split()
_FUNCS = "total scale count shift merge clip norm step".split()


def arithmetic(rng: random.Random) -> str:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    op = rng.choice("+-*")
    if op == "*":
        b = rng.randint(0, 99)
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return f"{a}{op}{b}={value}\n"


def code(rng: random.Random) -> str:
    fn, xs, k = rng.choice(_FUNCS), rng.choice(_IDENTS), rng.randint(1, 9)
    kind = rng.randrange(3)
    if kind == 0:
        body = (f"    acc = 0\n    for x in {xs}:\n        acc += x * {k}\n    return acc\n")
    elif kind == 1:
        body = f"    return [x + {k} for x in {xs} if x > {rng.randint(0, 9)}]\n"
    else:
        body = (f"    if len({xs}) < {k}:\n        return None\n    return {xs}[{k - 1}]\n")
    return f"def {fn}_{k}({xs}):\n{body}"


def prose(rng: random.Random) -> str:
    def phrase() -> str:
        adj = rng.choice(_ADJS) + " " if rng.random() < 0.5 else ""
        return f"{rng.choice(('the', 'a'))} {adj}{rng.choice(_NOUNS)}"

    sentences = []
    for _ in range(rng.randint(1, 3)):
        s = f"{phrase()} {rng.choice(_VERBS)} {phrase()}"
        if rng.random() < 0.4:
            s += f" {rng.choice(_PREPS)} {phrase()}"
        sentences.append(s[0].upper() + s[1:] + ".")
    return " ".join(sentences) + "\n"


def brackets(rng: random.Random) -> str:
    """A balanced (Dyck) string over four bracket pairs."""
    pairs = ("()", "[]", "{}", "<>")
    out, stack = [], []
    for _ in range(rng.randint(4, 20)):
        if stack and (rng.random() < 0.45):
            out.append(stack.pop())
        else:
            o, c = rng.choice(pairs)
            out.append(o)
            stack.append(c)
    out.extend(reversed(stack))
    return "".join(out) + "\n"


def json_record(rng: random.Random) -> str:
    tags = ", ".join(f'"{t}"' for t in rng.sample(_TAGS, rng.randint(0, 3)))
    return (f'{{"id": {rng.randint(1, 9999)}, "name": "{rng.choice(_NAMES)}", '
            f'"score": {rng.randint(0, 100) / 100:.2f}, "tags": [{tags}]}}\n')


_DNA_NEXT = {"A": "ACGTTA", "C": "CGGAAT", "G": "GATCCG", "T": "TTAACG"}


def dna(rng: random.Random) -> str:
    """A Markov chain over ACGT with a repeated motif (copying is learnable, not just counts)."""
    base = rng.choice("ACGT")
    seq = [base]
    for _ in range(rng.randint(10, 30)):
        base = rng.choice(_DNA_NEXT[base])
        seq.append(base)
    motif = "".join(seq[: rng.randint(3, 6)])
    return "".join(seq) + motif + "\n"


_ROMAN = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
          (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))


def roman(rng: random.Random) -> str:
    n = rng.randint(1, 3999)
    value, out = n, []
    for v, sym in _ROMAN:
        while value >= v:
            out.append(sym)
            value -= v
    return f"{''.join(out)}={n}\n"


DOMAINS: Dict[str, Callable[[random.Random], str]] = {
    "arithmetic": arithmetic,
    "code": code,
    "prose": prose,
    "brackets": brackets,
    "json": json_record,
    "dna": dna,
    "roman": roman,
}
