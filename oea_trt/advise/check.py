"""Checking advice: evaluate the advised routing plan itself and compare with the prediction.

Each batch size is simulated as in `oea-trt eval` (decode batch t = the t-th tokens of B
sequences), with every MoE layer routed by the plan's own config for that layer, k0 schedule
included, so the k0 that applies is chosen exactly as a build would choose it. Predictions for
per-layer k0 vectors add single-layer effects; this measures how far off that is.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from oea_trt.advise.latency import LatencyModel
from oea_trt.advise.search import Advice
from oea_trt.eval.intervals import paired_bootstrap_ci
from oea_trt.eval.sweep import forward_chunk, run_pass
from oea_trt.plan.routing_plan import RoutingPlan


@dataclasses.dataclass
class CheckRow:
    batch: int
    k0_by_layer: List[int]           # what the plan routed each MoE layer with at this B
    predicted_delta_ce: float
    predicted_ci: List[float]
    measured_delta_ce: float
    measured_ci: List[float]         # 95% paired bootstrap interval over sequences
    budget: float
    active_experts: List[float]      # measured T per MoE layer
    predicted_active_experts: float  # mean over layers
    layer_us: float                  # latency model at the measured T

    @property
    def error(self) -> float:
        """Measured minus predicted delta CE (positive: the prediction was optimistic)."""
        return self.measured_delta_ce - self.predicted_delta_ce

    @property
    def within_budget(self) -> bool:
        return self.measured_delta_ce <= self.budget

    @property
    def upper_within_budget(self) -> bool:
        return self.measured_ci[1] <= self.budget

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(error=self.error, within_budget=self.within_budget, upper_within_budget=self.upper_within_budget,
                 mean_active_experts=float(np.mean(self.active_experts)))
        return d


def check_plan(model, input_ids: torch.Tensor, plan: RoutingPlan, advice: Advice, latency: LatencyModel, *,
               attention_mask: Optional[torch.Tensor] = None, forward_batch: int = 64, progress=None,
               seed: int = 0) -> List[CheckRow]:
    """Measured delta CE and T of the plan at every advised batch size, next to the prediction."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    batches: Sequence[int] = advice.batches
    chunk = forward_chunk(batches, forward_batch)
    if progress is not None:
        progress.total = (1 + len(batches)) * -(-input_ids.shape[0] // chunk)
    tick = (lambda: progress.update(1)) if progress is not None else (lambda: None)
    configs = {layer: plan.config_for_layer(layer) for layer in plan.moe_layers}
    vanilla = run_pass(model, input_ids, attention_mask, k0=None, routing="oea", decode_batch=None,
                       count_batches=(), chunk=chunk, on_chunk=tick)
    rows = []
    for b in batches:
        p = run_pass(model, input_ids, attention_mask, k0=configs, routing="oea", decode_batch=b,
                     count_batches=(b,), chunk=chunk, on_chunk=tick)
        deltas = p.seq_ce - vanilla.seq_ce
        lo, hi = paired_bootstrap_ci(deltas, seed=seed)
        ts = [float(t) for t in p.active_by_batch[b]]
        predicted = advice.choices[b]
        rows.append(CheckRow(
            batch=b, k0_by_layer=[configs[layer].k0_for(b) for layer in plan.moe_layers],
            predicted_delta_ce=predicted.delta_ce, predicted_ci=[predicted.ci_low, predicted.ci_high],
            measured_delta_ce=float(deltas.mean()), measured_ci=[lo, hi], budget=advice.budgets[b],
            active_experts=ts, predicted_active_experts=predicted.mean_active_experts,
            layer_us=float(np.mean([latency.layer_us(b, t) for t in ts]))))
    return rows


def format_check(rows: Sequence[CheckRow], label: str) -> str:
    out = [f"check ({label}): the advised plan evaluated as built vs its prediction",
           f"  {'B':>4} {'k0 per layer':<14} {'predicted dCE [95% CI]':<30} {'measured dCE [95% CI]':<30} "
           f"{'meas-pred':>9} {'budget':>7}  {'T pred':>6} {'T meas':>6}  verdict"]
    for r in rows:
        verdict = ("within budget" if r.upper_within_budget else
                   "mean within budget, interval reaches past it" if r.within_budget else "OVER BUDGET")
        out.append(
            f"  {r.batch:>4} {'/'.join(map(str, r.k0_by_layer)):<14} "
            f"{r.predicted_delta_ce:+.4f} [{r.predicted_ci[0]:+.4f}, {r.predicted_ci[1]:+.4f}]   "
            f"{r.measured_delta_ce:+.4f} [{r.measured_ci[0]:+.4f}, {r.measured_ci[1]:+.4f}]   "
            f"{r.error:>+9.4f} {r.budget:>7.4f}  {r.predicted_active_experts:>6.1f} "
            f"{float(np.mean(r.active_experts)):>6.1f}  {verdict}")
    return "\n".join(out) + "\n"


def check_summary(rows: Sequence[CheckRow]) -> Dict[str, object]:
    errors = [r.error for r in rows]
    return {"max_abs_error": max(abs(e) for e in errors) if errors else None,
            "all_within_budget": all(r.within_budget for r in rows),
            "all_upper_within_budget": all(r.upper_within_budget for r in rows)}
