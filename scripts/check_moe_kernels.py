#!/usr/bin/env python3
"""Compile the Triton MoE kernels for the H200 (sm_90) on a machine without a GPU, and check
what the GPU run depends on: every config compiles, fits in shared memory (227 KB per block),
streams the weights through cp.async pipelining (a kernel that loads straight to registers
would not reach the bandwidth target) and does not spill registers (ptxas -v on the PTX).
Both of our kernels: the one-launch "fused" (fused_kernel.py, also with programmatic dependent
launch and with the transposed down layout) and "triton" (triton_kernel.py): its gate/up
kernel, its 2-launch down + combine kernel (with PDL, and with the L2 prefetch's inline PTX,
cp.async.bulk.prefetch, with and without an evict_last policy) and its 3-launch per-slot down
and combine kernels, each with and without PDL (griddepcontrol).

    python3 scripts/check_moe_kernels.py                 # default tiles, every preset, B=1/16/64
    python3 scripts/check_moe_kernels.py --candidates    # also every tile the benchmark tunes over
    python3 scripts/check_moe_kernels.py --kernel fused  # one kernel only

Pointer arguments are declared 16-byte aligned, as the JIT specializes them for torch's
allocations; without that hint Triton does not pipeline at all.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.pop("TRITON_INTERPRET", None)  # compile for real, whatever the caller's environment
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from oea_trt.bench.moe import (ALL_PRESETS, DOWN_CANDIDATES, DOWN_COMBINE_CANDIDATES, FUSED_CANDIDATES,  # noqa: E402
                               GATE_UP_CANDIDATES, ONE_LAUNCH_CANDIDATES)
from oea_trt.moe import fused_kernel as fk  # noqa: E402
from oea_trt.moe.triton import one_launch as ol  # noqa: E402
from oea_trt.moe.triton import three_launch as tk  # noqa: E402
from oea_trt.moe.shapes import get_preset  # noqa: E402

SMEM_LIMIT = 227 * 1024
ALIGNED = [["tt.divisibility", 16]]


def _compile(fn, signature, constexprs, warps, stages, pdl=False):
    attrs = {(i,): ALIGNED for i, (name, ty) in enumerate(signature.items())
             if ty.startswith("*") or name.startswith("stride")}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "num_stages": stages, "launch_pdl": pdl})


def _shape_consts(shape, block_m, block_n, block_k):
    return dict(H=shape.hidden_size, I=shape.moe_intermediate_size, E=shape.num_experts,
                E_PAD=tk._next_pow2(shape.num_experts), K=shape.top_k, K_PAD=tk._next_pow2(shape.top_k),
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)


def compile_gate_up(shape, cfg, pdl=False, one_block=True):
    sig = {"x_ptr": "*bf16", "w13_ptr": "*bf16", "expert_ids_ptr": "*i32", "active_mask_ptr": "*u8",
           "act_ptr": "*bf16", "num_tokens": "i32", "stride_x": "i32"}
    consts = dict(_shape_consts(shape, cfg.block_m, cfg.gu_block_n, cfg.gu_block_k), USE_PDL=pdl, ONE_BLOCK=one_block)
    return _compile(tk._gate_up_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, cfg.gu_warps,
                    cfg.gu_stages, pdl)


def compile_down_combine(shape, cfg, pdl=False, prefetch=0, evict_last=False):
    sig = {"act_ptr": "*bf16", "w2_ptr": "*bf16", "expert_ids_ptr": "*i32", "weights_ptr": "*fp32",
           "active_mask_ptr": "*u8", "out_ptr": "*bf16", "num_tokens": "i32", "stride_out": "i32"}
    consts = dict(_shape_consts(shape, cfg.block_m, cfg.dc_block_n, cfg.dc_block_k), USE_PDL=pdl, PREFETCH=prefetch,
                  PREFETCH_EVICT_LAST=evict_last)
    return _compile(tk._down_combine_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, cfg.dc_warps,
                    cfg.dc_stages, pdl)


def compile_down(shape, cfg, pdl=False, one_block=True):
    sig = {"act_ptr": "*bf16", "w2_ptr": "*bf16", "expert_ids_ptr": "*i32", "weights_ptr": "*fp32",
           "active_mask_ptr": "*u8", "y_ptr": "*fp32", "num_tokens": "i32"}
    consts = dict(_shape_consts(shape, cfg.block_m, cfg.dn_block_n, cfg.dn_block_k), USE_PDL=pdl, ONE_BLOCK=one_block)
    return _compile(tk._down_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, cfg.dn_warps,
                    cfg.dn_stages, pdl)


def compile_combine(shape, cfg, pdl=False):
    consts = dict(H=shape.hidden_size, E=shape.num_experts, K=shape.top_k, K_PAD=tk._next_pow2(shape.top_k),
                  BLOCK_H=min(cfg.combine_block_h, tk._next_pow2(shape.hidden_size)), USE_PDL=pdl)
    sig = {"y_ptr": "*fp32", "expert_ids_ptr": "*i32", "out_ptr": "*bf16", "stride_out": "i32"}
    return _compile(tk._combine_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, 4, 3, pdl)


def compile_one_launch(shape, cfg, pdl=False, one_block=True, early_active=False):
    sig = {"x_ptr": "*bf16", "w13_ptr": "*bf16", "w2_ptr": "*bf16", "expert_ids_ptr": "*i32", "weights_ptr": "*fp32",
           "active_mask_ptr": "*u8", "act_ptr": "*bf16", "y_ptr": "*fp32", "out_ptr": "*bf16", "sync_ptr": "*i32",
           "ready_ptr": "*i32", "trace_ptr": "*i32", "num_tokens": "i32", "stride_x": "i32", "stride_out": "i32", "trace_programs_at": "i32"}
    consts = dict(H=shape.hidden_size, I=shape.moe_intermediate_size, E=shape.num_experts,
                  E_PAD=tk._next_pow2(shape.num_experts), K=shape.top_k, K_PAD=tk._next_pow2(shape.top_k),
                  BLOCK_M=cfg.block_m, GU_N=cfg.gu_block_n, GU_K=cfg.gu_block_k, DN_N=cfg.dn_block_n,
                  DN_K=cfg.dn_block_k, USE_PDL=pdl, TRACE=False, ONE_BLOCK=one_block, EARLY_ACTIVE=early_active)
    return _compile(ol._one_launch_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, cfg.gu_warps,
                    cfg.gu_stages, pdl)


def griddep_problems(kernel, name: str, pdl: bool, prefetch: int = 0, evict_last: bool = False) -> list:
    """What the PDL and prefetch options must put in the PTX: griddepcontrol.wait (and nothing of
    the kind without PDL), cp.async.bulk.prefetch.L2 once per prefetched expert, the cache policy."""
    ptx = kernel.asm["ptx"]
    problems = []
    if pdl and "griddepcontrol.wait" not in ptx:
        problems.append(f"{name}: launched with PDL but no griddepcontrol.wait in the PTX")
    if not pdl and "griddepcontrol" in ptx:
        problems.append(f"{name}: griddepcontrol in the PTX of a kernel compiled without PDL")
    if ptx.count("cp.async.bulk.prefetch.L2") != prefetch:
        problems.append(f"{name}: {ptx.count('cp.async.bulk.prefetch.L2')} L2 prefetches in the PTX, want {prefetch}")
    if evict_last != ("createpolicy.fractional.L2::evict_last" in ptx):
        problems.append(f"{name}: evict_last cache policy {'missing' if evict_last else 'unexpected'}")
    return problems


def compile_fused(shape, cfg, down_transposed: bool):
    H, I = shape.hidden_size, shape.moe_intermediate_size
    sig = {"x_ptr": "*bf16", "w13_ptr": "*bf16", "w2_ptr": "*bf16", "expert_ids_ptr": "*i32", "weights_ptr": "*fp32",
           "active_mask_ptr": "*u8", "out_ptr": "*bf16", "acc_ptr": "*fp32", "count_ptr": "*i32", "num_tokens": "i32",
           "stride_x": "i32", "stride_out": "i32"}
    consts = dict(H=H, I=I, E=shape.num_experts, E_PAD=tk._next_pow2(shape.num_experts), K=shape.top_k,
                  K_PAD=tk._next_pow2(shape.top_k), W2_STRIDE_H=1 if down_transposed else I,
                  W2_STRIDE_I=H if down_transposed else 1, BLOCK_M=cfg.block_m, BLOCK_I=cfg.block_i,
                  BLOCK_K=cfg.block_k, BLOCK_H=cfg.block_h, FINISH_H=fk.finish_block(H), USE_PDL=cfg.pdl)
    return _compile(fk._fused_moe_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, cfg.warps, cfg.stages)


def _ptxas_usage(ptx: str) -> tuple:
    """(registers, spill-store bytes) that ptxas reports for the PTX, sm_90a (Triton's ptxas)."""
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as f:
        f.write(ptx)
        f.flush()
        err = subprocess.run([ptxas, "-arch=sm_90a", "-v", f.name, "-o", os.devnull], capture_output=True,
                             text=True).stderr
    regs = re.search(r"Used (\d+) registers", err)
    spills = re.search(r"(\d+) bytes spill stores", err)
    return (int(regs.group(1)) if regs else -1), (int(spills.group(1)) if spills else -1)


def check(kernel, name: str, needs_pipelining: bool, spills_allowed: bool = False) -> list:
    """Problems of one compiled kernel. spills_allowed: a tuner candidate (it is timed on the
    GPU, so a small spill only costs what the timing shows); the one-launch kernel's defaults
    must not spill."""
    ptx = kernel.asm["ptx"]
    shared = kernel.metadata.shared
    async_copies = ptx.count("cp.async.cg") + ptx.count("cp.async.ca")
    regs, spills = _ptxas_usage(ptx)
    problems = []
    if shared > SMEM_LIMIT:
        problems.append(f"{name}: {shared} B shared memory > {SMEM_LIMIT}")
    if needs_pipelining and not async_copies:
        problems.append(f"{name}: no cp.async in the PTX (weights are not pipelined)")
    if spills != 0 and not spills_allowed:
        problems.append(f"{name}: {spills} bytes of register spill stores (ptxas -v)")
    print(f"  {name:62s} shared {shared / 1024:6.1f} KB  cp.async {async_copies:3d}  "
          f"wgmma {ptx.count('wgmma.mma_async'):3d}  mma.sync {ptx.count('mma.sync'):3d}  regs {regs:3d}  "
          f"spill {spills}{' (reported, not enforced)' if spills and spills_allowed else ''}", flush=True)
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", choices=ALL_PRESETS, default=list(ALL_PRESETS))
    p.add_argument("--batch", nargs="+", type=int, default=[1, 16, 64], help="batch sizes (set block_m)")
    p.add_argument("--candidates", action="store_true", help="also every tile the benchmark's tuner tries")
    p.add_argument("--kernel", nargs="+", choices=("fused", "triton", "one_launch"),
                   default=["fused", "triton", "one_launch"],
                   help="which of our kernels to compile")
    args = p.parse_args(argv)
    problems, count, t0 = [], 0, time.time()
    for name in args.preset:
        shape = get_preset(name)
        H, I = shape.hidden_size, shape.moe_intermediate_size
        print(f"{name}: H={H} I={I}")
        for batch in args.batch if "fused" in args.kernel else ():
            base = fk.default_config(batch, H, I, shape.top_k, shape.num_experts)
            # The default, its PDL and transposed-down forms (what the tuner tries after the tiles).
            configs = [(base, False, False), (base.replace(pdl=True), True, True)]
            if args.candidates:
                configs += [(base.replace(block_i=i, block_k=k, block_h=h, warps=w, stages=s), t, True)
                            for i, k, h, w, s in FUSED_CANDIDATES for t in (False, True)]
            seen = set()
            for cfg, transposed, is_candidate in configs:
                cfg = fk.fitted(cfg, batch, H, I)
                key = (cfg.block_m, cfg.block_i, cfg.block_k, cfg.block_h, cfg.warps, cfg.stages, cfg.pdl, transposed)
                if key not in seen:
                    seen.add(key)
                    label = "m,i,k,h,w,s,pdl,ih=" + ",".join(str(int(v)) for v in key)
                    problems += check(compile_fused(shape, cfg, transposed), f"fused   B={batch} {label}", True,
                                      spills_allowed=is_candidate)
                    count += 1
        for batch in args.batch if "triton" in args.kernel else ():
            base = tk.default_config(batch, H, I, shape.top_k, shape.num_experts)
            # (config, PDL, L2 prefetch, evict_last): with PDL (what a GPU runs by default) and the
            # down + combine kernel's L2 prefetch of 2 experts, without either (the A/B script's
            # plain variants), and the A/B script's prefetch of 4 with the evict_last policy. The
            # default config's per-slot down and combine kernels are among these (dn, PDL on/off).
            variants = [(base, True, 2, False), (base, False, 0, False), (base, True, 4, True)]
            if args.candidates:
                variants += [(base.replace(gu_block_n=n, gu_block_k=k, gu_warps=w, gu_stages=s), True, 2, False)
                             for n, k, w, s in GATE_UP_CANDIDATES]
                variants += [(base.replace(dc_block_n=n, dc_block_k=k, dc_warps=w, dc_stages=s), True, 2, False)
                             for n, k, w, s in DOWN_COMBINE_CANDIDATES]
                variants += [(base.replace(dn_block_n=n, dn_block_k=k, dn_warps=w, dn_stages=s), True, 0, False)
                             for n, k, w, s in DOWN_CANDIDATES]
            seen = set()
            for cfg, pdl, prefetch, evict_last in variants:
                cfg = tk.fitted(cfg, batch, H, I)
                prefetch = min(prefetch, shape.num_experts, batch * shape.top_k)  # as fused_moe caps it
                gu_key = (cfg.block_m, cfg.gu_block_n, cfg.gu_block_k, cfg.gu_warps, cfg.gu_stages, int(pdl))
                dc_key = (cfg.block_m, cfg.dc_block_n, cfg.dc_block_k, cfg.dc_warps, cfg.dc_stages, int(pdl), prefetch,
                          int(evict_last))
                dn_key = (cfg.block_m, cfg.dn_block_n, cfg.dn_block_k, cfg.dn_warps, cfg.dn_stages, int(pdl))
                # The triton kernels' spills are reported, not enforced: the default gate/up tile at
                # B=1 spills 8 bytes, and the GPU run's tuner picks a tile that does not.
                jobs = [("gu", gu_key, lambda: compile_gate_up(shape, cfg, pdl, tk.one_block(cfg, batch)), f"gate_up B={batch} m,n,k,w,s,pdl",
                         0, False),
                        ("dc", dc_key, lambda: compile_down_combine(shape, cfg, pdl, prefetch, evict_last),
                         f"down+combine B={batch} m,n,k,w,s,pdl,pf,el", prefetch, evict_last),
                        ("dn", dn_key, lambda: compile_down(shape, cfg, pdl, tk.one_block(cfg, batch)), f"down(slots) B={batch} m,n,k,w,s,pdl",
                         0, False)]
                for kind, key, build, what, want_prefetch, want_evict in jobs:
                    if (kind,) + key in seen:
                        continue
                    seen.add((kind,) + key)
                    name = f"{what}={','.join(str(v) for v in key)}"
                    kernel = build()
                    problems += check(kernel, name, True, spills_allowed=True)
                    problems += griddep_problems(kernel, name, pdl, want_prefetch, want_evict)
                    count += 1
        for batch in args.batch if "one_launch" in args.kernel else ():
            # The one-launch kernel (triton_kernel.py's down="one_launch"): default tiles, with and
            # without PDL, and the tiles the benchmark's A/B tries.
            base = tk.default_config(batch, H, I, shape.top_k, shape.num_experts).replace(down="one_launch")
            if base.block_m >= 64:
                base = base.replace(gu_warps=8)  # as benchmarks/moe_ab.py runs a 64-token tile
            # (config, pdl, started on the routing's published active set)
            configs = [(base, True, False), (base, False, False), (base, True, True)] + [
                (base.replace(**changes), True, False) for changes in ONE_LAUNCH_CANDIDATES]
            seen = set()
            for cfg, pdl, early in configs:
                cfg = tk.fitted(cfg, batch, H, I)
                early = early and tk.one_block(cfg, batch)
                key = (cfg.block_m, cfg.gu_block_n, cfg.gu_block_k, cfg.dn_block_n, cfg.dn_block_k, cfg.gu_warps,
                       cfg.gu_stages, int(pdl), int(early))
                if key in seen:
                    continue
                seen.add(key)
                name = f"one_launch B={batch} m,gn,gk,dn,dk,w,s,pdl,early={','.join(str(v) for v in key)}"
                kernel = compile_one_launch(shape, cfg, pdl, tk.one_block(cfg, batch), early)
                problems += check(kernel, name, True, spills_allowed=True)
                problems += griddep_problems(kernel, name, pdl)
                count += 1
        if "triton" in args.kernel:
            for pdl in (False, True):
                kernel = compile_combine(shape, tk.KernelConfig(), pdl)
                problems += check(kernel, f"combine(slots) pdl={int(pdl)}", False)
                problems += griddep_problems(kernel, f"combine pdl={int(pdl)}", pdl)
                count += 1
    print(f"{count} kernels compiled for sm_90 in {time.time() - t0:.0f} s")
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
