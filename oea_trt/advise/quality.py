"""What k0 costs in quality, read from an `oea-trt eval` results file.

Two tables, both delta cross-entropy vs vanilla (nats/token) with 95% intervals and the
distinct experts T of every MoE layer:
- all layers at one k0, per (B, k0): measured directly (the eval's OEA rows);
- one layer at k0, the others vanilla, per (layer, B, k0): `oea-trt eval --layer-sensitivity`.
  A per-layer k0 vector that is not uniform is predicted from these by adding the layers'
  effects, paired per sequence (effects need not add: oea_trt.advise.check measures the gap).
k0 = top_k is vanilla: no cost, vanilla T.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Effect:
    """Delta CE of one routing with its 95% interval, and T of each MoE layer (layer order)."""

    delta_ce: float
    ci_low: float
    ci_high: float
    active_experts: Tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class LayerEffect:
    """OEA at k0 in one layer only: delta CE, interval, that layer's T, per-sequence deltas."""

    delta_ce: float
    ci_low: float
    ci_high: float
    active_experts: float
    sequence_delta_ce: np.ndarray


@dataclasses.dataclass
class QualityTable:
    top_k: int
    batches: Tuple[int, ...]
    k0s: Tuple[int, ...]                          # evaluated k0 values, top_k (vanilla) included
    uniform: Dict[Tuple[int, int], Effect]        # (B, k0) -> every layer at k0
    layers: Tuple[int, ...] = ()                  # MoE layers probed one at a time (decoder indices)
    single: Dict[Tuple[int, int, int], LayerEffect] = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def has_layers(self) -> bool:
        return bool(self.single)

    @property
    def num_moe_layers(self) -> int:
        return len(next(iter(self.uniform.values())).active_experts)

    def layer_effect(self, layer: int, batch: int, k0: int) -> LayerEffect:
        return self.single[(layer, batch, k0)]

    def vanilla_active_experts(self, batch: int) -> Tuple[float, ...]:
        return self.uniform[(batch, self.top_k)].active_experts

    @classmethod
    def from_results(cls, payload: dict, source: str = "eval results") -> "QualityTable":
        """From the dict of an eval_results.json."""
        if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
            raise ValueError(f"{source} is not an `oea-trt eval` results file (no 'rows' list)")
        rows = payload["rows"]
        vanilla = {r["batch"]: r for r in rows if r.get("routing") == "vanilla"}
        if not vanilla:
            raise ValueError(f"{source} has no vanilla rows; rerun `oea-trt eval`")
        top_k = int(payload.get("top_k") or next(iter(vanilla.values()))["k0"])
        uniform: Dict[Tuple[int, int], Effect] = {}
        for b, r in vanilla.items():
            uniform[(b, top_k)] = Effect(0.0, 0.0, 0.0, tuple(r["active_experts_per_layer"]))
        for r in rows:
            if r.get("routing") == "oea":
                uniform[(r["batch"], r["k0"])] = Effect(r["delta_ce"], r["ci_low"], r["ci_high"],
                                                        tuple(r["active_experts_per_layer"]))
        if payload.get("oea_options"):
            # Predictions would silently be of other knobs than the build's defaults.
            raise ValueError(f"{source} was evaluated with OEA options {payload['oea_options']}; the advisor "
                             "assumes the paper's defaults (k_max = top_k, max_rank = E): rerun eval without them")
        batches = tuple(sorted(vanilla))
        k0s = tuple(sorted({k for _, k in uniform}))
        single: Dict[Tuple[int, int, int], LayerEffect] = {}
        for r in payload.get("layer_sensitivity") or []:
            single[(r["layer"], r["batch"], r["k0"])] = LayerEffect(
                r["delta_ce"], r["ci_low"], r["ci_high"], r["active_experts"],
                np.asarray(r["sequence_delta_ce"], dtype=np.float64))
        layers = tuple(sorted({key[0] for key in single}))
        table = cls(top_k, batches, k0s, uniform, layers, single, {k: v for k, v in payload.items()
                                                                   if k not in ("rows", "layer_sensitivity")})
        if single:
            table._add_vanilla_layer_effects(payload["layer_sensitivity"])
            table._check_complete(source)
        return table

    def _add_vanilla_layer_effects(self, raw: List[dict]) -> None:
        n = len(next(iter(self.single.values())).sequence_delta_ce)
        for r in raw:
            key = (r["layer"], r["batch"], self.top_k)
            if key not in self.single:
                self.single[key] = LayerEffect(0.0, 0.0, 0.0, r["vanilla_active_experts"], np.zeros(n))

    def _check_complete(self, source: str) -> None:
        if len(self.layers) != self.num_moe_layers:
            raise ValueError(f"{source}: per-layer sensitivity covers layers {list(self.layers)} but the model has "
                             f"{self.num_moe_layers} MoE layers; rerun `oea-trt eval --layer-sensitivity` on all")
        missing = [(layer, b, k) for layer in self.layers for b in self.batches for k in self.k0s
                   if (layer, b, k) not in self.single]
        if missing:
            layer, b, k = missing[0]
            raise ValueError(f"{source}: per-layer sensitivity has no row for layer {layer}, B={b}, k0={k} "
                             f"({len(missing)} missing); rerun eval with the same --batch and --k0 for both")


def load_quality(path: str) -> QualityTable:
    """QualityTable of an eval_results.json, with errors that name the file."""
    from oea_trt.inputs import read_json

    return QualityTable.from_results(read_json(path, "eval results"), path)


def additivity(table: QualityTable) -> List[dict]:
    """Per (B, k0 < top_k): the sum of the single-layer deltas at k0 vs the measured all-layer
    delta. A ratio below 1 means the layers' effects compound, so a plain sum predicts too low.
    "factor" is what oea_trt.advise.search scales sums by (None: no usable measurement here)."""
    out = []
    if not table.has_layers:
        return out
    for b in table.batches:
        for k in table.k0s:
            if k == table.top_k:
                continue
            summed = sum(table.layer_effect(layer, b, k).delta_ce for layer in table.layers)
            measured = table.uniform[(b, k)]
            usable = measured.ci_low > 0 and summed > 0  # an effect clearly above noise
            out.append({"batch": b, "k0": k, "sum_of_layers": summed, "all_layers": measured.delta_ce,
                        "ratio": summed / measured.delta_ce if measured.delta_ce > 0 else None,
                        "factor": max(1.0, measured.delta_ce / summed) if usable else None})
    return out


def interaction_factors(table: QualityTable, batch: int) -> Tuple[np.ndarray, np.ndarray]:
    """(k0 values, factors) at one batch size: measured all-layer delta CE over the sum of the
    single-layer deltas, where the all-layer delta's interval excludes 0, and never below 1 (a
    correction may make a prediction more cautious, never less). Empty when nothing qualifies."""
    rows = [r for r in additivity(table) if r["batch"] == batch and r["factor"] is not None]
    return (np.array([r["k0"] for r in rows], dtype=np.float64),
            np.array([r["factor"] for r in rows], dtype=np.float64))


def model_reference(table: QualityTable) -> Optional[str]:
    """The evaluated model as the eval recorded it: "embedded" or a directory (None if unknown)."""
    return table.meta.get("model")
