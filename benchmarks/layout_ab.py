"""Before/after timing of a change of the package (lab code, not part of oea_trt).

Times routing+MoE of the Qwen3-30B-A3B layer at B=16 on skewed routing, vanilla and OEA k0=3,
with each tree's PUBLIC API only (route(..., signal=True) then moe_forward), in CUDA-graph
replay over rotated weight copies, alternating the trees in fresh processes (A B A B ...):

    python benchmarks/layout_ab.py --tree before=.old --tree after=. --rounds 2 --json out.json

Each tree runs in its own subprocess with PYTHONPATH=<tree>, so the two packages never meet in
one interpreter. The script needs only what both trees export: oea_trt.route, oea_trt.OEAConfig,
oea_trt.moe.{ExpertWeights, moe_forward}, and the skewed logit generator and preset (whose module
moved: both names are tried).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r'''
import json, statistics, sys, torch, oea_trt
from oea_trt.moe import ExpertWeights, moe_forward
try:
    from oea_trt.moe.shapes import get_preset
except ImportError:
    from oea_trt.presets import get_preset
try:
    from oea_trt.routing.synthetic import SkewedRouter
except ImportError:
    from oea_trt.synthetic import SkewedRouter
args = json.loads(sys.argv[1])
shape = get_preset("qwen3-30b-a3b")
torch.manual_seed(0)
copies, batch = args["copies"], args["batch"]
weights = [ExpertWeights.random(shape, device="cuda", seed=c) for c in range(copies)]
router = SkewedRouter(shape.num_experts, seed=0)
logits = [router.logits(batch, seed=1000 * batch + c).cuda() for c in range(copies)]
g = torch.Generator(device="cuda").manual_seed(7)
xs = [torch.randn((batch, shape.hidden_size), generator=g, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
out = {"tree": args["tree"], "file": oea_trt.__file__, "gpu": torch.cuda.get_device_name(), "rows": {}}
for name, k0 in (("vanilla", shape.top_k), ("k0=3", 3)):
    config = oea_trt.OEAConfig(shape.num_experts, shape.top_k, k0)
    def work():
        for c in range(copies):
            moe_forward(xs[c], weights[c], oea_trt.route(logits[c], config, signal=True))
    # correctness first: the layer against the fp32 loop on the first copy
    routing = oea_trt.route(logits[0], config)
    ref = moe_forward(xs[0], weights[0], routing, impl="loop").float()
    got = moe_forward(xs[0], weights[0], oea_trt.route(logits[0], config, signal=True)).float()
    err = float((got - ref).abs().max() / ref.abs().max())
    assert err < 2e-2, f"{name}: max error {err:.3g} of max|ref|"
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            work()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    samples = []
    for _ in range(args["repeats"]):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(args["replays"]):
            graph.replay()
        b.record()
        b.synchronize()
        samples.append(a.elapsed_time(b) * 1e3 / (args["replays"] * copies))
    T = sum(int(oea_trt.route(lg, config).num_active) for lg in logits) / copies
    out["rows"][name] = {"median_us": statistics.median(samples), "samples_us": samples, "T": T, "max_err": err}
    del graph
print("RESULT " + json.dumps(out))
'''


def run_tree(label: str, tree: str, args) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTHONUNBUFFERED="1")
    payload = json.dumps({"tree": label, "copies": args.copies, "batch": args.batch, "repeats": args.repeats,
                          "replays": args.replays})
    done = subprocess.run([sys.executable, "-c", WORKER, payload], env=env, capture_output=True, text=True,
                          cwd="/tmp", timeout=args.timeout)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{label} ({tree}) failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a source tree (repeat)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds over the trees")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--copies", type=int, default=8, help="rotated weight copies (1.2 GB each for the 30B layer)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--replays", type=int, default=20)
    p.add_argument("--timeout", type=int, default=400)
    p.add_argument("--json", help="write all results here")
    args = p.parse_args()
    trees = [t.split("=", 1) for t in args.tree]
    runs = []
    for r in range(args.rounds):
        for label, path in trees:
            res = run_tree(label, path, args)
            runs.append(res)
            rows = res["rows"]
            print(f"round {r} {label:8s} ({res['gpu']}): vanilla {rows['vanilla']['median_us']:7.1f} us, "
                  f"k0=3 {rows['k0=3']['median_us']:7.1f} us (T {rows['vanilla']['T']:.1f} -> {rows['k0=3']['T']:.1f}), "
                  f"ratio {rows['k0=3']['median_us'] / rows['vanilla']['median_us']:.3f}   [{res['file']}]", flush=True)
    summary = {}
    for label, _ in trees:
        mine = [r for r in runs if r["tree"] == label]
        summary[label] = {v: statistics.median(m["rows"][v]["median_us"] for m in mine) for v in ("vanilla", "k0=3")}
        summary[label]["ratio"] = summary[label]["k0=3"] / summary[label]["vanilla"]
        print(f"{label:8s} median of rounds: vanilla {summary[label]['vanilla']:.1f} us, k0=3 {summary[label]['k0=3']:.1f} us, "
              f"ratio {summary[label]['ratio']:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": runs, "summary": summary, "args": vars(args)}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
