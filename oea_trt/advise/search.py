"""The optimiser: the k0 schedule and per-layer k0 that minimise expected MoE time within a
quality budget.

What a build can express (oea_trt.plan.routing_plan): one k0 schedule shared by every layer,
and a per-layer k0 that applies only where no schedule entry does (decode batches below the
schedule's first MIN). So a plan is: batch sizes below a split routed by one per-layer k0
vector, batch sizes from the split on by the schedule's k0 (one per batch size, every layer).
The search tries every split among the batch sizes that matter; for the per-layer part it
enumerates every k0 vector when there are few (K^L <= EXHAUSTIVE_LIMIT), else it solves a
knapsack over layers (dynamic programming on the additive delta CE) and improves the best of
that and of the uniform k0s by moves of one layer, or of two layers in opposite directions,
while they help.

Objective: sum over batch sizes of weight(B) x predicted latency of one MoE layer at B (mean
over layers). Constraint: predicted delta CE at every B <= budget(B), on the mean or, with
bound="upper", on the upper end of its 95% interval. Uniform k0 vectors use the eval's
measured all-layer rows; other vectors add single-layer effects per sequence (interval:
mean +- 1.96 standard errors of the per-sequence sums), scaled by how far the measured
all-layer rows exceed their own sums (see Predictor).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from oea_trt.advise.latency import LatencyModel
from oea_trt.advise.quality import QualityTable, interaction_factors

BOUNDS = ("mean", "upper")
ADDITIVITY = ("calibrated", "plain")
MIN_GAIN = 0.01
EXHAUSTIVE_LIMIT = 200_000
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


@dataclasses.dataclass
class Advice:
    batches: Tuple[int, ...]
    weights: Dict[int, float]
    budgets: Dict[int, float]
    bound: str
    choices: Dict[int, Choice]        # the plan's choice at each batch size
    best_uniform: Dict[int, Choice]   # the best single k0 within budget at each batch size
    vanilla: Dict[int, Choice]
    per_layer_batches: Tuple[int, ...]  # batch sizes routed by the per-layer k0 vector
    base_k0: int
    schedule: Tuple[Tuple[int, int], ...]
    layer_k0: Dict[int, int]          # decoder layer -> k0 (only where it differs from base_k0)
    search: str
    layers: Tuple[int, ...]
    additivity: str = "calibrated"
    notes: List[str] = dataclasses.field(default_factory=list)

    def expected_us(self, which: str = "choices") -> float:
        table = getattr(self, which)
        return sum(self.weights[b] * table[b].layer_us for b in self.batches)


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


def _check_inputs(table: QualityTable, weights: Dict[int, float], budgets: Dict[int, float], bound: str) -> None:
    if bound not in BOUNDS:
        raise ValueError(f"bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    if not weights:
        raise ValueError("name at least one batch size to advise for")
    missing = sorted(set(weights) - set(table.batches))
    if missing:
        raise ValueError(f"batch size(s) {missing} were not evaluated; the eval results have B={list(table.batches)} "
                         "(rerun `oea-trt eval --batch ...` with them)")
    for b, w in weights.items():
        if not w > 0:
            raise ValueError(f"the weight of B={b} must be positive, got {w}")
    for b in weights:
        if b not in budgets:
            raise ValueError(f"no quality budget for B={b}")
        if not budgets[b] >= 0:
            raise ValueError(f"the quality budget of B={b} must be >= 0 nats/token, got {budgets[b]}")


def best_uniform(predictor: Predictor, budget: float, bound: str) -> Choice:
    """The single k0 with the lowest latency whose delta CE is within budget (vanilla always is);
    a tie goes to the larger k0."""
    options = [predictor.uniform(k) for k in predictor.k0s]
    feasible = [c for c in options if c.bound(bound) <= budget] or [predictor.uniform(predictor.table.top_k)]
    return min(feasible, key=lambda c: (c.layer_us, -c.k0_by_layer[0]))


def solve_per_layer(predictors: Dict[int, Predictor], weights: Dict[int, float], budgets: Dict[int, float],
                    bound: str) -> Tuple[Tuple[int, ...], str]:
    """The k0 vector (one per layer) shared by the given batch sizes: lowest weighted latency with
    every batch size within its budget. Returns (vector, how it was found)."""
    first = next(iter(predictors.values()))
    L, K = len(first.layers), len(first.k0s)

    def evaluate(idx: np.ndarray):
        cost = np.zeros(len(idx))
        ok = np.ones(len(idx), dtype=bool)
        for b, p in predictors.items():
            mean, _, high, t_sum = p.score(idx)
            cost += weights[b] * p.layer_us(t_sum)
            ok &= (mean if bound == "mean" else high) <= budgets[b] + 1e-15
        return cost, ok

    if K ** L <= EXHAUSTIVE_LIMIT:
        idx = np.array(list(itertools.product(range(K), repeat=L)), dtype=np.int64)
        cost, ok = evaluate(idx)
        cost = np.where(ok, cost, np.inf)
        # Lowest cost; among equal costs the vector with the larger k0s (less quality risk).
        best = min(np.flatnonzero(cost == cost.min()), key=lambda i: -idx[i].sum())
        return tuple(first.k0s[j] for j in idx[best]), f"exhaustive over {K ** L} k0 vectors"

    uniform = np.repeat(np.arange(K)[:, None], L, axis=1)
    knapsack = np.array([_knapsack(predictors, weights, budgets, focus) for focus in [None, *predictors]])
    best, best_cost = None, np.inf
    # Local search from the best uniform k0 (vanilla is always feasible) and from the best
    # knapsack solution (feasible for the additive mean; checked here like any vector).
    for starts in (uniform, knapsack):
        cost, ok = evaluate(starts)
        cost = np.where(ok, cost, np.inf)
        i = int(np.argmin(cost))
        if not np.isfinite(cost[i]):
            continue
        current, current_cost = _descend(starts[i], float(cost[i]), evaluate, K)
        if current_cost < best_cost - 1e-12:
            best, best_cost = current, current_cost
    return tuple(first.k0s[j] for j in best), "knapsack over layers, then local search"


def _descend(current: np.ndarray, current_cost: float, evaluate, K: int):
    """Take the best improving feasible neighbour until there is none."""
    while True:
        moves = _neighbours(current, K)
        cost, ok = evaluate(moves)
        cost = np.where(ok, cost, np.inf)
        i = int(np.argmin(cost))
        if not cost[i] < current_cost - 1e-12:
            return current, current_cost
        current, current_cost = moves[i], float(cost[i])


def _knapsack(predictors: Dict[int, "Predictor"], weights: Dict[int, float], budgets: Dict[int, float],
              focus: Optional[int], bins: int = 2000) -> np.ndarray:
    """The k0 vector of least latency whose added delta CE fits the budget, by dynamic
    programming over layers on a budget cut into `bins` (a multiple-choice knapsack). With
    several batch sizes the constraint is their mean share of budget used (focus None) or one
    batch size's (focus B); the caller checks every batch size. Each layer's share is rounded
    up and negative deltas count as 0, so what fits here fits the real additive sum."""
    first = next(iter(predictors.values()))
    L, K = len(first.layers), len(first.k0s)
    latency = sum(weights[b] * p.fit.us_per_expert * p.t / L for b, p in predictors.items())  # [L, K]
    chosen = [focus] if focus is not None else list(predictors)
    share = sum(np.maximum(predictors[b].mean, 0.0) / max(budgets[b], 1e-300) for b in chosen) / len(chosen)
    size = np.minimum(np.ceil(share * bins - 1e-9), bins + 1).astype(np.int64)  # [L, K]
    best = np.zeros(bins + 1)  # least latency of the layers so far, using at most c bins
    pick = np.zeros((L, bins + 1), dtype=np.int64)
    for layer in range(L):
        new = np.full(bins + 1, np.inf)
        for k in range(K):
            w = size[layer, k]
            if w > bins:
                continue
            cand = np.full(bins + 1, np.inf)
            cand[w:] = best[:bins + 1 - w] + latency[layer, k]
            better = cand < new
            new[better], pick[layer, better] = cand[better], k
        best = new
    vector = np.zeros(L, dtype=np.int64)
    c = int(np.argmin(best))
    if not np.isfinite(best[c]):
        return np.full(L, K - 1, dtype=np.int64)  # nothing fits: vanilla
    for layer in range(L - 1, -1, -1):
        vector[layer] = pick[layer, c]
        c -= size[layer, vector[layer]]
    return vector


def _neighbours(current: np.ndarray, K: int) -> np.ndarray:
    """Every vector that changes one layer's k0 to any value, or moves one layer down a step
    and another up a step."""
    L = len(current)
    out = []
    for i in range(L):
        for j in range(K):
            if j != current[i]:
                v = current.copy()
                v[i] = j
                out.append(v)
    for i in range(L):
        for m in range(L):
            if i != m and current[i] > 0 and current[m] < K - 1:
                v = current.copy()
                v[i] -= 1
                v[m] += 1
                out.append(v)
    return np.array(out, dtype=np.int64)


def advise(table: QualityTable, latency: LatencyModel, budgets: Dict[int, float], weights: Dict[int, float],
           bound: str = "mean", per_layer: bool = True, additivity: str = "calibrated",
           min_gain: float = MIN_GAIN) -> Advice:
    """The plan that minimises sum_B weights[B] x MoE layer latency with delta CE <= budgets[B].

    A plan with per-layer k0 is kept only if it saves at least `min_gain` (a fraction) of the
    expected time of one k0 per batch size: smaller predicted gains are within the noise of T
    and not worth a per-layer plan."""
    _check_inputs(table, weights, budgets, bound)
    batches = tuple(sorted(weights))
    predictors = {b: Predictor(table, latency, b, additivity) for b in batches}
    top_k = table.top_k
    uniform_best = {b: best_uniform(predictors[b], budgets[b], bound) for b in batches}
    vanilla = {b: predictors[b].uniform(top_k) for b in batches}
    use_layers = per_layer and table.has_layers

    uniform_us = sum(weights[b] * uniform_best[b].layer_us for b in batches)
    best = (uniform_us, 0, None, "")  # (expected us, split, vector, search)
    for split in range(1, len(batches) + 1 if use_layers else 1):
        low = batches[:split]
        vector, how = solve_per_layer({b: predictors[b] for b in low}, weights, budgets, bound)
        expected = (sum(weights[b] * uniform_best[b].layer_us for b in batches[split:])
                    + sum(weights[b] * predictors[b].vector(vector).layer_us for b in low))
        if expected < best[0] * (1 - 1e-9):
            best = (expected, split, vector, how)
    expected, split, vector, how = best
    notes = []
    if split and expected > uniform_us * (1 - min_gain):
        notes.append(f"per-layer k0 ({'/'.join(map(str, vector))} below B={batches[split] if split < len(batches) else 'any'}) "
                     f"would save {(1 - expected / uniform_us) * 100:.2f}% of the expected MoE time, less than "
                     f"min_gain={min_gain:g}: kept one k0 per batch size")
        split, vector, how = 0, None, ""

    choices = {b: (predictors[b].vector(vector) if b in batches[:split] else uniform_best[b]) for b in batches}
    advice = Advice(batches, dict(weights), dict(budgets), bound, choices, uniform_best, vanilla,
                    batches[:split], top_k, (), {}, how or "uniform k0 per batch size (no per-layer k0)",
                    table.layers, additivity)
    advice.notes += notes
    _express(advice, split, vector)
    if not use_layers and per_layer:
        advice.notes.append("the eval results have no per-layer sensitivity (`oea-trt eval --layer-sensitivity`): "
                            "advised one k0 per batch size only")
    return advice


def _express(advice: Advice, split: int, vector: Optional[Tuple[int, ...]]) -> None:
    """Fill in base k0, schedule and per-layer k0 that route each batch size as chosen."""
    batches = advice.batches
    top_k = next(iter(advice.vanilla.values())).k0_by_layer[0]
    high = [(b, advice.choices[b].uniform_k0) for b in batches[split:]]
    schedule: List[Tuple[int, int]] = []
    for b, k in high:
        if schedule and schedule[-1][1] == k:
            continue  # the previous entry already applies from its MIN on
        schedule.append((b, k))
    if split == 0:
        advice.base_k0 = top_k  # below the smallest batch size that matters: vanilla (never evaluated)
        if schedule and schedule[0][1] == top_k:
            schedule = schedule[1:]
    else:
        values = list(vector)
        advice.base_k0 = max(set(values), key=lambda k: (values.count(k), k))
        layers = advice.layers or tuple(range(len(values)))
        advice.layer_k0 = {layer: k for layer, k in zip(layers, values) if k != advice.base_k0}
        if batches[0] > 1:
            advice.notes.append(
                f"decode batches below B={batches[0]} (not evaluated) also take the per-layer k0 (a build applies "
                "it wherever no schedule entry does); with one decode token OEA is top-k0 pruning")
    advice.schedule = tuple(schedule)


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
