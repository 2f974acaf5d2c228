#!/usr/bin/env python3
"""Per-call latency of MoE routing in CUDA-graph replay: the fused OEA kernel next to torch.

Variants, timed side by side in one run on the same inputs (skewed bf16 router logits, E=128,
k=8 by default), each captured as `--calls` back-to-back calls in one graph and reported as
the median of `--repeats` replays divided by the calls:
  torch_vanilla     softmax(fp32) -> topk -> renormalize, Qwen3's routing in plain torch
  reference_k0=K    oea_trt.routing.reference.oea_route (the torch reference OEA) on the GPU
  kernel_k0=K       the fused CUDA kernel (torch.ops.oea_trt.route), k0=8 is vanilla top-8
  graph_node_floor  one tiny elementwise kernel per call: the cost of any node in a graph
Before timing, the kernel is checked against the reference on the benchmark inputs and on
fresh random ones. Writes routing.json, routing.md and routing.png to --out.

    python3 benchmarks/bench_routing.py --out benchmarks/results
    python3 benchmarks/bench_routing.py --quick --out /tmp/routing
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

import torch  # noqa: E402

from oea_trt.bench.env import environment  # noqa: E402
from oea_trt.bench.report import ensure_dir, fmt, markdown_table, pyplot, save_figure, write_json  # noqa: E402
from oea_trt.bench.timing import capture_graph, time_graph  # noqa: E402
from oea_trt.routing.config import OEAConfig  # noqa: E402
from oea_trt.routing.reference import oea_route  # noqa: E402
from oea_trt.routing.synthetic import skewed_logits, uniform_logits  # noqa: E402

TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
COPIES = 4  # rotated input copies, so consecutive calls never see the same logits
#: The issue's targets on the H200 (E=128, k=8, bf16): kernel us per call by T.
TARGET_US = [(64, 4.0), (256, 10.0)]


class UsageError(Exception):
    """Bad command-line input: printed as one line, exit code 2."""


def log(msg: str) -> None:
    print(f"[bench_routing {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", default="benchmarks/results", help="directory for routing.json/.md/.png (default %(default)s)")
    p.add_argument("--tokens", type=int, nargs="+", default=list(TOKENS), help="batch sizes T (tokens per call)")
    p.add_argument("--experts", type=int, default=128, help="E, experts per layer (default %(default)s)")
    p.add_argument("--top-k", type=int, default=8, help="k, the model's experts per token (default %(default)s)")
    p.add_argument("--k0", type=int, nargs="+", default=[3, 8], help="OEA baselines to time (default 3 8)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="router logit dtype (default %(default)s)")
    p.add_argument("--calls", type=int, default=100, help="routing calls captured per graph (default %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="timed replays; the median is reported (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="fewer calls and repeats (a smoke run, not for the record)")
    p.add_argument("--baseline", metavar="ROUTING_JSON",
                   help="an earlier run's routing.json: its kernel figures become 'before' columns for comparison")
    args = p.parse_args(argv)
    if not all(t >= 1 for t in args.tokens):
        raise UsageError(f"--tokens must be positive integers, got {args.tokens}")
    if not 1 <= args.top_k <= args.experts <= 4096:
        raise UsageError(f"need 1 <= --top-k <= --experts <= 4096, got top-k={args.top_k} experts={args.experts}")
    if not all(1 <= k0 <= args.top_k for k0 in args.k0):
        raise UsageError(f"--k0 values must be in [1, top_k={args.top_k}], got {args.k0}")
    if args.calls < 1 or args.repeats < 5:
        raise UsageError(f"need --calls >= 1 and --repeats >= 5 (median of at least 5), got {args.calls}, {args.repeats}")
    if args.quick:
        args.calls, args.repeats = min(args.calls, 20), 5
    return args


def torch_vanilla(logits: torch.Tensor, top_k: int):
    """Qwen3's routing as torch runs it: fp32 softmax, top-k, renormalize (norm_topk_prob)."""
    scores = torch.softmax(logits.float(), dim=-1)
    weights, ids = torch.topk(scores, top_k, dim=-1)
    return ids.to(torch.int32), weights / weights.sum(dim=-1, keepdim=True)


def check_kernel(route_kernel, copies, configs, fresh_seeds=3) -> list:
    """Kernel vs reference on the benchmark inputs and fresh uniform logits; returns problems."""
    problems = []
    T, E = copies[0].shape
    inputs = list(copies) + [uniform_logits(T, E, seed=1000 + s, dtype=copies[0].dtype, device="cuda")
                             for s in range(fresh_seeds)]
    for cfg in configs:
        for i, x in enumerate(inputs):
            got, want = route_kernel(x, cfg), oea_route(x, cfg)
            where = f"T={T} k0={cfg.k0} input={i}"
            if not torch.equal(got.expert_ids, want.expert_ids):
                problems.append(f"{where}: expert ids differ from the reference")
            elif not torch.allclose(got.weights, want.weights, rtol=1e-6, atol=1e-38):
                problems.append(f"{where}: weights differ from the reference beyond 1e-6 relative")
            elif not torch.equal(got.active_mask, want.active_mask) or int(got.num_active) != int(want.num_active):
                problems.append(f"{where}: active set differs from the reference")
    return problems


def time_calls(fn, copies, calls: int, repeats: int):
    """Per-call microseconds of `calls` calls of fn in one graph (inputs rotate over copies)."""
    def work():
        for i in range(calls):
            fn(copies[i % len(copies)])

    graph = capture_graph(work)
    try:
        return time_graph(graph, calls=calls, repeats=repeats, replays=3)
    finally:
        del graph


def load_baseline(path) -> dict:
    """{"source", "env", "rows": kernel rows} of an earlier routing.json, for the 'before' columns."""
    import json

    try:
        with open(path) as f:
            data = json.load(f)
        rows = [r for r in data["rows"] if r["variant"] == "kernel"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--baseline {path}: not a readable routing.json ({exc})") from None
    commit = str(data.get("env", {}).get("git", {}).get("commit"))[:12]
    return {"source": str(path), "commit": commit, "rows": rows}


def run(args) -> dict:
    baseline = load_baseline(args.baseline) if args.baseline else None
    if not torch.cuda.is_available():
        raise UsageError("needs a CUDA GPU (this benchmark times CUDA-graph replay)")
    from oea_trt.routing.kernel import load_library, route_kernel

    library = load_library()
    dtype = DTYPES[args.dtype]
    E, k = args.experts, args.top_k
    configs = {k0: OEAConfig(num_experts=E, top_k=k, k0=k0) for k0 in args.k0}
    env = environment()
    env["kernel_library"] = str(library.path)
    try:
        import cuda.bindings

        env["cuda_python"] = cuda.bindings.__version__
    except ImportError:
        env["cuda_python"] = None
    log(f"{env.get('gpu', {}).get('name')}: E={E} k={k} {args.dtype}, T={args.tokens}, k0={args.k0}, "
        f"{args.calls} calls/graph, median of {args.repeats}")

    rows, problems, active = [], [], {}
    floor_input = [torch.zeros(1, device="cuda") for _ in range(COPIES)]
    for T in args.tokens:
        copies = [skewed_logits(T, E, seed=100 * T + c, dtype=dtype, device="cuda") for c in range(COPIES)]
        found = check_kernel(route_kernel, copies, configs.values())
        problems += found
        if found:
            log(f"T={T}: kernel DISAGREES with the reference ({found[0]}); its timings are not reported")
        variants = [("torch_vanilla", None, lambda x: torch_vanilla(x, k))]
        for k0, cfg in configs.items():
            variants.append(("reference", k0, lambda x, cfg=cfg: oea_route(x, cfg)))
            if not found:
                variants.append(("kernel", k0, lambda x, cfg=cfg: route_kernel(x, cfg)))
        if not found:  # the same variant twice: the spread between the two is this run's noise
            variants.append(("kernel_again", args.k0[0], lambda x, cfg=configs[args.k0[0]]: route_kernel(x, cfg)))
        variants.append(("graph_node_floor", None, lambda x: x.add_(1.0)))
        for name, k0, fn in variants:
            inputs = floor_input if name == "graph_node_floor" else copies
            timing = time_calls(fn, inputs, args.calls, args.repeats)
            rows.append({"tokens": T, "variant": name, "k0": k0, **timing.to_dict()})
            log(f"T={T:5d} {name:17s} k0={k0 if k0 else '-':2} {timing.median_us:9.2f} us/call "
                f"(spread {100 * timing.spread:.1f}%)")
        for k0, cfg in configs.items():
            active[f"{T}/{k0}"] = float(sum(int(oea_route(x, cfg).num_active) for x in copies) / len(copies))
    return {"env": env, "setup": {"experts": E, "top_k": k, "dtype": args.dtype, "k0": args.k0,
                                  "calls_per_graph": args.calls, "repeats": args.repeats, "input": "skewed",
                                  "copies": COPIES},
            "rows": rows, "mean_active_experts": active, "correctness_problems": problems,
            "targets": targets(rows, args.k0), "baseline": baseline}


def _median(rows, T, variant, k0=None):
    for r in rows:
        if r["tokens"] == T and r["variant"] == variant and (k0 is None or r["k0"] == k0):
            return r["median_us"]
    return None


def targets(rows, k0s) -> list:
    """The issue's done-when lines, each with the measured figure and pass/fail."""
    out = []
    tokens = sorted({r["tokens"] for r in rows})
    for k0 in k0s:
        for limit_t, limit_us in TARGET_US:
            worst = max((_median(rows, T, "kernel", k0) or float("inf") for T in tokens if T <= limit_t), default=None)
            if worst is not None and any(T <= limit_t for T in tokens):
                out.append({"what": f"kernel k0={k0}: <= {limit_us} us per call for T <= {limit_t}",
                            "measured_us": worst, "pass": worst <= limit_us})
        slower = [T for T in tokens if T <= 256 and not (
            (_median(rows, T, "kernel", k0) or float("inf")) < (_median(rows, T, "torch_vanilla") or 0.0))]
        out.append({"what": f"kernel k0={k0}: faster than torch vanilla routing at every T <= 256",
                    "measured_us": None, "pass": not slower, "slower_at": slower})
    return out


def render_markdown(results: dict) -> str:
    rows, setup, env = results["rows"], results["setup"], results["env"]
    k0s = setup["k0"]
    tokens = sorted({r["tokens"] for r in rows})
    header = ["T", "torch vanilla"] + [f"reference k0={k}" for k in k0s] + [f"kernel k0={k}" for k in k0s] + \
             [f"vanilla / kernel k0={k}" for k in k0s] + ["graph node floor"]
    baseline = results.get("baseline")
    if baseline:
        header += [f"before: kernel k0={k}" for k in k0s]
    table = []
    for T in tokens:
        vanilla = _median(rows, T, "torch_vanilla")
        kernel = [_median(rows, T, "kernel", k) for k in k0s]
        table.append([T, fmt(vanilla, 2)] + [fmt(_median(rows, T, "reference", k), 2) for k in k0s] +
                     [fmt(v, 2) for v in kernel] +
                     [fmt(vanilla / v, 1) + "x" if vanilla and v else "-" for v in kernel] +
                     [fmt(_median(rows, T, "graph_node_floor"), 2)] +
                     ([fmt(_median(baseline["rows"], T, "kernel", k), 2) for k in k0s] if baseline else []))
    gpu = env.get("gpu", {}).get("name", "?")
    noise = [abs(_median(rows, T, "kernel_again") - _median(rows, T, "kernel", k0s[0])) / _median(rows, T, "kernel", k0s[0])
             for T in tokens if _median(rows, T, "kernel_again") and _median(rows, T, "kernel", k0s[0])]
    lines = [
        f"# Routing latency per call, CUDA-graph replay ({gpu})", "",
        f"E={setup['experts']}, k={setup['top_k']}, {setup['dtype']} skewed router logits, all decode tokens; "
        f"{setup['calls_per_graph']} calls per graph, median of {setup['repeats']} replays; microseconds per call. "
        f"torch {env.get('torch')}, CUDA {env.get('torch_cuda')}, driver {env.get('driver')}, "
        f"commit {str(env.get('git', {}).get('commit'))[:12]}.", "",
        markdown_table(header, table), "",
        f"Noise: the kernel (k0={k0s[0]}) timed twice in the same run differs by at most "
        f"{fmt(100 * max(noise), 1) if noise else '-'}%."
        + (f" 'before' columns: the kernel at commit {baseline['commit']} ({baseline['source']}), an earlier run."
           if baseline else ""), "",
        "## Targets (issue: fused routing kernel)", "",
    ]
    for t in results["targets"]:
        measured = f" (measured {fmt(t['measured_us'], 2)} us)" if t.get("measured_us") is not None else ""
        extra = f", slower at T={t['slower_at']}" if t.get("slower_at") else ""
        lines.append(f"- {'PASS' if t['pass'] else 'FAIL'}: {t['what']}{measured}{extra}")
    if results["correctness_problems"]:
        lines += ["", "## Correctness problems (kernel vs reference)", ""] + [f"- {p}" for p in results["correctness_problems"]]
    else:
        lines += ["", "Correctness: the kernel matched the reference (ids bit-exact, weights within 1e-6 relative, "
                      "active set) on every benchmark input and on fresh random logits before timing."]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    plt = pyplot()
    rows = results["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    series = [("torch_vanilla", None, "torch vanilla (softmax, topk, renorm)", "-o")]
    series += [("reference", k, f"torch reference OEA k0={k}", "--s") for k in results["setup"]["k0"]]
    series += [("kernel", k, f"fused kernel k0={k}", "-^") for k in results["setup"]["k0"]]
    series += [("graph_node_floor", None, "graph node floor", ":")]
    for variant, k0, label, style in series:
        pts = sorted((r["tokens"], r["median_us"]) for r in rows if r["variant"] == variant and (k0 is None or r["k0"] == k0))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, markersize=4)
    for limit_t, limit_us in TARGET_US:
        ax.plot([1, limit_t], [limit_us, limit_us], color="grey", linewidth=0.8)
        ax.annotate(f"target {limit_us:g} us", (1, limit_us), textcoords="offset points", xytext=(2, 3), fontsize=7)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("tokens per call (T)")
    ax.set_ylabel("us per call (CUDA-graph replay)")
    ax.set_title(f"Routing latency, E={results['setup']['experts']} k={results['setup']['top_k']} "
                 f"{results['setup']['dtype']} ({results['env'].get('gpu', {}).get('name', '?')})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
        results = run(args)
    except UsageError as exc:
        print(f"bench_routing: error: {exc}", file=sys.stderr)
        return 2
    out = ensure_dir(args.out)
    write_json(os.path.join(out, "routing.json"), results)
    markdown = render_markdown(results)
    with open(os.path.join(out, "routing.md"), "w") as f:
        f.write(markdown)
    plot(results, os.path.join(out, "routing.png"))
    print(markdown)
    log(f"wrote {out}/routing.json, routing.md, routing.png")
    return 1 if results["correctness_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
