"""Pareto plot of a quality sweep: delta cross-entropy vs distinct experts T, one panel per B."""
from __future__ import annotations

from typing import Sequence

from oea_trt.eval.sweep import Row


def pareto_plot(rows: Sequence[Row], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r.batch for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(4.6 * len(batches), 4.2), squeeze=False)
    for ax, b in zip(axes[0], batches):
        group = [r for r in rows if r.batch == b]
        van = next(r for r in group if r.routing == "vanilla")
        for routing, style, label in (("oea", "o-", "OEA"), ("prune", "s--", "top-k0 pruning")):
            pts = sorted((r for r in group if r.routing == routing), key=lambda r: r.k0)
            if not pts:
                continue
            xs = [r.active_experts for r in pts]
            ys = [r.delta_ce for r in pts]
            err = [[r.delta_ce - r.ci_low for r in pts], [r.ci_high - r.delta_ce for r in pts]]
            line = ax.errorbar(xs, ys, yerr=err, fmt=style, ms=4, capsize=2, lw=1.2, label=label)
            for r in pts:
                ax.annotate(f"{r.k0}", (r.active_experts, r.delta_ce), textcoords="offset points",
                            xytext=(4, 3), fontsize=7, color=line[0].get_color())
        ax.plot([van.active_experts], [0.0], "k*", ms=10, label=f"vanilla (top-{van.k0})")
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("distinct experts T per decode batch (mean over layers)")
        ax.set_ylabel("delta cross-entropy vs vanilla (nats/token)")
        ax.set_title(f"B = {b}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
