"""Confidence intervals for paired differences (per-sequence CE under a routing minus vanilla)."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def paired_bootstrap_ci(deltas: np.ndarray, level: float = 0.95, resamples: int = 4000,
                        seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of the mean of `deltas` (one value per sequence).

    Pairing (both routings see the same sequences) removes the sequence-to-sequence spread of
    CE itself, which is much larger than the effect measured. Sequences of one decode batch
    influence each other's routing, so this treats them as independent: an approximation.
    """
    deltas = np.asarray(deltas, dtype=np.float64)
    if deltas.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, deltas.size, size=(resamples, deltas.size))
    means = deltas[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def standard_error(deltas: np.ndarray) -> float:
    deltas = np.asarray(deltas, dtype=np.float64)
    if deltas.size < 2:
        return float("nan")
    return float(deltas.std(ddof=1) / np.sqrt(deltas.size))
