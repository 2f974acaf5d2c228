"""Predicted delta CE, 95% interval and MoE layer latency of a per-layer k0 vector at one B.

A uniform vector (every layer at one k0) is an eval row, measured. Any other vector adds the
single-layer effects of `oea-trt eval --layer-sensitivity` per sequence (interval: mean +-
1.96 standard errors of the per-sequence sums), and, calibrated, scales the sum by how much
the eval's all-layer rows exceed their own sums (effects compound). Latency: the latency
model at each layer's T, averaged over layers.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from oea_trt.advise.latency import LatencyModel
from oea_trt.advise.quality import QualityTable, interaction_factors

ADDITIVITY = ("calibrated", "plain")
Z95 = 1.959964


@dataclasses.dataclass(frozen=True)
class Choice:
    """What one decode batch size runs, with its predicted cost and latency."""

    batch: int
    k0_by_layer: Tuple[int, ...]      # one k0 per MoE layer, in layer order
    delta_ce: float
    ci_low: float
    ci_high: float
    active_experts: Tuple[float, ...]  # T per MoE layer
    layer_us: float                   # predicted latency of one MoE layer, mean over layers
    measured: bool                    # True: an eval row (every layer at one k0); False: added per layer

    @property
    def uniform_k0(self) -> Optional[int]:
        return self.k0_by_layer[0] if len(set(self.k0_by_layer)) == 1 else None

    @property
    def mean_active_experts(self) -> float:
        return float(np.mean(self.active_experts))

    def bound(self, kind: str) -> float:
        return self.delta_ce if kind == "mean" else self.ci_high

    def label(self) -> str:
        k = self.uniform_k0
        return f"k0={k}" if k is not None else "per-layer " + "/".join(str(v) for v in self.k0_by_layer)


class Predictor:
    """Predicted delta CE, interval and latency of k0 vectors at one batch size.

    additivity "calibrated": a sum of single-layer effects is scaled by how much the eval's
    all-layer rows exceed their own sums (oea_trt.advise.quality.interaction_factors),
    interpolated at the vector's mean k0; "plain": the sum as it is.
    """

    def __init__(self, table: QualityTable, latency: LatencyModel, batch: int, additivity: str = "calibrated"):
        if additivity not in ADDITIVITY:
            raise ValueError(f"additivity must be one of {', '.join(ADDITIVITY)}, got {additivity!r}")
        self.table, self.batch = table, batch
        self.k0s = table.k0s
        self.fit = latency.fit_for(batch)
        self.layers = table.layers
        self.factor_k0s, self.factors = (interaction_factors(table, batch) if additivity == "calibrated"
                                         else (np.zeros(0), np.zeros(0)))
        if table.has_layers:
            L, K = len(self.layers), len(self.k0s)
            n = len(table.layer_effect(self.layers[0], batch, self.k0s[0]).sequence_delta_ce)
            self.mean = np.zeros((L, K))
            self.t = np.zeros((L, K))
            self.seq = np.zeros((L, K, n))
            for i, layer in enumerate(self.layers):
                for j, k in enumerate(self.k0s):
                    e = table.layer_effect(layer, batch, k)
                    self.mean[i, j], self.t[i, j], self.seq[i, j] = e.delta_ce, e.active_experts, e.sequence_delta_ce

    def uniform(self, k0: int) -> Choice:
        e = self.table.uniform[(self.batch, k0)]
        us = float(np.mean([self.fit.us(t) for t in e.active_experts]))
        return Choice(self.batch, (k0,) * len(e.active_experts), e.delta_ce, e.ci_low, e.ci_high,
                      e.active_experts, us, True)

    def vector(self, k0_by_layer: Sequence[int]) -> Choice:
        if len(set(k0_by_layer)) == 1:
            return self.uniform(k0_by_layer[0])
        idx = np.array([[self.k0s.index(k) for k in k0_by_layer]])
        mean, low, high, t_sum = self.score(idx)
        ts = tuple(float(self.t[i, j]) for i, j in enumerate(idx[0]))
        return Choice(self.batch, tuple(k0_by_layer), float(mean[0]), float(low[0]), float(high[0]), ts,
                      float(self.fit.us_per_expert * t_sum[0] / len(ts) + self.fit.fixed_us), False)

    def score(self, idx: np.ndarray):
        """For k0-index vectors [N, L]: additive mean, 95% interval, and summed T over layers.
        Uniform vectors get the measured all-layer values instead."""
        L = idx.shape[1]
        rows = np.arange(L)
        mean = self.mean[rows, idx].sum(1)
        t_sum = self.t[rows, idx].sum(1)
        half = np.empty(len(idx))
        for s in range(0, len(idx), 4096):  # [chunk, n] per-sequence sums, bounded memory
            sums = self.seq[rows, idx[s:s + 4096]].sum(1)
            half[s:s + 4096] = Z95 * sums.std(1, ddof=1) / np.sqrt(sums.shape[1])
        if len(self.factors):
            factor = np.interp(np.asarray(self.k0s, dtype=np.float64)[idx].mean(1), self.factor_k0s, self.factors)
            mean, half = mean * factor, half * factor
        low, high = mean - half, mean + half
        uniform = (idx == idx[:, :1]).all(1)
        for i in np.flatnonzero(uniform):
            e = self.table.uniform[(self.batch, self.k0s[idx[i, 0]])]
            mean[i], low[i], high[i], t_sum[i] = e.delta_ce, e.ci_low, e.ci_high, sum(e.active_experts)
        return mean, low, high, t_sum

    def layer_us(self, t_sum: np.ndarray) -> np.ndarray:
        return self.fit.us_per_expert * t_sum / len(self.layers) + self.fit.fixed_us


def candidate_points(predictor: Predictor, limit: int = 20_000) -> Dict[str, np.ndarray]:
    """Every k0 vector at one batch size (uniform ones only when there are more than `limit`
    or no per-layer data): latency, predicted delta CE and interval, and which are uniform."""
    K = len(predictor.k0s)
    L = len(predictor.layers)
    if predictor.table.has_layers and K ** L <= limit:
        idx = np.array(list(itertools.product(range(K), repeat=L)), dtype=np.int64)
        mean, low, high, t_sum = predictor.score(idx)
        return {"layer_us": predictor.layer_us(t_sum), "delta_ce": mean, "ci_low": low, "ci_high": high,
                "uniform": (idx == idx[:, :1]).all(1)}
    options = [predictor.uniform(k) for k in predictor.k0s]
    return {"layer_us": np.array([c.layer_us for c in options]), "delta_ce": np.array([c.delta_ce for c in options]),
            "ci_low": np.array([c.ci_low for c in options]), "ci_high": np.array([c.ci_high for c in options]),
            "uniform": np.ones(len(options), dtype=bool)}
