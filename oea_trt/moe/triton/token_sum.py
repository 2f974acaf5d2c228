"""The per-token sum of a down kernel's y rows, done by whichever program finishes a token's
hidden tile last (the one-launch kernel, one_launch.py, and the three-launch path's down
kernel with config.fuse_combine, three_launch.py): no combine kernel.

A down item writes fp32 y rows (token*k + first slot naming the expert, scaled by the routing
weight), then counts itself done for each of its tokens in a per-(token, hidden tile) counter of
the int32 workspace (sync.py). The program that completes a token's tile (one item per distinct
valid expert of the token) adds the token's y rows in slot order and writes the output tile:
deterministic, bit-reproducible, no atomics on data. A finished tile resets its counter, so the
workspace is zero again after the call. Tokens with no valid expert get zero rows
(zero_unrouted_tokens: no down item touches them).

Memory ordering: y rows are written with plain stores, then the CTA barrier, then an acq_rel
atomic on the counter; the finisher passes a CTA barrier and reads the rows from L2 (.cg).
"""
import triton
import triton.language as tl


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
def owned_slots(expert_ids_ptr, toks, num_tokens, E: tl.constexpr, K: tl.constexpr):
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
def finish_tiles(y_ptr, out_ptr, tile_done_ptr, stride_out, tok0, routed, owned, h_tile,
                 H: tl.constexpr, K: tl.constexpr, H_TILES: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """Count this down item done for each routed token's hidden tile; for the tokens whose tile
    it completes (owned: owned_slots of the block's tokens), out[token, tile] = sum of the
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
def zero_unrouted_tokens(expert_ids_ptr, out_ptr, stride_out, num_tokens, H: tl.constexpr, E: tl.constexpr,
                         K: tl.constexpr, K_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Output rows of tokens with no valid expert are zeros (no down item will touch them)."""
    for tok0 in range(0, num_tokens, BLOCK_M):
        toks = tok0 + tl.arange(0, BLOCK_M)
        empty = (toks < num_tokens) & (owned_slots(expert_ids_ptr, toks, num_tokens, E, K) == 0)
        if tl.max(empty.to(tl.int32), axis=0) > 0:
            for h0 in range(0, H, BLOCK_N):
                h = h0 + tl.arange(0, BLOCK_N)
                tl.store(out_ptr + toks[:, None].to(tl.int64) * stride_out + h[None, :],
                         tl.zeros((BLOCK_M, BLOCK_N), dtype=out_ptr.dtype.element_ty), mask=empty[:, None])
