"""Per-layer sensitivity: OEA at k0 in one MoE layer at a time, every other layer vanilla.

The all-layer sweep (sweep.evaluate) says what k0 costs when every layer uses it; this says
which layers tolerate a low k0, so that a per-layer k0 can spend a quality budget where it buys
the most distinct experts. One forward pass per (layer, B, k0), each paired per sequence with
one vanilla pass. Rows keep every sequence's delta CE, so a tool that adds the effects of
several layers (oea_trt.advise) can put a paired interval on the sum.
"""
from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence

import numpy as np
import torch

from oea_trt.eval.intervals import paired_bootstrap_ci, standard_error
from oea_trt.eval.sweep import checked_k0s, forward_chunk, run_pass
from oea_trt.integrations.hf import moe_layers


@dataclasses.dataclass
class LayerRow:
    layer: int                      # decoder layer index of the MoE layer routed with OEA
    batch: int                      # B, decode batch size
    k0: int                         # OEA's k0 in that layer (the others: vanilla top-k)
    ce: float                       # mean next-token cross-entropy (nats/token)
    delta_ce: float                 # ce - vanilla ce, mean over sequences
    ci_low: float                   # 95% paired bootstrap interval of delta_ce
    ci_high: float
    stderr: float
    active_experts: float           # T of this layer: distinct experts per decode batch
    vanilla_active_experts: float   # this layer's T under vanilla routing, same batches
    active_experts_per_layer: List[float]  # T of every MoE layer in this pass
    sequence_delta_ce: List[float]  # delta CE of each evaluation sequence (paired sums)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LayerRow":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def layer_sensitivity(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
                      batches: Sequence[int] = (4, 16, 64), k0s: Optional[Sequence[int]] = None,
                      layers: Optional[Sequence[int]] = None, forward_batch: int = 64, progress=None,
                      seed: int = 0, oea_options: Optional[dict] = None) -> List[LayerRow]:
    """Rows for every (MoE layer, B, k0): OEA at k0 in that layer only, the others vanilla.

    layers: decoder layer indices of the MoE layers to probe (default: all of them).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    moe = moe_layers(model)
    top_k = moe[0].top_k
    k0s = checked_k0s(k0s, top_k)
    indices = [layer.index for layer in moe]
    layers = indices if layers is None else list(layers)
    unknown = sorted(set(layers) - set(indices))
    if unknown:
        raise ValueError(f"no MoE layer with index {unknown}; MoE layers are {indices}")
    n = input_ids.shape[0]
    bad = [b for b in batches if n % b]
    if bad:
        raise ValueError(f"{n} sequences cannot be cut into decode batches of {bad[0]}: use a multiple "
                         f"of every batch size (e.g. {forward_chunk(batches, 1)})")
    chunk = forward_chunk(batches, forward_batch)
    if progress is not None:
        progress.total = (1 + len(layers) * len(batches) * len(k0s)) * -(-n // chunk)
    tick = (lambda: progress.update(1)) if progress is not None else (lambda: None)

    vanilla = run_pass(model, input_ids, attention_mask, k0=None, routing="oea", decode_batch=None,
                       count_batches=batches, chunk=chunk, on_chunk=tick)
    position = {index: i for i, index in enumerate(indices)}
    rows = []
    for layer in layers:
        for b in batches:
            for k0 in k0s:
                p = run_pass(model, input_ids, attention_mask, k0={layer: k0}, routing="oea", decode_batch=b,
                             count_batches=(b,), chunk=chunk, on_chunk=tick, oea_options=oea_options)
                deltas = p.seq_ce - vanilla.seq_ce
                lo, hi = paired_bootstrap_ci(deltas, seed=seed)
                per_layer = [float(t) for t in p.active_by_batch[b]]
                rows.append(LayerRow(
                    layer=layer, batch=b, k0=k0, ce=float(p.seq_ce.mean()), delta_ce=float(deltas.mean()),
                    ci_low=lo, ci_high=hi, stderr=standard_error(deltas),
                    active_experts=per_layer[position[layer]],
                    vanilla_active_experts=float(vanilla.active_by_batch[b][position[layer]]),
                    active_experts_per_layer=per_layer,
                    sequence_delta_ce=[float(d) for d in np.round(deltas, 8)]))
    return rows


def format_layer_table(rows: Sequence[LayerRow]) -> str:
    """Per B: delta CE +- half its 95% interval, then the layer's T / vanilla T, layer x k0."""
    out: List[str] = []
    k0s = sorted({r.k0 for r in rows})
    for b in sorted({r.batch for r in rows}):
        group = {(r.layer, r.k0): r for r in rows if r.batch == b}
        layers = sorted({layer for layer, _ in group})
        out.append(f"B={b}: OEA in one MoE layer, the others vanilla")
        out.append(f"  {'layer':>5} | delta CE +- half 95% CI: " + "".join(f"{'k0=' + str(k):>16}" for k in k0s))
        for layer in layers:
            cells = []
            for k0 in k0s:
                r = group.get((layer, k0))
                cells.append(f"{r.delta_ce:+.4f}+-{(r.ci_high - r.ci_low) / 2:.4f}" if r else "-")
            out.append(f"  {layer:>5} | {'':24}" + "".join(f"{c:>16}" for c in cells))
        out.append(f"  {'layer':>5} | the layer's T / vanilla T:" + "".join(f"{'k0=' + str(k):>16}" for k in k0s))
        for layer in layers:
            cells = []
            for k0 in k0s:
                r = group.get((layer, k0))
                cells.append(f"{r.active_experts:.1f}/{r.vanilla_active_experts:.1f}" if r else "-")
            out.append(f"  {layer:>5} | {'':24}" + "".join(f"{c:>16}" for c in cells))
        out.append("")
    return "\n".join(out).rstrip() + "\n"
