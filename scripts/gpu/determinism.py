"""Lab probe (GPU): is the decode path bit-reproducible, and where does it stop being so?

Issue 16's graph-vs-eager decode test once drifted to 0.6% of the largest logit over 32 steps
while the benchmark's one-step check saw 0.0. This probe separates the possible causes:

  fused     the fused RMSNorm / q-k-norm+RoPE kernels against ops.py: share of equal bf16
            elements and the largest difference, absolute and in units of the RoPE terms
            (|x cos| + |rot(x) sin|: a one-ulp change of a normed value before a cancelling
            sum is many ulps of the result)
  decode    per case (embedded model, 4-layer 30B-shaped skewed model) x (vanilla, k0=3): two
            graph engines and two eager engines on the same weights (each its own prefill) and
            an eager engine started from a copy of the first graph's prefilled state, tokens
            forced to the first graph's, STEPS steps; per pair the steps whose logits are not
            bit-identical, and whether the separate prefills wrote the same cache bits
  moe       routing(signal) + MoE of 4 layers back to back in one CUDA graph, replayed REPLAYS
            times on fixed inputs, a device-side count of replays whose outputs differ from the
            first; the same pairs eagerly (fresh allocations every call) REPLAYS / 10 times

    PYTHONPATH=. python3 scripts/gpu/determinism.py OUT_DIR [--steps 64] [--replays 3000]
Writes OUT_DIR/determinism.json and prints one line per finding.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from oea_trt import OEAConfig, moe_forward, route
from oea_trt.decode import QWEN3_30B_A3B, DecodeEngine, DecodeModel, Sampler, capacity_for, from_hf, fused, ops
from oea_trt.models.embedded import ROUTER_TRACES
from oea_trt.models.random_model import calibrated_routers, random_decode_weights, set_routers
from oea_trt.moe import ExpertWeights


def fused_rounding() -> dict:
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(16, 2048, generator=g, device="cuda").bfloat16()
    delta = torch.randn(16, 2048, generator=g, device="cuda").bfloat16()
    w = (1 + 0.2 * torch.randn(2048, generator=g, device="cuda")).bfloat16()
    total = x + delta
    out = fused.add_rms_norm(x, delta, w, 1e-6)
    found = {"add_rms_norm": _compare(out, ops.rms_norm(total, w, 1e-6), None)}
    qkv = torch.randn(16, 40 * 128, generator=g, device="cuda").bfloat16()
    qn, kn = (1 + 0.2 * torch.randn(2, 128, generator=g, device="cuda")).bfloat16()
    cos, sin = ops.rope_cos_sin(torch.arange(16, device="cuda") * 97, ops.inv_frequencies(128, 1e6).cuda(),
                                torch.bfloat16)
    kc = torch.zeros(16, 4, 64, 128, device="cuda", dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    q = fused.qk_norm_rope_cache(qkv, qn, kn, cos, sin, kc, vc, torch.tensor([9], device="cuda"), 32, 4, 1e-6)
    rq, rk, _ = ops.qk_norm_rope(qkv, qn, kn, cos, sin, 32, 4, 1e-6)
    qh, kh, _ = ops.split_qkv(qkv, 32, 4, 128)
    for name, got, want, head, weight in (("q", q, rq, qh, qn), ("k", kc[:, :, 9], rk, kh, kn)):
        normed = ops.rms_norm(head, weight, 1e-6).float()
        c, s = cos.float().unsqueeze(-2), sin.float().unsqueeze(-2)
        scale = (normed * c).abs() + (ops.rotate_half(normed) * s).abs()
        found[name] = _compare(got, want, scale)
    return found


def _compare(got, want, scale) -> dict:
    diff = (got.float() - want.float()).abs()
    row = {"equal_share": float((got == want).float().mean()), "max_abs_diff": float(diff.max()),
           "max_rel_diff": float((diff / want.float().abs().clamp_min(1e-30)).max())}
    if scale is not None:
        row["max_diff_over_terms"] = float((diff / scale.clamp_min(1e-30)).max())
    return row


def decode_cases(steps: int) -> list:
    rows = []
    for case, (shape, weights, ids, mask) in _models():
        for k0 in (None, 3):
            routing = None if k0 is None else OEAConfig(shape.num_experts, shape.top_k, k0)
            model = DecodeModel(shape, weights, routing)
            engines = {"graph1": DecodeEngine(model), "graph2": DecodeEngine(model),
                       "eager1": DecodeEngine(model, use_graphs=False), "eager2": DecodeEngine(model, use_graphs=False),
                       "eager_copy": DecodeEngine(model, use_graphs=False)}
            sampler = Sampler()
            capacity = capacity_for(ids.shape[1] + steps)
            states, runners = {}, {}
            for name, engine in engines.items():
                if name == "eager_copy":  # graph1's prefill, copied: the same start
                    states[name] = engine.state(ids.shape[0], capacity)
                    _copy_state(states[name], states["graph1"])
                else:
                    states[name] = engine.prefill(ids, mask, capacity, sampler).state
            prefill_same = bool(torch.equal(states["graph1"].cache.k, states["graph2"].cache.k)
                                and torch.equal(states["eager1"].cache.k, states["graph1"].cache.k))
            for name, engine in engines.items():
                runners[name] = engine.step_runner(states[name], sampler)
            differ = {pair: [] for pair in ("graph1-graph2", "eager1-eager2", "graph1-eager1", "graph1-eager_copy")}
            for step in range(steps - 1):
                for name in engines:
                    runners[name].replay()
                logits = {name: runners[name].logits.float() for name in engines}
                for pair in differ:
                    a, b = pair.split("-")
                    if not torch.equal(logits[a], logits[b]):
                        rel = float((logits[a] - logits[b]).abs().max() / logits[b].abs().max())
                        same_active = bool(torch.equal(states[a].active[step], states[b].active[step]))
                        differ[pair].append({"step": step, "rel": rel, "same_active": same_active})
                for name in engines:
                    if name != "graph1":
                        states[name].tokens.copy_(states["graph1"].tokens)
            torch.cuda.synchronize()
            row = {"case": case, "k0": k0, "steps": steps - 1, "prefill_caches_equal": prefill_same,
                   **{pair: {"differing_steps": len(v), "first": v[:4]} for pair, v in differ.items()}}
            print(json.dumps(row), flush=True)
            rows.append(row)
            del engines, states, runners, model
            torch.cuda.empty_cache()
    return rows


def _copy_state(dst, src):
    dst.cache.k.copy_(src.cache.k)
    dst.cache.v.copy_(src.cache.v)
    for name in ("tokens", "cache_index", "pad_start", "finished", "step", "generated", "active"):
        getattr(dst, name).copy_(getattr(src, name))


def _models():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    embedded = os.path.dirname(ROUTER_TRACES)
    hf = AutoModelForCausalLM.from_pretrained(embedded, dtype=torch.bfloat16).cuda().eval()
    tokenizer = AutoTokenizer.from_pretrained(embedded)
    tokenizer.padding_side = "left"
    prompts = ["def fibonacci(n):", "12 + 30 = ", "The river", '{"name": ', "MCMXCIV", "GATTACA", "SELECT *", "x = [",
               "Once upon", "import ", "(((", "3 * 7", "the cold", "<div>", "for i in", "2, 4, 8,"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    shape, weights = from_hf(hf)
    yield "embedded", (shape, weights, enc["input_ids"].cuda(), enc["attention_mask"].cuda())
    del hf, weights
    shape = QWEN3_30B_A3B.with_layers(4)
    weights = random_decode_weights(shape, device="cuda", dtype=torch.bfloat16, seed=0)
    set_routers(weights, shape, calibrated_routers(DecodeModel(shape, weights), "skewed", seed=0))
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(shape.vocab_size, (16, 24), generator=g).cuda()
    mask = torch.ones_like(ids)
    mask[3, :5] = 0
    yield "qwen30b_4_layers", (shape, weights, ids, mask)


def moe_stress(replays: int) -> list:
    E, H, I, K = 128, 2048, 768, 8
    g = torch.Generator(device="cuda").manual_seed(3)
    layers = [ExpertWeights(torch.randn(E, 2 * I, H, generator=g, device="cuda", dtype=torch.bfloat16) * H ** -0.5,
                            torch.randn(E, H, I, generator=g, device="cuda", dtype=torch.bfloat16) * I ** -0.5)
              for _ in range(4)]
    rows = []
    for T in (1, 4, 16, 64):
        for k0 in (8, 3):
            cfg = OEAConfig(E, K, k0)
            xs = [torch.randn(T, H, generator=g, device="cuda", dtype=torch.bfloat16) for _ in layers]
            lgs = [torch.randn(T, E, generator=g, device="cuda", dtype=torch.bfloat16) * 2 for _ in layers]

            def work():
                return [moe_forward(x, w, route(lg, cfg, signal=True)) for x, w, lg in zip(xs, layers, lgs)]

            first = [o.clone() for o in work()]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                work()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outs = work()
            bad = torch.zeros((), dtype=torch.int64, device="cuda")
            t0 = time.time()
            for _ in range(replays):
                graph.replay()
                bad += torch.stack([(o != f).any() for o, f in zip(outs, first)]).any()
            eager_bad = torch.zeros((), dtype=torch.int64, device="cuda")
            for _ in range(max(1, replays // 10)):
                eager_bad += torch.stack([(o != f).any() for o, f in zip(work(), first)]).any()
            torch.cuda.synchronize()
            row = {"T": T, "k0": k0, "graph_replays": replays, "graph_replays_differing": int(bad),
                   "eager_calls": max(1, replays // 10), "eager_calls_differing": int(eager_bad),
                   "seconds": round(time.time() - t0, 1)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            del graph, outs
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--replays", type=int, default=3000)
    parser.add_argument("--parts", default="fused,moe,decode")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    found = {"gpu": torch.cuda.get_device_name()}
    path = os.path.join(args.out_dir, "determinism.json")
    for part in args.parts.split(","):
        t0 = time.time()
        found[part] = {"fused": fused_rounding, "moe": lambda: moe_stress(args.replays),
                       "decode": lambda: decode_cases(args.steps)}[part]()
        print(f"== {part}: {time.time() - t0:.0f} s", json.dumps(found[part]) if part == "fused" else "", flush=True)
        with open(path, "w") as f:
            json.dump(found, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
