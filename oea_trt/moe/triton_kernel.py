"""Expert-major fused SwiGLU MoE for decode, in Triton: each active expert's weights are read
from HBM once per call and multiplied against ALL tokens routed to it.

Why expert-major: at decode sizes (<= 64 tokens) a MoE layer is memory-bound; its time is the
bytes of the distinct active experts T over HBM bandwidth, which is what OEA shrinks. A token-
major kernel (vLLM's small-batch path) re-reads an expert once per token that picked it.

Three launches, no host synchronisation, grids fixed by (tokens, k, E) and the GPU, so the
whole call can be captured in a CUDA graph:
  1. gate/up: persistent programs walk the work items (a, n) = (a-th active expert, from the
     routing's active_mask, counted on the device; N-tile of the intermediate dim). For each,
     the program finds the expert's tokens itself by scanning expert_ids (one block of <= 64
     tokens at decode sizes: the alignment step is fused here, nothing is sorted), streams the
     gate and up rows of its tile once and writes silu(gate) * up for every routed token into
     a small buffer at row token*k + slot.
  2. down: the same over N-tiles of the hidden dim: the expert's intermediate rows times its
     down tile, times the token's routing weight, into fp32 rows of a per-(token, slot) buffer.
  3. combine: per token, sums its slots' rows in slot order (deterministic; no atomics).
A token that names one expert in two slots (the router's "top1" fill repeats an expert with
weight 0) is one row: the first slot's, carrying the summed weight. Ids outside [0, E) are
skipped. Arithmetic: bf16 x bf16 -> fp32 accumulation; the intermediate is rounded to the
weight dtype (as the reference model does) before the down projection.
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


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Tile sizes. block_m: token rows per tile (tl.dot needs >= 16; a decode batch of <= 64
    tokens fits one tile, so every expert's weights are read once). gu_*: gate/up kernel,
    block_n over the intermediate dim, block_k over hidden. dn_*: down kernel, block_n over
    hidden, block_k over the intermediate dim."""

    block_m: int = 16
    gu_block_n: int = 32
    gu_block_k: int = 128
    gu_warps: int = 4
    gu_stages: int = 4
    dn_block_n: int = 64
    dn_block_k: int = 128
    dn_warps: int = 4
    dn_stages: int = 4
    combine_block_h: int = 1024
    max_programs: Optional[int] = None  # cap on persistent programs (default: one full wave)

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


def default_config(num_tokens: int, hidden: int, inter: int, top_k: int, num_experts: int) -> KernelConfig:
    """A heuristic that keeps enough programs in flight (H200: 132 SMs) at every batch size:
    few active experts -> narrower N-tiles, so more programs stream in parallel."""
    max_active = min(num_experts, max(1, num_tokens) * top_k)
    block_m = min(64, max(16, _next_pow2(num_tokens)))
    gu_n = 32 if max_active * (inter // 32) >= 4 * 132 else 16
    gu_k = 128 if gu_n >= 32 else 256
    dn_n = 64 if inter >= 512 else 128
    return KernelConfig(block_m=block_m, gu_block_n=gu_n, gu_block_k=gu_k, dn_block_n=dn_n, dn_block_k=128)


def fitted(config: KernelConfig, num_tokens: int, hidden: int, inter: int) -> KernelConfig:
    """config with block_m raised to cover the batch (<= 64) and tiles that divide the shape."""
    block_m = max(config.block_m, min(64, max(16, _next_pow2(num_tokens))))
    cfg = config.replace(
        block_m=block_m,
        gu_block_n=_fit(config.gu_block_n, inter, "moe_intermediate_size"),
        gu_block_k=_fit(config.gu_block_k, hidden, "hidden_size"),
        dn_block_n=_fit(config.dn_block_n, hidden, "hidden_size"),
        dn_block_k=_fit(config.dn_block_k, inter, "moe_intermediate_size"),
    )
    # Fewer pipeline stages where a wide token tile would overflow shared memory (bf16 tiles).
    gu_stage = 2 * (cfg.block_m + 2 * cfg.gu_block_n) * cfg.gu_block_k
    dn_stage = 2 * (cfg.block_m + cfg.dn_block_n) * cfg.dn_block_k
    return cfg.replace(gu_stages=_stages_within(cfg.gu_stages, gu_stage),
                       dn_stages=_stages_within(cfg.dn_stages, dn_stage))


#: Shared memory a kernel's pipeline may use (H100/H200 allow 227 KB per block).
SMEM_BUDGET = 192 * 1024


def _stages_within(stages: int, bytes_per_stage: int) -> int:
    return max(2, min(stages, SMEM_BUDGET // bytes_per_stage))


# ---- device code -------------------------------------------------------------------------


@triton.jit
def _active_experts(active_mask_ptr, E: tl.constexpr, E_PAD: tl.constexpr):
    """(rank [E_PAD]: 1-based rank of each expert among the active ones, active [E_PAD] int32,
    number of active experts). Read once per program, kept in registers."""
    e_offs = tl.arange(0, E_PAD)
    active = tl.load(active_mask_ptr + e_offs, mask=e_offs < E, other=0).to(tl.int32)
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


# Both GEMM kernels are persistent: a grid of about one wave of programs walks the work items
# (active expert a, N-tile n), item w -> (w // N_TILES, w % N_TILES), so consecutive items stream
# adjacent rows of one expert. The number of items comes from the device (num_active), so the
# grid is fixed for CUDA graphs yet no program is launched for an inactive expert.


@triton.jit(do_not_specialize=["num_tokens"])
def _gate_up_kernel(x_ptr, w13_ptr, expert_ids_ptr, active_mask_ptr, act_ptr, num_tokens, stride_x,
                    H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                    K: tl.constexpr, K_PAD: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    N_TILES: tl.constexpr = I // BLOCK_N
    rank, active, num_active = _active_experts(active_mask_ptr, E, E_PAD)
    kk = tl.arange(0, BLOCK_K)
    for w in range(tl.program_id(0), num_active * N_TILES, tl.num_programs(0)):
        expert = _nth_active(rank, active, w // N_TILES, E_PAD)
        n = (w % N_TILES) * BLOCK_N + tl.arange(0, BLOCK_N)
        w_gate = w13_ptr + expert.to(tl.int64) * (2 * I * H) + n[:, None] * H + kk[None, :]
        w_up = w_gate + I * H
        for tok0 in range(0, num_tokens, BLOCK_M):  # one pass for a decode batch (<= BLOCK_M)
            toks, routed, row, hit = _tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K, K_PAD, BLOCK_M)
            if tl.max(routed.to(tl.int32), axis=0) > 0:
                x_rows = x_ptr + toks[:, None].to(tl.int64) * stride_x + kk[None, :]
                acc_gate = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                for k0 in range(0, H, BLOCK_K):
                    x = tl.load(x_rows + k0, mask=routed[:, None], other=0.0)
                    acc_gate = tl.dot(x, tl.trans(tl.load(w_gate + k0)), acc_gate)
                    acc_up = tl.dot(x, tl.trans(tl.load(w_up + k0)), acc_up)
                act = acc_gate * tl.sigmoid(acc_gate) * acc_up
                tl.store(act_ptr + row[:, None].to(tl.int64) * I + n[None, :],
                         act.to(act_ptr.dtype.element_ty), mask=routed[:, None])


@triton.jit(do_not_specialize=["num_tokens"])
def _down_kernel(act_ptr, w2_ptr, expert_ids_ptr, weights_ptr, active_mask_ptr, y_ptr, num_tokens,
                 H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                 K: tl.constexpr, K_PAD: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    N_TILES: tl.constexpr = H // BLOCK_N
    rank, active, num_active = _active_experts(active_mask_ptr, E, E_PAD)
    kk = tl.arange(0, BLOCK_K)
    slots = tl.arange(0, K_PAD)
    for w in range(tl.program_id(0), num_active * N_TILES, tl.num_programs(0)):
        expert = _nth_active(rank, active, w // N_TILES, E_PAD)
        h = (w % N_TILES) * BLOCK_N + tl.arange(0, BLOCK_N)
        w_rows = w2_ptr + expert.to(tl.int64) * (H * I) + h[:, None] * I + kk[None, :]
        for tok0 in range(0, num_tokens, BLOCK_M):
            toks, routed, row, hit = _tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K, K_PAD, BLOCK_M)
            if tl.max(routed.to(tl.int32), axis=0) > 0:
                a_rows = act_ptr + row[:, None].to(tl.int64) * I + kk[None, :]
                acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
                for k0 in range(0, I, BLOCK_K):
                    act = tl.load(a_rows + k0, mask=routed[:, None], other=0.0)
                    acc = tl.dot(act, tl.trans(tl.load(w_rows + k0)), acc)
                # Weight of the expert for the token: summed over the slots that name it.
                wts = tl.load(weights_ptr + toks[:, None] * K + slots[None, :], mask=hit, other=0.0)
                acc = acc * tl.sum(wts, axis=1)[:, None]
                tl.store(y_ptr + row[:, None].to(tl.int64) * H + h[None, :], acc, mask=routed[:, None])


@triton.jit
def _combine_kernel(y_ptr, expert_ids_ptr, out_ptr, stride_out, H: tl.constexpr, E: tl.constexpr,
                    K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_H: tl.constexpr):
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
) -> torch.Tensor:
    """hidden_states [T, H]; w13 [E, 2I, H] (gate rows then up rows); w2 [E, H, I];
    expert_ids int32 [T, k]; routing_weights float32 [T, k]; active_mask bool [E] (the
    routing's; computed from expert_ids when None). Returns [T, H] in hidden_states.dtype."""
    num_tokens, k = expert_ids.shape
    num_experts, two_inter, hidden = w13.shape
    inter = two_inter // 2
    _check(hidden_states, w13, w2, expert_ids, routing_weights, active_mask)
    out = torch.empty((num_tokens, hidden), dtype=hidden_states.dtype, device=hidden_states.device)
    if num_tokens == 0:
        return out
    if active_mask is None:
        from .grouping import active_mask_from_ids

        active_mask = active_mask_from_ids(expert_ids, num_experts)
    cfg = fitted(config or default_config(num_tokens, hidden, inter, k, num_experts), num_tokens, hidden, inter)
    ids = expert_ids.contiguous()
    wts = routing_weights.contiguous()
    mask_u8 = active_mask.contiguous().view(torch.uint8)
    act = torch.empty((num_tokens * k, inter), dtype=w13.dtype, device=w13.device)
    y = torch.empty((num_tokens * k, hidden), dtype=torch.float32, device=w13.device)
    max_active = min(num_experts, num_tokens * k)
    shape = dict(E=num_experts, E_PAD=_next_pow2(num_experts), K=k, K_PAD=_next_pow2(k))
    _launch_persistent(
        _gate_up_kernel, max_active * (inter // cfg.gu_block_n), cfg.max_programs,
        (hidden_states, w13, ids, mask_u8, act, num_tokens, hidden_states.stride(0)),
        dict(H=hidden, I=inter, **shape, BLOCK_M=cfg.block_m, BLOCK_N=cfg.gu_block_n, BLOCK_K=cfg.gu_block_k,
             num_warps=cfg.gu_warps, num_stages=cfg.gu_stages))
    _launch_persistent(
        _down_kernel, max_active * (hidden // cfg.dn_block_n), cfg.max_programs,
        (act, w2, ids, wts, mask_u8, y, num_tokens),
        dict(H=hidden, I=inter, **shape, BLOCK_M=cfg.block_m, BLOCK_N=cfg.dn_block_n, BLOCK_K=cfg.dn_block_k,
             num_warps=cfg.dn_warps, num_stages=cfg.dn_stages))
    block_h = min(cfg.combine_block_h, _next_pow2(hidden))
    _combine_kernel[(num_tokens, triton.cdiv(hidden, block_h))](
        y, ids, out, out.stride(0), H=hidden, E=num_experts, K=k, K_PAD=shape["K_PAD"], BLOCK_H=block_h,
        num_warps=4)
    return out


#: (kernel, compile-time arguments, dtype, device) -> programs that are resident at once.
_WAVE: Dict[tuple, int] = {}


def _launch_persistent(kernel, max_items: int, max_programs: Optional[int], args: tuple, kwargs: dict) -> None:
    """Launch a persistent kernel on min(max_items, one wave) programs. One wave = SMs x
    programs resident per SM, from the compiled kernel's registers and shared memory (asked
    once per specialisation, before any CUDA-graph capture since the first call compiles)."""
    key = (kernel.fn.__name__, tuple(sorted(kwargs.items())), args[0].dtype, args[0].device)
    wave = _WAVE.get(key)
    if wave is None:
        wave = _WAVE[key] = _one_wave(kernel, args, kwargs)
    programs = max(1, min(max_items, wave, max_programs or wave))
    kernel[(programs,)](*args, **kwargs)


def _one_wave(kernel, args: tuple, kwargs: dict) -> int:
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
    per_sm = max(1, min(by_regs, by_smem, 64 // warps, 32))
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
