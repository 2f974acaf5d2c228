#!/usr/bin/env python3
"""Does Triton keep a load's L2 eviction hint when it pipelines the load? Compiles, for sm_90 on
a machine without a GPU, a gate/up-shaped K loop (a [32, 128] weight tile and a [16, 128] x tile
a step, tl.dot) with eviction_policy "", "evict_first" and "evict_last" on the weight load, at
num_stages 1 (plain loads into registers) and 4 (cp.async into shared memory), and prints what
the PTX carries: cp.async instructions, createpolicy (the policy register) and L2::cache_hint.

Why it matters (issue 20): a design that keeps the down weights in L2 while gate/up streams
needs the gate/up stream at a lower eviction priority than the down weights. The answer here
says whether the Triton gate/up loop can set it, or only a separate prefetch can.

    python3 scripts/check_triton_cache_hints.py
"""
import os
import re

os.environ.pop("TRITON_INTERPRET", None)  # compile for real, whatever the caller's environment

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402


@triton.jit
def _k_loop(x_ptr, w_ptr, out_ptr, EVICT: tl.constexpr):
    n = tl.arange(0, 32)
    kk = tl.arange(0, 128)
    m = tl.arange(0, 16)
    acc = tl.zeros((16, 32), dtype=tl.float32)
    for k0 in range(0, 2048, 128):
        w = tl.load(w_ptr + n[:, None] * 2048 + kk[None, :] + k0, eviction_policy=EVICT)
        x = tl.load(x_ptr + m[:, None] * 2048 + kk[None, :] + k0)
        acc = tl.dot(x, tl.trans(w), acc)
    tl.store(out_ptr + m[:, None] * 32 + n[None, :], acc)


def ptx_of(evict: str, stages: int) -> str:
    signature = {"x_ptr": "*bf16", "w_ptr": "*bf16", "out_ptr": "*fp32", "EVICT": "constexpr"}
    aligned = {(i,): [["tt.divisibility", 16]] for i in range(3)}  # as the JIT specializes torch's tensors
    src = ASTSource(fn=_k_loop, signature=signature, constexprs={"EVICT": evict}, attrs=aligned)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": 4, "num_stages": stages}).asm["ptx"]


def main():
    print(f"triton {triton.__version__}, sm_90")
    print(f"{'eviction_policy':16s} {'stages':>6s} {'cp.async':>8s} {'createpolicy':>12s} {'cache_hint':>10s}")
    for stages in (1, 4):
        for evict in ("", "evict_first", "evict_last"):
            ptx = ptx_of(evict, stages)
            print(f"{evict or '(none)':16s} {stages:6d} {len(re.findall(r'cp[.]async[.]c[ag]', ptx)):8d} "
                  f"{ptx.count('createpolicy'):12d} {ptx.count('L2::cache_hint'):10d}")


if __name__ == "__main__":
    main()
