"""Turn MoE benchmark results (bench/moe.py) into the markdown report, the plots and a summary.

A pure function of the results dict, so it is tested on the CPU and can re-render a results
JSON from the GPU box: `oea-trt bench moe --render results.json`.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from oea_trt.bench.report import fmt, linear_fit, markdown_table, pyplot, save_figure, write_json
from oea_trt.bench.report_floor import floor_section, plot_x_floor
from oea_trt.bench.routing_inputs import MODES, TRACE
from oea_trt.moe.impls import IMPLS, OURS

HEADLINE = ("qwen3-30b-a3b", "skewed", 16)  # the paper's setting: Qwen3-30B-A3B, max batch 16
BANDWIDTH_TARGET = 0.85  # of the measured copy bandwidth, 30B layer, B=16, uniform, vanilla
RATIO_TARGET = 0.55  # OEA k0=3 / vanilla, routing+MoE, skewed, 30B, B=16


def label(results, impl: str) -> str:
    """The report's name for an implementation (oea_trt.moe.IMPLS), with the kernel launches
    per call the run recorded for ours (bench/moe.py, info["launches"]: 1 on the one-launch
    path, 3 on the three-launch path, per the configs of the batches timed)."""
    base = IMPLS[impl].label if impl in IMPLS else impl
    counts = sorted({n for info in results.get("presets", {}).values() if isinstance(info, dict)
                     for n in info.get("launches", {}).get(impl, [])})
    if not counts:
        return base
    return f"{base}, {' or '.join(str(n) for n in counts)} launch{'' if counts == [1] else 'es'}"


def ours(results) -> List[str]:
    """Our kernels that have timed rows, in IMPLS order (the first of ours where none has)."""
    present = {r.get("impl") for r in results["rows"]}
    return [impl for impl in OURS if impl in present] or [OURS[0]]


def best_impl(results) -> str:
    """The kernel of ours with the lower routing+MoE time at the headline's OEA k0=3 row (only
    kernels that passed the correctness check have rows), or at the same row of the run's other
    routings where the headline's was not timed (e.g. a run of recorded routing only); the first
    present one otherwise."""
    preset, mode, batch = HEADLINE
    for m in dict.fromkeys([mode, *results.get("spec", {}).get("modes", [])]):
        timed = [(r["total_us"], impl) for impl in ours(results)
                 for r in _rows(results, impl=impl, preset=preset, mode=m, batch=batch, variant="k0=3")
                 if r.get("total_us")]
        if timed:
            return min(timed)[1]
    return ours(results)[0]


def _pair(results, key, digits=1, **match) -> str:
    """'a / b': `key` of each of our kernels' row matching `match` (IMPLS order)."""
    cells = []
    for impl in ours(results):
        r = _one(results, impl=impl, **match)
        cells.append(fmt(r.get(key), digits) if r else "-")
    return " / ".join(cells)


def _rows(results, impl=OURS[0], **match) -> List[dict]:
    return [r for r in results["rows"] if r.get("impl") == impl and all(r.get(k) == v for k, v in match.items())]


def _one(results, **match) -> Optional[dict]:
    rows = _rows(results, **match)
    return rows[0] if rows else None


def fits(results, impl: Optional[str] = None) -> Dict[str, dict]:
    """Per preset: least-squares latency = us_per_expert * T + fixed_us over every timed row of
    one kernel of ours (default: best_impl; all modes, batches and variants), for routing+MoE
    and for MoE alone."""
    impl = impl or best_impl(results)
    out = {}
    for preset in results["presets"]:
        rows = [r for r in _rows(results, impl=impl, preset=preset) if r.get("moe_us") and r["variant"] != "vanilla#2"]
        if len(rows) < 3:
            continue
        entry = {"points": len(rows)}
        for key in ("total", "moe"):
            pts = [(r["T"], r[f"{key}_us"]) for r in rows if r.get(f"{key}_us") is not None]
            slope, intercept, r2 = linear_fit([p[0] for p in pts], [p[1] for p in pts])
            entry[key] = {"us_per_expert": slope, "fixed_us": intercept, "r2": r2}
        out[preset] = entry
    return out


def targets(results) -> List[dict]:
    """The issue's done-when checks, each {name, value, met, impl} (met None: not measured),
    each judged on the better of our kernels for that check, with the other's figure alongside."""
    per = {impl: _targets_for(results, impl) for impl in ours(results)}
    checks = []
    for i, first in enumerate(next(iter(per.values()))):
        options = sorted(((c[i]["score"], impl) for impl, c in per.items() if c[i]["score"] is not None),
                         reverse=True)
        impl = options[0][1] if options else next(iter(per))
        check = dict(per[impl][i], impl=impl)
        others = [f"{label(results, o)}: {per[o][i]['value']}" for o in per
                  if o != impl and per[o][i]["score"] is not None]
        if len(per) > 1 and check["score"] is not None:
            check["value"] = f"{label(results, impl)}: {check['value']}" + "".join(f"; {o}" for o in others)
        checks.append(check)
    return checks


def _targets_for(results, impl: str) -> List[dict]:
    """targets() for one kernel; score: higher is better (None: not measured)."""
    bw = results["bandwidth"]
    checks = []
    row = _one(results, impl=impl, preset="qwen3-30b-a3b", mode="uniform", batch=16, variant="vanilla")
    pct = row["moe_tb_s"] / bw["copy_tb_s"] if row and row.get("moe_tb_s") else None
    checks.append({
        "name": "our kernel >= 85% of copy bandwidth (30B, B=16, uniform, vanilla, MoE only)",
        "value": (f"{row['moe_tb_s']:.2f} TB/s = {100 * pct:.1f}% of copy, {100 * row['moe_pct_read']:.1f}% of read"
                  if pct else "not measured"),
        "met": None if pct is None else pct >= BANDWIDTH_TARGET, "score": pct})

    worst = None
    for theirs in _rows(results, impl="grouped_mm", variant="vanilla"):
        mine = _one(results, impl=impl, preset=theirs["preset"], mode=theirs["mode"], batch=theirs["batch"],
                    variant="vanilla")
        if mine and mine.get("moe_us") and theirs.get("moe_us"):
            speedup = theirs["moe_us"] / mine["moe_us"]
            if worst is None or speedup < worst[0]:
                worst = (speedup, theirs["preset"], theirs["mode"], theirs["batch"])
    checks.append({
        "name": "beats torch._grouped_mm at every B (MoE only, vanilla, every preset and mode)",
        "value": (f"slowest margin {worst[0]:.2f}x ({worst[1]}, {worst[2]}, B={worst[3]})" if worst
                  else "not measured"),
        "met": None if worst is None else worst[0] > 1.0, "score": worst and worst[0]})

    preset, mode, batch = HEADLINE
    v = _one(results, impl=impl, preset=preset, mode=mode, batch=batch, variant="vanilla")
    o = _one(results, impl=impl, preset=preset, mode=mode, batch=batch, variant="k0=3")
    ratio = o["total_us"] / v["total_us"] if v and o and v.get("total_us") and o.get("total_us") else None
    checks.append({
        "name": "skewed, 30B, B=16: OEA k0=3 / vanilla latency <= 0.55 (routing+MoE)",
        "value": (f"{ratio:.3f} (T {o['T']:.1f} vs {v['T']:.1f}; {o['total_us']:.1f} vs {v['total_us']:.1f} us; "
                  f"MoE only {o['moe_us'] / v['moe_us']:.3f}; routing: {results['routing']['impl']})"
                  if ratio else "not measured"),
        "met": None if ratio is None else ratio <= RATIO_TARGET, "score": None if ratio is None else -ratio})

    f = fits(results, impl).get("qwen3-30b-a3b")
    checks.append({
        "name": "latency near-linear in T (30B, routing+MoE, all rows)",
        "value": (f"{f['total']['us_per_expert']:.2f} us/expert + {f['total']['fixed_us']:.1f} us fixed, "
                  f"R^2 = {f['total']['r2']:.4f}" if f else "not measured"),
        "met": None if not f else f["total"]["r2"] >= 0.95, "score": f and f["total"]["r2"]})
    return checks


def noise(results) -> Optional[float]:
    """Largest relative difference between the two timings of vanilla (same graph, re-captured)."""
    diffs = [abs(r["ratio_total"] - 1) for impl in ours(results) for r in _rows(results, impl=impl, variant="vanilla#2")
             if r.get("ratio_total")]
    return max(diffs) if diffs else None


def _variants(results, preset) -> List[str]:
    seen = []
    for r in _rows(results, impl=best_impl(results), preset=preset):
        if r["variant"] not in seen and r["variant"] != "vanilla#2":
            seen.append(r["variant"])
    return seen


def render_markdown(results) -> str:
    env, bw = results["env"], results["bandwidth"]
    gpu = env.get("gpu", {}) or {}
    lines = [f"# MoE decode layer on the {gpu.get('name', 'GPU')}: OEA vs vanilla, our kernel vs torch._grouped_mm", ""]
    l2_mib = fmt((gpu.get("l2_bytes") or 0) / 2**20, 0)
    commit = str((env.get("git") or {}).get("commit"))[:12]
    lines.append(f"GPU {gpu.get('name')} ({gpu.get('sm_count')} SMs, L2 {l2_mib} MiB), driver {env.get('driver')}, "
                 f"torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), triton {env.get('triton')}, "
                 f"commit {commit}, {env.get('time_utc')}.")
    lines.append(f"Measured in the same run: copy {bw['copy_tb_s']:.2f} TB/s (read+write of "
                 f"{bw['nbytes'] / 2**30:.0f} GiB bf16), read {bw['read_tb_s']:.2f} TB/s. Routing inside the graph: "
                 f"{results['routing']['impl']} ({results['routing']['note']}).")
    n = noise(results)
    lines.append("Every figure: CUDA-graph replay, median of "
                 f"{results['spec']['repeats']} repeats, weights rotated over several copies so no call finds "
                 "the previous call's experts in L2; T = distinct active experts, mean over the routing draws"
                 + (f"; vanilla timed twice per row differs by at most {100 * n:.1f}%." if n is not None else "."))
    lines += ["", "## Targets", ""]
    lines.append(markdown_table(["target", "measured", "met"],
                                [[c["name"], c["value"], {True: "yes", False: "NO", None: "-"}[c["met"]]]
                                 for c in targets(results)], align="llc"))

    impls = ours(results)
    both = " / ".join(label(results, i) for i in impls)
    best = best_impl(results)
    lines.append("")
    lines.append(f"Our kernels: {', '.join(f'{label(results, i)} (impl {i!r})' for i in impls)}; cells 'a / b' give "
                 f"{both} in that order. Targets, fits and plots use the better one for each check "
                 f"(headline: {label(results, best)}).")

    preset, mode, batch = HEADLINE
    headline = _ratio_section(results, best, both, preset, mode, batch, f"Headline: {preset} layer, {mode} routing")
    if headline:
        lines += headline + ["", "Paper, Qwen3-30B-A3B on 1xH100 in SGLang (real traffic, max batch 16): k0=3 -> "
                                 "0.61 of vanilla, T 25.1 vs 48.8."]
    trace = results["spec"].get("trace_path")
    lines += _ratio_section(results, best, both, preset, TRACE, batch,
                            f"Recorded routing: {preset} layer fed the router logits of "
                            f"{os.path.basename(trace) if trace else 'a trace'}")

    table = []
    for impl in impls:
        for p, f in fits(results, impl).items():
            eb = results["presets"][p]["expert_bytes"]
            table.append([p, label(results, impl), f["points"], fmt(f["total"]["us_per_expert"], 2),
                          fmt(f["total"]["fixed_us"]), fmt(f["total"]["r2"], 4), fmt(f["moe"]["us_per_expert"], 2),
                          fmt(f["moe"]["fixed_us"]), fmt(f["moe"]["r2"], 4),
                          fmt(eb / (bw["copy_tb_s"] * 1e12) * 1e6, 2)])
    if table:
        lines += ["", "## Latency vs distinct experts T (least squares over all rows of each kernel)", ""]
        lines.append(markdown_table(["preset", "kernel", "rows", "us/expert", "fixed us", "R^2", "MoE us/expert",
                                     "MoE fixed us", "MoE R^2", "us/expert at copy BW"], table, align="llrrrrrrrr"))

    nodes = [(p, impl, info["graph_nodes"][impl]) for p, info in results["presets"].items()
             for impl in impls if impl in (info.get("graph_nodes") or {})]
    if nodes:
        lines += ["", "## CUDA-graph nodes per call (skewed, B=16, k0=3)", ""]
        lines.append(markdown_table(["preset", "kernel", "routing+MoE", "MoE only"],
                                    [[p, label(results, impl), _nodes(n["routing+moe"]), _nodes(n["moe"])]
                                     for p, impl, n in nodes], align="llll"))

    base = _rows(results, impl="grouped_mm")
    if base:
        lines += ["", f"## Our kernels ({both}) vs torch._grouped_mm (MoE only, same routing, same weights)", ""]
        table = []
        for theirs in base:
            match = dict(preset=theirs["preset"], mode=theirs["mode"], batch=theirs["batch"], variant=theirs["variant"])
            mine = [r for impl in impls for r in _rows(results, impl=impl, **match) if r.get("moe_us")]
            loop = _one(results, impl="loop", **match)
            if not mine:
                continue
            fastest = min(r["moe_us"] for r in mine)
            table.append([theirs["preset"], theirs["mode"], theirs["batch"], theirs["variant"], fmt(mine[0]["T"]),
                          _pair(results, "moe_us", **match), fmt(theirs["moe_us"]), fmt(theirs["moe_us"] / fastest, 2),
                          fmt(loop["moe_us"]) if loop else "-"])
        lines.append(markdown_table(["preset", "routing", "B", "variant", "T", "ours us", "grouped_mm us",
                                     "speedup (faster of ours)", "loop us (eager)"], table, align="llrlrrrrr"))

    for p, info in results["presets"].items():
        if "error" in info:
            lines += ["", f"## {p}: FAILED", "", f"`{info['error']}`"]
            continue
        if isinstance(info.get("skipped"), str):
            lines += ["", f"## {p}: not run ({info['skipped']})"]
            continue
        variants = _variants(results, p)
        for m in results["spec"]["modes"]:
            rows = _rows(results, impl=best, preset=p, mode=m)
            if not rows:
                continue
            lines += ["", f"## {p}, {m} routing: routing+MoE us, {both} (T)", ""]
            table = []
            for b in sorted({r["batch"] for r in rows}):
                cells = []
                for v in variants:
                    r = _one(results, impl=best, preset=p, mode=m, batch=b, variant=v)
                    cells.append(f"{_pair(results, 'total_us', preset=p, mode=m, batch=b, variant=v)} ({fmt(r['T'])})"
                                 if r else "-")
                table.append([b] + cells)
            lines += [markdown_table(["B"] + variants, table)] + floor_section(results, best, p, m, variants)
        if info.get("skipped"):
            lines += ["", f"Time budget reached: {p} skipped {', '.join(info['skipped'])}."]
    errors = [r for r in results["rows"] if r.get("impl") == "error"]
    if errors:
        lines += ["", "## Rows that failed", ""]
        lines += [f"- {r['preset']} {r['mode']} B={r['batch']} {r['variant']}: `{r['error']}`" for r in errors]
    return "\n".join(lines) + "\n"


def _nodes(count: dict) -> str:
    if "nodes" not in count:
        return f"n/a ({count.get('error', '?')[:60]})"
    kinds = ", ".join(f"{v} {k}" for k, v in sorted(count.get("kinds", {}).items()))
    via = " (profiler, eager)" if count.get("source") == "profiler" else ""
    return f"{count['nodes']} ({kinds}){via}"


def _ratio_section(results, best, both, preset, mode, batch, title) -> list:
    """Markdown lines: every routing variant of (preset, mode, batch) with T, latencies, floor,
    TB/s and ratio to vanilla; [] where the run has no such rows."""
    head = [r for r in _rows(results, impl=best, preset=preset, mode=mode, batch=batch) if r["variant"] != "vanilla#2"]
    if not head:
        return []
    table = []
    for r in head:
        match = dict(preset=preset, mode=mode, batch=batch, variant=r["variant"])
        table.append([r["variant"], fmt(r["T"]), _pair(results, "total_us", **match),
                      _pair(results, "moe_us", **match), fmt(r["floor_us"]), _pair(results, "moe_tb_s", 2, **match),
                      _pair(results, "ratio_total", 3, **match), _pair(results, "ratio_moe", 3, **match)])
    return ["", f"## {title}, batch {batch} ({both})", "",
            markdown_table(["routing", "T", "routing+MoE us", "MoE us", "floor us", "MoE TB/s",
                            "ratio (routing+MoE)", "ratio (MoE)"], table)]


def plot_latency_vs_t(results, path: str) -> None:
    plt = pyplot()
    best = best_impl(results)
    presets = [p for p in results["presets"] if _rows(results, impl=best, preset=p)]
    fig, axes = plt.subplots(1, max(1, len(presets)), figsize=(5.2 * max(1, len(presets)), 4.2), squeeze=False)
    fit = fits(results, best)
    copy = results["bandwidth"]["copy_tb_s"]
    for ax, p in zip(axes[0], presets):
        rows = [r for r in _rows(results, impl=best, preset=p) if r.get("total_us") and r["variant"] != "vanilla#2"]
        batches = sorted({r["batch"] for r in rows})
        cmap = plt.get_cmap("viridis")
        markers = [(m, k) for m, k in zip(MODES, "o^sDv")
                   if any(r["mode"] == m for r in rows)]
        for i, b in enumerate(batches):
            labelled = False  # one legend entry per batch, on its first routing
            for mode, marker in markers:
                pts = [r for r in rows if r["batch"] == b and r["mode"] == mode]
                if pts:
                    ax.scatter([r["T"] for r in pts], [r["total_us"] for r in pts], s=14, marker=marker,
                               color=cmap(i / max(1, len(batches) - 1)), label=None if labelled else f"B={b}")
                    labelled = True
        t_max = max(r["T"] for r in rows)
        if p in fit:
            f = fit[p]["total"]
            ax.plot([0, t_max], [f["fixed_us"], f["fixed_us"] + f["us_per_expert"] * t_max], "k-", lw=1,
                    label=f"{label(results, best)}: {f['us_per_expert']:.2f} us/expert + {f['fixed_us']:.1f} us "
                          f"(R²={f['r2']:.3f})")
        eb = results["presets"][p]["expert_bytes"]
        ax.plot([0, t_max], [0, t_max * eb / (copy * 1e12) * 1e6], "r--", lw=1, label=f"floor at {copy:.2f} TB/s")
        ax.set_title(f"{p}, {label(results, best)}\n(" + ", ".join(f"{k} {m}" for m, k in markers) + ")",
                     fontsize=10)
        ax.set_xlabel("distinct experts T")
        ax.set_ylabel("routing+MoE latency (us)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def plot_latency_vs_batch(results, path: str, mode: str = "skewed") -> None:
    plt = pyplot()
    best = best_impl(results)
    presets = [p for p in results["presets"] if _rows(results, impl=best, preset=p, mode=mode)]
    if not presets:
        return
    fig, axes = plt.subplots(1, len(presets), figsize=(5.2 * len(presets), 4.2), squeeze=False)
    for ax, p in zip(axes[0], presets):
        variants = _variants(results, p)
        cmap = plt.get_cmap("plasma")
        for i, v in enumerate(variants):
            rows = sorted(_rows(results, impl=best, preset=p, mode=mode, variant=v), key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rows], [r["total_us"] for r in rows], marker="o", ms=3,
                    color="k" if v == "vanilla" else cmap(i / max(1, len(variants))), label=v)
        theirs = sorted(_rows(results, impl="grouped_mm", preset=p, mode=mode, variant="vanilla"),
                        key=lambda r: r["batch"])
        if theirs:
            ax.plot([r["batch"] for r in theirs], [r["moe_us"] for r in theirs], "k:", label="grouped_mm vanilla (MoE)")
        ax.set_xscale("log", base=2)
        batches = sorted({r["batch"] for r in _rows(results, impl=best, preset=p, mode=mode)})
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_title(f"{p}, {mode} routing, {label(results, best)}")
        ax.set_xlabel("decode batch B (tokens)")
        ax.set_ylabel("routing+MoE latency (us)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def write_report(results, out_dir: str) -> List[str]:
    """results.json, report.md, latency_vs_T.png, latency_vs_B.png, x_floor_vs_B.png under out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    results = dict(results, fits=fits(results), fits_by_kernel={i: fits(results, i) for i in ours(results)},
                   best_kernel=best_impl(results), targets=targets(results))
    paths = [os.path.join(out_dir, name) for name in ("results.json", "report.md", "latency_vs_T.png",
                                                       "latency_vs_B.png", "x_floor_vs_B.png")]
    write_json(paths[0], results)
    with open(paths[1], "w") as f:
        f.write(render_markdown(results))
    if results["rows"]:
        plot_latency_vs_t(results, paths[2])
        plot_latency_vs_batch(results, paths[3], min(results["spec"]["modes"], key=lambda m: m != "skewed"))
        plot_x_floor(results, results["best_kernel"], paths[4])
    return [p for p in paths if os.path.exists(p)]


def summary(results) -> str:
    lines = [f"{'MET' if c['met'] else ('NOT MET' if c['met'] is False else 'n/a')}: {c['name']}: {c['value']}"
             for c in targets(results)]
    for impl in ours(results):
        for p, f in fits(results, impl).items():
            lines.append(f"fit {p} ({label(results, impl)}): {f['total']['us_per_expert']:.2f} us/expert + "
                         f"{f['total']['fixed_us']:.1f} us "
                         f"(R^2 {f['total']['r2']:.4f}); MoE only {f['moe']['us_per_expert']:.2f} + "
                         f"{f['moe']['fixed_us']:.1f} us")
    return "\n".join(lines)
