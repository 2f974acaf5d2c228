"""Expert-major fused SwiGLU MoE for decode, in Triton: each active expert's weights are read
from HBM once per call and multiplied against ALL tokens routed to it.

Why expert-major: at decode sizes (<= 64 tokens) a MoE layer is memory-bound; its time is the
bytes of the distinct active experts T over HBM bandwidth, which is what OEA shrinks. A token-
major kernel (vLLM's small-batch path) re-reads an expert once per token that picked it.

Three launches (config.down == "slots"; the default above 16 tokens: up to 16 it is the
one-launch path of one_launch.py, which walks the same work items), no host synchronisation,
grids fixed by (tokens, k, E, H) and the GPU, so the whole call can be captured in a CUDA graph:
  1. gate/up: persistent programs walk the work items (a, n) = (a-th active expert, from the
     routing's active_mask, counted on the device; N-tile of the intermediate dim). For each,
     the program finds the expert's tokens itself by scanning expert_ids (one block of <= 64
     tokens at decode sizes: the alignment step is fused here, nothing is sorted), streams the
     gate and up rows of its tile once and writes silu(gate) * up for every routed token into
     a small buffer at row token*k + slot.
  2. down: persistent over (active expert, H-tile): fp32 rows of a per-(token, slot) buffer,
     each already scaled by the token's routing weight for that expert.
  3. combine: per token, sums its slots' rows in slot order (deterministic; no atomics).
A token that names one expert in two slots (the router's "top1" fill repeats an expert with
weight 0) is one row: the first slot's, carrying the summed weight. Ids outside [0, E) are
skipped. Arithmetic: bf16 x bf16 -> fp32 accumulation; the intermediate is rounded to the
weight dtype (as the reference model does) before the down projection.

Programmatic dependent launch (config.pdl; on by default where it works, sm_90+): each kernel's
programs may be scheduled while the previous kernel drains; every kernel waits
(griddepcontrol.wait) before touching memory the previous one wrote, and the persistent kernels
signal their dependents as soon as each program starts its last work item. On the H200 (30B
layer, skewed B=16, routing kernel in the graph; benchmarks/moe_ab.py) it saved ~1.5 us per
routing+MoE call: 130.0 -> 128.7 us vanilla, 77.9 -> 76.3 us at k0=3. Gate/up then starts ~1 us
after the (6 us) routing kernel starts instead of after it ends, though the overlapping kernels
run a little longer.

config.down == "combine" is a two-launch alternative, kept as an option but measured SLOWER and
not tuned: one kernel, one program per tile of BLOCK_N hidden rows (and per block of BLOCK_M
tokens), walks the active experts x K-steps as one loop, accumulates act @ w2_tile^T * routing
weight in fp32 registers and writes each output tile once (no y buffer, no combine kernel;
optionally prefetching its first experts' w2 slabs into L2 before the wait: config.
prefetch_experts, see _prefetch_l2). On the H200 (same case, 16 x 256 tile) it took 120 us where
the per-slot down and combine kernels took 43 + 4.6 us (routing+MoE vanilla 195-247 us vs 130
us, k0=3 108-133 vs 78 us, over two tiles), and PDL and the L2 prefetch made it slower still (up
to 297 / 168 us). With one program per H-tile (128 programs at H=2048, about one per SM) each SM
streams a single [BLOCK_N, I] slab at a time, which cannot keep enough bytes in flight: ~1.3
TB/s of w2 reads, against ~3.6 TB/s for the per-slot down kernel's many (expert, H-tile)
programs.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional

import torch
import triton
import triton.language as tl


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


#: How the down projection is done: "slots" (the default) = per-(token, slot) rows then a combine
#: kernel (3 launches per layer); "combine" = one kernel that also sums each token's experts (2
#: launches; measured slower on the H200, see the module doc); "one_launch" = the gate/up and
#: per-slot down items in one persistent grid, each token's tile summed by its last finisher
#: (1 launch; one_launch.py).
DOWN_MODES = ("slots", "combine", "one_launch")


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch options. block_m: token rows per tile (tl.dot needs >= 16; a decode
    batch of <= 64 tokens fits one tile, so every expert's weights are read once). gu_*: gate/up
    kernel, block_n over the intermediate dim, block_k over hidden. down: "slots" (3 launches,
    the default) or "combine" (2 launches, slower; see DOWN_MODES). dn_*: the "slots" down
    kernel, block_n over hidden, block_k over the intermediate dim. dc_*: the down + combine
    kernel, block_n hidden rows per program (H / block_n programs), block_k over the
    intermediate dim. pdl: programmatic dependent launch (None: on where it works, i.e. compiled
    for sm_90+, not in the interpreter). prefetch_experts: the down + combine kernel (only)
    prefetches this many active experts' weight tiles into L2 before waiting for gate/up (0:
    off, the default: it did not help in the H200 A/B; sm_90+ only, ignored elsewhere), with an
    L2::evict_last cache policy if prefetch_evict_last."""

    block_m: int = 16
    gu_block_n: int = 32
    gu_block_k: int = 128
    gu_warps: int = 4
    gu_stages: int = 4
    down: str = "slots"
    dc_block_n: int = 16
    dc_block_k: int = 256
    dc_warps: int = 4
    dc_stages: int = 4
    dn_block_n: int = 64
    dn_block_k: int = 128
    dn_warps: int = 4
    dn_stages: int = 4
    combine_block_h: int = 1024
    pdl: Optional[bool] = None
    prefetch_experts: int = 0
    prefetch_evict_last: bool = False
    max_programs: Optional[int] = None  # cap on persistent programs (default: one full wave)
    #: down="one_launch" only: programs per SM in its grid (None: as many as fit). On the H100
    #: (30B layer, B=16) 2 beat 3: a program's items take 1.5x longer at 3 per SM, and so does
    #: the tail while the last items drain (benchmarks/results/moe_one_launch_ab).
    programs_per_sm: Optional[int] = None
    #: Where the batch is one token block (<= block_m tokens: every decode batch), work items
    #: issue their weight loads without first waiting for the expert's token list (one_block()).
    #: On the H100 (30B, skewed B=16, routing+MoE) it took ~1 us off three launches and, with
    #: the one-launch path's owned-slot bitmask, ~3 us off one launch (benchmarks/results/
    #: moe_one_launch_ab, runs 5-7).
    early_stream: bool = True
    #: down="one_launch", one token block, and a routing launched with active_ready (the
    #: RoutingResult carries it): the kernel polls that flag instead of waiting for the routing
    #: kernel to finish, streams gate/up items on the published active set, and waits for the
    #: routing's rows only before its first down item (one_launch.early_active).
    early_active: bool = True

    def __post_init__(self):
        if self.down not in DOWN_MODES:
            raise ValueError(f"KernelConfig.down must be one of {DOWN_MODES}, got {self.down!r}")
        if self.prefetch_experts < 0:
            raise ValueError(f"KernelConfig.prefetch_experts must be >= 0 (0: off), got {self.prefetch_experts}")

    @property
    def launches(self) -> int:
        """Kernel launches per call."""
        return {"slots": 3, "combine": 2, "one_launch": 1}[self.down]

    def replace(self, **changes) -> "KernelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _fit(block: int, dim: int, name: str) -> int:
    """Largest power-of-two tile <= block (and >= 16) that divides dim."""
    b = block
    while b >= 16 and dim % b:
        b //= 2
    if b < 16:
        raise ValueError(f"{name}={dim} must be a multiple of 16 for the Triton MoE kernel")
    return b


#: SMs of the GPU the defaults are sized for (H200); the grids themselves use the real count.
_SMS = 132
#: Weight bytes the down + combine kernel keeps in flight per program (one program per SM):
#: HBM bandwidth x latency / SMs is ~32 KB on an H200 (4.8 TB/s x ~0.9 us / 132).
_DC_BYTES_IN_FLIGHT = 32 * 1024


def default_config(num_tokens: int, hidden: int, inter: int, top_k: int, num_experts: int) -> KernelConfig:
    """A heuristic that keeps enough programs in flight (H200: 132 SMs) at every batch size:
    few active experts -> narrower N-tiles, so more programs stream in parallel. Structure: one
    launch (down="one_launch", 2 programs per SM) up to 16 tokens, else "slots" (3 launches,
    KernelConfig's default). For down="combine" (an option), the down +
    combine kernel takes the narrowest hidden tile (>= 16 rows) that leaves at most one program
    per SM (H=2048: 16 rows, 128 programs; H=4096: 32), and enough pipeline stages to keep
    ~32 KB of its weights in flight."""
    max_active = min(num_experts, max(1, num_tokens) * top_k)
    block_m = min(64, max(16, _next_pow2(num_tokens)))
    gu_n = 32 if max_active * (inter // 32) >= 4 * 132 else 16
    gu_k = 128 if gu_n >= 32 else 256
    dn_n = 64 if inter >= 512 else 128
    dc_n = 16
    while hidden // dc_n > _SMS and dc_n < 64:
        dc_n *= 2
    dc_k = _fit(256, inter, "moe_intermediate_size") if inter % 16 == 0 else 256
    dc_stages = max(3, min(8, _DC_BYTES_IN_FLIGHT // (2 * dc_n * dc_k) + 1))
    # Up to 16 tokens: one launch, 2 programs per SM (H100, 30B layer, skewed B=16: 159 / 89 us
    # routing+MoE vanilla / k0=3 against 169 / 95 us for 3 launches; benchmarks/results/
    # moe_one_launch_ab). At 64 tokens the one-launch kernel's 64-row tiles run 1 program per SM
    # and lose (534 vs 424 us uniform): 3 launches there.
    down = "one_launch" if block_m <= 16 else "slots"
    return KernelConfig(block_m=block_m, gu_block_n=gu_n, gu_block_k=gu_k, dn_block_n=dn_n, dn_block_k=128,
                        dc_block_n=dc_n, dc_block_k=dc_k, dc_stages=dc_stages, down=down,
                        programs_per_sm=2 if down == "one_launch" else None)


def fitted(config: KernelConfig, num_tokens: int, hidden: int, inter: int) -> KernelConfig:
    """config with block_m raised to cover the batch (<= 64), tiles that divide the shape and
    pipeline stages that fit in shared memory."""
    block_m = max(config.block_m, min(64, max(16, _next_pow2(num_tokens))))
    cfg = config.replace(
        block_m=block_m,
        gu_block_n=_fit(config.gu_block_n, inter, "moe_intermediate_size"),
        gu_block_k=_fit(config.gu_block_k, hidden, "hidden_size"),
        dc_block_n=_fit(config.dc_block_n, hidden, "hidden_size"),
        dc_block_k=_fit(config.dc_block_k, inter, "moe_intermediate_size"),
        dn_block_n=_fit(config.dn_block_n, hidden, "hidden_size"),
        dn_block_k=_fit(config.dn_block_k, inter, "moe_intermediate_size"),
    )
    # A down + combine K-tile narrowed to divide I (e.g. 256 -> 64 for I=192) gets as many more
    # stages (up to 8), so the weight bytes it keeps in flight stay about what was asked for.
    cfg = cfg.replace(dc_stages=max(cfg.dc_stages, min(8, cfg.dc_stages * config.dc_block_k // cfg.dc_block_k)))
    # Fewer pipeline stages where a wide token tile would overflow shared memory (bf16 tiles).
    gu_stage = 2 * (cfg.block_m + 2 * cfg.gu_block_n) * cfg.gu_block_k
    dc_stage = 2 * (cfg.block_m + cfg.dc_block_n) * cfg.dc_block_k
    dn_stage = 2 * (cfg.block_m + cfg.dn_block_n) * cfg.dn_block_k
    if cfg.down == "one_launch":  # one kernel, one stage count for both loops
        gu_stage = max(gu_stage, dn_stage)
    return cfg.replace(gu_stages=_stages_within(cfg.gu_stages, gu_stage),
                       dc_stages=_stages_within(cfg.dc_stages, dc_stage),
                       dn_stages=_stages_within(cfg.dn_stages, dn_stage))


#: Shared memory a kernel's pipeline may use (H100/H200 allow 227 KB per block).
SMEM_BUDGET = 192 * 1024


def one_block(cfg: KernelConfig, num_tokens: int) -> bool:
    """The kernels' ONE_BLOCK: the batch is one token block (every decode batch: block_m covers
    up to 64 tokens), so a work item streams its weights without waiting for its expert's token
    list (config.early_stream; False only to compare)."""
    return cfg.early_stream and num_tokens <= cfg.block_m


def _stages_within(stages: int, bytes_per_stage: int) -> int:
    return max(2, min(stages, SMEM_BUDGET // bytes_per_stage))


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def pdl_supported(device: torch.device) -> bool:
    """Programmatic dependent launch works here: a CUDA device of compute capability 9.0+
    (Hopper) and compiled kernels (Triton's interpreter has no grid dependency control)."""
    if _interpreted() or device.type != "cuda":
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


# ---- device code -------------------------------------------------------------------------


@triton.jit
def _active_experts(active_mask_ptr, E: tl.constexpr, E_PAD: tl.constexpr):
    """(rank [E_PAD]: 1-based rank of each expert among the active ones, active [E_PAD] int32,
    number of active experts). Read once per program, from L2 (.cg: the one-launch kernel may
    read it while the routing kernel still runs, right after an acquire), kept in registers."""
    e_offs = tl.arange(0, E_PAD)
    active = tl.load(active_mask_ptr + e_offs, mask=e_offs < E, other=0, cache_modifier=".cg").to(tl.int32)
    return tl.cumsum(active, axis=0), active, tl.sum(active, axis=0)


@triton.jit
def _nth_active(rank, active, a, E_PAD: tl.constexpr):
    """The a-th (0-based) active expert in ascending id order."""
    return tl.sum(tl.where((rank == a + 1) & (active != 0), tl.arange(0, E_PAD), 0), axis=0)


@triton.jit
def _tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K: tl.constexpr, K_PAD: tl.constexpr,
                      BLOCK_M: tl.constexpr):
    """For tokens tok0 .. tok0+BLOCK_M-1: (token index, routed to `expert`?, buffer row =
    token*K + first slot naming the expert, hit [BLOCK_M, K_PAD] = slots naming it)."""
    toks = tok0 + tl.arange(0, BLOCK_M)
    slots = tl.arange(0, K_PAD)
    in_range = (toks[:, None] < num_tokens) & (slots[None, :] < K)
    ids = tl.load(expert_ids_ptr + toks[:, None] * K + slots[None, :], mask=in_range, other=-1)
    hit = (ids == expert) & in_range
    routed = tl.max(hit.to(tl.int32), axis=1) > 0
    first = tl.min(tl.where(hit, slots[None, :], K_PAD), axis=1)
    row = toks * K + first
    return toks, routed, row, hit


# The gate/up kernel (and the "slots" down kernel) are persistent: a grid of about one wave of
# programs walks the work items (active expert a, N-tile n), item w -> (w // N_TILES, w % N_TILES),
# so consecutive items stream adjacent rows of one expert. The number of items comes from the
# device (num_active), so the grid is fixed for CUDA graphs yet no program is launched for an
# inactive expert.


@triton.jit
def _signal_dependents_at_last_item(w, total, USE_PDL: tl.constexpr):
    """Programmatic dependent launch: the next kernel's programs may be scheduled once every
    program of this one has signalled (or exited). A program signals when it starts its last
    work item, so the next kernel ramps up during this one's tail, not after it."""
    if USE_PDL:
        if w + tl.num_programs(0) >= total:
            tl.extra.cuda.gdc_launch_dependents()


@triton.jit(do_not_specialize=["num_tokens"])
def _gate_up_kernel(x_ptr, w13_ptr, expert_ids_ptr, active_mask_ptr, act_ptr, num_tokens, stride_x,
                    H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                    K: tl.constexpr, K_PAD: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr,
                    ONE_BLOCK: tl.constexpr):
    if USE_PDL:
        # May start while the routing kernel drains: wait for its memory (active_mask,
        # expert_ids) and for whatever wrote x, before reading or writing anything.
        tl.extra.cuda.gdc_wait()
    N_TILES: tl.constexpr = I // BLOCK_N
    rank, active, num_active = _active_experts(active_mask_ptr, E, E_PAD)
    total = num_active * N_TILES
    if USE_PDL:
        if tl.program_id(0) >= total:  # no work item here: let the down kernel start right away
            tl.extra.cuda.gdc_launch_dependents()
    for w in range(tl.program_id(0), total, tl.num_programs(0)):
        _signal_dependents_at_last_item(w, total, USE_PDL)
        _gate_up_item(x_ptr, w13_ptr, expert_ids_ptr, act_ptr, _nth_active(rank, active, w // N_TILES, E_PAD),
                      w % N_TILES, num_tokens, stride_x, H, I, K, K_PAD, BLOCK_M, BLOCK_N, BLOCK_K, ONE_BLOCK,
                      w // N_TILES, False)


@triton.jit
def _gate_up_item(x_ptr, w13_ptr, expert_ids_ptr, act_ptr, expert, n_tile, num_tokens, stride_x,
                  H: tl.constexpr, I: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ONE_BLOCK: tl.constexpr,
                  a, ACT_BY_RANK: tl.constexpr):
    """One gate/up work item: N-tile n_tile of `expert`'s gate and up rows, streamed once, times
    every token routed to the expert; silu(gate) * up into the token's act row (token*K + the
    first slot naming the expert), rounded to act's dtype. ONE_BLOCK (the batch fits one token
    block, as every decode batch does): the block holds all of this active expert's tokens, so
    the item streams without waiting for the token list; it multiplies every token's x row
    (free: the MMA tile has BLOCK_M rows anyway) and the list only masks the act stores.
    ACT_BY_RANK (one block; the one-launch kernel started on the routing's early active set):
    the item never reads the routing's rows, which may not be written yet; it stores every
    token's act row at a * BLOCK_M + token (a: the expert's rank among the active ones) and
    the down item picks its tokens' rows from there."""
    kk = tl.arange(0, BLOCK_K)
    n = n_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    w_gate = w13_ptr + expert.to(tl.int64) * (2 * I * H) + n[:, None] * H + kk[None, :]
    w_up = w_gate + I * H
    if ACT_BY_RANK:
        toks = tl.arange(0, BLOCK_M)
        act = _gate_up_tile(x_ptr, w_gate, w_up, toks, toks < num_tokens, stride_x, H, BLOCK_M, BLOCK_N, BLOCK_K)
        rows = a * BLOCK_M + toks
        tl.store(act_ptr + rows[:, None].to(tl.int64) * I + n[None, :], act.to(act_ptr.dtype.element_ty),
                 mask=(toks < num_tokens)[:, None])
    else:
        for tok0 in range(0, num_tokens, BLOCK_M):  # one pass for a decode batch (<= BLOCK_M)
            toks, routed, row, hit = _tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K, K_PAD, BLOCK_M)
            if ONE_BLOCK:
                act = _gate_up_tile(x_ptr, w_gate, w_up, toks, toks < num_tokens, stride_x, H, BLOCK_M, BLOCK_N,
                                    BLOCK_K)
                tl.store(act_ptr + row[:, None].to(tl.int64) * I + n[None, :],
                         act.to(act_ptr.dtype.element_ty), mask=routed[:, None])
            elif tl.max(routed.to(tl.int32), axis=0) > 0:
                act = _gate_up_tile(x_ptr, w_gate, w_up, toks, routed, stride_x, H, BLOCK_M, BLOCK_N, BLOCK_K)
                tl.store(act_ptr + row[:, None].to(tl.int64) * I + n[None, :],
                         act.to(act_ptr.dtype.element_ty), mask=routed[:, None])


@triton.jit
def _gate_up_tile(x_ptr, w_gate, w_up, toks, rows, stride_x, H: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """silu(x @ gate^T) * (x @ up^T) in fp32 for the x rows of `toks` where `rows` (others 0).
    The weight tiles are loaded first: their loads do not depend on the token list."""
    kk = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + toks[:, None].to(tl.int64) * stride_x + kk[None, :]
    acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, H, BLOCK_K):
        gate = tl.load(w_gate + k0)
        up = tl.load(w_up + k0)
        x = tl.load(x_rows + k0, mask=rows[:, None], other=0.0)
        acc_gate = tl.dot(x, tl.trans(gate), acc_gate)
        acc_up = tl.dot(x, tl.trans(up), acc_up)
    return acc_gate * tl.sigmoid(acc_gate) * acc_up


@triton.jit
def _prefetch_l2(ptr, NBYTES: tl.constexpr, EVICT_LAST: tl.constexpr):
    """One thread of the program asks the TMA unit to bring NBYTES (a multiple of 16, from a
    16-byte aligned address) into L2: cp.async.bulk.prefetch (sm_90+), no registers, no shared
    memory, nothing to wait for. EVICT_LAST: with an L2::evict_last cache policy."""
    if EVICT_LAST:
        tl.inline_asm_elementwise(
            """{
            .reg .pred p;
            .reg .b32 t;
            .reg .b64 pol;
            mov.u32 t, %tid.x;
            setp.eq.u32 p, t, 0;
            createpolicy.fractional.L2::evict_last.b64 pol, 1.0;
            @p cp.async.bulk.prefetch.L2.global.L2::cache_hint [$1], $2, pol;
            mov.u32 $0, 0;
            }""",
            "=r,l,r", [ptr.to(tl.int64), tl.full((), NBYTES, tl.int32)],
            dtype=tl.int32, is_pure=False, pack=1)
    else:
        tl.inline_asm_elementwise(
            """{
            .reg .pred p;
            .reg .b32 t;
            mov.u32 t, %tid.x;
            setp.eq.u32 p, t, 0;
            @p cp.async.bulk.prefetch.L2.global [$1], $2;
            mov.u32 $0, 0;
            }""",
            "=r,l,r", [ptr.to(tl.int64), tl.full((), NBYTES, tl.int32)],
            dtype=tl.int32, is_pure=False, pack=1)


@triton.jit(do_not_specialize=["num_tokens"])
def _down_combine_kernel(act_ptr, w2_ptr, expert_ids_ptr, weights_ptr, active_mask_ptr, out_ptr, num_tokens,
                         stride_out, H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                         K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr, PREFETCH: tl.constexpr,
                         PREFETCH_EVICT_LAST: tl.constexpr):
    """out[tokens of block program_id(1), hidden rows of tile program_id(0)] = sum over the active
    experts e in ascending id order of act[token's row for e] @ w2[e, tile]^T * weight(token, e).
    Every program reads the whole [BLOCK_N, I] slab of every active expert (contiguous: rows of
    w2 [E, H, I]); its tokens' act rows are tiny and come from L2."""
    K_STEPS: tl.constexpr = I // BLOCK_K
    h = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    w_slab = w2_ptr + tl.program_id(0).to(tl.int64) * (BLOCK_N * I)  # expert 0's [BLOCK_N, I] slab
    if PREFETCH > 0:
        # Before waiting for gate/up: start pulling this program's slabs of the first PREFETCH
        # active experts into L2. Reading active_mask this early is safe: the routing kernel
        # wrote it, and it had completed (memory visible) before gate/up passed its own
        # griddepcontrol.wait; gate/up signals dependents only after that wait, so when this
        # kernel runs at all, active_mask is final. (Without PDL this kernel starts after gate/up
        # has completed, which is later still.) Weights are never written, so a prefetch of
        # them can only be early, never wrong.
        p_rank, p_active, p_num = _active_experts(active_mask_ptr, E, E_PAD)
        for i in tl.static_range(PREFETCH):
            if i < p_num:
                e = _nth_active(p_rank, p_active, i, E_PAD)
                _prefetch_l2(w_slab + e.to(tl.int64) * (H * I), BLOCK_N * I * 2, PREFETCH_EVICT_LAST)
    if USE_PDL:
        tl.extra.cuda.gdc_wait()  # gate/up's act rows (and the routing's outputs) are visible past here
    rank, active, num_active = _active_experts(active_mask_ptr, E, E_PAD)
    # The token block's routing, read once: ids and weights [BLOCK_M, K_PAD] stay in registers.
    toks = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.arange(0, K_PAD)
    in_range = (toks[:, None] < num_tokens) & (slots[None, :] < K)
    ids = tl.load(expert_ids_ptr + toks[:, None] * K + slots[None, :], mask=in_range, other=-1)
    wts = tl.load(weights_ptr + toks[:, None] * K + slots[None, :], mask=in_range, other=0.0)
    act_rows = act_ptr + (toks * K).to(tl.int64) * I  # + slot * I: the token's row for a slot
    kk = tl.arange(0, BLOCK_K)
    w_tile = w_slab + tl.arange(0, BLOCK_N)[:, None] * I + kk[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # One flat loop over (active expert, K-step), so the pipeliner keeps loads in flight across
    # expert boundaries. An expert with no token in this block (only with > BLOCK_M tokens)
    # contributes zeros: its weights are still read, as branching here would stall the pipeline.
    for j in range(0, num_active * K_STEPS):
        a = j // K_STEPS
        k0 = (j - a * K_STEPS) * BLOCK_K
        expert = _nth_active(rank, active, a, E_PAD)
        hit = ids == expert  # ids outside [0, E) never match
        routed = tl.max(hit.to(tl.int32), axis=1) > 0
        first = tl.min(tl.where(hit, slots[None, :], K_PAD), axis=1)
        wsum = tl.sum(tl.where(hit, wts, 0.0), axis=1)  # a repeated expert: one row, weights summed
        x = tl.load(act_rows[:, None] + first[:, None] * I + k0 + kk[None, :], mask=routed[:, None], other=0.0)
        w = tl.load(w_tile + expert.to(tl.int64) * (H * I) + k0, eviction_policy="evict_first")
        # Scaling each K-partial by the token's weight is linear: exact up to fp32 rounding.
        acc += tl.dot(x, tl.trans(w)) * wsum[:, None]
    tl.store(out_ptr + toks[:, None].to(tl.int64) * stride_out + h[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=toks[:, None] < num_tokens)


@triton.jit(do_not_specialize=["num_tokens"])
def _down_kernel(act_ptr, w2_ptr, expert_ids_ptr, weights_ptr, active_mask_ptr, y_ptr, num_tokens,
                 H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                 K: tl.constexpr, K_PAD: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr,
                 ONE_BLOCK: tl.constexpr):
    if USE_PDL:
        tl.extra.cuda.gdc_wait()  # gate/up's act rows are visible past here
    N_TILES: tl.constexpr = H // BLOCK_N
    rank, active, num_active = _active_experts(active_mask_ptr, E, E_PAD)
    total = num_active * N_TILES
    if USE_PDL:
        if tl.program_id(0) >= total:
            tl.extra.cuda.gdc_launch_dependents()
    for w in range(tl.program_id(0), total, tl.num_programs(0)):
        _signal_dependents_at_last_item(w, total, USE_PDL)
        expert = _nth_active(rank, active, w // N_TILES, E_PAD)
        for tok0 in range(0, num_tokens, BLOCK_M):
            toks, routed, row, hit = _tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K, K_PAD, BLOCK_M)
            _down_block(act_ptr, w2_ptr, weights_ptr, y_ptr, expert, w % N_TILES, toks, routed, row, row, hit,
                        H, I, K, K_PAD, BLOCK_M, BLOCK_N, BLOCK_K, ONE_BLOCK)


@triton.jit
def _down_block(act_ptr, w2_ptr, weights_ptr, y_ptr, expert, h_tile, toks, routed, row, act_row, hit,
                H: tl.constexpr, I: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ONE_BLOCK: tl.constexpr):
    """Down projection of `expert`'s hidden rows tile h_tile for one token block (toks, routed,
    row, hit: _tokens_of_expert's): act row @ w2 tile^T * the token's weight for the expert, an
    fp32 y row per (token, first slot naming the expert). The w2 tile is streamed once per
    token block (once per call at decode sizes), its loads issued before the act rows' (which
    need the token list). ONE_BLOCK: the block holds all of this active expert's tokens, so
    there is no "any token here?" branch to wait for. act rows are read from L2 (.cg): in the
    one-launch kernel another SM wrote them during this same kernel. act_row: where each
    token's act row is (`row`, or the one-launch kernel's ACT_BY_RANK layout)."""
    h = h_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    w_rows = w2_ptr + expert.to(tl.int64) * (H * I) + h[:, None] * I + tl.arange(0, BLOCK_K)[None, :]
    if ONE_BLOCK:
        _down_tile(act_ptr, w_rows, weights_ptr, y_ptr, h, toks, routed, row, act_row, hit, H, I, K, K_PAD,
                   BLOCK_M, BLOCK_N, BLOCK_K)
    elif tl.max(routed.to(tl.int32), axis=0) > 0:
        _down_tile(act_ptr, w_rows, weights_ptr, y_ptr, h, toks, routed, row, act_row, hit, H, I, K, K_PAD,
                   BLOCK_M, BLOCK_N, BLOCK_K)


@triton.jit
def _down_tile(act_ptr, w_rows, weights_ptr, y_ptr, h, toks, routed, row, act_row, hit, H: tl.constexpr,
               I: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr):
    kk = tl.arange(0, BLOCK_K)
    slots = tl.arange(0, K_PAD)
    a_rows = act_ptr + act_row[:, None].to(tl.int64) * I + kk[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, I, BLOCK_K):
        w = tl.load(w_rows + k0)
        act = tl.load(a_rows + k0, mask=routed[:, None], other=0.0, cache_modifier=".cg")
        acc = tl.dot(act, tl.trans(w), acc)
    # Weight of the expert for the token: summed over the slots that name it.
    wts = tl.load(weights_ptr + toks[:, None] * K + slots[None, :], mask=hit, other=0.0)
    acc = acc * tl.sum(wts, axis=1)[:, None]
    tl.store(y_ptr + row[:, None].to(tl.int64) * H + h[None, :], acc, mask=routed[:, None])


@triton.jit
def _combine_kernel(y_ptr, expert_ids_ptr, out_ptr, stride_out, H: tl.constexpr, E: tl.constexpr,
                    K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_H: tl.constexpr, USE_PDL: tl.constexpr):
    if USE_PDL:
        tl.extra.cuda.gdc_wait()  # the down kernel's y rows are visible past here
    token = tl.program_id(0)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    slots = tl.arange(0, K_PAD)
    ids = tl.load(expert_ids_ptr + token * K + slots, mask=slots < K, other=-1)
    valid = (ids >= 0) & (ids < E)
    # Only a slot whose expert did not appear in an earlier slot owns a row (see module doc).
    repeat = (ids[:, None] == ids[None, :]) & (slots[None, :] < slots[:, None])
    owner = valid & (tl.max(repeat.to(tl.int32), axis=1) == 0)
    rows = (token * K + slots).to(tl.int64)
    y = tl.load(y_ptr + rows[:, None] * H + h[None, :], mask=owner[:, None] & (h[None, :] < H), other=0.0)
    tl.store(out_ptr + token.to(tl.int64) * stride_out + h, tl.sum(y, axis=0).to(out_ptr.dtype.element_ty),
             mask=h < H)


# ---- host launcher -----------------------------------------------------------------------


def fused_moe(
    hidden_states: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    expert_ids: torch.Tensor,
    routing_weights: torch.Tensor,
    active_mask: Optional[torch.Tensor] = None,
    config: Optional[KernelConfig] = None,
    active_ready: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """hidden_states [T, H]; w13 [E, 2I, H] (gate rows then up rows); w2 [E, H, I];
    expert_ids int32 [T, k]; routing_weights float32 [T, k]; active_mask bool [E] (the
    routing's; computed from expert_ids when None). Returns [T, H] in hidden_states.dtype.
    active_ready: RoutingResult.active_ready of the routing call that produced these outputs,
    launched right before this call on the same stream with hidden_states already written
    (route_kernel(..., signal=True)); the one-launch path then starts while the routing runs."""
    num_tokens, k = expert_ids.shape
    num_experts, two_inter, hidden = w13.shape
    inter = two_inter // 2
    _check(hidden_states, w13, w2, expert_ids, routing_weights, active_mask)
    if active_ready is not None and (active_ready.dtype != torch.int32 or active_ready.numel() != 1
                                     or active_ready.device != hidden_states.device):
        raise ValueError(f"active_ready must be one int32 on {hidden_states.device} (RoutingResult.active_ready), got "
                         f"{active_ready.dtype} {tuple(active_ready.shape)} on {active_ready.device}")
    out = torch.empty((num_tokens, hidden), dtype=hidden_states.dtype, device=hidden_states.device)
    if num_tokens == 0:
        return out
    active_mask_given = active_mask is not None  # the routing's own mask: the one active_ready covers
    if active_mask is None:
        from oea_trt.moe.grouping import active_mask_from_ids

        active_mask = active_mask_from_ids(expert_ids, num_experts)
    cfg = fitted(config or default_config(num_tokens, hidden, inter, k, num_experts), num_tokens, hidden, inter)
    use_pdl = pdl_supported(hidden_states.device) if cfg.pdl is None else bool(cfg.pdl)
    if use_pdl and not pdl_supported(hidden_states.device):
        raise ValueError("KernelConfig.pdl=True needs a CUDA device of compute capability 9.0+ and compiled "
                         "kernels (not TRITON_INTERPRET=1); use pdl=None (automatic) or False")
    launch = {"launch_pdl": True} if use_pdl else {}
    ids = expert_ids.contiguous()
    wts = routing_weights.contiguous()
    mask_u8 = active_mask.contiguous().view(torch.uint8)
    if cfg.down == "one_launch":
        from oea_trt.moe.triton import one_launch

        one_launch.launch(hidden_states, w13, w2, ids, wts, mask_u8, out, cfg, use_pdl,
                          active_ready=active_ready if active_mask_given else None)
        return out
    act = torch.empty((num_tokens * k, inter), dtype=w13.dtype, device=w13.device)
    max_active = min(num_experts, num_tokens * k)
    shape = dict(E=num_experts, E_PAD=_next_pow2(num_experts), K=k, K_PAD=_next_pow2(k))
    _launch_persistent(
        _gate_up_kernel, max_active * (inter // cfg.gu_block_n), cfg.max_programs,
        (hidden_states, w13, ids, mask_u8, act, num_tokens, hidden_states.stride(0)),
        dict(H=hidden, I=inter, **shape, BLOCK_M=cfg.block_m, BLOCK_N=cfg.gu_block_n, BLOCK_K=cfg.gu_block_k,
             USE_PDL=use_pdl, ONE_BLOCK=one_block(cfg, num_tokens), num_warps=cfg.gu_warps,
             num_stages=cfg.gu_stages, **launch))
    if cfg.down == "combine":
        # The L2 prefetch is PTX for sm_90+ (cp.async.bulk): only where PDL could be used.
        prefetch = cfg.prefetch_experts if pdl_supported(hidden_states.device) else 0
        grid = (hidden // cfg.dc_block_n, triton.cdiv(num_tokens, cfg.block_m))
        _down_combine_kernel[grid](
            act, w2, ids, wts, mask_u8, out, num_tokens, out.stride(0), H=hidden, I=inter, **shape,
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.dc_block_n, BLOCK_K=cfg.dc_block_k, USE_PDL=use_pdl,
            PREFETCH=min(prefetch, max_active), PREFETCH_EVICT_LAST=cfg.prefetch_evict_last, num_warps=cfg.dc_warps,
            num_stages=cfg.dc_stages, **launch)
        return out
    y = torch.empty((num_tokens * k, hidden), dtype=torch.float32, device=w13.device)
    _launch_persistent(
        _down_kernel, max_active * (hidden // cfg.dn_block_n), cfg.max_programs,
        (act, w2, ids, wts, mask_u8, y, num_tokens),
        dict(H=hidden, I=inter, **shape, BLOCK_M=cfg.block_m, BLOCK_N=cfg.dn_block_n, BLOCK_K=cfg.dn_block_k,
             USE_PDL=use_pdl, ONE_BLOCK=one_block(cfg, num_tokens), num_warps=cfg.dn_warps,
             num_stages=cfg.dn_stages, **launch))
    block_h = min(cfg.combine_block_h, _next_pow2(hidden))
    _combine_kernel[(num_tokens, triton.cdiv(hidden, block_h))](
        y, ids, out, out.stride(0), H=hidden, E=num_experts, K=k, K_PAD=shape["K_PAD"], BLOCK_H=block_h,
        USE_PDL=use_pdl, num_warps=4, **launch)
    return out


#: (kernel, compile-time arguments, dtype, device) -> programs that are resident at once.
_WAVE: Dict[tuple, int] = {}


def _launch_persistent(kernel, max_items: int, max_programs: Optional[int], args: tuple, kwargs: dict,
                       programs_per_sm: Optional[int] = None) -> None:
    """Launch a persistent kernel on min(max_items, one wave) programs. One wave = SMs x
    programs resident per SM (at most programs_per_sm), from the compiled kernel's registers
    and shared memory (asked once per specialisation, before any CUDA-graph capture since the
    first call compiles)."""
    key = (kernel.fn.__name__, tuple(sorted(kwargs.items())), args[0].dtype, args[0].device, programs_per_sm)
    wave = _WAVE.get(key)
    if wave is None:
        wave = _WAVE[key] = _one_wave(kernel, args, kwargs, programs_per_sm)
    programs = max(1, min(max_items, wave, max_programs or wave))
    kernel[(programs,)](*args, **kwargs)


def _one_wave(kernel, args: tuple, kwargs: dict, programs_per_sm: Optional[int] = None) -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return 3  # the CPU interpreter: a few programs, so each walks several work items
    compiled = kernel.warmup(*args, grid=(1,), **kwargs)
    if hasattr(compiled, "result"):  # Triton's asynchronous compile mode hands back a future
        compiled = compiled.result()
    compiled._init_handles()  # loads the binary: n_regs is known from here on
    device = args[0].device.index if args[0].device.index is not None else torch.cuda.current_device()
    props = triton.runtime.driver.active.utils.get_device_properties(device)
    warps = compiled.metadata.num_warps
    regs_per_warp = -(-max(1, compiled.n_regs) * 32 // 256) * 256  # allocated in 256-register units
    by_regs = props["max_num_regs"] // (regs_per_warp * warps)
    # The SM's shared memory is the per-block opt-in limit plus 1 KB; each block reserves 1 KB.
    by_smem = (props["max_shared_mem"] + 1024) // (compiled.metadata.shared + 1024)
    per_sm = max(1, min(by_regs, by_smem, 64 // warps, 32, programs_per_sm or 32))
    return props["multiprocessor_count"] * per_sm


def _check(x, w13, w2, expert_ids, routing_weights, active_mask) -> None:
    E, two_inter, H = w13.shape
    if x.dim() != 2 or x.shape[1] != H or x.stride(1) != 1:
        raise ValueError(f"hidden_states must be [T, {H}] with unit stride in dim 1, got {tuple(x.shape)} "
                         f"strides {x.stride()}")
    if w2.shape != (E, H, two_inter // 2) or not (w13.is_contiguous() and w2.is_contiguous()):
        raise ValueError(f"w2 must be a contiguous [E={E}, H={H}, I={two_inter // 2}] tensor and w13 contiguous, "
                         f"got w2 {tuple(w2.shape)}")
    if x.dtype != w13.dtype or w2.dtype != w13.dtype:
        raise ValueError(f"hidden_states, w13 and w2 must share one dtype, got {x.dtype}, {w13.dtype}, {w2.dtype}")
    if expert_ids.dtype != torch.int32 or routing_weights.dtype != torch.float32:
        raise ValueError(f"expert_ids must be int32 and routing_weights float32 (the routing's output), got "
                         f"{expert_ids.dtype} and {routing_weights.dtype}")
    if routing_weights.shape != expert_ids.shape or expert_ids.shape[0] != x.shape[0]:
        raise ValueError(f"expert_ids {tuple(expert_ids.shape)} and routing_weights {tuple(routing_weights.shape)} "
                         f"must both be [T={x.shape[0]}, k]")
    if active_mask is not None and (active_mask.shape != (E,) or active_mask.dtype != torch.bool):
        raise ValueError(f"active_mask must be bool [E={E}], got {active_mask.dtype} {tuple(active_mask.shape)}")
