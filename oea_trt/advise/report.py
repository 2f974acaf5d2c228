"""The advice as a table, and the chosen operating points on the delta-CE vs latency Pareto front."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from oea_trt.advise.latency import LatencyModel
from oea_trt.advise.predict import Choice, Predictor, candidate_points
from oea_trt.advise.search import Advice
from oea_trt.advise.quality import QualityTable


def _dce(c: Choice) -> str:
    return f"{c.delta_ce:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}]{'' if c.measured else '*'}"


def format_advice(advice: Advice) -> str:
    """Per batch size: the advised routing, its T, latency and delta CE, next to the best single k0."""
    what = "mean" if advice.bound == "mean" else "upper end of the 95% interval"
    out = [f"search: {advice.search}; budget on the {what} of delta CE",
           f"  {'B':>4} {'weight':>6} {'budget':>7} | {'advised':<18} {'T':>6} {'T/van':>5} {'us/layer':>8} "
           f"{'/van':>5}  {'dCE [95% CI]':<29} | {'best single k0':<14} {'T':>6} {'us/layer':>8}  dCE"]
    for b in advice.batches:
        c, u, v = advice.choices[b], advice.best_uniform[b], advice.vanilla[b]
        out.append(
            f"  {b:>4} {advice.weights[b]:>6.3f} {advice.budgets[b]:>7.4f} | {c.label():<18} "
            f"{c.mean_active_experts:>6.1f} {c.mean_active_experts / v.mean_active_experts:>5.2f} "
            f"{c.layer_us:>8.1f} {c.layer_us / v.layer_us:>5.2f}  {_dce(c):<29} | "
            f"{u.label():<14} {u.mean_active_experts:>6.1f} {u.layer_us:>8.1f}  {u.delta_ce:+.4f}")
    out.append("  T: distinct experts per decode batch, mean over MoE layers; us/layer: predicted latency of one "
               "MoE layer (routing + MoE); /van: vs vanilla routing")
    if any(not advice.choices[b].measured for b in advice.batches):
        out.append("  * predicted by adding single-layer effects (per sequence; interval +-1.96 standard errors)"
                   + (", scaled by the all-layer / sum-of-layers factor below" if advice.additivity == "calibrated"
                      else "") + "; the others are measured all-layer rows of the eval")
    adv, uni, van = (advice.expected_us(w) for w in ("choices", "best_uniform", "vanilla"))
    out.append(f"expected MoE layer time over the batch sizes: advised {adv:.1f} us, best single k0 per batch "
               f"size {uni:.1f} us ({(adv / uni - 1) * 100:+.1f}%), vanilla {van:.1f} us ({adv / van:.3f} of it)")
    if advice.per_layer_batches:
        gains = ", ".join(f"B={b}: T {advice.choices[b].mean_active_experts:.1f} vs "
                          f"{advice.best_uniform[b].mean_active_experts:.1f}" for b in advice.per_layer_batches)
        out.append(f"per-layer k0 bought {(1 - adv / uni) * 100:.1f}% of the expected MoE time ({gains})")
    else:
        out.append("per-layer k0 bought nothing here: one k0 per batch size is the advice")
    return "\n".join(out) + "\n"


def format_plan(advice: Advice, flags: Sequence[str], command: str) -> str:
    from oea_trt.routing.config import format_k0_schedule

    lines = []
    if advice.per_layer_batches:
        per_layer = ", ".join(f"layer {layer}: {advice.choices[advice.per_layer_batches[0]].k0_by_layer[i]}"
                              for i, layer in enumerate(advice.layers))
        where = (f"below {advice.schedule[0][0]} decode tokens" if advice.schedule else "at every batch size")
        lines.append(f"per-layer k0 ({where}): {per_layer}")
    lines.append(f"k0 schedule: {format_k0_schedule(advice.schedule) or 'none'}; k0 elsewhere: {advice.base_k0}"
                 + (" (vanilla)" if advice.base_k0 == next(iter(advice.vanilla.values())).k0_by_layer[0] else ""))
    lines.append("build flags: " + " ".join(flags))
    lines.append("  " + command)
    lines += [f"note: {n}" for n in advice.notes]
    return "\n".join(lines) + "\n"


def format_additivity(rows: List[dict]) -> str:
    if not rows:
        return ""
    out = ["additivity (eval rows): sum of single-layer delta CE / measured all-layer delta CE at the same k0 "
           "(factor: what sums are scaled by, where the all-layer delta is clearly above 0)"]
    for b in sorted({r["batch"] for r in rows}):
        cells = []
        for r in (r for r in rows if r["batch"] == b):
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
            factor = f" (x{r['factor']:.2f})" if r["factor"] is not None else ""
            cells.append(f"k0={r['k0']}: {ratio}{factor}")
        out.append(f"  B={b}: " + ", ".join(cells))
    return "\n".join(out) + "\n"


def pareto_plot(advice: Advice, table: QualityTable, latency: LatencyModel, path: str, title: str = "",
                measured: Optional[Dict[int, Tuple[float, float, float, float]]] = None) -> None:
    """One panel per batch size: every k0 vector (grey), the uniform k0s (labelled), the Pareto
    front, the budget, the best single k0 and the advised operating point; `measured`: {B:
    (layer_us, delta_ce, ci_low, ci_high)} of the advised plan evaluated as built (the check)."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(advice.batches)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 4.4), squeeze=False)
    for ax, b in zip(axes[0], advice.batches):
        predictor = Predictor(table, latency, b, advice.additivity)
        pts = candidate_points(predictor)
        mixed = ~pts["uniform"]
        if mixed.any():
            ax.scatter(pts["layer_us"][mixed], pts["delta_ce"][mixed], s=6, color="0.75",
                       label="per-layer k0 vectors (added)", zorder=1)
        uniform = [predictor.uniform(k) for k in table.k0s]
        xs = [c.layer_us for c in uniform]
        ys = [c.delta_ce for c in uniform]
        err = [[c.delta_ce - c.ci_low for c in uniform], [c.ci_high - c.delta_ce for c in uniform]]
        ax.errorbar(xs, ys, yerr=err, fmt="o", ms=4, capsize=2, color="tab:blue", label="one k0 (measured)", zorder=3)
        for c in uniform:
            ax.annotate(f"{c.k0_by_layer[0]}", (c.layer_us, c.delta_ce), textcoords="offset points", xytext=(4, 3),
                        fontsize=7, color="tab:blue")
        fx, fy = pareto_front(pts["layer_us"], pts["delta_ce"])
        ax.step(fx, fy, where="post", color="tab:green", lw=1.0, label="Pareto front", zorder=2)
        ax.axhline(advice.budgets[b], color="tab:red", ls="--", lw=1.0, label=f"budget {advice.budgets[b]:g}")
        best, chosen = advice.best_uniform[b], advice.choices[b]
        ax.plot([best.layer_us], [best.delta_ce], "s", mfc="none", mec="tab:blue", ms=11,
                label=f"best single k0 ({best.label()})", zorder=4)
        ax.plot([chosen.layer_us], [chosen.delta_ce], "*", color="tab:red", ms=14,
                label=f"advised ({chosen.label()})", zorder=5)
        if measured and b in measured:
            us, dce, lo, hi = measured[b]
            ax.errorbar([us], [dce], yerr=[[dce - lo], [hi - dce]], fmt="D", mfc="none", mec="tab:red",
                        ecolor="tab:red", ms=7, capsize=3, label="advised, measured (check)", zorder=6)
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_xlabel("predicted MoE layer latency (us)")
        ax.set_ylabel("delta cross-entropy vs vanilla (nats/token)")
        ax.set_title(f"B = {b}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("\n".join(textwrap.wrap(title or latency.description, width=int(75 * n))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto_front(xs: np.ndarray, ys: np.ndarray):
    """Points not beaten on both axes (lower latency and lower delta CE), by latency."""
    order = np.lexsort((ys, xs))
    fx, fy, best = [], [], np.inf
    for i in order:
        if ys[i] < best:
            fx.append(float(xs[i]))
            fy.append(float(ys[i]))
            best = ys[i]
    return fx, fy
