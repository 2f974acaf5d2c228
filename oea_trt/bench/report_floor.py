"""The MoE report's "x floor" tables: per batch and routing variant, the MoE-only time of one of
our kernels and its ratio to the memory floor (distinct experts T x expert bytes / the copy
bandwidth measured in the same run), the form issue 20's targets are stated in (x floor <= 1.10
vanilla, <= 1.15 OEA k0=3, B = 4..64)."""
from __future__ import annotations

from typing import List, Sequence

from oea_trt.bench.report import fmt, markdown_table


def floor_section(results: dict, impl: str, preset: str, mode: str, variants: Sequence[str]) -> List[str]:
    """Markdown lines: one row per batch, one cell per variant, "MoE us (x floor)"; [] where the
    run has no MoE-only time for (impl, preset, mode)."""
    rows = [r for r in results["rows"] if r.get("impl") == impl and r.get("preset") == preset
            and r.get("mode") == mode and r.get("moe_us") and r.get("floor_us")]
    if not rows:
        return []
    by_key = {(r["batch"], r["variant"]): r for r in rows}
    table = []
    for batch in sorted({r["batch"] for r in rows}):
        cells = []
        for v in variants:
            r = by_key.get((batch, v))
            cells.append(f"{fmt(r['moe_us'])} ({fmt(r['moe_us'] / r['floor_us'], 2)})" if r else "-")
        table.append([batch] + cells)
    return ["", f"## {preset}, {mode} routing: MoE only us (x floor), {impl}", "",
            markdown_table(["B"] + list(variants), table)]
