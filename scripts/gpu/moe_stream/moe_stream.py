#!/usr/bin/env python3
"""Lab driver for moe_stream.cu (issue 20): build it with nvcc, check it against the fp32 loop,
then time it beside the shipped Triton config (30B layer, skewed routing, vanilla and k0=3, MoE
only and routing+MoE, CUDA-graph replay over rotated weight copies, as tile_sweep.py does).
    python3 scripts/gpu/moe_stream/moe_stream.py --batch 1 2 4 8 --json out.json
"""
import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(HERE))))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

from oea_trt.bench.env import l2_bytes  # noqa: E402
from oea_trt.bench.moe_timing import layer_call, oea_config, relative_errors, time_moe, within_tolerance  # noqa: E402
from oea_trt.bench.rotation import copies_needed, copies_that_fit  # noqa: E402
from oea_trt.moe import ExpertWeights  # noqa: E402
from oea_trt.moe.reference import moe_reference  # noqa: E402
from oea_trt.moe.shapes import get_preset  # noqa: E402
from oea_trt.routing.reference import oea_route  # noqa: E402
from oea_trt.routing.synthetic import SkewedRouter  # noqa: E402
from sweep_cases import sweep_batches, time_row  # noqa: E402


def build(out_dir: str) -> ctypes.CDLL:
    lib = os.path.join(out_dir, "libmoe_stream.so")
    cmd = ["nvcc", "-O3", "-std=c++17", "-arch=sm_90a", "-Xptxas", "-v", "-shared", "-Xcompiler", "-fPIC",
           os.path.join(HERE, "moe_stream.cu"), os.path.join(HERE, "read_floor.cu"), "-o", lib]
    res = subprocess.run(cmd, capture_output=True, text=True)
    regs = [ln.strip() for ln in res.stderr.splitlines() if "registers" in ln or "spill" in ln]
    print("nvcc:", res.returncode, *regs[:2], sep="\n  ", flush=True)
    if res.returncode:
        print(res.stderr[-3000:])
        raise SystemExit(1)
    so = ctypes.CDLL(lib)
    so.oea_moe_stream_workspace_bytes.restype = ctypes.c_size_t
    so.oea_moe_stream_workspace_bytes.argtypes = [ctypes.c_int, ctypes.c_int]
    so.oea_moe_stream_launch.restype = ctypes.c_int
    so.oea_moe_stream_act_offset.restype = ctypes.c_size_t
    so.oea_moe_stream_act_offset.argtypes = [ctypes.c_int, ctypes.c_int]
    so.oea_moe_stream_launch.argtypes = [ctypes.c_void_p] * 7 + [ctypes.c_int] * 10 + [ctypes.c_void_p] * 2
    so.oea_read_experts_launch.restype = ctypes.c_int
    so.oea_read_experts_launch.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 4 + [ctypes.c_void_p] * 2
    so.oea_read_probe_launch.restype = ctypes.c_int
    so.oea_read_probe_launch.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_void_p] * 2 + \
        [ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    so.oea_read_probe_scratch_bytes.restype = ctypes.c_size_t
    return so


class ReadFloor:
    """fn(x, weights, routing): reads every active expert's bytes once and nothing else (read_floor.cu)."""

    def __init__(self, so, ctas_per_sm: int = 4):
        self.so = so
        self.grid = ctas_per_sm * torch.cuda.get_device_properties(0).multi_processor_count
        self.sink = torch.zeros(1, dtype=torch.int32, device="cuda")

    def __enter__(self):  # what holds while the reader is timed (ReadProbe: a set-aside)
        return self

    def __exit__(self, *exc):
        return None

    def __call__(self, x, weights, routing):
        E, two_i, H = weights.w13.shape
        mask = routing.active_mask.contiguous()
        rc = self.so.oea_read_experts_launch(weights.w13.data_ptr(), weights.w2.data_ptr(), mask.data_ptr(), E, H,
                                             two_i // 2, self.grid, self.sink.data_ptr(),
                                             torch.cuda.current_stream().cuda_stream)
        if rc:
            raise RuntimeError(f"oea_read_experts_launch returned {rc}")
        return x


READ_PROBES = {1: "read: prologue", 2: "read: items", 3: "read: items+hand-off", 4: "read: static items",
               5: "read: hand-off, w2 in L2", 6: "read: hand-off, w2 L2 last", 7: "read: hand-off, plain loads",
               8: "read: hand-off, bulk copies", 9: "read: hand-off, stores",
               10: "read: hand-off, L2 evict_first hint", 11: "read: hand-off, bulk copies evict_first",
               12: "read: hand-off, L1 no-allocate", 13: "read: hand-off, streaming stores",
               14: "read: static hand-off, stores", 15: "read: two launches, stores",
               17: "read: static hand-off, stores, deferred count", 18: "read: static hand-off, stores, 3-part loads",
               19: "read: hand-off, stores, down counts"}
#: Probes whose CTAs cannot all be resident at 4 a SM: at most this many (8, 11: 96 KB of shared memory each).
PROBE_MAX_CTAS_PER_SM = {8: 2, 11: 2, 14: 4, 17: 4, 18: 4}  # 14, 17, 18: static items wait on each other: all resident
#: Probes that store into a scratch buffer.
STORE_PROBES = (9, 13, 14, 15, 17, 18, 19)
#: Probes 5 and 6 ask L2 for at most this share of it (the rest: the w13 stream); more would push
#: out the first lines before they are read.
PREFETCH_L2_SHARE = 0.6
#: Probes that leave lines in L2 (6: at evict_last): timed after every other row of a batch, so
#: they cannot help or hurt the others.
L2_PROBES = (5, 6)


class ReadProbe(ReadFloor):
    """read_floor.cu's probes, one difference from the read floor each: 1 the prototype's prologue
    (active list from the ids), 2 kernel-sized items from a ticket, 3 items and a w2 item waiting for
    its expert's w13 items, 4 the items of 2 on CTA i % grid, 5 mode 3 with every active expert's w2
    asked for in L2 before the w13 items, 6 mode 5 with that prefetch at evict_last priority; mode 3
    with 7 plain loads instead of evict-first ones, 8 each item bulk-copied into shared memory,
    9 2 KB stored per item before its count, 10 Triton's one-stage evict_first loads, 11 mode 8 at
    an evict_first L2 policy, 12 loads that bypass L1 only, 13 mode 9 with streaming stores; 14 mode
    9 on mode 4's static items (no ticket), 15 two launches (w13 items, then after a programmatic
    dependent launch's wait the w2 items; static, stores, no hand-off): the three-launch read; 17 mode
    14 with each w13 item's fence and count after the next item's first loads, 18 its control (mode 14
    with 17's three-part loads); 19 mode 9 with each w2 item's stores counted too (a fenced, returning
    atomic: the one-launch kernel's per-token-tile count).
    set_aside: bytes of L2 set aside for persisting lines while this probe is timed (with() below;
    0: none, the default), in case evict_last takes effect only there."""

    def __init__(self, so, mode: int, ctas_per_sm: int = 4, set_aside: int = 0):
        super().__init__(so, ctas_per_sm)
        self.mode, self.set_aside = mode, set_aside
        self.sync = torch.zeros(so.oea_read_probe_sync_words(), dtype=torch.int32, device="cuda")
        self.prefetch_vectors = int(PREFETCH_L2_SHARE * l2_bytes()) // 16
        self.scratch = torch.empty(so.oea_read_probe_scratch_bytes() if mode in STORE_PROBES else 16, dtype=torch.uint8,
                                   device="cuda")

    def __enter__(self):
        if self.set_aside:
            persisting_l2(self.set_aside)
        return self

    def __exit__(self, *exc):
        if self.set_aside:
            persisting_l2(0)

    def __call__(self, x, weights, routing):
        E, two_i, H = weights.w13.shape
        mask, ids = routing.active_mask.contiguous(), routing.expert_ids.contiguous()
        rc = self.so.oea_read_probe_launch(weights.w13.data_ptr(), weights.w2.data_ptr(), mask.data_ptr(),
                                           ids.data_ptr(), ids.numel(), E, H, two_i // 2, self.mode, self.grid,
                                           self.sync.data_ptr(), self.sink.data_ptr(), self.prefetch_vectors,
                                           self.scratch.data_ptr(), torch.cuda.current_stream().cuda_stream)
        if rc:
            raise RuntimeError(f"oea_read_probe_launch returned {rc}")
        return x


def persisting_l2(nbytes: int) -> None:
    """Set aside nbytes of L2 for persisting (evict_last) lines, at most the device's maximum; 0
    first resets every persisting line to normal, then gives the set-aside back (cuda-python)."""
    from cuda.bindings import runtime as cudart

    torch.cuda.synchronize()
    if nbytes:
        err, props = cudart.cudaGetDeviceProperties(torch.cuda.current_device())
        nbytes = min(nbytes, props.persistingL2CacheMaxSize) if err == cudart.cudaError_t.cudaSuccess else nbytes
    else:
        err, = cudart.cudaCtxResetPersistingL2Cache()
        if err != cudart.cudaError_t.cudaSuccess:
            raise RuntimeError(f"cudaCtxResetPersistingL2Cache: {err}")
    err, = cudart.cudaDeviceSetLimit(cudart.cudaLimit.cudaLimitPersistingL2CacheSize, nbytes)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, {nbytes}): {err}")
    print(f"    L2 set aside for persisting lines: {nbytes / 2**20:.1f} MiB", flush=True)


class StreamMoE:
    """fn(x, weights, routing) -> [T, H] through the prototype, with its own zeroed workspace."""

    def __init__(self, so, hidden: int, inter: int, run: int = 4, ring: int = 6, dynamic: int = 0, probe: int = 0,
                 grid=None):
        self.so, self.run, self.ring, self.dynamic, self.probe = so, run, ring, dynamic, probe
        self.grid = grid or torch.cuda.get_device_properties(0).multi_processor_count
        self.ws = torch.zeros(so.oea_moe_stream_workspace_bytes(hidden, inter), dtype=torch.uint8, device="cuda")
        self.stamps = None  # an int64 [grid, 8] tensor: the next calls record their stamps and wait cycles

    def __call__(self, x, weights, routing):
        ids, wts = routing.expert_ids.contiguous(), routing.weights.contiguous()
        B, k = ids.shape
        E, _, H = weights.w13.shape
        out = torch.empty((B, H), dtype=x.dtype, device=x.device)
        rc = self.so.oea_moe_stream_launch(x.contiguous().data_ptr(), weights.w13.data_ptr(), weights.w2.data_ptr(),
                                           ids.data_ptr(), wts.data_ptr(), out.data_ptr(), self.ws.data_ptr(), B, k, E,
                                           H, weights.w2.shape[2], self.run, self.ring if B <= 8 else min(self.ring, 5), self.dynamic, self.probe,
                                           self.grid,
                                           None if self.stamps is None else self.stamps.data_ptr(),
                                           torch.cuda.current_stream().cuda_stream)
        if rc:
            raise RuntimeError(f"oea_moe_stream_launch returned {rc}")
        return out


def timeline(fn, x, weights, routing) -> dict:
    """One eager call with stamps on weight copy 3, cold in L2 after warm calls on copies 1 and 2:
    us from the first CTA's entry."""
    fn(x, weights[1], routing)
    fn(x, weights[2], routing)
    fn.stamps = torch.zeros((fn.grid, 8), dtype=torch.int64, device="cuda")
    torch.cuda.synchronize()
    fn(x, weights[3], routing)
    torch.cuda.synchronize()
    st = fn.stamps.cpu().double()
    fn.stamps = None
    t = (st - st[:, 0].min()) / 1e3
    summary = {}
    for col, name in enumerate(("entry", "first_copy", "gate_up_done", "done")):
        on = st[:, col] > 0
        if not bool(on.any()):  # dynamic mode stamps no gate/up end
            continue
        summary[name] = [round(float(v), 2) for v in (t[on, col].min(), t[on, col].median(), t[on, col].max())]
    summary["ctas_with_items"] = int((st[:, 1] > 0).sum())
    # where each CTA's consumer time went, % of its cycles (median over CTAs): the producer waiting
    # for a free slot (consumers behind), consumer warp 0 waiting for a full slot (memory behind),
    # waiting for a hand-off (gate/up counters, combine counts)
    total = st[:, 7].clamp(min=1)
    for col, name in ((4, "producer_wait_pct"), (5, "full_wait_pct"), (6, "handoff_wait_pct")):
        summary[name] = round(float((100 * st[:, col] / total).median()), 1)
    return summary


def diagnose(fn, x, weights, ids, out, ref):
    """Which part is wrong: the act rows the gate/up blocks left in the workspace, or what follows."""
    E, two_i, H = weights.w13.shape
    inter = two_i // 2
    act = fn.ws[fn.so.oea_moe_stream_act_offset(H, inter):].view(torch.bfloat16)[:128 * 16 * inter].view(128, 16, inter)
    active = sorted(set(int(e) for e in ids.flatten().tolist() if 0 <= e < E))
    for a, e in enumerate(active[:4]):
        gu = x.float() @ weights.w13[e].float().t()
        want = torch.nn.functional.silu(gu[:, :inter]) * gu[:, inter:]
        got = act[a, :x.shape[0]].float()
        err = (got - want).abs().max() / want.abs().max()
        print(f"    act rows of expert {e} (rank {a}): rel max err {float(err):.3g}", flush=True)
    per_token = ((out.float() - ref.float()).abs().amax(1) / ref.float().abs().amax(1).clamp(min=1e-9)).tolist()
    print("    per-token rel max err:", " ".join(f"{v:.2g}" for v in per_token), flush=True)


def check(fn, shape, weights, n_cases: int, watchdog_s: float = 20.0) -> dict:
    """Against the fp32 loop on fresh routings: skewed OEA (k0 3, 5, vanilla), fills, a token with
    no expert, repeated experts; then bit-identical on a second call and in a graph replay."""
    dev = "cuda"
    results, worst = [], 0.0
    # a first call under a watchdog: a hang (a wait that never ends) must not eat the GPU call
    logits = SkewedRouter(shape.num_experts, seed=1).logits(4, seed=1).to(dev)
    r = oea_route(logits, oea_config(shape, 3))
    done = torch.cuda.Event()
    fn(torch.randn((4, shape.hidden_size), device=dev, dtype=torch.bfloat16), weights, r)
    done.record()
    t_wait = time.time()
    while not done.query():
        if time.time() - t_wait > watchdog_s:
            print(f"HANG: the first call did not finish in {watchdog_s:.0f} s", flush=True)
            os._exit(3)
        time.sleep(0.01)
    for case in range(n_cases):
        B = 1 + case % 16
        k0 = (3, 5, 8)[case % 3]
        fill = ("top1", "num_experts", "invalid")[case // 3 % 3]
        logits = SkewedRouter(shape.num_experts, seed=case).logits(B, seed=70_000 + case).to(dev)
        cfg = oea_config(shape, k0, fill=fill) if k0 < 8 else oea_config(shape, 8)
        r = oea_route(logits, cfg)
        ids, wts = r.expert_ids.clone(), r.weights.clone()
        if case % 5 == 4:  # a token with no expert at all, another with a -1 and an E slot
            ids[0] = -1
            wts[0] = 0
            if B > 1:
                ids[1, -1], ids[1, -2] = -1, shape.num_experts
        g = torch.Generator(device=dev).manual_seed(80_000 + case)
        x = torch.randn((B, shape.hidden_size), generator=g, device=dev, dtype=torch.bfloat16)
        r = r._replace(expert_ids=ids, weights=wts)
        out = fn(x, weights, r)
        ref = moe_reference(x, weights.w13, weights.w2, ids, wts)
        ok = within_tolerance(out, ref)
        again = fn(x, weights, r)
        same = bool(torch.equal(out, again))
        mx, rms = relative_errors(out, ref)
        worst = max(worst, mx)
        results.append(dict(B=B, k0=k0, fill=fill, ok=ok, same=same, max_err=mx, rms_err=rms))
        if not (ok and same):
            print(f"  FAIL case {case}: B={B} k0={k0} fill={fill} ok={ok} same={same} max {mx:.3g} rms {rms:.3g}",
                  flush=True)
            if case < 3:
                diagnose(fn, x, weights, ids, out, ref)
    # graph replay, several calls back to back, against eager
    B = 16
    logits = SkewedRouter(shape.num_experts, seed=99).logits(B, seed=99).to(dev)
    xs = [torch.randn((B, shape.hidden_size), device=dev, dtype=torch.bfloat16) for _ in range(3)]
    rs = [oea_route(logits.roll(i, 1), oea_config(shape, 3)) for i in range(3)]
    eager = [fn(x, weights, r) for x, r in zip(xs, rs)]
    graph = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn(xs[0], weights, rs[0])
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(graph):
        outs = [fn(x, weights, r) for x, r in zip(xs, rs)]
    graph_ok = True
    for _ in range(3):
        graph.replay()
        torch.cuda.synchronize()
        graph_ok &= all(torch.equal(a, b) for a, b in zip(eager, outs))
    n_ok = sum(r["ok"] and r["same"] for r in results)
    print(f"check: {n_ok}/{len(results)} cases within tolerance and deterministic, worst max err {worst:.3g}; "
          f"graph replay bit-identical: {graph_ok}", flush=True)
    return {"cases": results, "passed": n_ok, "graph_ok": graph_ok}


def variant(text: str) -> dict:
    """'RING:RUN:DYNAMIC[:p[BITS]]' -> StreamMoE's keyword arguments ('p' alone is p1)."""
    f = text.split(":")
    probe = 0
    if len(f) == 4 and re.fullmatch(r"p[0-7]?", f[3]):
        probe = int(f[3][1:] or 1)
    ok = len(f) in (3, 4) and all(x.isdigit() for x in f[:3]) and (len(f) == 3 or probe > 0)
    if not ok or (probe & 4 and not probe & 2):
        raise argparse.ArgumentTypeError(f"{text!r} is not RING:RUN:DYNAMIC[:pBITS] (BITS 1-7; 4 needs 2)")
    return dict(ring=int(f[0]), run=int(f[1]), dynamic=int(f[2]), probe=probe)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, nargs="+", default=[4, 1, 8, 16, 2])
    p.add_argument("--variants", nargs="+", default=["6:4:1", "6:4:0", "6:8:1", "6:2:1"],
                   help="RING:RUN:DYNAMIC[:pBITS] (ring slots, down blocks per run or 0 for direct mode: a down item is "
                        "a hidden block through every expert, no combine; items from a ticket counter; pBITS: "
                        "an ablation, timed not checked: 1 no MMAs, 2 no hand-off waits, 4 no combine items "
                        "(needs 2); p alone is p1); above 8 tokens the ring is at most 5")
    p.add_argument("--read-floor", action="store_true",
                   help="also time read_floor.cu: the active experts' bytes read once, nothing else (MoE only)")
    p.add_argument("--read-probes", type=int, nargs="*", default=[], choices=sorted(READ_PROBES),
                   help="also time read_floor.cu's probes: " + ", ".join(f"{k} {v}" for k, v in READ_PROBES.items()))
    p.add_argument("--probe-ctas-per-sm", type=int, nargs="+", default=[4],
                   help="CTAs of 512 threads per SM for the read floor and probes, each count its own row (4: every "
                        "thread slot; 2: about the shipped kernel's bytes in flight, 2 programs of 3-4 stages)")
    p.add_argument("--l2-set-aside", type=float, default=0.0,
                   help="with probe 6: also time it with this share of L2 set aside for persisting lines (e.g. "
                        "0.75; capped at the device's maximum), in case evict_last acts only there")
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=300.0)
    p.add_argument("--json", default=None)
    p.add_argument("--build-dir", default="/tmp/moe_stream")
    p.add_argument("--check-only", action="store_true", help="the correctness checks only (for compute-sanitizer)")
    args = p.parse_args()
    opts = {v: variant(v) for v in args.variants}
    checked = [v for v in args.variants if not opts[v]["probe"]]
    if not checked:
        p.error("at least one variant must be checked (one without :p)")
    t0 = time.time()
    os.makedirs(args.build_dir, exist_ok=True)
    so = build(args.build_dir)
    shape = get_preset("qwen3-30b-a3b")
    free = torch.cuda.mem_get_info()[0]
    copies = 1 if args.check_only else copies_that_fit(copies_needed(shape.expert_bytes, l2_bytes()),
                                                       shape.num_experts * shape.expert_bytes, free)
    weights = [ExpertWeights.random(shape, device="cuda", seed=c) for c in range(copies)]
    results = {"device": torch.cuda.get_device_name(), "rows": []}
    fns = {v: StreamMoE(so, shape.hidden_size, shape.moe_intermediate_size, **o) for v, o in opts.items()}
    watchdog = 150.0 if args.check_only else 20.0  # compute-sanitizer runs kernels far slower
    results["check"] = check(fns[checked[0]], shape, weights[0], args.cases, watchdog)
    if results["check"]["passed"] < args.cases or not results["check"]["graph_ok"]:
        print("check failed: no timing", flush=True)
        if args.json:
            json.dump(results, open(args.json, "w"), indent=1)
        raise SystemExit(1)
    for v in checked[1:]:
        sub = check(fns[v], shape, weights[0], 16, watchdog)  # B = 1..16: both token tiles
        results.setdefault("variant_checks", {})[v] = sub["passed"]
    if args.check_only:
        return
    for b, router, batch, cases, shipped in sweep_batches(shape, weights, args.batch, args.budget, t0, results):
        named = [("shipped", layer_call("triton", shipped))] + [(f"stream ring{v}", fns[v]) for v in args.variants]
        readers, l2_readers = [], []  # l2_readers: timed after every other row (L2_PROBES)
        seen = set()  # (probe, CTAs per SM) once, where a probe's cap makes two counts one
        for c in args.probe_ctas_per_sm:
            tag = "" if c == 4 else f" {c}/SM"
            readers += [("read floor" + tag, ReadFloor(so, c))] if args.read_floor else []
            for m in args.read_probes:
                cm = min(c, PROBE_MAX_CTAS_PER_SM.get(m, c))
                if (m, cm) not in seen:
                    seen.add((m, cm))
                    (l2_readers if m in L2_PROBES else readers).append(
                        (READ_PROBES[m] + ("" if cm == 4 else f" {cm}/SM"), ReadProbe(so, m, cm)))
            if args.l2_set_aside and 6 in args.read_probes:
                l2_readers.append((READ_PROBES[6] + ", set-aside" + tag,
                                   ReadProbe(so, 6, c, set_aside=int(args.l2_set_aside * l2_bytes()))))
        time_readers(readers, b, batch, weights, cases, args.repeats, results)
        for name, fn in named:
            row = time_row({"batch": b, "name": name}, fn, batch, weights, router, cases, args.repeats)
            if name.startswith("stream"):
                row["timeline"] = {}
                for label, (cfg, routings, floor) in cases.items():
                    tl = timeline(fn, batch.x[0], weights, routings[0])
                    # the stamped call's own floor: its routing's active experts, not the cases' mean
                    tl["call_floor_us"] = round(int(routings[0].num_active) * shape.expert_bytes
                                                / results["copy_Bps"] * 1e6, 1)
                    row["timeline"][label] = tl
                for label, tl in row["timeline"].items():
                    print(f"    {label} stamps (min/median/max us): " + "  ".join(
                        f"{k} {v}" for k, v in tl.items()), flush=True)
            results["rows"].append(row)
            if args.json:
                json.dump(results, open(args.json, "w"), indent=1)
        time_readers(l2_readers, b, batch, weights, cases, args.repeats, results)
        if args.json:
            json.dump(results, open(args.json, "w"), indent=1)
    print(f"moe_stream: {time.time() - t0:.0f} s", flush=True)


def time_readers(readers, b, batch, weights, cases, repeats, results) -> None:
    """One row per reader (read_floor.cu's kernels): us and x floor per case, MoE only. A probe
    with a set-aside holds it only while it is timed."""
    for name, reader in readers:
        row = {"batch": b, "name": name}
        with reader:
            for label, (cfg, routings, floor) in cases.items():
                us = time_moe(reader, batch, weights, routings, repeats=repeats).median_us
                row[label] = {"moe_us": us, "x_floor": us / floor}
        print(f"  {name:40s} vanilla {row['vanilla']['moe_us']:6.1f} ({row['vanilla']['x_floor']:.2f})"
              f"{'':11s}k0=3 {row['k0=3']['moe_us']:6.1f} ({row['k0=3']['x_floor']:.2f})", flush=True)
        results["rows"].append(row)


if __name__ == "__main__":
    main()
