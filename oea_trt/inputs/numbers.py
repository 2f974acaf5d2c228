"""Numbers from users and from files, checked strictly: a bool or a float is never an integer.

json.load turns `5.9` into a float and `true` into a bool, and Python's int() accepts both
(5 and 1): a per-layer k0 file with {"0": 5.9} would silently route with k0=5. These checks
refuse such values instead, and parse command-line text without int()'s leniency.
"""
from __future__ import annotations

import math
from typing import Optional

from oea_trt.inputs.errors import InputError


def _describe(lo: Optional[int], hi: Optional[int]) -> str:
    if lo is not None and hi is not None:
        return f"an integer in [{lo}, {hi}]"
    if lo == 1:
        return "a positive integer"
    if lo is not None:
        return f"an integer >= {lo}"
    if hi is not None:
        return f"an integer <= {hi}"
    return "an integer"


def check_int(value, what: str, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """`value` itself as an int in [lo, hi]; bools, floats (even 3.0) and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{what} must be {_describe(lo, hi)}, got {value!r} ({type(value).__name__})")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"{what} must be {_describe(lo, hi)}, got {value}")
    return value


def parse_int(text: str, what: str, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """Decimal integer text ("12", "+3", " 7 ") in [lo, hi]; "3.0", "1e3", "0x10", "" are refused."""
    stripped = str(text).strip()
    digits = stripped[1:] if stripped[:1] in "+-" else stripped
    if not digits.isdigit() or not digits.isascii():
        raise InputError(f"{what} must be {_describe(lo, hi)}, got {text!r}")
    return check_int(int(stripped), what, lo, hi)


def check_float(value, what: str, lo: Optional[float] = None, hi: Optional[float] = None,
                lo_open: bool = False) -> float:
    """A finite real number (int or float, not bool) in [lo, hi] ((lo, hi] with lo_open)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if low_bad or (hi is not None and value > hi):
        left = "(" if lo_open else "["
        low = "-inf" if lo is None else f"{lo:g}"
        high = "inf)" if hi is None else f"{hi:g}]"
        raise InputError(f"{what} must be in {left}{low}, {high}, got {value:g}")
    return float(value)


def parse_float(text: str, what: str, lo: Optional[float] = None, hi: Optional[float] = None,
                lo_open: bool = False) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"{what} must be a number, got {text!r}") from None
    return check_float(value, what, lo, hi, lo_open)
