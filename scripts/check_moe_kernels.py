#!/usr/bin/env python3
"""Compile the Triton MoE kernels for sm_90 (H100/H200) on a machine without a GPU, and check
what the GPU run depends on: every config compiles, fits in shared memory (227 KB per block),
streams the weights through cp.async pipelining (a kernel that loads straight to registers
would not reach the bandwidth target), does not spill registers (ptxas -v on the PTX), and
carries griddepcontrol exactly where programmatic dependent launch is on. Every path: the
three-launch path's gate/up, down and combine kernels and the one-launch kernel (also started
on the routing's early active set), each with and without PDL.

    python3 scripts/check_moe_kernels.py                       # default tiles, every preset, B=1/16/64
    python3 scripts/check_moe_kernels.py --candidates          # also every config `oea-trt bench tune` tries
    python3 scripts/check_moe_kernels.py --kernel one_launch   # one path only

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

from oea_trt.bench.tune import ALL_PRESETS, candidate_steps  # noqa: E402
from oea_trt.moe.shapes import get_preset  # noqa: E402
from oea_trt.moe.triton import one_launch as ol  # noqa: E402
from oea_trt.moe.triton import three_launch as tl3  # noqa: E402
from oea_trt.moe.triton.config import KernelConfig, default_config, fitted, next_pow2, one_block  # noqa: E402

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
                E_PAD=next_pow2(shape.num_experts), K=shape.top_k, K_PAD=next_pow2(shape.top_k),
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)


def compile_gate_up(shape, cfg, pdl=False, one_block=True):
    sig = {"x_ptr": "*bf16", "w13_ptr": "*bf16", "expert_ids_ptr": "*i32", "active_mask_ptr": "*u8",
           "act_ptr": "*bf16", "gate_up_done_ptr": "*i32", "num_tokens": "i32", "stride_x": "i32"}
    consts = dict(_shape_consts(shape, cfg.block_m, cfg.gu_block_n, cfg.gu_block_k), USE_PDL=pdl, ONE_BLOCK=one_block,
                  HANDOFF=cfg.handoff)
    return _compile(tl3.gate_up_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, cfg.gu_warps,
                    cfg.gu_stages, pdl)


def compile_down(shape, cfg, pdl=False, one_block=True):
    sig = {"act_ptr": "*bf16", "w2_ptr": "*bf16", "expert_ids_ptr": "*i32", "weights_ptr": "*fp32",
           "active_mask_ptr": "*u8", "y_ptr": "*fp32", "sync_ptr": "*i32", "num_tokens": "i32"}
    consts = dict(_shape_consts(shape, cfg.block_m, cfg.dn_block_n, cfg.dn_block_k), USE_PDL=pdl, ONE_BLOCK=one_block,
                  PRELOAD=cfg.dn_preload, HANDOFF=cfg.handoff,
                  GU_TILES=shape.moe_intermediate_size // cfg.gu_block_n)
    return _compile(tl3.down_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, cfg.dn_warps,
                    cfg.dn_stages, pdl)


def compile_combine(shape, cfg, pdl=False):
    consts = dict(H=shape.hidden_size, E=shape.num_experts, K=shape.top_k, K_PAD=next_pow2(shape.top_k),
                  BLOCK_H=min(cfg.combine_block_h, next_pow2(shape.hidden_size)), USE_PDL=pdl)
    sig = {"y_ptr": "*fp32", "expert_ids_ptr": "*i32", "out_ptr": "*bf16", "stride_out": "i32"}
    return _compile(tl3.combine_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, 4, 3, pdl)


def compile_one_launch(shape, cfg, pdl=False, one_block=True, early_active=False):
    sig = {"x_ptr": "*bf16", "w13_ptr": "*bf16", "w2_ptr": "*bf16", "expert_ids_ptr": "*i32", "weights_ptr": "*fp32",
           "active_mask_ptr": "*u8", "act_ptr": "*bf16", "y_ptr": "*fp32", "out_ptr": "*bf16", "sync_ptr": "*i32",
           "ready_ptr": "*i32", "num_tokens": "i32", "stride_x": "i32", "stride_out": "i32"}
    consts = dict(H=shape.hidden_size, I=shape.moe_intermediate_size, E=shape.num_experts,
                  E_PAD=next_pow2(shape.num_experts), K=shape.top_k, K_PAD=next_pow2(shape.top_k),
                  BLOCK_M=cfg.block_m, GU_N=cfg.gu_block_n, GU_K=cfg.gu_block_k, DN_N=cfg.dn_block_n,
                  DN_K=cfg.dn_block_k, USE_PDL=pdl, ONE_BLOCK=one_block, EARLY_ACTIVE=early_active)
    return _compile(ol.one_launch_kernel, {**sig, **{k: "constexpr" for k in consts}}, consts, cfg.gu_warps,
                    cfg.gu_stages, pdl)


def griddep_problems(kernel, name: str, pdl: bool, waits: bool = True) -> list:
    """With PDL the PTX must hold griddepcontrol.wait, except where the kernel waits on counters
    instead (not `waits`: the hand-off's down kernel), which must hold none; without PDL, no
    griddepcontrol at all."""
    ptx = kernel.asm["ptx"]
    problems = []
    if pdl and not waits and "griddepcontrol.wait" in ptx:
        problems.append(f"{name}: the hand-off's down kernel waits for the whole gate/up kernel (griddepcontrol.wait)")
    if pdl and waits and "griddepcontrol.wait" not in ptx:
        problems.append(f"{name}: launched with PDL but no griddepcontrol.wait in the PTX")
    if not pdl and "griddepcontrol" in ptx:
        problems.append(f"{name}: griddepcontrol in the PTX of a kernel compiled without PDL")
    return problems


def handoff_problems(kernel, name: str, kind: str, handoff: bool) -> list:
    """The hand-off's memory ordering in the PTX: gate/up counts its items with a release
    atomic, the down kernel polls its counters with acquire loads (Triton lowers the poll,
    an atomic add of 0, to ld.acquire); neither without the hand-off."""
    ptx = kernel.asm["ptx"]
    sem = "release" if kind == "gate_up" else "acquire"
    found = re.search(rf"(atom|ld)\.global\.gpu\.{sem}", ptx) is not None
    if handoff and not found:
        return [f"{name}: the hand-off without an {sem} load or atomic in the PTX"]
    if not handoff and kind == "gate_up" and found:
        return [f"{name}: a {sem} atomic in the PTX of a gate/up kernel without the hand-off"]
    return []


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


def tuner_configs(base: KernelConfig, down: str) -> list:
    """Every config `oea-trt bench tune` tries from `base` that takes the `down` path."""
    return [cfg for step in candidate_steps() for cfg in (change(base) for change in step) if cfg.down == down]


def check_three_launch(shape, batch: int, candidates: bool, seen: set) -> tuple:
    """(problems, kernels compiled) for the three-launch path's gate/up and down kernels."""
    H, I = shape.hidden_size, shape.moe_intermediate_size
    base = default_config(batch, H, I, shape.top_k, shape.num_experts).replace(down="slots")
    configs = [(base, True), (base, False), (base.replace(handoff=True), True), (base.replace(handoff=False), True),
               (base.replace(handoff=True, dn_preload=True, dn_block_n=32), True)] + [
        (cfg, True) for cfg in (tuner_configs(base, "slots") if candidates else ())]
    problems, count = [], 0
    for cfg, pdl in configs:
        cfg = fitted(cfg, batch, H, I)
        single = one_block(cfg, batch)
        jobs = [("gate_up", (cfg.block_m, cfg.gu_block_n, cfg.gu_block_k, cfg.gu_warps, cfg.gu_stages, int(pdl),
                             int(cfg.handoff)),
                 lambda: compile_gate_up(shape, cfg, pdl, single)),
                ("down", (cfg.block_m, cfg.dn_block_n, cfg.dn_block_k, cfg.dn_warps, cfg.dn_stages, int(pdl),
                          int(cfg.dn_preload), int(cfg.handoff)),
                 lambda: compile_down(shape, cfg, pdl, single))]
        for kind, key, build in jobs:
            if (kind,) + key in seen:
                continue
            seen.add((kind,) + key)
            # Spills are reported, not enforced: the tuner times every candidate on the GPU.
            name = f"{kind} B={batch} m,n,k,w,s,pdl{',preload,handoff' if kind == 'down' else ',handoff'}={','.join(str(v) for v in key)}"
            kernel = build()
            waits = not (kind == "down" and cfg.handoff)
            problems += check(kernel, name, True, spills_allowed=True) + griddep_problems(kernel, name, pdl, waits)
            problems += handoff_problems(kernel, name, kind, cfg.handoff)
            count += 1
    return problems, count


def check_one_launch(shape, batch: int, candidates: bool, seen: set) -> tuple:
    """(problems, kernels compiled) for the one-launch kernel, with and without PDL and started
    on the routing's early active set."""
    H, I = shape.hidden_size, shape.moe_intermediate_size
    base = default_config(batch, H, I, shape.top_k, shape.num_experts).replace(down="one_launch")
    if base.block_m >= 64:
        base = base.replace(gu_warps=8)  # as the tuner runs a 64-token tile
    configs = [(base, True, False), (base, False, False), (base, True, True)]
    configs += [(cfg, True, False) for cfg in (tuner_configs(base, "one_launch") if candidates else ())]
    problems, count = [], 0
    for cfg, pdl, early in configs:
        cfg = fitted(cfg, batch, H, I)
        early = early and one_block(cfg, batch)
        key = (cfg.block_m, cfg.gu_block_n, cfg.gu_block_k, cfg.dn_block_n, cfg.dn_block_k, cfg.gu_warps,
               cfg.gu_stages, int(pdl), int(early))
        if key in seen:
            continue
        seen.add(key)
        name = f"one_launch B={batch} m,gn,gk,dn,dk,w,s,pdl,early={','.join(str(v) for v in key)}"
        kernel = compile_one_launch(shape, cfg, pdl, one_block(cfg, batch), early)
        problems += check(kernel, name, True, spills_allowed=True) + griddep_problems(kernel, name, pdl)
        count += 1
    return problems, count


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", nargs="+", choices=ALL_PRESETS, default=list(ALL_PRESETS))
    p.add_argument("--batch", nargs="+", type=int, default=[1, 16, 64], help="batch sizes (set block_m)")
    p.add_argument("--candidates", action="store_true", help="also every config `oea-trt bench tune` tries")
    p.add_argument("--kernel", nargs="+", choices=("three_launch", "one_launch"),
                   default=["three_launch", "one_launch"], help="which path's kernels to compile")
    args = p.parse_args(argv)
    problems, count, t0 = [], 0, time.time()
    for name in args.preset:
        shape = get_preset(name)
        print(f"{name}: H={shape.hidden_size} I={shape.moe_intermediate_size}")
        seen_three, seen_one = set(), set()
        for batch in args.batch:
            if "three_launch" in args.kernel:
                found, n = check_three_launch(shape, batch, args.candidates, seen_three)
                problems, count = problems + found, count + n
            if "one_launch" in args.kernel:
                found, n = check_one_launch(shape, batch, args.candidates, seen_one)
                problems, count = problems + found, count + n
        if "three_launch" in args.kernel:
            for pdl in (False, True):
                kernel = compile_combine(shape, KernelConfig(), pdl)
                problems += check(kernel, f"combine pdl={int(pdl)}", False) + griddep_problems(
                    kernel, f"combine pdl={int(pdl)}", pdl)
                count += 1
    print(f"{count} kernels compiled for sm_90 in {time.time() - t0:.0f} s")
    for problem in problems:
        print("PROBLEM:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
