"""Distinct experts per batch under OEA vs vanilla routing, on synthetic router logits, and the
memory-bound floor it implies for one MoE layer (T x expert_bytes / bandwidth)."""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, List, Optional

import torch

from oea_trt.routing.config import OEAConfig
from oea_trt.moe.shapes import MoEShape
from oea_trt.routing.reference import oea_route, vanilla_route
from oea_trt.routing.synthetic import SkewedRouter, uniform_logits

ROUTINGS = ("uniform", "skewed")


@dataclasses.dataclass
class SimRow:
    routing: str
    batch: int
    k0: Optional[int]  # None = vanilla top-k
    active_experts: float  # mean distinct experts T over trials
    vanilla_active_experts: float
    floor_us: float

    @property
    def reduction(self) -> float:
        """Relative change of T (and of the floor) vs vanilla: -0.4 = 40% fewer experts."""
        return self.active_experts / self.vanilla_active_experts - 1.0 if self.vanilla_active_experts else 0.0

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "reduction": self.reduction}


def _batches_of_logits(routing: str, shape: MoEShape, batch: int, trials: int, seed: int):
    if routing == "uniform":
        return [uniform_logits(batch, shape.num_experts, seed=seed * 1_000_003 + batch * 7919 + t) for t in range(trials)]
    if routing == "skewed":
        router = SkewedRouter(shape.num_experts, seed=seed)
        return [router.logits(batch, seed=batch * 7919 + t) for t in range(trials)]
    raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, got {routing!r}")


def simulate(shape: MoEShape, batches: Iterable[int], k0s: Iterable[int], routings: Iterable[str] = ROUTINGS,
             trials: int = 200, seed: int = 0, bandwidth_tb_s: float = 4.3,
             progress: Optional[Callable[[str], None]] = None) -> List[SimRow]:
    """Mean distinct experts over `trials` random batches for every (routing, batch, k0)."""
    k0s = list(k0s)
    configs = {k0: OEAConfig(num_experts=shape.num_experts, top_k=shape.top_k, k0=k0,
                             renormalize=shape.norm_topk_prob) for k0 in k0s}
    rows: List[SimRow] = []
    for routing in routings:
        for batch in batches:
            if progress:
                progress(f"{routing} routing, batch {batch}: {trials} batches x {len(k0s) + 1} settings")
            logits = _batches_of_logits(routing, shape, batch, trials, seed)
            mean_t = lambda route: sum(int(route(x).num_active) for x in logits) / trials  # noqa: E731
            vanilla_t = mean_t(lambda x: vanilla_route(x, shape.top_k, shape.norm_topk_prob))
            rows.append(SimRow(routing, batch, None, vanilla_t, vanilla_t, shape.floor_us(vanilla_t, bandwidth_tb_s)))
            for k0 in k0s:
                t = mean_t(lambda x: oea_route(x, configs[k0]))
                rows.append(SimRow(routing, batch, k0, t, vanilla_t, shape.floor_us(t, bandwidth_tb_s)))
    return rows


def format_rows(rows: List[SimRow]) -> str:
    header = f"{'routing':<8} {'batch':>5} {'k0':>7} {'experts T':>9} {'vs vanilla':>10} {'floor us/layer':>14}"
    lines = [header, "-" * len(header)]
    last = None
    for r in rows:
        if last is not None and (r.routing, r.batch) != last:
            lines.append("")
        last = (r.routing, r.batch)
        k0 = "vanilla" if r.k0 is None else str(r.k0)
        lines.append(f"{r.routing:<8} {r.batch:>5} {k0:>7} {r.active_experts:>9.1f} "
                     f"{r.reduction * 100:>+9.1f}% {r.floor_us:>14.1f}")
    return "\n".join(lines)


def default_threads() -> None:
    # Tiny tensors: intra-op threads only add overhead.
    torch.set_num_threads(1)
