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
bound="upper", on the upper end of its 95% interval (predictions: oea_trt.advise.predict).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Dict, List, Optional, Tuple

import numpy as np

from oea_trt.advise.latency import LatencyModel
from oea_trt.advise.predict import Choice, Predictor
from oea_trt.advise.quality import QualityTable

BOUNDS = ("mean", "upper")
MIN_GAIN = 0.01
EXHAUSTIVE_LIMIT = 200_000


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
