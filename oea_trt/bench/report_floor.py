"""The MoE report's "x floor" tables: per batch and routing variant, the MoE-only time of one of
our kernels and its ratio to the memory floor (distinct experts T x expert bytes / the copy
bandwidth measured in the same run), the form issue 20's targets are stated in (x floor <= 1.10
vanilla, <= 1.15 OEA k0=3, B = 4..64), and the same as a plot (x_floor_vs_B.png)."""
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


#: Issue 20's bounds on MoE time / floor at B = 4..64: vanilla, OEA k0=3.
FLOOR_TARGETS = {"vanilla": 1.10, "k0=3": 1.15}


def plot_x_floor(results: dict, impl: str, path: str) -> bool:
    """x floor (MoE only) against B, one panel per (preset, routing mode), one line per routing
    variant, the targets dashed; False (nothing drawn) where the run has no MoE-only rows."""
    from oea_trt.bench.report import pyplot, save_figure

    rows = [r for r in results["rows"] if r.get("impl") == impl and r.get("moe_us") and r.get("floor_us")]
    panels = sorted({(r["preset"], r["mode"]) for r in rows})
    if not panels:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False, sharey=True)
    for ax, (preset, mode) in zip(axes[0], panels):
        mine = [r for r in rows if r["preset"] == preset and r["mode"] == mode]
        # "vanilla#2": the drift check's second vanilla timing, not a routing variant.
        variants = {r["variant"] for r in mine if "#" not in r["variant"]}
        for variant in sorted(variants, key=lambda v: (v != "vanilla", v)):
            pts = sorted((r["batch"], r["moe_us"] / r["floor_us"]) for r in mine if r["variant"] == variant)
            line, = ax.plot(*zip(*pts), marker="o", ms=3, label=variant, color="k" if variant == "vanilla" else None)
            if variant in FLOOR_TARGETS:
                ax.axhline(FLOOR_TARGETS[variant], color=line.get_color(), linestyle="--", linewidth=0.8,
                           label=f"target {variant} (B >= 4)")
        batches = sorted({r["batch"] for r in mine})
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.axhline(1.0, color="grey", linewidth=0.6)
        ax.set_title(f"{preset}, {mode} routing")
        ax.set_xlabel("decode batch B (tokens)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("MoE only time / memory floor")
    gpu = results.get("env", {}).get("gpu") or {}
    fig.suptitle(f"{gpu.get('name', 'GPU')}: MoE time over the floor (T x expert bytes / copy bandwidth)")
    save_figure(fig, path)
    plt.close(fig)
    return True
