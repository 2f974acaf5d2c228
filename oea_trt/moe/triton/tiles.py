"""Device code both MoE paths share (three_launch.py, one_launch.py): the work items.

A gate/up item is (active expert, N-tile of the intermediate dim): the tile's gate and up rows
streamed once, times every token routed to the expert. A down item is (active expert, tile of
hidden rows): the tile's down rows streamed once, times the expert's act rows, one fp32 y row
per (token, first slot naming the expert), scaled by the token's routing weight for it. Tokens
are found by scanning expert_ids (one block of <= 64 tokens at decode sizes: nothing is sorted).
A token that names one expert in two slots (the router's "top1" fill repeats an expert with
weight 0) is one row, the first slot's, carrying the summed weight; ids outside [0, E) are
skipped. Arithmetic: bf16 x bf16 -> fp32 accumulation; the intermediate is rounded to the
weight dtype (as the reference model does) before the down projection.
"""
import triton
import triton.language as tl


@triton.jit
def active_experts(active_mask_ptr, E: tl.constexpr, E_PAD: tl.constexpr):
    """(rank [E_PAD]: 1-based rank of each expert among the active ones, active [E_PAD] int32,
    number of active experts). Read once per program, from L2 (.cg: the one-launch kernel may
    read it while the routing kernel still runs, right after an acquire), kept in registers."""
    e_offs = tl.arange(0, E_PAD)
    active = tl.load(active_mask_ptr + e_offs, mask=e_offs < E, other=0, cache_modifier=".cg").to(tl.int32)
    return tl.cumsum(active, axis=0), active, tl.sum(active, axis=0)


@triton.jit
def nth_active(rank, active, a, E_PAD: tl.constexpr):
    """The a-th (0-based) active expert in ascending id order."""
    return tl.sum(tl.where((rank == a + 1) & (active != 0), tl.arange(0, E_PAD), 0), axis=0)


@triton.jit
def tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K: tl.constexpr, K_PAD: tl.constexpr,
                     BLOCK_M: tl.constexpr):
    """For tokens tok0 .. tok0+BLOCK_M-1: (token index, routed to `expert`?, buffer row =
    token*K + first slot naming the expert, hit [BLOCK_M, K_PAD] = slots naming it)."""
    toks = tok0 + tl.arange(0, BLOCK_M)
    slots = tl.arange(0, K_PAD)
    in_range = (toks[:, None] < num_tokens) & (slots[None, :] < K)
    # .cg (L2): the three-launch down kernel with dn_preload or handoff reads the routing's ids
    # before any wait; the routing kernel has completed by then, and L2 is where its writes are.
    ids = tl.load(expert_ids_ptr + toks[:, None] * K + slots[None, :], mask=in_range, other=-1, cache_modifier=".cg")
    hit = (ids == expert) & in_range
    routed = tl.max(hit.to(tl.int32), axis=1) > 0
    first = tl.min(tl.where(hit, slots[None, :], K_PAD), axis=1)
    row = toks * K + first
    return toks, routed, row, hit


@triton.jit
def gate_up_item(x_ptr, w13_ptr, expert_ids_ptr, act_ptr, expert, n_tile, num_tokens, stride_x,
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
    elif ONE_BLOCK:  # one token block (every decode batch): one pass, no token-block loop
        toks, routed, row, hit = tokens_of_expert(expert_ids_ptr, expert, 0, num_tokens, K, K_PAD, BLOCK_M)
        act = _gate_up_tile(x_ptr, w_gate, w_up, toks, toks < num_tokens, stride_x, H, BLOCK_M, BLOCK_N, BLOCK_K)
        tl.store(act_ptr + row[:, None].to(tl.int64) * I + n[None, :], act.to(act_ptr.dtype.element_ty),
                 mask=routed[:, None])
    else:
        for tok0 in range(0, num_tokens, BLOCK_M):
            toks, routed, row, hit = tokens_of_expert(expert_ids_ptr, expert, tok0, num_tokens, K, K_PAD, BLOCK_M)
            if tl.max(routed.to(tl.int32), axis=0) > 0:
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
def down_block(act_ptr, w2_ptr, weights_ptr, y_ptr, expert, h_tile, toks, routed, row, act_row, hit,
               H: tl.constexpr, I: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, ONE_BLOCK: tl.constexpr):
    """Down projection of `expert`'s hidden rows tile h_tile for one token block (toks, routed,
    row, hit: tokens_of_expert's): act row @ w2 tile^T * the token's weight for the expert, an
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
def preload_w2(w2_ptr, expert, h_tile, H: tl.constexpr, I: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_K: tl.constexpr):
    """A down item's whole w2 tile (hidden rows tile h_tile of `expert`, all I columns) as
    I // BLOCK_K (<= 4) register tiles [BLOCK_N, BLOCK_K]; the unused ones repeat the first
    and cost no load. For a program that loads them before it waits for the act rows."""
    CHUNKS: tl.constexpr = I // BLOCK_K
    tl.static_assert(CHUNKS <= 4, "a preloaded w2 tile is at most 4 K steps")
    h = h_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    w_rows = w2_ptr + expert.to(tl.int64) * (H * I) + h[:, None] * I + tl.arange(0, BLOCK_K)[None, :]
    w0 = tl.load(w_rows)
    w1 = w0
    w2 = w0
    w3 = w0
    if CHUNKS > 1:
        w1 = tl.load(w_rows + BLOCK_K)
    if CHUNKS > 2:
        w2 = tl.load(w_rows + 2 * BLOCK_K)
    if CHUNKS > 3:
        w3 = tl.load(w_rows + 3 * BLOCK_K)
    return w0, w1, w2, w3


@triton.jit
def down_preloaded(act_ptr, w0, w1, w2, w3, weights_ptr, y_ptr, h_tile, toks, routed, row, hit,
                   H: tl.constexpr, I: tl.constexpr, K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """down_block's one-block product with the w2 tile already in registers (preload_w2): only
    the act rows are read, from L2 (.cg: the previous kernel wrote them). Same K order and
    accumulation as _down_tile, so the same bits."""
    CHUNKS: tl.constexpr = I // BLOCK_K
    kk = tl.arange(0, BLOCK_K)
    a_rows = act_ptr + row[:, None].to(tl.int64) * I + kk[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc = tl.dot(tl.load(a_rows, mask=routed[:, None], other=0.0, cache_modifier=".cg"), tl.trans(w0), acc)
    if CHUNKS > 1:
        acc = tl.dot(tl.load(a_rows + BLOCK_K, mask=routed[:, None], other=0.0, cache_modifier=".cg"),
                     tl.trans(w1), acc)
    if CHUNKS > 2:
        acc = tl.dot(tl.load(a_rows + 2 * BLOCK_K, mask=routed[:, None], other=0.0, cache_modifier=".cg"),
                     tl.trans(w2), acc)
    if CHUNKS > 3:
        acc = tl.dot(tl.load(a_rows + 3 * BLOCK_K, mask=routed[:, None], other=0.0, cache_modifier=".cg"),
                     tl.trans(w3), acc)
    slots = tl.arange(0, K_PAD)
    wts = tl.load(weights_ptr + toks[:, None] * K + slots[None, :], mask=hit, other=0.0)
    acc = acc * tl.sum(wts, axis=1)[:, None]
    h = h_tile * BLOCK_N + tl.arange(0, BLOCK_N)
    tl.store(y_ptr + row[:, None].to(tl.int64) * H + h[None, :], acc, mask=routed[:, None])
