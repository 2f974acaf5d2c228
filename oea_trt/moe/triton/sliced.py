"""The expert-major MoE layer as independent slices (KernelConfig.down == "sliced"): one launch
in which no weight-streaming item waits for another. For few active experts (small T: B = 1,
and the OEA rows, whose point is small T).

Why: in the one-launch kernel (one_launch.py) a down item of an expert can start only after
every gate/up item of that expert. With few active experts all gate/up items stream at once,
then all down items: two short phases in series, each with its own ramp and tail, and the
hand-off between them. Here a work item is (active expert a, slice s of the intermediate dim,
gu_block_n columns wide): it streams the slice's gate and up rows, forms silu(gate) * up for
every token of the batch (rounded to the weight dtype, as the reference does), and at once
streams the same slice's columns of w2 (all hidden rows, dn_block_n at a time), writing
act_slice @ w2[:, slice]^T, scaled by the token's routing weight for the expert, as fp32
partial rows: one per (token, first slot naming the expert, slice), for the tokens routed to
the expert. The down projection is thus split over the intermediate dim; the partial rows are
the price: per active expert m tokens x I/SL slices x H x 4 bytes against 3 x I x H x 2 bytes
of weights, i.e. 2m / (3 SL) of the weight bytes (4% at m = 1, SL = 16; 22% at m = 5), written
and read back through L2. Hence small T, and config.fitted() widens the slices where a batch
has more (token, slot) pairs (SLICED_PART_ROWS).

Then reduce items (token, hidden tile of reduce_tile() columns): once every slice item has counted itself
done (one counter, release/acquire), out[token, tile] = the sum of the token's partial rows,
owned slots in slot order, slices in order within a slot (a fixed tree per slot): deterministic,
bit-reproducible, no atomics on data. A token with no valid expert gets zeros. Items are taken
from a ticket counter in that order, so every slice item a reduce item waits for was drawn
earlier by a running program that never waits: no deadlock whatever share of the grid is
resident.

One token block only (decode batches: block_m covers up to 64 tokens); config.fitted() gives
larger batches the one-launch path. Synchronisation state (sync.py's workspace): word 0 the
ticket, 1 the exit count, 2 the programs past the active-set wait, 3 the slice items done;
the last program out zeroes them. Starting on the routing's published active set
(EARLY_ACTIVE, as in one_launch.py): the gate/up half of a slice item needs only the active set
and x; griddepcontrol.wait comes before the routing's rows are read, after the gate/up stream.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from oea_trt.moe.triton.config import KernelConfig, next_pow2
from oea_trt.moe.triton.launch import launch_persistent
from oea_trt.moe.triton.sync import start_after_routing, sync_workspace, wait_for_count
from oea_trt.moe.triton.tiles import active_experts, gate_up_tile, nth_active, tokens_of_expert

#: int32 words of sync.py's workspace this kernel uses (layout above).
SYNC_WORDS = 4
#: fp32 elements per warp a reduce item holds at once (slices x hidden columns): 64 registers a thread.
REDUCE_ELEMENTS_PER_WARP = 2048


def reduce_tile(dn_block_n: int, slices: int, warps: int) -> int:
    """Hidden columns per reduce item: dn_block_n, narrowed so that the [slices, columns] fp32
    tile of one slot stays within REDUCE_ELEMENTS_PER_WARP x warps (a wide down step must not
    spill the reduce; config.fitted bounds the slices so that 16 columns always fit)."""
    cols = dn_block_n
    while cols > 16 and next_pow2(slices) * cols > REDUCE_ELEMENTS_PER_WARP * warps:
        cols //= 2
    return cols

# ---- device code -------------------------------------------------------------------------


@triton.jit
def slice_item(x_ptr, w13_ptr, w2_ptr, expert_ids_ptr, weights_ptr, part_ptr, expert, s, num_tokens, stride_x,
                H: tl.constexpr, I: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                SL: tl.constexpr, GU_K: tl.constexpr, DN_N: tl.constexpr, USE_PDL: tl.constexpr,
                EARLY_ACTIVE: tl.constexpr):
    """Slice s of `expert`: gate/up rows streamed once times every token's x row, then the
    slice's w2 columns streamed once, partial rows stored for the tokens routed to the expert."""
    S: tl.constexpr = I // SL
    n = s * SL + tl.arange(0, SL)
    w_gate = w13_ptr + expert.to(tl.int64) * (2 * I * H) + n[:, None] * H + tl.arange(0, GU_K)[None, :]
    toks = tl.arange(0, BLOCK_M)
    act = gate_up_tile(x_ptr, w_gate, w_gate + I * H, toks, toks < num_tokens, stride_x, H, BLOCK_M, SL, GU_K)
    act = act.to(w2_ptr.dtype.element_ty)
    if EARLY_ACTIVE:
        if USE_PDL:
            tl.extra.cuda.gdc_wait()  # the routing's rows are complete and visible past here
    # Loads only: nothing waits on them until the first store below, after the w2 loads are issued.
    toks, routed, row, hit = tokens_of_expert(expert_ids_ptr, expert, 0, num_tokens, K, K_PAD, BLOCK_M)
    wts = tl.load(weights_ptr + toks[:, None] * K + tl.arange(0, K_PAD)[None, :], mask=hit, other=0.0)
    scale = tl.sum(wts, axis=1)  # the expert's weight for the token, over the slots naming it
    part_rows = part_ptr + (row * S + s).to(tl.int64)[:, None] * H
    w_down = w2_ptr + expert.to(tl.int64) * (H * I) + tl.arange(0, DN_N)[:, None] * I + n[None, :]
    for h0 in range(0, H, DN_N):
        w = tl.load(w_down + h0 * I)
        part = tl.dot(act, tl.trans(w)) * scale[:, None]
        tl.store(part_rows + (h0 + tl.arange(0, DN_N))[None, :], part, mask=routed[:, None])


@triton.jit
def reduce_item(expert_ids_ptr, part_ptr, out_ptr, done_ptr, slice_items, token, h_tile, stride_out, active,
                 H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr, K: tl.constexpr,
                 K_PAD: tl.constexpr, SL: tl.constexpr, S_PAD: tl.constexpr, RED_N: tl.constexpr):
    """out[token, tile] = the token's partial rows summed, owned slots in slot order. active
    [E_PAD]: the active set (tiles.active_experts); a slot naming an expert outside it (a mask
    that disagrees with the ids, a caller's error) has no slice items and no rows: skipped."""
    S: tl.constexpr = I // SL
    slots = tl.arange(0, K_PAD)
    ids = tl.load(expert_ids_ptr + token * K + slots, mask=slots < K, other=-1)
    in_set = tl.sum(tl.where(ids[:, None] == tl.arange(0, E_PAD)[None, :], active[None, :], 0), axis=1)
    valid = (ids >= 0) & (ids < E) & (in_set != 0)
    # A slot owns a row where no earlier slot names the same expert (a repeat, the "top1" fill,
    # carries weight on the first slot's row).
    repeat = (ids[:, None] == ids[None, :]) & (slots[None, :] < slots[:, None])
    owned = valid & (tl.max(repeat.to(tl.int32), axis=1) == 0)
    ss = tl.arange(0, S_PAD)
    h = h_tile * RED_N + tl.arange(0, RED_N)
    wait_for_count(done_ptr, slice_items)
    total = tl.zeros((RED_N,), dtype=tl.float32)
    for j in tl.static_range(K):
        own = tl.sum(tl.where(slots == j, owned.to(tl.int32), 0), axis=0) != 0
        rows = ((token * K + j) * S + ss).to(tl.int64)
        part = tl.load(part_ptr + rows[:, None] * H + h[None, :], mask=(ss < S)[:, None] & own, other=0.0,
                       cache_modifier=".cg")
        total += tl.sum(part, axis=0)
    tl.store(out_ptr + token.to(tl.int64) * stride_out + h, total.to(out_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["num_tokens"])
def sliced_kernel(x_ptr, w13_ptr, w2_ptr, expert_ids_ptr, weights_ptr, active_mask_ptr, part_ptr, out_ptr,
                  sync_ptr, ready_ptr, num_tokens, stride_x, stride_out,
                  H: tl.constexpr, I: tl.constexpr, E: tl.constexpr, E_PAD: tl.constexpr,
                  K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                  SL: tl.constexpr, S_PAD: tl.constexpr, GU_K: tl.constexpr, DN_N: tl.constexpr,
                  RED_N: tl.constexpr, USE_PDL: tl.constexpr, EARLY_ACTIVE: tl.constexpr):
    start_after_routing(ready_ptr, sync_ptr + 2, USE_PDL, EARLY_ACTIVE)  # every item passes gdc_wait
    S: tl.constexpr = I // SL
    H_TILES: tl.constexpr = H // RED_N
    ticket_ptr = sync_ptr
    exited_ptr = sync_ptr + 1
    done_ptr = sync_ptr + 3
    rank, active, num_active = active_experts(active_mask_ptr, E, E_PAD)
    slice_items = num_active * S
    total = slice_items + num_tokens * H_TILES
    w = tl.atomic_add(ticket_ptr, 1, sem="relaxed")
    while w < total:
        following = tl.atomic_add(ticket_ptr, 1, sem="relaxed")
        if USE_PDL:
            if w + tl.num_programs(0) >= total:  # about the last wave: the next kernel may launch
                tl.extra.cuda.gdc_launch_dependents()
        if w < slice_items:
            expert = nth_active(rank, active, w // S, E_PAD)
            slice_item(x_ptr, w13_ptr, w2_ptr, expert_ids_ptr, weights_ptr, part_ptr, expert, w % S, num_tokens,
                        stride_x, H, I, K, K_PAD, BLOCK_M, SL, GU_K, DN_N, USE_PDL, EARLY_ACTIVE)
            tl.debug_barrier()  # every thread's partial stores precede the release
            tl.atomic_add(done_ptr, 1, sem="release")
        else:
            r = w - slice_items
            if EARLY_ACTIVE:
                if USE_PDL:
                    tl.extra.cuda.gdc_wait()
            reduce_item(expert_ids_ptr, part_ptr, out_ptr, done_ptr, slice_items, r // H_TILES, r % H_TILES,
                        stride_out, active, H, I, E, E_PAD, K, K_PAD, SL, S_PAD, RED_N)
        w = following
    # The last program out has seen every other program draw its final ticket and finish: no
    # one reads the counters any more in this call, so it zeroes them for the next.
    if tl.atomic_add(exited_ptr, 1, sem="acq_rel") == tl.num_programs(0) - 1:
        tl.store(ticket_ptr, 0)
        tl.store(exited_ptr, 0)
        tl.store(sync_ptr + 2, 0)
        tl.store(done_ptr, 0)


# ---- host side ---------------------------------------------------------------------------


def launch(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, ids: torch.Tensor, wts: torch.Tensor,
           mask_u8: torch.Tensor, out: torch.Tensor, cfg: KernelConfig, use_pdl: bool,
           active_ready: Optional[torch.Tensor] = None) -> None:
    """One launch of the whole layer into out (inputs checked and cfg fitted by the caller,
    oea_trt.moe.triton.fused_moe, to one token block: gu_block_n is the slice width, gu_block_k
    the gate/up K step, dn_block_n the hidden rows per down step (and per reduce item, within
    reduce_tile's bound);
    gu_warps / gu_stages apply to the kernel). active_ready as in one_launch.launch."""
    num_tokens, k = ids.shape
    num_experts, two_inter, hidden = w13.shape
    inter = two_inter // 2
    if num_tokens > cfg.block_m:
        raise ValueError(f"the sliced MoE kernel takes one token block: {num_tokens} tokens > block_m {cfg.block_m} "
                         "(config.fitted gives larger batches the one-launch path)")
    slices = inter // cfg.gu_block_n
    sync = sync_workspace(SYNC_WORDS, x.device)
    # fp32 partial rows: (token * k + slot) * slices + slice
    part = torch.empty((num_tokens * k * slices, hidden), dtype=torch.float32, device=x.device)
    max_active = min(num_experts, num_tokens * k)
    red_n = reduce_tile(cfg.dn_block_n, slices, cfg.gu_warps)
    max_items = max_active * slices + num_tokens * (hidden // red_n)
    early = active_ready is not None and cfg.early_active
    kwargs = dict(H=hidden, I=inter, E=num_experts, E_PAD=next_pow2(num_experts), K=k, K_PAD=next_pow2(k),
                  BLOCK_M=cfg.block_m, SL=cfg.gu_block_n, S_PAD=next_pow2(slices), GU_K=cfg.gu_block_k,
                  DN_N=cfg.dn_block_n, RED_N=red_n, USE_PDL=use_pdl, EARLY_ACTIVE=early,
                  num_warps=cfg.gu_warps, num_stages=cfg.gu_stages)
    if use_pdl:
        kwargs["launch_pdl"] = True
    args = (x, w13, w2, ids, wts, mask_u8, part, out, sync, active_ready if early else sync, num_tokens,
            x.stride(0), out.stride(0))
    launch_persistent(sliced_kernel, max_items, cfg.max_programs, args, kwargs, cfg.programs_per_sm)
