"""Lab probe (issue 20): how fast can ONE program stream weights, and how many busy programs
does it take to reach the copy bandwidth?

The sliced kernel's per-item stamps (docs/what-we-tried.md) showed a program streaming a
196 KB slab at about 11 GB/s, i.e. 264 programs are needed for 3 TB/s; at small T (B=1, OEA)
a call has fewer items than that. This probe times a kernel that does only what a gate/up item
does (a [BN, BK] bf16 weight tile per step, times a [16, BK] x tile, fp32 accumulate) with P
programs, each streaming its own slab, and reports per-program GB/s and total TB/s for:
  ptr    tl.load of pointer tiles (cp.async pipeline, as our kernels), num_stages 2-6
  tma    host-side TensorDescriptor loads (TMA bulk copies into shared memory)
Slabs rotate over copies so no call finds its rows in L2. CUDA-graph replay, median of repeats.

  python3 scripts/gpu/stream_rate.py --out DIR            (GPU; ~1 min)
  python3 scripts/gpu/stream_rate.py --check               (CPU interpreter: the sums are right)
  python3 scripts/gpu/stream_rate.py --plot JSON --out DIR (CPU: total TB/s against busy programs)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

if "--check" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: E402


@triton.jit
def stream_ptr(w_ptr, x_ptr, out_ptr, row0, ROWS: tl.constexpr, K: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, STAGES: tl.constexpr):
    p = tl.program_id(0)
    kk = tl.arange(0, BK)
    x_rows = x_ptr + tl.arange(0, 16)[:, None] * K + kk[None, :]
    total = tl.zeros((16, BN), dtype=tl.float32)
    for t in range(0, ROWS, BN):
        n = row0 + p * ROWS + t + tl.arange(0, BN)
        w_rows = w_ptr + n[:, None].to(tl.int64) * K + kk[None, :]
        acc = tl.zeros((16, BN), dtype=tl.float32)
        for k0 in tl.range(0, K, BK, num_stages=STAGES):
            acc = tl.dot(tl.load(x_rows + k0), tl.trans(tl.load(w_rows + k0)), acc)
        total += acc
    tl.store(out_ptr + p * 16 + tl.arange(0, 16), tl.sum(total, axis=1))


@triton.jit
def stream_tma(w_desc, x_ptr, out_ptr, row0, ROWS: tl.constexpr, K: tl.constexpr, BN: tl.constexpr,
               BK: tl.constexpr, STAGES: tl.constexpr):
    p = tl.program_id(0)
    kk = tl.arange(0, BK)
    x_rows = x_ptr + tl.arange(0, 16)[:, None] * K + kk[None, :]
    total = tl.zeros((16, BN), dtype=tl.float32)
    for t in range(0, ROWS, BN):
        r = row0 + p * ROWS + t
        acc = tl.zeros((16, BN), dtype=tl.float32)
        for k0 in tl.range(0, K, BK, num_stages=STAGES):
            acc = tl.dot(tl.load(x_rows + k0), tl.trans(w_desc.load([r, k0])), acc)
        total += acc
    tl.store(out_ptr + p * 16 + tl.arange(0, 16), tl.sum(total, axis=1))


def launch(kind, w, x, out, programs, rows, row0, bn, bk, stages, desc=None):
    args = (x, out, row0, rows, w.shape[1], bn, bk, stages)
    if kind == "tma":
        stream_tma[(programs,)](desc, *args, num_warps=4)
    else:
        stream_ptr[(programs,)](w, *args, num_warps=4)


def reference(w, x, programs, rows, row0):
    out = []
    for p in range(programs):
        slab = w[row0 + p * rows: row0 + (p + 1) * rows].float()
        out.append((x.float() @ slab.T).sum(dim=1))
    return torch.stack(out)


def check() -> int:
    torch.manual_seed(0)
    K, bn, bk, rows, programs = 64, 16, 32, 32, 3
    # fp16: the interpreter's bf16 products are not the GPU's (docs/what-we-tried.md).
    w = torch.randn(programs * rows * 2, K).to(torch.float16)
    x = torch.randn(16, K).to(torch.float16)
    bad = 0
    for kind in ("ptr", "tma"):
        out = torch.zeros(programs, 16)
        desc = TensorDescriptor.from_tensor(w, [bn, bk]) if kind == "tma" else None
        launch(kind, w, x, out, programs, rows, rows, bn, bk, 2, desc)
        ref = reference(w, x, programs, rows, rows)
        ok = torch.allclose(out, ref, rtol=1e-3, atol=1e-2)
        print(f"{kind}: {'ok' if ok else 'WRONG'} (max err {(out - ref).abs().max():.3g})")
        bad += not ok
    return 1 if bad else 0


def time_case(kind, w, x, programs, rows, bn, bk, stages, copies, repeats=5):
    """us per call: a graph of `copies` calls, each on its own slab set (no L2 reuse)."""
    out = torch.zeros(programs, 16, device=w.device)
    desc = TensorDescriptor.from_tensor(w, [bn, bk]) if kind == "tma" else None
    span = programs * rows
    starts = [c * span for c in range(copies)]
    for s in starts[:2]:  # compile and warm
        launch(kind, w, x, out, programs, rows, s, bn, bk, stages, desc)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for s in starts:
            launch(kind, w, x, out, programs, rows, s, bn, bk, stages, desc)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / copies)
    return sorted(times)[len(times) // 2]


def copy_bandwidth(n_bytes=1 << 30):
    src = torch.empty(n_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(5):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 2 * n_bytes * 5 / (time.perf_counter() - t) / 1e12


def plot(path: str, out_dir: str) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with open(path) as f:
        data = json.load(f)
    slabs = sorted({r["slab_bytes"] for r in data["rows"]})
    fig, axes = plt.subplots(1, len(slabs), figsize=(6 * len(slabs), 4.5), sharey=True, squeeze=False)
    for ax, slab in zip(axes[0], slabs):
        rows = [r for r in data["rows"] if r["slab_bytes"] == slab]
        for key in sorted({(r["kind"], r["bn"], r["bk"], r["stages"]) for r in rows}):
            pts = sorted((r["programs"], r["tb_s"]) for r in rows if (r["kind"], r["bn"], r["bk"], r["stages"]) == key)
            ax.plot(*zip(*pts), marker="o", linestyle="-" if key[0] == "ptr" else "--",
                    label=f"{key[0]} {key[1]}x{key[2]} s{key[3]}")
        ax.axhline(data["copy_tb_s"], color="grey", linewidth=0.8, label="copy bandwidth")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("busy programs (one slab each)")
        ax.set_title(f"{slab >> 10} KB per program")
    axes[0][0].set_ylabel("TB/s")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Weight streaming against busy programs, {data['gpu']}, triton {data['triton']}")
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, "stream_rate.png")
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")
    return 0


def parse_variant(text: str):
    """"ptr:64x128:4" -> ("ptr", 64, 128, 4)."""
    kind, tile, stages = text.split(":")
    bn, bk = tile.split("x")
    return kind, int(bn), int(bk), int(stages)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="CPU interpreter: sums against torch")
    p.add_argument("--out", default="out/stream_rate")
    p.add_argument("--plot", metavar="JSON", help="draw a saved stream_rate.json into --out (CPU)")
    p.add_argument("--programs", type=int, nargs="+", default=[16, 66, 132, 264])
    p.add_argument("--slab-kb", type=int, nargs="+", default=[192, 768])
    p.add_argument("--budget", type=float, default=150.0, help="seconds; no new case after this")
    p.add_argument("--k", type=int, default=2048,
                   help="row length streamed (2048: a 30B gate/up row; 1024: half of it, a split-K item's share)")
    p.add_argument("--variants", nargs="+", default=None, metavar="KIND:BNxBK:S",
                   help="tiles to time, e.g. ptr:64x128:4 (default: pointer and TMA loads at 32x128 s2-6, "
                        "64x128 s4, 32x256 s3)")
    args = p.parse_args()
    if args.check:
        return check()
    if args.plot:
        return plot(args.plot, args.out)
    os.makedirs(args.out, exist_ok=True)
    K = args.k
    pool_bytes = 4 << 30
    w = torch.empty(pool_bytes // (2 * K), K, device="cuda", dtype=torch.bfloat16).normal_()
    x = torch.randn(16, K, device="cuda").to(torch.bfloat16)
    bw = copy_bandwidth()
    variants = [("ptr", 32, 128, s) for s in (2, 4, 6)] + [("ptr", 64, 128, 4), ("ptr", 32, 256, 3)] + \
               [("tma", 32, 128, s) for s in (2, 4, 6)] + [("tma", 64, 128, 4), ("tma", 32, 256, 3)]
    if args.variants:
        variants = [parse_variant(v) for v in args.variants]
    rows_out, start = [], time.time()
    print(f"{torch.cuda.get_device_name()}, copy {bw:.2f} TB/s", flush=True)
    for slab_kb in args.slab_kb:
        for programs in args.programs:
            for kind, bn, bk, stages in variants:
                if time.time() - start > args.budget:
                    break
                rows = max(bn, slab_kb * 1024 // (2 * K) // bn * bn)
                copies = max(2, min(50, w.shape[0] // (programs * rows)))
                try:
                    us = time_case(kind, w, x, programs, rows, bn, bk, stages, copies)
                except Exception as exc:  # a variant that does not compile or fit is a finding
                    print(f"{kind} {bn}x{bk} s{stages} P={programs}: failed: {str(exc)[:200]}", flush=True)
                    continue
                slab = rows * K * 2
                row = dict(kind=kind, bn=bn, bk=bk, stages=stages, programs=programs, slab_bytes=slab, us=us,
                           gb_s_per_program=slab / us / 1e3, tb_s=programs * slab / us / 1e6)
                row["k"] = K
                rows_out.append(row)
                print(f"slab {slab >> 10} KB P={programs:3d} {kind} {bn}x{bk} s{stages}: {us:7.2f} us "
                      f"{row['gb_s_per_program']:6.1f} GB/s/program {row['tb_s']:5.2f} TB/s", flush=True)
    with open(os.path.join(args.out, "stream_rate.json"), "w") as f:
        json.dump(dict(gpu=torch.cuda.get_device_name(), copy_tb_s=bw, triton=triton.__version__, rows=rows_out),
                  f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
