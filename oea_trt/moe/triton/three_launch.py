"""The expert-major MoE layer in three launches (KernelConfig.down == "slots"): gate/up, down,
combine. No host synchronisation; grids fixed by (tokens, k, E, H) and the GPU, so a call can
be captured in a CUDA graph.

  1. gate/up: persistent programs walk the gate/up items (tiles.py): item w -> (active expert
     w // N_TILES, N-tile w % N_TILES), so consecutive items stream adjacent rows of one
     expert; silu(gate) * up goes to a small buffer at row token*k + slot.
  2. down: persistent over (active expert, H-tile): fp32 y rows per (token, slot), each
     already scaled by the token's routing weight for that expert.
  3. combine: per token, sums its slots' rows in slot order (deterministic; no atomics).

Programmatic dependent launch (config.pdl, sm_90+): each kernel's programs may be scheduled
while the previous kernel drains; every kernel waits (griddepcontrol.wait; the hand-off's down
kernel waits on counters instead, below) before touching memory the previous one wrote, and the
persistent kernels signal their dependents as soon as each program starts its last work item,
so gate/up can start while the routing kernel drains.

Preloaded down tiles (config.dn_preload, one token block): the down kernel's programs are
resident while gate/up streams (PDL), and would only wait there; instead each loads its first
item's whole w2 tile into registers before its wait, so after gate/up only the act rows are
read (B=1 on an H100: the down kernel ends 2.3 us after gate/up instead of 7.0).

Per-expert hand-off (config.handoff): gate/up walks the experts in order, so the first experts'
act rows are complete long before the kernel is; each gate/up item counts itself done in its
expert's counter (release) and a down item waits on that counter (acquire) instead of
griddepcontrol.wait, so down items run in gate/up's last wave and tail (H100, B=32 and 64: 2-4%
faster). The counters live in the per-device workspace (sync.py): calls on one device must be
stream-ordered.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from oea_trt.moe.triton.config import KernelConfig, next_pow2, one_block
from oea_trt.moe.triton.launch import launch_persistent
from oea_trt.moe.triton.sync import sync_workspace, wait_for_count
from oea_trt.moe.triton.tiles import (active_experts, down_block, down_preloaded, gate_up_item, nth_active,
                                     preload_w2, tokens_of_expert)


@triton.jit
def _signal_dependents_at_last_item(w, total, USE_PDL: tl.constexpr):
    """Programmatic dependent launch: the next kernel's programs may be scheduled once every
    program of this one has signalled (or exited). A program signals when it starts its last
    work item, so the next kernel ramps up during this one's tail, not after it."""
    if USE_PDL:
        if w + tl.num_programs(0) >= total:
            tl.extra.cuda.gdc_launch_dependents()


@triton.jit(do_not_specialize=["num_tokens"])
def gate_up_kernel(x_ptr, w13_ptr, expert_ids_ptr, active_mask_ptr, act_ptr, gate_up_done_ptr, num_tokens, stride_x,
                   H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                   K: tl.constexpr, K_PAD: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr,
                   ONE_BLOCK: tl.constexpr, HANDOFF: tl.constexpr = False):
    """HANDOFF: each item, once its act rows are stored, counts itself done in its expert's
    counter (gate_up_done_ptr[expert], the zeroed workspace), which the down kernel's items
    wait on instead of the whole kernel."""
    if USE_PDL:
        # May start while the routing kernel drains: wait for its memory (active_mask,
        # expert_ids) and for whatever wrote x, before reading or writing anything.
        tl.extra.cuda.gdc_wait()
    N_TILES: tl.constexpr = I // BLOCK_N
    rank, active, num_active = active_experts(active_mask_ptr, E, E_PAD)
    total = num_active * N_TILES
    if USE_PDL:
        if tl.program_id(0) >= total:  # no work item here: let the down kernel start right away
            tl.extra.cuda.gdc_launch_dependents()
    for w in range(tl.program_id(0), total, tl.num_programs(0)):
        _signal_dependents_at_last_item(w, total, USE_PDL)
        expert = nth_active(rank, active, w // N_TILES, E_PAD)
        gate_up_item(x_ptr, w13_ptr, expert_ids_ptr, act_ptr, expert, w % N_TILES, num_tokens, stride_x,
                     H, I, K, K_PAD, BLOCK_M, BLOCK_N, BLOCK_K, ONE_BLOCK, w // N_TILES, False)
        if HANDOFF:
            tl.debug_barrier()  # every thread's act stores precede the release
            tl.atomic_add(gate_up_done_ptr + expert, 1, sem="release")


@triton.jit(do_not_specialize=["num_tokens"])
def down_kernel(act_ptr, w2_ptr, expert_ids_ptr, weights_ptr, active_mask_ptr, y_ptr, sync_ptr, num_tokens,
                H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                K: tl.constexpr, K_PAD: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, USE_PDL: tl.constexpr,
                ONE_BLOCK: tl.constexpr, PRELOAD: tl.constexpr = False, HANDOFF: tl.constexpr = False,
                GU_TILES: tl.constexpr = 1):
    """sync_ptr: the zeroed int32 workspace (sync.py), used only with HANDOFF: [0] programs
    exited, [1, 1+E) gate/up items done per expert (1 + E words).
    HANDOFF: an item waits only until its expert's GU_TILES gate/up items have counted
    themselves done, not for the whole gate/up kernel: down items of the experts gate/up walked
    first run in gate/up's last wave and tail. No deadlock: with PDL this kernel launches only
    after every gate/up program has started its last item, so the items waited on are running.
    The last program out zeroes the expert counters for the next call."""
    PRELOAD_FIRST: tl.constexpr = PRELOAD and ONE_BLOCK
    if USE_PDL and not PRELOAD_FIRST and not HANDOFF:
        tl.extra.cuda.gdc_wait()  # gate/up's act rows are visible past here
    # PRELOAD_FIRST and HANDOFF read the active set and the routing's rows before any wait: this
    # kernel launches only once every gate/up program has passed its own wait, i.e. after the
    # kernel that wrote them (the routing) completed and flushed; only gate/up's act rows need a
    # wait (gdc_wait, or with HANDOFF the expert's counter).
    exited_ptr = sync_ptr
    gate_up_done_ptr = sync_ptr + 1
    N_TILES: tl.constexpr = H // BLOCK_N
    rank, active, num_active = active_experts(active_mask_ptr, E, E_PAD)
    total = num_active * N_TILES
    if USE_PDL:
        if tl.program_id(0) >= total:
            tl.extra.cuda.gdc_launch_dependents()
    first = tl.program_id(0)
    if PRELOAD_FIRST:
        # The program's first item: its whole w2 tile is loaded while gate/up still streams.
        if first < total:
            _signal_dependents_at_last_item(first, total, USE_PDL)
            expert = nth_active(rank, active, first // N_TILES, E_PAD)
            toks, routed, row, hit = tokens_of_expert(expert_ids_ptr, expert, 0, num_tokens, K, K_PAD, BLOCK_M)
            w0, w1, w2, w3 = preload_w2(w2_ptr, expert, first % N_TILES, H, I, BLOCK_N, BLOCK_K)
            if HANDOFF:
                wait_for_count(gate_up_done_ptr + expert, GU_TILES)
            elif USE_PDL:
                tl.extra.cuda.gdc_wait()
            down_preloaded(act_ptr, w0, w1, w2, w3, weights_ptr, y_ptr, first % N_TILES, toks, routed, row, hit,
                           H, I, K, K_PAD, BLOCK_M, BLOCK_N, BLOCK_K)
        first += tl.num_programs(0)
    for w in range(first, total, tl.num_programs(0)):
        _signal_dependents_at_last_item(w, total, USE_PDL)
        expert = nth_active(rank, active, w // N_TILES, E_PAD)
        if ONE_BLOCK:  # one token block (every decode batch): no token-block loop
            toks, routed, row, hit = tokens_of_expert(expert_ids_ptr, expert, 0, num_tokens, K, K_PAD, BLOCK_M)
            if HANDOFF:
                wait_for_count(gate_up_done_ptr + expert, GU_TILES)
            down_block(act_ptr, w2_ptr, weights_ptr, y_ptr, expert, w % N_TILES, toks, routed, row, row, hit,
                       H, I, K, K_PAD, BLOCK_M, BLOCK_N, BLOCK_K, ONE_BLOCK)
        else:
            if HANDOFF:
                wait_for_count(gate_up_done_ptr + expert, GU_TILES)
            for tok0 in range(0, num_tokens, BLOCK_M):
                toks, routed, row, hit = tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K, K_PAD,
                                                          BLOCK_M)
                down_block(act_ptr, w2_ptr, weights_ptr, y_ptr, expert, w % N_TILES, toks, routed, row, row, hit,
                           H, I, K, K_PAD, BLOCK_M, BLOCK_N, BLOCK_K, ONE_BLOCK)
    if HANDOFF:
        # The last program out: every item has passed its expert's wait, so every gate/up item
        # has counted itself; nothing reads the counters any more in this call.
        if tl.atomic_add(exited_ptr, 1, sem="acq_rel") == tl.num_programs(0) - 1:
            e_offs = tl.arange(0, E_PAD)
            tl.store(gate_up_done_ptr + e_offs, tl.zeros((E_PAD,), dtype=tl.int32), mask=e_offs < E)
            tl.store(exited_ptr, 0)


@triton.jit
def combine_kernel(y_ptr, expert_ids_ptr, out_ptr, stride_out, H: tl.constexpr, E: tl.constexpr,
                   K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_H: tl.constexpr, USE_PDL: tl.constexpr):
    if USE_PDL:
        tl.extra.cuda.gdc_wait()  # the down kernel's y rows are visible past here
    token = tl.program_id(0)
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    slots = tl.arange(0, K_PAD)
    ids = tl.load(expert_ids_ptr + token * K + slots, mask=slots < K, other=-1)
    valid = (ids >= 0) & (ids < E)
    # Only a slot whose expert did not appear in an earlier slot owns a row (tiles.py).
    repeat = (ids[:, None] == ids[None, :]) & (slots[None, :] < slots[:, None])
    owner = valid & (tl.max(repeat.to(tl.int32), axis=1) == 0)
    rows = (token * K + slots).to(tl.int64)
    y = tl.load(y_ptr + rows[:, None] * H + h[None, :], mask=owner[:, None] & (h[None, :] < H), other=0.0)
    tl.store(out_ptr + token.to(tl.int64) * stride_out + h, tl.sum(y, axis=0).to(out_ptr.dtype.element_ty),
             mask=h < H)


def launch(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, wts: torch.Tensor,
           mask_u8: torch.Tensor, out: torch.Tensor, cfg: KernelConfig, use_pdl: bool) -> None:
    """The three kernels of one call into out (inputs checked and cfg fitted by the caller,
    oea_trt.moe.triton.fused_moe; mask_u8: the active mask viewed as uint8)."""
    num_tokens, k = ids.shape
    num_experts, two_inter, hidden = w13.shape
    inter = two_inter // 2
    pdl = {"launch_pdl": True} if use_pdl else {}
    shape = dict(E=num_experts, E_PAD=next_pow2(num_experts), K=k, K_PAD=next_pow2(k))
    max_active = min(num_experts, num_tokens * k)
    act = torch.empty((num_tokens * k, inter), dtype=w13.dtype, device=w13.device)
    h_tiles = hidden // cfg.dn_block_n
    # handoff: the zeroed workspace (sync.py; layout in down_kernel); otherwise the pointer is
    # unused and ids stands in for it.
    sync = sync_workspace(1 + num_experts, x.device) if cfg.handoff else ids
    launch_persistent(
        gate_up_kernel, max_active * (inter // cfg.gu_block_n), cfg.max_programs,
        (x, w13, ids, mask_u8, act, sync[1:] if cfg.handoff else sync, num_tokens, x.stride(0)),
        dict(H=hidden, I=inter, **shape, BLOCK_M=cfg.block_m, BLOCK_N=cfg.gu_block_n, BLOCK_K=cfg.gu_block_k,
             USE_PDL=use_pdl, ONE_BLOCK=one_block(cfg, num_tokens), HANDOFF=cfg.handoff, num_warps=cfg.gu_warps,
             num_stages=cfg.gu_stages, **pdl))
    y = torch.empty((num_tokens * k, hidden), dtype=torch.float32, device=w13.device)
    launch_persistent(
        down_kernel, max_active * h_tiles, cfg.max_programs,
        (act, w2, ids, wts, mask_u8, y, sync, num_tokens),
        dict(H=hidden, I=inter, **shape, BLOCK_M=cfg.block_m, BLOCK_N=cfg.dn_block_n, BLOCK_K=cfg.dn_block_k,
             USE_PDL=use_pdl, ONE_BLOCK=one_block(cfg, num_tokens), PRELOAD=cfg.dn_preload,
             HANDOFF=cfg.handoff, GU_TILES=inter // cfg.gu_block_n if cfg.handoff else 1,
             num_warps=cfg.dn_warps, num_stages=cfg.dn_stages, **pdl))
    block_h = min(cfg.combine_block_h, next_pow2(hidden))
    combine_kernel[(num_tokens, triton.cdiv(hidden, block_h))](
        y, ids, out, out.stride(0), H=hidden, E=num_experts, K=k, K_PAD=shape["K_PAD"], BLOCK_H=block_h,
        USE_PDL=use_pdl, num_warps=4, **pdl)
