"""Text table and JSON of a quality sweep."""
from __future__ import annotations

import json
from typing import Dict, List, Sequence

from oea_trt.eval.sweep import Row


def _fmt_delta(r: Row) -> str:
    return f"{r.delta_ce:+.4f} [{r.ci_low:+.4f}, {r.ci_high:+.4f}]"


def format_table(rows: Sequence[Row]) -> str:
    """One block per batch size: vanilla, then OEA and pruning side by side for each k0."""
    out: List[str] = []
    for b in sorted({r.batch for r in rows}):
        group = [r for r in rows if r.batch == b]
        van = next(r for r in group if r.routing == "vanilla")
        out.append(f"B={b}: vanilla CE {van.ce:.4f} nats/token, T {van.active_experts:.1f} distinct experts "
                   "per decode batch (mean over layers)")
        oea = {r.k0: r for r in group if r.routing == "oea"}
        prune = {r.k0: r for r in group if r.routing == "prune"}
        header = f"  {'k0':>3} | {'OEA T':>6} {'T/van':>5}  {'dCE [95% CI]':<29}"
        if prune:
            header += (f" | {'prune T':>7} {'T/van':>5}  {'dCE [95% CI]':<29} | "
                       f"{'OEA - prune [95% CI]':<29} verdict")
        out.append(header)
        for k0 in sorted(set(oea) | set(prune)):
            line = f"  {k0:>3} |"
            o, p = oea.get(k0), prune.get(k0)
            line += (f" {o.active_experts:>6.1f} {o.t_ratio:>5.2f}  {_fmt_delta(o):<29}" if o else " " * 44)
            if prune:
                line += (f" | {p.active_experts:>7.1f} {p.t_ratio:>5.2f}  {_fmt_delta(p):<29}" if p else " |" + " " * 44)
                if o is not None and o.vs_prune is not None:
                    diff = f"{o.vs_prune:+.4f} [{o.vs_prune_ci_low:+.4f}, {o.vs_prune_ci_high:+.4f}]"
                    line += f" | {diff:<29} {o.vs_prune_verdict}"
            out.append(line)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def oea_beats_pruning(rows: Sequence[Row]) -> Dict[str, bool]:
    """{"B=16,k0=3": OEA's delta CE < pruning's} for every (B, k0) with both and k0 < top_k."""
    prune = {(r.batch, r.k0): r for r in rows if r.routing == "prune"}
    return {f"B={r.batch},k0={r.k0}": r.delta_ce < prune[(r.batch, r.k0)].delta_ce
            for r in rows if r.routing == "oea" and (r.batch, r.k0) in prune
            and r.k0 < next(v.k0 for v in rows if v.routing == "vanilla")}


def verdict_counts(rows: Sequence[Row]) -> Dict[str, int]:
    """How many OEA rows are significantly better / worse than pruning, or tied (95% paired CI)."""
    counts = {"better": 0, "tie": 0, "worse": 0}
    for r in rows:
        if r.routing == "oea" and r.vs_prune_verdict is not None and r.k0 < _top_k(rows):
            counts[r.vs_prune_verdict] += 1
    return counts


def _top_k(rows: Sequence[Row]) -> int:
    return next(r.k0 for r in rows if r.routing == "vanilla")


def write_json(path: str, rows: Sequence[Row], meta: dict) -> None:
    payload = dict(meta)
    payload["rows"] = [r.as_dict() for r in rows]
    payload["oea_beats_pruning"] = oea_beats_pruning(rows)
    payload["oea_vs_pruning_95ci"] = verdict_counts(rows)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
