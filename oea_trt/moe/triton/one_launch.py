"""The expert-major MoE layer in ONE launch (KernelConfig.down == "one_launch"): the gate/up and
down work items of the three-launch path (tiles.py), walked by one persistent grid, and the
per-token sum done by whichever program finishes a token's tile last. One grid has one ramp and
one tail instead of three, no combine kernel, and a down item starts the moment its expert's
gate/up rows exist.

Work items, in this order: every gate/up item (active expert a, N-tile of the intermediate dim),
then every down item (active expert a, tile of hidden rows), each group expert-major. A program
takes the next item from a ticket counter. A down item of expert e first waits until all of e's
gate/up items have released their act rows (a per-expert counter). Why this cannot deadlock,
whatever share of the grid is resident: tickets are drawn in item order, so every gate/up item
a down item waits for was drawn earlier, by a program that is running and whose gate/up items
never wait. (A static item-to-program assignment would need the whole grid resident at once,
which another stream's kernel can prevent.)

The per-token sum: a down item writes fp32 y rows (token*k + first slot naming the expert,
scaled by the routing weight) as in the three-launch path, then counts itself done for each of
its tokens in a per-(token, hidden tile) counter. The program that completes a token's tile
(one item per distinct valid expert of the token) adds the token's y rows in slot order and
writes the output tile: deterministic, bit-reproducible, no atomics on data.

All synchronisation state lives in the int32 workspace of sync.py (per device, zero between
calls): the ticket, an exit count, a count of programs past the active-set wait (below), the
per-expert gate/up counters, the per-(token, tile) counters. A finished tile resets its
counter; the last program to exit resets the rest, so a call needs no memset and no extra
launch.

Starting on the routing's published active set (EARLY_ACTIVE; config.early_active, one token
block, a RoutingResult routed with signal=True): the routing kernel clears a flag before this
kernel can launch and sets it once active_mask is final, before it writes the rows (OEA's phase
1 selects only k0 experts per token). The kernel polls the flag instead of waiting for the
routing kernel to finish, and gate/up items, which need only the active set and x, stream at
once: they write act rows at (active rank * BLOCK_M + token) for every token, as they cannot
see which tokens picked the expert. Each down item passes griddepcontrol.wait (the routing's
rows complete) before it reads them.

Memory ordering: act and y rows are written with plain stores, then the CTA barrier, then a
release atomic on the counter; the reader acquires the counter, passes a CTA barrier and reads
the rows from L2 (.cg). Programmatic dependent launch (config.pdl): the kernel waits for the
routing kernel's memory before its first access and lets the next kernel's programs launch when
each program starts its last item.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from oea_trt.moe.triton.config import KernelConfig, next_pow2, one_block
from oea_trt.moe.triton.launch import launch_persistent
from oea_trt.moe.triton.sync import start_after_routing, sync_workspace, wait_for_count
from oea_trt.moe.triton.tiles import active_experts, down_block, gate_up_item, nth_active, tokens_of_expert

# ---- device code -------------------------------------------------------------------------


@triton.jit
def _slot_owns_row(expert_ids_ptr, toks, num_tokens, s: tl.constexpr, E: tl.constexpr, K: tl.constexpr):
    """[BLOCK_M] bool: slot s of each token holds a valid expert that no earlier slot of the token
    names, i.e. the slot owns a y row (a repeat, the router's "top1" fill, is not a new expert).
    Column by column, from L1: a [tokens, k, k] comparison would cost the streaming loops
    registers (the kernel's register count sets how many programs share an SM)."""
    in_tok = toks < num_tokens
    expert = tl.load(expert_ids_ptr + toks * K + s, mask=in_tok, other=-1)
    own = in_tok & (expert >= 0) & (expert < E)
    for t in tl.static_range(s):
        own = own & (tl.load(expert_ids_ptr + toks * K + t, mask=in_tok, other=-1) != expert)
    return own


@triton.jit
def _owned_slots(expert_ids_ptr, toks, num_tokens, E: tl.constexpr, K: tl.constexpr):
    """[BLOCK_M] int32 bitmask: bit s set where slot s of the token owns a y row
    (_slot_owns_row). A down item of a one-block batch loads it while it waits for its expert's
    gate/up rows, so finishing the item needs no reload of the routing's ids after its counter
    atomic (one round trip less at the end of every down item, the tail's included)."""
    tl.static_assert(K <= 31, "the per-token slot bitmask holds at most 31 slots")
    bits = tl.zeros(toks.shape, dtype=tl.int32)
    for s in tl.static_range(K):
        bits = bits | (_slot_owns_row(expert_ids_ptr, toks, num_tokens, s, E, K).to(tl.int32) << s)
    return bits


@triton.jit
def _finish_tiles(y_ptr, out_ptr, tile_done_ptr, stride_out, tok0, routed, owned, h_tile,
                  H: tl.constexpr, K: tl.constexpr, H_TILES: tl.constexpr, BLOCK_M: tl.constexpr,
                  BLOCK_N: tl.constexpr):
    """Count this down item done for each routed token's hidden tile; for the tokens whose tile
    it completes (owned: _owned_slots of the block's tokens), out[token, tile] = sum of the
    token's y rows in slot order (rounded once to out's dtype), and the counter goes back to 0
    for the next call."""
    toks = tok0 + tl.arange(0, BLOCK_M)
    distinct = tl.zeros((BLOCK_M,), dtype=tl.int32)
    for s in tl.static_range(K):
        distinct += (owned >> s) & 1
    tl.debug_barrier()  # every thread's y stores precede the release below
    counters = tile_done_ptr + toks * H_TILES + h_tile
    before = tl.atomic_add(counters, 1, mask=routed, sem="acq_rel")
    last = routed & (before == distinct - 1)
    if tl.max(last.to(tl.int32), axis=0) > 0:
        tl.debug_barrier()  # the acquiring threads' view is every thread's from here
        h = h_tile * BLOCK_N + tl.arange(0, BLOCK_N)
        total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for s in tl.static_range(K):
            own = last & (((owned >> s) & 1) != 0)
            rows = (toks * K + s).to(tl.int64)
            total += tl.load(y_ptr + rows[:, None] * H + h[None, :], mask=own[:, None], other=0.0,
                             cache_modifier=".cg")
        tl.store(out_ptr + toks[:, None].to(tl.int64) * stride_out + h[None, :], total.to(out_ptr.dtype.element_ty),
                 mask=last[:, None])
        tl.store(counters, tl.zeros_like(before), mask=last)


@triton.jit
def _zero_unrouted_tokens(expert_ids_ptr, out_ptr, stride_out, num_tokens, H: tl.constexpr, E: tl.constexpr,
                          K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Output rows of tokens with no valid expert are zeros (no down item will touch them)."""
    for tok0 in range(0, num_tokens, BLOCK_M):
        toks = tok0 + tl.arange(0, BLOCK_M)
        empty = (toks < num_tokens) & (_owned_slots(expert_ids_ptr, toks, num_tokens, E, K) == 0)
        if tl.max(empty.to(tl.int32), axis=0) > 0:
            for h0 in range(0, H, BLOCK_N):
                h = h0 + tl.arange(0, BLOCK_N)
                tl.store(out_ptr + toks[:, None].to(tl.int64) * stride_out + h[None, :],
                         tl.zeros((BLOCK_M, BLOCK_N), dtype=out_ptr.dtype.element_ty), mask=empty[:, None])


@triton.jit(do_not_specialize=["num_tokens"])
def one_launch_kernel(x_ptr, w13_ptr, w2_ptr, expert_ids_ptr, weights_ptr, active_mask_ptr, act_ptr, y_ptr,
                      out_ptr, sync_ptr, ready_ptr, num_tokens, stride_x, stride_out,
                      H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                      K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                      GU_N: tl.constexpr, GU_K: tl.constexpr, DN_N: tl.constexpr, DN_K: tl.constexpr,
                      USE_PDL: tl.constexpr, ONE_BLOCK: tl.constexpr, EARLY_ACTIVE: tl.constexpr):
    start_after_routing(ready_ptr, sync_ptr + 2, USE_PDL, EARLY_ACTIVE)  # every down item passes gdc_wait
    GU_TILES: tl.constexpr = I // GU_N
    H_TILES: tl.constexpr = H // DN_N
    ticket_ptr = sync_ptr
    exited_ptr = sync_ptr + 1
    gate_up_done_ptr = sync_ptr + 3  # [E], by expert id (sync_ptr + 2: programs past the active-set wait)
    tile_done_ptr = sync_ptr + 3 + E  # [tokens, H_TILES]
    rank, active, num_active = active_experts(active_mask_ptr, E, E_PAD)
    gate_up_items = num_active * GU_TILES
    total = gate_up_items + num_active * H_TILES
    if not EARLY_ACTIVE:
        if tl.program_id(0) == 0:
            _zero_unrouted_tokens(expert_ids_ptr, out_ptr, stride_out, num_tokens, H, E, K, K_PAD, BLOCK_M, DN_N)
    w = tl.atomic_add(ticket_ptr, 1, sem="relaxed")
    while w < total:
        following = tl.atomic_add(ticket_ptr, 1, sem="relaxed")
        if USE_PDL:
            if w + tl.num_programs(0) >= total:  # about the last wave: the next kernel may launch
                tl.extra.cuda.gdc_launch_dependents()
        if w < gate_up_items:
            expert = nth_active(rank, active, w // GU_TILES, E_PAD)
            gate_up_item(x_ptr, w13_ptr, expert_ids_ptr, act_ptr, expert, w % GU_TILES, num_tokens, stride_x,
                         H, I, K, K_PAD, BLOCK_M, GU_N, GU_K, ONE_BLOCK, w // GU_TILES, EARLY_ACTIVE)
            tl.debug_barrier()  # every thread's act stores precede the release
            tl.atomic_add(gate_up_done_ptr + expert, 1, sem="release")
        else:
            d = w - gate_up_items
            expert = nth_active(rank, active, d // H_TILES, E_PAD)
            if EARLY_ACTIVE:
                if USE_PDL:
                    tl.extra.cuda.gdc_wait()  # the routing's rows are complete and visible past here
                if d == 0:  # one item, after the wait: the rows tell which tokens have no expert
                    _zero_unrouted_tokens(expert_ids_ptr, out_ptr, stride_out, num_tokens, H, E, K, K_PAD, BLOCK_M,
                                          DN_N)
            if ONE_BLOCK:  # the token list and owned slots (routing's, not gate/up's) load while it waits
                toks, routed, row, hit = tokens_of_expert(expert_ids_ptr, expert, 0, num_tokens, K, K_PAD, BLOCK_M)
                owned = _owned_slots(expert_ids_ptr, toks, num_tokens, E, K)
            wait_for_count(gate_up_done_ptr + expert, GU_TILES)
            if ONE_BLOCK:
                if EARLY_ACTIVE:
                    act_row = (d // H_TILES) * BLOCK_M + toks  # gate/up's ACT_BY_RANK rows
                else:
                    act_row = row
                down_block(act_ptr, w2_ptr, weights_ptr, y_ptr, expert, d % H_TILES, toks, routed, row, act_row,
                           hit, H, I, K, K_PAD, BLOCK_M, DN_N, DN_K, ONE_BLOCK)
                _finish_tiles(y_ptr, out_ptr, tile_done_ptr, stride_out, 0, routed, owned, d % H_TILES, H, K, H_TILES,
                              BLOCK_M, DN_N)
            else:
                for tok0 in range(0, num_tokens, BLOCK_M):
                    toks, routed, row, hit = tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K, K_PAD,
                                                              BLOCK_M)
                    down_block(act_ptr, w2_ptr, weights_ptr, y_ptr, expert, d % H_TILES, toks, routed, row, row,
                               hit, H, I, K, K_PAD, BLOCK_M, DN_N, DN_K, ONE_BLOCK)
                    _finish_tiles(y_ptr, out_ptr, tile_done_ptr, stride_out, tok0, routed,
                                  _owned_slots(expert_ids_ptr, toks, num_tokens, E, K), d % H_TILES, H, K, H_TILES,
                                  BLOCK_M, DN_N)
        w = following
    if EARLY_ACTIVE:
        if (num_active == 0) & (tl.program_id(0) == 0):  # no down item zeroed the unrouted tokens
            if USE_PDL:
                tl.extra.cuda.gdc_wait()
            _zero_unrouted_tokens(expert_ids_ptr, out_ptr, stride_out, num_tokens, H, E, K, K_PAD, BLOCK_M, DN_N)
    # The last program out has seen every other program draw its final ticket: nothing reads
    # the ticket or the gate/up counters any more in this call, so it zeroes them for the next.
    if tl.atomic_add(exited_ptr, 1, sem="acq_rel") == tl.num_programs(0) - 1:
        e_offs = tl.arange(0, E_PAD)
        tl.store(gate_up_done_ptr + e_offs, tl.zeros((E_PAD,), dtype=tl.int32), mask=e_offs < E)
        tl.store(ticket_ptr, 0)
        tl.store(exited_ptr, 0)
        tl.store(sync_ptr + 2, 0)


# ---- host side ---------------------------------------------------------------------------

def sync_words(num_experts: int, num_tokens: int, h_tiles: int) -> int:
    """int32 words of synchronisation state a call needs (layout in one_launch_kernel)."""
    return 3 + num_experts + num_tokens * h_tiles


def early_active(cfg: KernelConfig, num_tokens: int, active_ready: Optional[torch.Tensor]) -> bool:
    """The kernel's EARLY_ACTIVE: it starts on the routing's published active set (the batch is
    one token block and the routing was launched with active_ready; config.early_active)."""
    return active_ready is not None and cfg.early_active and one_block(cfg, num_tokens)


def launch(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, wts: torch.Tensor,
           mask_u8: torch.Tensor, out: torch.Tensor, cfg: KernelConfig, use_pdl: bool,
           active_ready: Optional[torch.Tensor] = None) -> None:
    """One launch of the whole layer into out (inputs checked and cfg fitted by the caller,
    oea_trt.moe.triton.fused_moe: gu_* tiles for gate/up items, dn_* for down items, gu_warps /
    gu_stages for the kernel; cfg.max_programs sets the grid, any size is correct).
    active_ready: the flag the routing kernel that wrote ids, wts and mask_u8 was launched with
    (RoutingResult.active_ready); the kernel then streams gate/up as soon as the routing has
    published its active set (early_active), and clears the flag once every program has seen it."""
    num_tokens, k = ids.shape
    num_experts, two_inter, hidden = w13.shape
    inter = two_inter // 2
    h_tiles = hidden // cfg.dn_block_n
    sync = sync_workspace(sync_words(num_experts, num_tokens, h_tiles), x.device)
    max_active = min(num_experts, num_tokens * k)
    early = early_active(cfg, num_tokens, active_ready)
    # act rows: token*k + slot, or (early) active rank * block_m + token (gate/up cannot see the rows)
    act_rows = max_active * cfg.block_m if early else num_tokens * k
    act = torch.empty((act_rows, inter), dtype=w13.dtype, device=w13.device)
    y = torch.empty((num_tokens * k, hidden), dtype=torch.float32, device=w13.device)
    max_items = max_active * (inter // cfg.gu_block_n + h_tiles)
    kwargs = dict(H=hidden, I=inter, E=num_experts, E_PAD=next_pow2(num_experts), K=k, K_PAD=next_pow2(k),
                  BLOCK_M=cfg.block_m, GU_N=cfg.gu_block_n, GU_K=cfg.gu_block_k,
                  DN_N=cfg.dn_block_n, DN_K=cfg.dn_block_k, USE_PDL=use_pdl,
                  ONE_BLOCK=one_block(cfg, num_tokens), EARLY_ACTIVE=early,
                  num_warps=cfg.gu_warps, num_stages=cfg.gu_stages)
    if use_pdl:
        kwargs["launch_pdl"] = True
    args = (x, w13, w2, ids, wts, mask_u8, act, y, out, sync, active_ready if early else sync, num_tokens,
            x.stride(0), out.stride(0))
    launch_persistent(one_launch_kernel, max_items, cfg.max_programs, args, kwargs, cfg.programs_per_sm)
