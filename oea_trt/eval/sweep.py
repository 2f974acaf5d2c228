"""The quality sweep: cross-entropy and distinct experts under vanilla, OEA and top-k0 pruning.

Decode batches are simulated as in the paper: the sequences are cut into batches of B, and the
B tokens at position t form decode batch t (oea_trt.integrations.hf, mode="decode-sim"). Vanilla routing and
pruning route each token on its own, so their cross-entropy does not depend on B and one forward
pass serves every B (distinct experts T are still counted per B); OEA needs one pass per (B, k0).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.integrations.hf import apply_oea, moe_layers
from oea_trt.eval.intervals import paired_bootstrap_ci, standard_error


@dataclasses.dataclass
class Row:
    routing: str                    # "vanilla", "oea" or "prune"
    batch: int                      # B, decode batch size
    k0: int                         # baseline experts per token (top_k for vanilla)
    ce: float                       # mean next-token cross-entropy (nats/token)
    delta_ce: float                 # ce - vanilla ce (paired, per-sequence mean)
    ci_low: float                   # 95% paired bootstrap interval of delta_ce
    ci_high: float
    stderr: float
    active_experts: float           # T: distinct experts per decode batch, mean over layers
    active_experts_per_layer: List[float]
    vanilla_active_experts: float   # T of vanilla routing for the same batches
    # OEA rows only: OEA's CE minus pruning's at the same k0, paired per sequence, with its 95%
    # bootstrap interval: the direct test of "piggybacking beats pruning" (None elsewhere).
    vs_prune: Optional[float] = None
    vs_prune_ci_low: Optional[float] = None
    vs_prune_ci_high: Optional[float] = None

    @property
    def vs_prune_verdict(self) -> Optional[str]:
        """"better" / "worse" when the interval excludes 0, else "tie" (None without pruning)."""
        if self.vs_prune is None:
            return None
        if self.vs_prune_ci_high < 0:
            return "better"
        if self.vs_prune_ci_low > 0:
            return "worse"
        return "tie"

    @property
    def t_ratio(self) -> float:
        return self.active_experts / self.vanilla_active_experts

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["t_ratio"] = self.t_ratio
        d["vs_prune_verdict"] = self.vs_prune_verdict
        return d


@dataclasses.dataclass
class Pass:
    """One forward pass over all sequences under one routing."""

    seq_ce: np.ndarray                    # [N] mean CE of each sequence
    tokens: int                           # predicted tokens
    active_by_batch: Dict[int, List[float]]  # B -> T per MoE layer


def sequence_ce(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """float64 [B]: mean next-token CE of each sequence over its real (non-padding) targets."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:]
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).double()
    valid = (attention_mask[:, 1:] != 0) & (attention_mask[:, :-1] != 0)
    return (nll * valid).sum(1) / valid.sum(1).clamp(min=1)


def forward_chunk(batches: Sequence[int], forward_batch: int) -> int:
    """Sequences per forward call: a multiple of every B so decode batches never straddle calls."""
    step = 1
    for b in batches:
        step = step * b // math.gcd(step, b)
    return step * max(1, forward_batch // step)


LayerK0 = Union[None, int, OEAConfig]


def layer_configs(model, k0: Union[LayerK0, Mapping[int, LayerK0]],
                  oea_options: Optional[dict] = None) -> Dict[int, Optional[OEAConfig]]:
    """{layer: OEAConfig} with k0 and extra OEA knobs (e.g. max_rank, k_max); None = vanilla.

    k0: one value for every MoE layer, or {layer_index: value} (layers left out stay vanilla);
    a value is None (vanilla), an integer k0, or a whole OEAConfig used as it is.
    """
    per_layer = k0 if isinstance(k0, Mapping) else {layer.index: k0 for layer in moe_layers(model)}
    out: Dict[int, Optional[OEAConfig]] = {}
    for layer in moe_layers(model):
        value = per_layer.get(layer.index)
        if value is None or isinstance(value, OEAConfig):
            out[layer.index] = value
        else:
            out[layer.index] = OEAConfig(num_experts=layer.num_experts, top_k=layer.top_k, k0=value,
                                         renormalize=layer.norm_topk_prob, **(oea_options or {}))
    return out


@torch.inference_mode()  # cheaper than no_grad for the thousands of tiny routing calls
def run_pass(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
             k0: Union[LayerK0, Mapping[int, LayerK0]],
             routing: str, decode_batch: Optional[int], count_batches: Sequence[int], chunk: int,
             on_chunk: Callable[[], None] = lambda: None, oea_options: Optional[dict] = None) -> Pass:
    device = next(model.parameters()).device
    ces = []
    configs = layer_configs(model, k0, oea_options if routing == "oea" else None)
    with apply_oea(model, configs, mode="decode-sim", routing=routing, decode_batch=decode_batch,
                   count_batches=count_batches) as handle:
        for s in range(0, input_ids.shape[0], chunk):
            ids = input_ids[s:s + chunk].to(device)
            mask = attention_mask[s:s + chunk].to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            ces.append(sequence_ce(logits, ids, mask).cpu())
            on_chunk()
        stats = handle.stats()
    layers = sorted(stats)
    active = {b: [stats[i]["active_experts_by_batch"][b] for i in layers] for b in count_batches}
    tokens = int(((attention_mask[:, 1:] != 0) & (attention_mask[:, :-1] != 0)).sum())
    return Pass(torch.cat(ces).numpy(), tokens, active)


def checked_k0s(k0s: Optional[Sequence[int]], top_k: int) -> List[int]:
    """The k0 values to sweep: every k0 below top_k by default; each must be in [1, top_k]."""
    k0s = list(range(1, top_k)) if k0s is None else list(k0s)
    bad = [k for k in k0s if not 1 <= k <= top_k]
    if bad:
        raise ValueError(f"k0 values must be in [1, top_k={top_k}], got {bad[0]}")
    return k0s


def evaluate(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
             batches: Sequence[int] = (4, 16, 64), k0s: Optional[Sequence[int]] = None,
             prune: bool = True, forward_batch: int = 64, progress=None, seed: int = 0,
             oea_options: Optional[dict] = None) -> List[Row]:
    """Rows for vanilla (one per B), OEA (per B, k0) and pruning (per B, k0).

    oea_options: other OEAConfig knobs for the OEA rows (max_rank, k_max, top_p, ...); the
    defaults are the paper's (k_max = top_k, max_rank = E, top_p = 1).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    layers = moe_layers(model)
    top_k = layers[0].top_k
    k0s = checked_k0s(k0s, top_k)
    n = input_ids.shape[0]
    bad = [b for b in batches if n % b]
    if bad:
        raise ValueError(f"{n} sequences cannot be cut into decode batches of {bad[0]}: use a multiple "
                         f"of every batch size (e.g. {forward_chunk(batches, 1)})")
    chunk = forward_chunk(batches, forward_batch)
    calls = -(-n // chunk)
    passes_total = 1 + len(k0s) * ((1 if prune else 0) + len(batches))
    tick = (lambda: progress.update(1)) if progress is not None else (lambda: None)
    if progress is not None:
        progress.total = passes_total * calls

    vanilla = run_pass(model, input_ids, attention_mask, k0=None, routing="oea", decode_batch=None,
                       count_batches=batches, chunk=chunk, on_chunk=tick)
    rows = [_row("vanilla", b, top_k, vanilla, vanilla, b, seed) for b in batches]
    for k0 in k0s:
        pruned = None
        if prune:
            pruned = run_pass(model, input_ids, attention_mask, k0=k0, routing="prune", decode_batch=None,
                              count_batches=batches, chunk=chunk, on_chunk=tick)
            rows += [_row("prune", b, k0, pruned, vanilla, b, seed) for b in batches]
        for b in batches:
            oea = run_pass(model, input_ids, attention_mask, k0=k0, routing="oea", decode_batch=b,
                           count_batches=(b,), chunk=chunk, on_chunk=tick, oea_options=oea_options)
            row = _row("oea", b, k0, oea, vanilla, b, seed)
            if pruned is not None:
                diff = oea.seq_ce - pruned.seq_ce
                row.vs_prune = float(diff.mean())
                row.vs_prune_ci_low, row.vs_prune_ci_high = paired_bootstrap_ci(diff, seed=seed)
            rows.append(row)
    order = {"vanilla": 0, "oea": 1, "prune": 2}
    rows.sort(key=lambda r: (r.batch, order[r.routing], r.k0))
    return rows


def _row(routing: str, batch: int, k0: int, p: Pass, vanilla: Pass, b: int, seed: int) -> Row:
    deltas = p.seq_ce - vanilla.seq_ce
    lo, hi = paired_bootstrap_ci(deltas, seed=seed)
    per_layer = p.active_by_batch[b]
    van = vanilla.active_by_batch[b]
    return Row(routing=routing, batch=batch, k0=k0, ce=float(p.seq_ce.mean()), delta_ce=float(deltas.mean()),
               ci_low=lo if routing != "vanilla" else 0.0, ci_high=hi if routing != "vanilla" else 0.0,
               stderr=standard_error(deltas) if routing != "vanilla" else 0.0,
               active_experts=float(np.mean(per_layer)), active_experts_per_layer=[float(v) for v in per_layer],
               vanilla_active_experts=float(np.mean(van)))
