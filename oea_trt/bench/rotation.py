"""How many copies of the weights to rotate through so that timing never finds them in L2.

A call touches `bytes_per_call` of weights; consecutive calls use different copies, so a copy
is reused only after (copies - 1) calls. Those calls must stream several L2's worth of other
bytes in between, else the next use of the copy partly hits in cache and the figure is too good.
"""
from __future__ import annotations

import math


def copies_needed(min_bytes_per_call: float, l2_bytes: int, flush_factor: float = 2.0, min_copies: int = 4) -> int:
    """Copies so that (copies - 1) * min_bytes_per_call >= flush_factor * l2_bytes."""
    if min_bytes_per_call <= 0:
        raise ValueError(f"min_bytes_per_call must be > 0, got {min_bytes_per_call}")
    return max(min_copies, math.ceil(flush_factor * l2_bytes / min_bytes_per_call) + 1)


def copies_that_fit(wanted: int, bytes_per_copy: int, free_bytes: int, budget_fraction: float = 0.5) -> int:
    """At most `wanted` copies, at least 2, within budget_fraction of the free device memory."""
    fit = int(budget_fraction * free_bytes // max(1, bytes_per_copy))
    return max(2, min(wanted, fit))
